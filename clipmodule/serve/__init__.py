"""`clipmodule serve`: one local web service over search engines, curation work folders and data cards —
clip-retrieval's back-end API (`/knn-service`, `/indices-list`, `/metadata`), a search page, a browse view of every
curation decision, and the cards as pages. Read-only, bound to 127.0.0.1 unless told otherwise."""
