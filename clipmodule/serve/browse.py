"""The browse view's table: every sample a curation work folder knows, with each decision taken on it, read from
the stage outputs that exist by their on-disk contract (`clipformats.curation_outputs`), never curation's code.

Each matched query carries the cap's keep chance p = min(1, t / rows of the query) and the coin the stage tossed
(recomputed from the row key and seed, `clipformats.balancing`): the cap kept the row when some coin < p.
A sample's `decision` is the first stage that dropped it: `cap` (balancing's coins), `download: <status>`,
`filter: <reason>`, `dedup` (a near-duplicate of an earlier sample), `decontaminate` (a near-copy of an evaluation
image); `kept` when none did. Rows the cap dropped were never downloaded: they have a caption and URL, no image.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from clipformats import curation_outputs as out
from clipformats.balancing import coins, key_hashes
from clipmodule.serve.images import ShardImages


@dataclass
class Dataset:
    """One work folder's samples (matched rows first, then download-only rows) and its shards' images."""

    rows: list[dict[str, Any]]
    images: ShardImages
    stages: list[str] = field(default_factory=list)
    """The stage outputs found."""

    def decisions(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for row in self.rows:
            counts[row["decision"]] = counts.get(row["decision"], 0) + 1
        return dict(sorted(counts.items(), key=lambda item: (item[0] != "kept", item[0])))

    def page(self, decision: str = "", text: str = "", offset: int = 0, limit: int = 50) -> dict[str, Any]:
        """The rows with `decision` (a stage name matches all its reasons: `filter` ⊇ `filter: clip_score`) and
        `text` in their caption (case-insensitive), from `offset`."""
        text = text.lower()
        chosen = [row for row in self.rows
                  if (not decision or row["decision"] == decision or row["decision"].startswith(decision + ":"))
                  and (not text or text in (row["caption"] or "").lower())]
        return {"total": len(chosen), "offset": offset, "rows": chosen[offset:offset + limit],
                "decisions": self.decisions(), "stages": self.stages}


def _parquet_rows(paths: list[Path], wanted: tuple[str, ...]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for path in paths:
        names = pq.read_schema(path).names
        rows += pq.read_table(path, columns=[c for c in wanted if c in names]).to_pylist()
    return rows


def _folder_tables(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.parquet")) if folder.is_dir() else []


def _query_terms(work: Path) -> dict[int, str]:
    path = work / out.QUERIES
    if not path.is_file():
        return {}
    table = pq.read_table(path, columns=["id", "term"])
    return dict(zip(table.column("id").to_pylist(), table.column("term").to_pylist()))


@dataclass
class Cap:
    """What `curation balance` recorded: t, seed, the key column, rows per query, the kept rows' keys."""

    t: float | None
    seed: int | None
    column: str
    matched: dict[int, int]
    kept: set[Any]


def _cap(work: Path) -> Cap | None:
    stats_path = work / out.BALANCE_STATS
    if not stats_path.is_file():
        return None
    stats = json.loads(stats_path.read_text())
    column = stats.get("key_column", "url")
    counts: dict[int, int] = {}
    if (work / out.BALANCE_COUNTS).is_file():
        table = pq.read_table(work / out.BALANCE_COUNTS, columns=["id", "matched"])
        counts = dict(zip(table.column("id").to_pylist(), table.column("matched").to_pylist()))
    kept = {row[column] for row in _parquet_rows(_folder_tables(work / out.BALANCED), (column,))}
    return Cap(stats.get("t"), stats.get("seed"), column, counts, kept)


def _coins(rows: list[dict[str, Any]], cap: Cap) -> list[list[float | None]]:
    """Each row's coin per query, recomputed as the stage tossed them (`clipformats.balancing`)."""
    ids = [row.get("query_ids") or [] for row in rows]
    if cap.seed is None:
        return [[None] * len(found) for found in ids]
    lengths = [len(found) for found in ids]
    hashes = np.repeat(key_hashes([str(row.get(cap.column)) for row in rows]), lengths)
    values = coins(hashes, np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int64), int(cap.seed))
    return [part.tolist() for part in np.split(values, np.cumsum(lengths)[:-1])]


