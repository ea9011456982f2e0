"""The local engine: a job's tasks over worker processes on this machine, with a progress bar.

Each worker process calls `job.setup()` once (the pool's initializer) and keeps that state for every task
it is given; with one worker everything runs in this process. Workers are spawned, not forked: the
progress bar runs a thread.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from typing import Any

import numpy as np

from curation.engines.job import JobOutcome, ShardJob, add_counts
from curation.engines.processes import die_with_parent
from curation.progress import progress_bar

# In a worker process only: its job and what `job.setup()` built, or the error it raised (a pool initializer
# can return neither, and an initializer that raises breaks the pool instead of reporting the error).
_worker_job: tuple[ShardJob, Any, BaseException | None] | None = None


def worker_count(requested: int, tasks: int) -> int:
    """0 means one per CPU core; never more workers than tasks."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(requested or cores, tasks))


def _set_up_worker(job: ShardJob, parent_pid: int) -> None:
    global _worker_job
    die_with_parent(parent_pid)  # a killed driver must not leave workers behind, idle or writing
    try:
        _worker_job = (job, job.setup(), None)
    except Exception as error:  # noqa: BLE001 - re-raised by the first task, where the driver sees it
        _worker_job = (job, None, error)


def _run_in_worker(task: Any) -> dict[str, Any]:
    job, state, error = _worker_job
    if error is not None:
        raise error
    return job.run(state, task)


def run_job(job: ShardJob, tasks: list[Any], workers: int, total_rows: int | None, count_size: int | None,
            on_result: Callable[[dict[str, Any]], None] | None) -> JobOutcome:
    """Every task through `job`; each result's `rows_in` advances the bar, its `counts` go into the sum."""
    outcome = JobOutcome([], np.zeros(count_size, np.int64) if count_size is not None else None)

    def collect(result: dict[str, Any]) -> int:
        counts = result.pop("counts", None)
        if outcome.counts is not None and counts is not None:
            add_counts(outcome.counts, counts)
        outcome.results.append(result)
        if on_result is not None:
            on_result(result)
        return int(result.get("rows_in", 0))

    with progress_bar(job.description, total_rows) as advance:
        if not tasks:
            return outcome
        if worker_count(workers, len(tasks)) == 1:
            state = job.setup()
            for task in tasks:
                advance(collect(job.run(state, task)))
            return outcome
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(worker_count(workers, len(tasks)), mp_context=context, initializer=_set_up_worker,
                                 initargs=(job, os.getpid())) as pool:
            pending = {pool.submit(_run_in_worker, task) for task in tasks}
            try:
                while pending:
                    done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                    for future in done:
                        advance(collect(future.result()))  # re-raises a worker's error here
            except BaseException:
                for future in pending:
                    future.cancel()
                raise
    return outcome
