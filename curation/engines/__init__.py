"""Where a stage's per-shard work runs: worker processes here (`local`) or a Ray cluster (`ray`).

A stage describes its work as a `ShardJob` and hands it to `run_job` with its tasks; it never knows which
engine runs them, and the engines never know which stage they run. The engine is chosen by name here,
the only place that does: Ray is imported only for `engine="ray"`, so `curation --help` and the local
engine never load it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from curation.engines import local
from curation.engines.job import JobOutcome, ShardJob
from curation.errors import CurationError

ENGINES = ("local", "ray")
__all__ = ["ENGINES", "JobOutcome", "ShardJob", "run_job"]


def run_job(job: ShardJob, tasks: Sequence[Any], *, engine: str = "local", workers: int = 0,
            ray_address: str | None = None, total_rows: int | None = None, count_size: int | None = None,
            on_result: Callable[[dict[str, Any]], None] | None = None) -> JobOutcome:
    """`job.run(state, task)` for every task on the named engine; `on_result(result)` for each result (as it
    arrives locally; after the run on Ray), so a stage can record the files a run wrote."""
    if engine == "local":
        return local.run_job(job, list(tasks), workers, total_rows, count_size, on_result)
    if engine == "ray":
        from curation.engines import ray  # lazily: Ray takes seconds to import and is an optional extra

        return ray.run_job(job, list(tasks), workers, ray_address, count_size, on_result)
    raise CurationError(f"unknown engine {engine!r} (expected one of {', '.join(ENGINES)})")
