"""Run one function over many shards in worker processes (the local stand-in for a cluster), with progress."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from curation.progress import progress_bar

ROWS_IN_KEY = b"curation.rows_in"


def worker_count(requested: int, tasks: int) -> int:
    """0 means one per CPU core; never more workers than tasks."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(requested or cores, tasks))


def run_shards(function: Callable[[Any], dict[str, Any]], tasks: list[Any], workers: int, description: str,
               total_rows: int | None) -> list[dict[str, Any]]:
    """`function(task)` for every task; each result's `rows_in` advances the bar. One worker runs in-process.

    Workers are spawned (not forked: the progress bar runs a thread) and each keeps what it loads
    (e.g. the matcher) for all the shards it is given.
    """
    results: list[dict[str, Any]] = []
    with progress_bar(description, total_rows) as advance:
        if worker_count(workers, len(tasks)) == 1:
            for task in tasks:
                results.append(function(task))
                advance(results[-1]["rows_in"])
            return results
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(worker_count(workers, len(tasks)), mp_context=context) as pool:
            pending = {pool.submit(function, task) for task in tasks}
            try:
                while pending:
                    done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                    for future in done:
                        results.append(future.result())  # re-raises a worker's error here
                        advance(results[-1]["rows_in"])
            except BaseException:
                for future in pending:
                    future.cancel()
                raise
    return results


def rows_in(path: Path) -> int:
    """Input rows a stage read to write this output shard (recorded in the shard's metadata)."""
    metadata = pq.read_metadata(path).metadata or {}
    return int(metadata.get(ROWS_IN_KEY, b"0"))


def input_rows(path: Path) -> int:
    return pq.ParquetFile(path).metadata.num_rows
