"""The engine interface: a job's state is built once per worker, results and count vectors come back."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from curation.engines import run_job
from curation.errors import CurationError


@dataclass
class CountingJob:
    """Each task is a list of ids; its result counts them."""

    description: str = "count"
    setups: list[int] = field(default_factory=list)

    def setup(self) -> dict[str, int]:
        self.setups.append(1)
        return {"offset": 0}

    def run(self, state: dict[str, int], task: list[int]) -> dict[str, object]:
        ids, counts = np.unique(np.array(task, dtype=np.int64) + state["offset"], return_counts=True)
        return {"name": f"{len(task)} ids", "rows_in": len(task), "counts": (ids.tolist(), counts.tolist())}


def test_one_setup_per_worker_and_the_counts_summed_over_tasks():
    job, seen = CountingJob(), []
    outcome = run_job(job, [[0, 1, 1], [3], [1, 3, 3, 3]], workers=1, count_size=5, on_result=seen.append)
    assert job.setups == [1]
    assert outcome.counts.tolist() == [1, 3, 0, 4, 0] and outcome.counts.dtype == np.int64
    assert [r["name"] for r in outcome.results] == ["3 ids", "1 ids", "4 ids"] == [r["name"] for r in seen]
    assert all("counts" not in r for r in outcome.results)
    assert run_job(job, [[1]], workers=1).counts is None


def test_an_unknown_engine_is_one_line():
    with pytest.raises(CurationError, match="unknown engine 'spark'"):
        run_job(CountingJob(), [[1]], engine="spark")
