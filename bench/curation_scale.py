"""Captions/s of `curation match` + `curation balance`: the local engine at 1 and 2 processes, Ray at 2 workers.

All three runs read the same caption shards (generated alt-text, as in bench/matching.py) with the same
500,000-query list, and must write the same balanced rows (asserted). Times are wall-clock seconds of the
whole stage (worker start, automaton build, reading, matching, writing, counting), since the work happens
in other processes; Ray is started once before its run and its start-up is reported on its own line.

    .venv/bin/python bench/curation_scale.py                          # 500k queries, 200k captions
    .venv/bin/python bench/curation_scale.py --captions 20000 --queries 50000   # quick look
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from curation.config import BalanceConfig, MatchConfig
from curation.stages.balance.balancing import run_balance
from curation.stages.match.matching import Matcher


def _sibling(name: str):
    """bench/<name>.py as a module (bench/ is not a package): its caption and query generators."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_inputs(folder: Path, captions: list[str], terms: list[str], shards: int) -> tuple[Path, Path]:
    """Caption shards (url, caption) and the query list in the format `curation queries` writes."""
    (folder / "captions").mkdir(parents=True)
    per_shard = -(-len(captions) // shards)
    for shard in range(shards):
        part = captions[shard * per_shard:(shard + 1) * per_shard]
        urls = [f"http://img.example/{shard}/{row}.jpg" for row in range(len(part))]
        pq.write_table(pa.table({"url": urls, "caption": part}), folder / "captions" / f"part-{shard:03d}.parquet")
    queries = folder / "queries.parquet"
    pq.write_table(pa.table({"id": pa.array(range(len(terms)), pa.int32()), "term": terms,
                             "source": ["bench"] * len(terms)}), queries)
    return folder / "captions", queries


def run_engine(folder: Path, name: str, engine: str, workers: int, queries: Path, captions: Path,
               t: int) -> dict[str, float]:
    from curation.stages.match.matching import run_match

    work = folder / name
    start = time.perf_counter()
    matched = run_match(MatchConfig(engine=engine, workers=workers), queries, [str(captions)], work / "matched")
    middle = time.perf_counter()
    run_balance(BalanceConfig(t=t, engine=engine, workers=workers), work / "matched", work / "balanced")
    end = time.perf_counter()
    return {"rows": matched["rows_in"], "match_s": middle - start, "balance_s": end - middle}


def balanced_rows(folder: Path) -> pa.Table:
    return pa.concat_tables(pq.read_table(p) for p in sorted((folder / "balanced").glob("*.parquet")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=500_000)
    parser.add_argument("--captions", type=int, default=200_000)
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--t", type=int, default=2_000, help="balancing threshold (small: the input is small)")
    args = parser.parse_args()

    matching = _sibling("matching")
    captions = matching.make_captions(args.captions)
    terms = matching.make_queries(args.queries, captions)
    start = time.perf_counter()
    Matcher(terms)
    build = time.perf_counter() - start
    folder = Path(tempfile.mkdtemp(prefix="curation_scale_"))
    try:
        caption_dir, queries = write_inputs(folder, captions, terms, args.shards)
        results = {"local engine, 1 process": run_engine(folder, "local1", "local", 1, queries, caption_dir, args.t),
                   "local engine, 2 processes": run_engine(folder, "local2", "local", 2, queries, caption_dir, args.t)}
        import ray

        start = time.perf_counter()
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.WARNING,
                 log_to_driver=False)
        ray_start = time.perf_counter() - start
        try:
            results["Ray engine, 2 workers (local Ray)"] = run_engine(folder, "ray2", "ray", 2, queries, caption_dir,
                                                                      args.t)
        finally:
            ray.shutdown()
        reference = balanced_rows(folder / "local1")
        for name in ("local2", "ray2"):
            assert balanced_rows(folder / name).equals(reference), f"{name}: balanced rows differ from local1"
    finally:
        shutil.rmtree(folder)
    print(f"{len(terms):,} queries, {args.captions:,} captions in {args.shards} shards, t = {args.t:,}; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; automaton build (one process) "
          f"{build:.1f} s; Ray start-up {ray_start:.1f} s (not counted below); balanced rows equal in all runs")
    print("\n| engine | match s | balance s | captions/s (match + balance) | × local, 1 process |")
    print("|---|---|---|---|---|")
    base = None
    for name, r in results.items():
        rate = r["rows"] / (r["match_s"] + r["balance_s"])
        base = base or rate
        print(f"| {name} | {r['match_s']:.1f} | {r['balance_s']:.1f} | {rate:,.0f} | {rate / base:.2f} |")


if __name__ == "__main__":
    main()
