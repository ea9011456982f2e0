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

Row identity: `match` records `rows_identity` (`rows_identity(files)` of its parquet parts) in its stats and in
its counts table's schema metadata (key `ROWS_IDENTITY`); `balance` records its own; `download` records the
identity of the rows it fetched; a stage that copies shards (language, unsafe, ...) passes its input shards' on.
Online curation reads it to refuse shards that are not the matched output its counts count.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

from clipformats.files import sha256_file

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

ROWS_IDENTITY = "rows_identity"
"""Key of a row set's identity in a stage's stats json and in a counts table's parquet schema metadata."""

DOWNLOAD_SUCCESS = "success"
"""img2dataset's `status` of a sample it wrote into the shard."""


def rows_identity(files: list[Path], sha256: Callable[[Path], str] | None = None) -> str:
    """A row set's identity: sha256 of the "name sha256" lines of its files, sorted by name (content, not paths).
    `sha256`: each file's digest (default: read it; a cache may answer instead)."""
    lines = []
    for path in sorted(files, key=lambda p: Path(p).name):
        lines.append(f"{Path(path).name} {(sha256 or sha256_file)(path)}\n")
    return hashlib.sha256("".join(lines).encode()).hexdigest()



def recorded_identity(folder: Path, stage: str | None = None) -> str | None:
    """The `rows_identity` a stage (`stage`, when given) recorded in `<folder>.stats.json` for the rows behind
    `folder` (None: none). A relative folder is taken from the working directory; a symbolic link's stats are
    looked for beside the link, then beside what it points to. Local folders only."""
    stats = None
    for place in dict.fromkeys((Path(os.path.abspath(folder)), Path(folder).resolve())):  # ".", "..", a link
        try:
            stats = json.loads((place.parent / (place.name + ".stats.json")).read_text(encoding="utf-8"))
            break
        except (OSError, ValueError):
            continue
    if not isinstance(stats, dict) or (stage is not None and stats.get("stage") != stage):
        return None
    value = stats.get(ROWS_IDENTITY)
    return value if isinstance(value, str) else None
