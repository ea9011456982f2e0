"""`--engine ray` for `curation match` and `curation balance`: the same per-shard work, scheduled by Ray Data.

A Ray Data dataset holds one row per caption shard. `map_batches` hands the rows to a pool of actors; each
actor builds its `Matcher` (or loads the keep probabilities) once, in its constructor, and then runs the
local engine's per-shard function, which writes the shard's output file itself (on a cluster: a shared
filesystem). The per-query counts are a distributed aggregation: every actor returns its shard's sparse
counts, and a Ray Data `groupby(query_id).sum()` adds them up. The coins are the same hashes of
(row key, query, seed), so the output files are identical, row for row, to the local engine's.

Ray is imported here only, so `curation --help` and the local engine never load it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.errors import CurationError


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
        last = (error.stderr.strip().splitlines() or ["no message"])[-1]
        raise CurationError(f"ray address {address!r}: cannot connect ({last})") from None


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
        raise CurationError(f"ray address {address!r}: cannot connect ({str(error).splitlines()[0]})") from None
    try:
        yield
    finally:
        ray.shutdown()


def _pool_size(workers: int, tasks: int) -> int:
    import ray

    cpus = int(ray.cluster_resources().get("CPU", 1))
    return max(1, min(workers or cpus, tasks))


def _sparse_counts(path: Path) -> tuple[list[int], list[int]]:
    """(query ids, rows containing each) of one output shard: what an actor sends back instead of the
    whole (500k-long) count vector."""
    ids = pq.read_table(path, columns=["query_ids"])["query_ids"].combine_chunks().flatten()
    unique, counts = np.unique(ids.to_numpy(zero_copy_only=False), return_counts=True)
    return unique.tolist(), counts.tolist()


def _shard_rows(results: list[dict[str, Any]]) -> pa.Table:
    ids, counts = zip(*(r.pop("counts") for r in results)) if results else ((), ())
    return pa.table({"result": [json.dumps(r) for r in results],
                     "query_id": pa.array(ids, pa.list_(pa.int64())), "n": pa.array(counts, pa.list_(pa.int64()))})


class MatchActor:
    """One per Ray worker: the automaton is built here once and used for every shard the worker gets."""

    def __init__(self, queries: str, config: Any):
        from curation.matching import Matcher
        from curation.queries import read_queries

        self.matcher = Matcher(read_queries(Path(queries))["term"].to_pylist())
        self.queries, self.config = Path(queries), config

    def __call__(self, batch: pa.Table) -> pa.Table:
        from curation.matching import MatchTask, match_shard

        results = []
        for source, output in zip(batch["source"].to_pylist(), batch["output"].to_pylist()):
            task = MatchTask(Path(source), Path(output), self.queries, self.config)
            done = task.output.exists()  # written by an earlier, interrupted run: only counted
            result = {"name": task.output.name, "created": False} if done else \
                {**match_shard(task, self.matcher), "created": True}
            results.append({**result, "counts": _sparse_counts(task.output)})
        return _shard_rows(results)


class BalanceActor:
    """One per Ray worker: the keep probabilities are read once (cached in the worker's process)."""

    def __init__(self, counts_file: str, config: Any):
        from curation.balancing import _probabilities

        stat = Path(counts_file).stat()
        _probabilities(counts_file, config.t, (stat.st_size, stat.st_mtime_ns))
        self.counts_file, self.config = Path(counts_file), config

    def __call__(self, batch: pa.Table) -> pa.Table:
        from curation.balancing import BalanceTask, balance_shard

        results = []
        for source, output in zip(batch["source"].to_pylist(), batch["output"].to_pylist()):
            task = BalanceTask(Path(source), Path(output), self.counts_file, self.config)
            done = task.output.exists()
            result = {"name": task.output.name, "created": False} if done else \
                {**balance_shard(task), "created": True}
            results.append({**result, "counts": _sparse_counts(task.output)})
        return _shard_rows(results)


def _query_counts(num_terms: int) -> Any:
    """A Ray Data aggregation: each block's sparse (query_id, n) lists are added into a dense count vector,
    and the partial vectors are summed (no shuffle by key: the vector is the accumulator)."""
    from ray.data.aggregate import AggregateFnV2

    class QueryCounts(AggregateFnV2):
        def __init__(self) -> None:
            super().__init__("query_counts", lambda: np.zeros(num_terms, np.int64), on=None, ignore_nulls=False)

        def aggregate_block(self, block: pa.Table) -> np.ndarray:
            ids = pc.list_flatten(block["query_id"]).to_numpy(zero_copy_only=False)
            weights = pc.list_flatten(block["n"]).to_numpy(zero_copy_only=False)
            return np.bincount(ids, weights=weights, minlength=num_terms).astype(np.int64)

        def combine(self, current: np.ndarray, new: np.ndarray) -> np.ndarray:
            return current + new

    return QueryCounts()


def run_on_ray(actor: type, arguments: dict[str, Any], tasks: list[Any], config: Any, num_terms: int,
               created: Callable[[Path], None]) -> np.ndarray:
    """Every task's shard through a pool of `actor(**arguments)`; `created(path)` for each output written now.
    Returns the per-query row counts of all the output shards (Ray Data's progress bars show the progress)."""
    import ray.data

    with ray_session(config.ray_address, config.workers), _user_errors():
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        # absolute: a worker's working directory is not the driver's
        rows = [{"source": str(task.source.resolve()), "output": str(task.output.resolve())} for task in tasks]
        new_outputs = [task.output for task in tasks if not task.output.exists()]
        shards = ray.data.from_items(rows).map_batches(
            actor, fn_constructor_kwargs=arguments, batch_size=1, batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=_pool_size(config.workers, len(tasks))))
        counts = shards.aggregate(_query_counts(num_terms))["query_counts"]  # one pass: shards, then counts
    for path in new_outputs:
        created(path)
    return counts


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
                raise CurationError(str(cause).splitlines()[0]) from None
            seen.add(id(cause))
            cause = getattr(cause, "cause", None) or cause.__cause__ or cause.__context__
        # Ray may re-raise a worker's error as its own type; the original is named in the message
        found = re.search(r"curation\.errors\.CurationError: (.*)", str(error))
        if found:
            raise CurationError(found.group(1).strip()) from None
        raise