def _matched_rows(work: Path) -> list[dict[str, Any]]:
    terms = _query_terms(work)
    cap = _cap(work)
    columns = tuple(dict.fromkeys((*out.MATCHED_COLUMNS, cap.column if cap else "url")))
    matched = _parquet_rows(_folder_tables(work / out.MATCHED), columns)
    tossed = _coins(matched, cap) if cap else [[None] * len(row.get("query_ids") or []) for row in matched]
    rows = []
    for row, row_coins in zip(matched, tossed):
        queries = []
        for query, coin in zip(row.get("query_ids") or [], row_coins):
            count = cap.matched.get(query) if cap else None
            chance = min(1.0, cap.t / count) if cap and cap.t is not None and count else None
            queries.append({"term": terms.get(query, f"#{query}"), "keep_chance": chance, "coin": coin})
        rows.append({"url": row.get("url"), "caption": row.get("caption"), "queries": queries,
                     "cap": None if cap is None else ("kept" if row.get(cap.column) in cap.kept else "dropped")})
    return rows


def _downloads(work: Path) -> dict[str, dict[str, Any]]:
    """url -> img2dataset's record of it (shard name, key, status, sizes)."""
    found = {}
    for path in _folder_tables(work / out.SHARDS):
        for row in _parquet_rows([path], out.DOWNLOAD_COLUMNS):
            row["shard"] = path.with_suffix(".tar").name
            found[row["url"]] = row
    return found


def _by_sample(path: Path, columns: tuple[str, ...]) -> dict[tuple[str, str], dict[str, Any]]:
    if not path.is_file():
        return {}
    return {(row["shard"], row["key"]): row for row in _parquet_rows([path], columns)}


def _decision(row: dict[str, Any]) -> str:
    if row.get("cap") == "dropped":
        return "cap"
    status = (row.get("download") or {}).get("status")
    if status is not None and status != out.DOWNLOAD_SUCCESS:
        return f"download: {status}"
    if row.get("filter") and not row["filter"]["kept"]:
        return f"filter: {row['filter']['reason']}"
    if row.get("dedup"):
        return "dedup"
    if row.get("decontamination"):
        return "decontaminate"
    return "kept"


def _attach_download(row: dict[str, Any], download: dict[str, Any] | None) -> None:
    if download is None:
        return
    success = download.get("status") == out.DOWNLOAD_SUCCESS
    row["download"] = {"status": download.get("status"), "error": download.get("error_message")}
    row.update({name: download.get(name) for name in ("width", "height", "original_width", "original_height")})
    if success:
        row["shard"], row["key"] = download["shard"], download["key"]
    row["caption"] = row.get("caption") or download.get("caption")


def read_dataset(work: Path) -> Dataset:
    """Every sample of `work` with its decisions; stages whose outputs are absent are left out."""
    rows = _matched_rows(work)
    downloads = _downloads(work)
    seen = {row["url"] for row in rows}
    rows += [{"url": url, "caption": None, "queries": [], "cap": None} for url in downloads if url not in seen]
    files = {"filter": (out.FILTER_ROWS, out.FILTER_COLUMNS), "dedup": (out.DEDUP_DROPS, out.DEDUP_COLUMNS),
             "decontamination": (out.DECONTAMINATION_DROPS, out.DECONTAMINATION_COLUMNS)}
    later = {stage: _by_sample(work / name, columns) for stage, (name, columns) in files.items()}
    for row in rows:
        _attach_download(row, downloads.get(row["url"]))
        for stage, decided in later.items():
            found = decided.get((row.get("shard"), row.get("key")))
            row[stage] = {k: v for k, v in found.items() if k not in ("shard", "key")} if found else None
        row["decision"] = _decision(row)
    present = {"match": (work / out.MATCHED).is_dir(), "balance": (work / out.BALANCE_STATS).is_file(),
               "download": bool(downloads), **{stage: (work / name).is_file() for stage, (name, _) in files.items()}}
    found = [name for name, there in present.items() if there]
    shards = {path.name: str(path) for path in sorted((work / out.SHARDS).glob("*.tar"))}
    return Dataset(rows, ShardImages(shards), found)
