"""`curation download --retry-failed`: fetch again only the rows that failed for a reason that may pass (a timeout,
a refused or reset connection, a 5xx, 408 or 429), never a 404 or a refused URL, into shards numbered after the
download's; the stats then count each retried row once, by its latest outcome.

A round: the retriable failures of the latest shards (the download's, or the previous round's) are written to
`out/_retry/round-<n>.parquet`; img2dataset downloads them into `out` from the next free shard number (so the
sample keys stay unique); the round is noted in the stats before it starts, so a stopped round resumes.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from clipformats.files import atomic_path
from curation.errors import StageIncomplete

RETRY_FOLDER = "_retry"
_HTTP = re.compile(r"HTTP Error (\d{3})")
_NEVER = ("URL refused", "redirect refused", "X-Robots-Tag", "pixel limit", "over the limit")


def retriable(error: str | None) -> bool:
    """Whether a download failure may pass on another try: not a 4xx (but 408 and 429), not a refusal."""
    if not error:
        return False
    if any(text in error for text in _NEVER):
        return False
    if (code := _HTTP.search(error)) is not None:
        status = int(code.group(1))
        return status >= 500 or status in (408, 429)
    return True  # timeouts, refused or reset connections, DNS failures, bodies cut short


def _reason(error: str | None) -> str:
    return " ".join(str(error).split()) or "no reason given"


def failed_rows(out: Path, shards: list[str], columns: list[str]) -> tuple[pa.Table, Counter[str]]:
    """The rows of `shards` (img2dataset's per-shard parquet) that failed to download for a retriable reason,
    with `columns`, and their failure reasons counted."""
    pieces, reasons = [], Counter()
    for shard in shards:
        table = pq.read_table(Path(out) / f"{shard}.parquet")
        failed = pc.equal(table["status"], "failed_to_download")
        errors = table["error_message"].to_pylist()
        keep = pa.array([bool(f) and retriable(e) for f, e in zip(failed.to_pylist(), errors, strict=True)])
        reasons.update(_reason(e) for e, k in zip(errors, keep.to_pylist(), strict=True) if k)
        pieces.append(table.filter(keep).select(columns))
    return (pa.concat_tables(pieces) if pieces else pa.table({c: pa.array([], pa.string()) for c in columns}),
            reasons)


def plan_round(out: Path, stats: dict[str, Any], shard_ids: list[int], columns: list[str]) -> dict[str, Any] | None:
    """The next round (its input written under `out/_retry`), or None when no row may pass on another try."""
    rounds = stats.get("retry_rounds", [])
    latest = rounds[-1]["shards"] if rounds else [f"{i:05d}" for i in shard_ids]
    rows, reasons = failed_rows(out, latest, columns)
    if not rows.num_rows:
        return None
    number = len(rounds) + 1
    source = Path(out) / RETRY_FOLDER / f"round-{number}"
    source.mkdir(parents=True, exist_ok=True)
    with atomic_path(source / "rows.parquet") as tmp:
        pq.write_table(rows, tmp)
    return {"round": number, "first_shard": max(shard_ids, default=-1) + 1, "rows": rows.num_rows,
            "input": str(source), "replaced_reasons": dict(reasons)}


def round_shards(shards: list[dict[str, Any]], pending: dict[str, Any]) -> list[dict[str, Any]]:
    """The round's shards, checked complete (a stopped round: StageIncomplete)."""
    mine = [s for s in shards if int(s["shard"]) >= pending["first_shard"]]
    if sum(s["count"] for s in mine) != pending["rows"]:
        raise StageIncomplete(f"{pending['input']}: retry round {pending['round']} accounts for "
                              f"{sum(s['count'] for s in mine):,} of {pending['rows']:,} rows; run again to resume")
    return mine


def merged_totals(totals: dict[str, Any], rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """`aggregate_shard_stats` over every shard (the download's and the rounds'), with each retried row counted
    once: its earlier failure taken out, so successes + failures still equal the input rows."""
    retried = sum(r["rows"] for r in rounds)
    reasons = Counter(totals["failure_reasons"])
    for r in rounds:
        reasons.subtract(r["replaced_reasons"])
    count = totals["rows_accounted"] - retried
    reasons = Counter({k: v for k, v in reasons.items() if v > 0})
    return {**totals, "rows_accounted": count, "failed": count - totals["successes"],
            "success_rate": totals["successes"] / count if count else 0.0,
            "failed_to_download": totals["failed_to_download"] - retried,
            "failure_reasons": dict(reasons.most_common()), "retried_rows": retried}
