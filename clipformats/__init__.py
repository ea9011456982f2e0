"""The neutral layer under `clipmodule` and `curation`: what both read or write on disk, and the plumbing both use.

    webdataset   the shard contract: sample keys and fields, shard specs, `_stats.json`, the data card's content hash
    embeddings   the embedding-folder contract (clip-retrieval's img_emb/ text_emb/ metadata/) and the embedder plugin
    knn          the kNN index folder (faiss index + the rows it holds)
    files        atomic writes, stale temporaries, YAML/JSON reading, file hashes
    locks        one writer per output (`<out>.lock`), stale locks of dead processes
    urls         which URLs may be fetched
    images       the pixel limit and safe image opening
    errors       `one_line`: any error or worker traceback as the one line a CLI prints
    wordnet      WordNet 3.0's database files as a lexicon: nouns, adjectives, co-hyponyms
    balancing    the balancing rule (`curation balance`, a loader's online curation, serve's browse view),
                 MetaCLIP's p_to_t / t_to_p

It imports neither library (import-linter's contracts in pyproject.toml say so): standard library, plus numpy and
pyarrow where a format needs them (faiss, PIL and yaml only inside the function that reads such a file).
"""
