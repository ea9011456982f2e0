"""THE on-disk names of what `curation build` leaves in its work folder, for readers outside curation
(`clipmodule serve`'s browse view): each stage's folder and the sidecar files that record its decision on every
sample. Writers are curation's stages; a reader needs only these names and columns, never curation's code.

    queries.parquet                  id, term, source, count                 the query list
    matched/*.parquet                url, caption, query_ids, ...            rows containing a query
    balanced/*.parquet               the same columns                        rows the cap kept
    balanced.stats.json              t, seed, key_column                     the cap's settings
    balanced.counts.parquet          id, term, matched, kept                 rows per query before and after
    shards/NNNNN.tar + NNNNN.parquet url, key, caption, status, error_message, width, height, original_width, ...
                                                                             img2dataset's shards and its per-row log
    filtered.rows.parquet            shard, key, clip_score, kept, reason    every sample's filter decision
    deduplicated.drops.parquet       shard, key, duplicate_of_shard, duplicate_of_key, cosine, cluster
    decontaminated.drops.parquet     shard, key, pass, distance, cosine, eval_set, eval_image

Standard library only: readers open the parquet files with pyarrow themselves.
"""

from __future__ import annotations

QUERIES = "queries.parquet"
MATCHED = "matched"
BALANCED = "balanced"
BALANCE_STATS = "balanced.stats.json"
BALANCE_COUNTS = "balanced.counts.parquet"
SHARDS = "shards"
FILTER_ROWS = "filtered.rows.parquet"
DEDUP_DROPS = "deduplicated.drops.parquet"
DECONTAMINATION_DROPS = "decontaminated.drops.parquet"

MATCHED_COLUMNS = ("url", "caption", "query_ids")
DOWNLOAD_COLUMNS = ("url", "key", "caption", "status", "error_message", "width", "height", "original_width",
                    "original_height")
FILTER_COLUMNS = ("shard", "key", "clip_score", "kept", "reason")
DEDUP_COLUMNS = ("shard", "key", "duplicate_of_shard", "duplicate_of_key", "cosine", "cluster")
DECONTAMINATION_COLUMNS = ("shard", "key", "pass", "distance", "cosine", "eval_set", "eval_image")

DOWNLOAD_SUCCESS = "success"
"""img2dataset's `status` of a sample it wrote into the shard."""
