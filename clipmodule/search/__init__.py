"""`clipmodule search`: the query side of `curation index` (a text or image query → nearest samples, a PNG sheet)."""
