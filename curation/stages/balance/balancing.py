"""`curation balance`: at most `t` rows per query in expectation, decided row by row from hashes.

A row with queries Q is kept if, for any q in Q, its coin u(key, q, seed) < min(1, t / count[q]), where
count[q] is the number of matched rows containing q (the rule lives in `clipformats.balancing`, which a training
loader's online curation shares; t comes from `thresholds`). Each coin is a hash of (row key, query, seed) mapped
to [0, 1), so whether a row is kept depends on nothing but the row and the counts: not on shard order,
shard size or worker count. A query seen in c ≤ t rows keeps them all; rows of a single query with
c > t rows are kept about t times.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from clipformats.balancing import balance_mask, coins, keep_probabilities, key_hashes
from clipformats.curation_outputs import ROWS_IDENTITY, rows_identity
from clipformats.files import atomic_path
from curation.config import BalanceConfig
from curation.engines import run_job
from curation.errors import CurationError
from curation.formats.tables import ROWS_IN_KEY, input_rows, query_id_counts
from curation.progress import report
from curation.stage import Stage, file_signature, read_json, sidecar, stats_path
from curation.stages.balance.thresholds import thresholds

__all__ = ["balance_mask", "coins", "keep_probabilities", "key_hashes", "run_balance"]

@dataclass(frozen=True)
class BalanceTask:
    source: Path
    output: Path
    counts_file: Path
    config: BalanceConfig


def balance_shard(task: BalanceTask, probabilities: np.ndarray) -> dict[str, Any]:
    """Keep the rows of one matched shard whose coins come up; write them to `task.output`."""
    table = pq.read_table(task.source)
    key_column = task.config.key_column
    if key_column not in table.column_names or "query_ids" not in table.column_names:
        missing = key_column if key_column not in table.column_names else "query_ids"
        raise CurationError(f"{task.source}: no column {missing!r} (set balance.key_column; is this `match` output?)")
    keys = pc.cast(table[key_column], pa.string()).combine_chunks()
    if keys.null_count:
        raise CurationError(f"{task.source}: key column {key_column!r} has {keys.null_count} null values")
    query_ids = table["query_ids"].combine_chunks()
    if len(query_ids) and pc.max(query_ids.flatten()).as_py() >= len(probabilities):
        raise CurationError(f"{task.source}: query ids beyond the query list of {task.counts_file}")
    keep = balance_mask(key_hashes(keys.to_pylist()), query_ids, probabilities, task.config.seed)
    kept = table.filter(pa.array(keep))
    with atomic_path(task.output) as tmp, pq.ParquetWriter(tmp, kept.schema) as writer:
        writer.write_table(kept)
        writer.add_key_value_metadata({ROWS_IN_KEY: str(table.num_rows)})
    return {"name": task.output.name, "rows_in": table.num_rows, "rows_out": kept.num_rows}


@dataclass(frozen=True)
class BalanceJob:
    """`curation balance` for an engine: every worker gets the keep probabilities; a shard balanced by an earlier,
    interrupted run is only counted. Every result carries the rows per query it kept."""

    probabilities: np.ndarray
    description: str = "balance"

    def setup(self) -> np.ndarray:
        return self.probabilities

    def run(self, probabilities: np.ndarray, task: BalanceTask) -> dict[str, Any]:
        done = task.output.exists()
        result = {"name": task.output.name, "created": False} if done else \
            {**balance_shard(task, probabilities), "created": True}
        return {**result, "counts": query_id_counts(task.output)}


def run_balance(config: BalanceConfig, matched: Path, out: Path, overwrite: bool = False) -> dict[str, Any]:
    """Balance `matched/*.parquet` into `out/*.parquet`, with `<out>.counts.parquet` (matched vs kept per query)."""
    matched, out = Path(matched), Path(out)
    match_stats = read_json(stats_path(matched), "match stats (run `curation match` first)")
    if match_stats.get("stage") != "match":
        raise CurationError(f"{matched}: made by `curation {match_stats.get('stage', '?')}`, not `curation match`; "
                            f"give --input the output of `curation match`")
    counts_file = Path(match_stats.get("counts_file", sidecar(matched, ".counts.parquet")))
    if not match_stats.get("finished") or not counts_file.is_file():
        raise CurationError(f"{matched}: `curation match` has not finished there")
    sources = [matched / shard["name"] for shard in match_stats["shards"]]
    settings = {"t": config.t, "seed": config.seed, "key_column": config.key_column,
                **({"tail_proportion": config.tail_proportion} if config.tail_proportion is not None else {}),
                **({"per_language": True} if config.per_language else {})}
    fingerprint = {"config": settings, "inputs": file_signature([*sources, counts_file])}
    out_counts = sidecar(out, ".counts.parquet")
    stage = Stage("balance", out, fingerprint, overwrite, extra_outputs=(out_counts,),
                  inputs=(matched, stats_path(matched), counts_file))
    if (done := stage.finished()) is not None:
        report(f"balance: up to date ({done['rows_out']:,} of {done['rows_in']:,} rows kept in {out})")
        return done
    with stage.running():
        out.mkdir(parents=True, exist_ok=True)
        tasks = [BalanceTask(src, out / src.name, counts_file, config) for src in sources]
        table = pq.read_table(counts_file)
        chosen = thresholds(config, table, str(counts_file))
        total = sum(input_rows(task.source) for task in tasks if not task.output.exists())
        job = BalanceJob(chosen.probabilities(table["matched"].to_numpy()), f"balance (t={chosen.t:,})")
        kept = run_job(job, tasks, engine=config.engine, workers=config.workers, ray_address=config.ray_address,
                       total_rows=total, count_size=table.num_rows, on_result=stage.record_output).counts
        table = table.append_column("kept", pa.array(kept))
        with atomic_path(out_counts) as tmp:
            pq.write_table(table, tmp)
        stats = stage.finish({**_balance_stats(config, tasks, table, out_counts), **chosen.stats(),
                              "queries_capped": int((table["matched"].to_numpy() > chosen.per_query).sum()),
                              ROWS_IDENTITY: rows_identity([task.output for task in tasks])})
    report(f"balance: kept {stats['rows_out']:,} of {stats['rows_in']:,} rows (t={stats['t']:,}); "
           f"{stats['queries_capped']:,} queries over t → {out}")
    return stats


def _balance_stats(config: BalanceConfig, tasks: list[BalanceTask], counts: pa.Table,
                   counts_file: Path) -> dict[str, Any]:
    rows_in = sum(input_rows(task.source) for task in tasks)
    rows_out = sum(input_rows(task.output) for task in tasks)
    matched = counts["matched"].to_numpy()
    return {"seed": config.seed, "key_column": config.key_column, "counts_file": str(counts_file),
            "rows_in": rows_in, "rows_out": rows_out, "keep_rate": rows_out / rows_in if rows_in else 0.0,
            "queries_matched": int((matched > 0).sum()), **_rows_by_language(tasks),
            "shards": [{"name": task.output.name, "rows": input_rows(task.output)} for task in tasks]}


def _rows_by_language(tasks: list[BalanceTask]) -> dict[str, Any]:
    """Worldwide matching's rows per language, before and after balancing (none without a `lang` column)."""
    before: Counter[str] = Counter()
    after: Counter[str] = Counter()
    for task in tasks:
        if "lang" not in pq.read_schema(task.source).names:
            return {}
        before.update(pq.read_table(task.source, columns=["lang"])["lang"].to_pylist())
        after.update(pq.read_table(task.output, columns=["lang"])["lang"].to_pylist())
    return {"rows_by_language": {lang: {"matched": n, "kept": after.get(lang, 0)} for lang, n in before.most_common()}}
