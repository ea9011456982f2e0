"""The Ray engine (`--engine ray`): a stage's job over its tasks, scheduled by Ray Data.

A Ray Data dataset holds one row per task (the pickled task). `map_batches` hands the rows to a pool of
actors; each actor calls `job.setup()` once, in its constructor (the `Matcher`, the keep probabilities),
and then `job.run` for each of its tasks, which writes the task's output file itself (on a cluster: a shared
filesystem). The count vectors are a distributed aggregation: every actor returns its task's sparse counts,
and a Ray Data aggregation adds them up. The job is the local engine's, so the output files are identical,
row for row, to the local engine's.

Only `curation.engines.run_job` imports this module, for engine "ray": `curation --help` and the local
engine never load Ray.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import pickle
import re
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.engines.job import JobOutcome, ShardJob
from curation.errors import CurationError, one_line


def _reachable(address: str) -> None:
    """A one-line error now, instead of Ray's retries, when nothing listens at host:port."""
    host_port = address.split("://", 1)[-1]
    host, _, port = host_port.rpartition(":")
    if not host or not port.isdigit():
        raise CurationError(f"ray address {address!r}: expected host:port (or ray://host:port, or 'auto')")
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
    except OSError as error:
        raise CurationError(f"ray address {address!r}: no Ray cluster reachable there ({error.strerror or error})"
                            ) from None


PROBE_SECONDS = 60


def _probe(address: str) -> None:
    """Connect once in a child process with a deadline: `ray.init` waits without end on a port held by
    something that is not Ray, and a child can be killed where a thread could not (costs one connection)."""
    code = (f"import logging, ray; ray.init(address={address!r}, logging_level=logging.ERROR, "
            "log_to_driver=False); ray.shutdown()")
    try:
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=PROBE_SECONDS,
                       check=True, env={**os.environ, "RAY_BACKEND_LOG_LEVEL": "fatal"})
    except subprocess.TimeoutExpired:
        raise CurationError(f"ray address {address!r}: something listens there, but no Ray cluster answered "
                            f"within {PROBE_SECONDS} s") from None
    except subprocess.CalledProcessError as error:
        raise CurationError(f"ray address {address!r}: cannot connect ({one_line(error.stderr)})") from None


@contextlib.contextmanager
def ray_session(address: str | None, workers: int) -> Iterator[None]:
    """Use the running Ray (a test's, a notebook's), else connect to `address`, else start a local one.
    Only a Ray started or connected here is shut down here."""
    import ray

    if ray.is_initialized():
        yield
        return
    if address and address != "auto":
        _reachable(address)
        _probe(address)
    options: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
    if not address:
        cores = len(os.sched_getaffinity(0))
        options.update(num_cpus=workers or cores, include_dashboard=False)
    try:
        ray.init(address=address or "local", **options)  # "local": a new one, even if `ray start` ran here
    except (ConnectionError, RuntimeError) as error:
        raise CurationError(f"ray address {address!r}: cannot connect ({one_line(error)})") from None
    try:
        yield
    finally:
        ray.shutdown()


def _pool_size(workers: int, tasks: int) -> int:
    import ray

    cpus = int(ray.cluster_resources().get("CPU", 1))
    return max(1, min(workers or cpus, tasks))


def _absolute(item: Any) -> Any:
    """`item` with its top-level path fields made absolute: a Ray worker's working directory is not the driver's."""
    if not dataclasses.is_dataclass(item) or isinstance(item, type):
        return item
    paths = {f.name: getattr(item, f.name).resolve() for f in dataclasses.fields(item)
             if isinstance(getattr(item, f.name), Path)}
    return dataclasses.replace(item, **paths) if paths else item


class JobActor:
    """One per Ray worker: `job.setup()` runs here once, and its state serves every shard the worker gets."""

    def __init__(self, job: ShardJob):
        self.job, self.state = job, job.setup()

    def __call__(self, batch: pa.Table) -> pa.Table:
        results = [self.job.run(self.state, pickle.loads(task)) for task in batch["task"].to_pylist()]
        ids, counts = zip(*(r.pop("counts", ((), ())) for r in results)) if results else ((), ())
        return pa.table({"result": [json.dumps(r, default=str) for r in results],
                         "query_id": pa.array(ids, pa.list_(pa.int64())), "n": pa.array(counts, pa.list_(pa.int64()))})


def _summed_counts(size: int) -> Any:
    """A Ray Data aggregation: each block's sparse (query_id, n) lists are added into a dense count vector,
    and the partial vectors are summed (no shuffle by key: the vector is the accumulator)."""
    from ray.data.aggregate import AggregateFnV2

    class SummedCounts(AggregateFnV2):
        def __init__(self) -> None:
            super().__init__("counts", lambda: np.zeros(size, np.int64), on=None, ignore_nulls=False)

        def aggregate_block(self, block: pa.Table) -> np.ndarray:
            ids = pc.list_flatten(block["query_id"]).to_numpy(zero_copy_only=False)
            weights = pc.list_flatten(block["n"]).to_numpy(zero_copy_only=False)
            return np.bincount(ids, weights=weights, minlength=size).astype(np.int64)

        def combine(self, current: np.ndarray, new: np.ndarray) -> np.ndarray:
            return current + new

    return SummedCounts()


def run_job(job: ShardJob, tasks: list[Any], workers: int, address: str | None, count_size: int | None,
            on_result: Callable[[dict[str, Any]], None] | None) -> JobOutcome:
    """Every task through a pool of `JobActor(job)`; the tasks' counts summed by a Ray Data aggregation.
    Ray Data's progress bars show the progress."""
    import ray.data

    with ray_session(address, workers), _user_errors():
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        if not tasks:
            return JobOutcome([], np.zeros(count_size, np.int64) if count_size is not None else None)
        rows = [{"task": pickle.dumps(_absolute(task))} for task in tasks]
        shards = ray.data.from_items(rows).map_batches(
            JobActor, fn_constructor_kwargs={"job": _absolute(job)}, batch_size=1, batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=_pool_size(workers, len(tasks)))).materialize()
        counts = shards.aggregate(_summed_counts(count_size))["counts"] if count_size is not None else None
        results = [json.loads(row["result"]) for row in shards.select_columns(["result"]).take_all()]
    for result in results:
        if on_result is not None:
            on_result(result)
    return JobOutcome(results, counts)


@contextlib.contextmanager
def _user_errors() -> Iterator[None]:
    """A worker's CurationError (bad input) arrives wrapped in Ray's exceptions: unwrap it."""
    try:
        yield
    except CurationError:
        raise
    except Exception as error:
        seen, cause = set(), error
        while cause is not None and id(cause) not in seen:
            if isinstance(cause, CurationError):
                raise CurationError(one_line(cause)) from None
            seen.add(id(cause))
            cause = getattr(cause, "cause", None) or cause.__cause__ or cause.__context__
        # Ray may re-raise a worker's error as its own type; the original is named in the message
        found = re.search(r"curation\.errors\.CurationError: (.*)", str(error))
        if found:
            raise CurationError(found.group(1).strip()) from None
        raise
