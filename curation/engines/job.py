"""The interface between a stage and an engine: the job a stage describes, and what an engine hands back."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np


class ShardJob(Protocol):
    """One stage's work on one shard, and the heavy state it needs, built once per worker.

    `run` returns a JSON-ready dict; two keys mean something to every engine: `rows_in` (rows read, for
    the progress bar) and `counts` (the shard's sparse count vector, `(indices, values)`, summed over all
    tasks when the engine is given `count_size`). A job and its tasks are pickled to the workers: keep them
    small (paths, configs), and let `setup` load what is big (an automaton, a probability vector)."""

    description: str

    def setup(self) -> Any: ...

    def run(self, state: Any, task: Any) -> dict[str, Any]: ...


@dataclass
class JobOutcome:
    results: list[dict[str, Any]]
    """One per task (order not guaranteed), without their `counts`."""
    counts: np.ndarray | None
    """The sum of the tasks' count vectors (int64, `count_size` long), or None when none was asked for."""


def add_counts(total: np.ndarray, counts: tuple[Sequence[int], Sequence[int]]) -> np.ndarray:
    """Add one task's sparse `(indices, values)` counts into a dense vector (in place; returned)."""
    indices, values = counts
    np.add.at(total, np.asarray(indices, dtype=np.int64), np.asarray(values, dtype=np.int64))
    return total
