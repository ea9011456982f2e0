"""A weighted mixture of training sources, drawn sample by sample.

Each worker keeps one shard stream per source (its own shard order, shuffle buffer and passes) and picks the
source of every sample at random with the sources' shares: sampling with replacement, so a small source with a
large share repeats (its stream starts its next pass) while a large one is only partly read in an epoch.
Drawing per sample rather than per shard (open_clip draws whole shards) keeps the mix of an epoch of n samples
within the binomial spread, sqrt(share x (1 - share) / n), whatever the shard sizes.

Under online curation (`data.curation`) a sample left out of the epoch's subset is replaced by the next sample
of the same source, so the shares hold for the samples training sees (a source whose rows curation keeps less
often is read further), not for the draws; `drawn` counts every draw, `used` the usable samples delivered.

A source that gives nothing usable (every image missing or undecodable, every caption empty) would otherwise
leave the others to train on, silently: each source is held to the rule the whole stream is held to
(`data.max_unusable_samples`), so a source that goes through a whole pass of its shards (this worker's part of
them), or `max_unusable` draws in a row, without a usable sample stops training with one line naming it.

The state is the draw generator's and every source stream's: a few integers per source, restored exactly.
"""

from __future__ import annotations

import bisect
from typing import Any

import numpy as np

from clipmodule.data.shards import ShardStream
from clipmodule.errors import ClipModuleError


class MixedStream:
    """The `ShardStream` interface over several sources. References carry a global shard number: source i's
    shards follow those of sources 0..i-1, so augmentation seeds (seed, epoch, shard, sample) stay distinct."""

    def __init__(self, streams: list[ShardStream], shares: list[float], names: list[str], seed: int, epoch: int,
                 worker: int, max_unusable: int = 10_000):
        self.streams, self.names = streams, names
        sizes = [stream.plan.num_shards for stream in streams]
        self.offsets = [sum(sizes[:i]) for i in range(len(sizes))]
        cumulative = np.cumsum(np.asarray(shares, dtype=np.float64))
        self.cumulative = cumulative / cumulative[-1]
        self.cumulative[-1] = 1.0  # draws lie in [0, 1): the last source takes everything above the others
        self.rng = np.random.default_rng([seed, epoch, worker, 3])
        self.drawn = [0] * len(streams)
        """Samples taken from each source this epoch, corrupt ones included: the measured mix."""
        self.max_unusable = max_unusable
        self.since_usable = [0] * len(streams)
        """Samples drawn from each source since its last usable one (`note_usable`)."""
        self.good_pass = [-1] * len(streams)
        """Each source stream's pass at its last usable sample (-1: none yet)."""
        self.left_out = [0] * len(streams)
        """Samples of each source online curation left out since its last usable one (not counted as unusable)."""
        self.used = [0] * len(streams)
        """Usable samples delivered from each source this epoch: the mix training sees."""
        self._last, self._redraw = 0, False

    @property
    def pass_index(self) -> int:
        """The pass every source has reached (a whole pass without a usable sample needs all of them)."""
        return min(stream.pass_index for stream in self.streams)

    def next_reference(self) -> tuple[int, int]:
        # a sample online curation left out is replaced from its own source: the shares hold for selected samples
        source = self._last if self._redraw else int(np.searchsorted(self.cumulative, self.rng.random(), side="right"))
        self._redraw = False
        shard, sample = self.streams[source].next_reference()
        self._check_alive(source)
        self.drawn[source] += 1
        self.since_usable[source] += 1
        self._last = source
        return self.offsets[source] + shard, sample

    def note_usable(self) -> None:
        """The sample last drawn was usable (called by the training reader once it decoded)."""
        self.since_usable[self._last] = self.left_out[self._last] = 0
        self.good_pass[self._last] = self.streams[self._last].pass_index
        self.used[self._last] += 1

    def note_unselected(self) -> None:
        """The sample last drawn is not in this epoch's online-curation subset: not an unusable sample."""
        self.since_usable[self._last] -= 1
        self.left_out[self._last] += 1
        self._redraw = True

    def _check_alive(self, source: int) -> None:
        """Stops on a source whose draws since its last usable sample cover a whole pass of its stream (the
        stream drains a pass before starting the next) or `max_unusable` unusable samples (online curation's
        left-out samples are not unusable)."""
        stream, whole_pass = self.streams[source], self.streams[source].pass_index >= self.good_pass[source] + 2
        if whole_pass or self.since_usable[source] >= self.max_unusable:
            span = "a whole pass over" if whole_pass else f"{self.since_usable[source]} samples in a row from"
            name, left_out = self.names[source], self.left_out[source]
            if whole_pass and left_out and not self.since_usable[source]:
                raise ClipModuleError(f"training source {name!r}: online curation (data.curation) selected none of "
                                      f"its samples in a whole pass over {stream.summary()}")
            besides = f" ({left_out} more left out by online curation)" if left_out else ""
            raise ClipModuleError(f"training source {name!r} gave no usable sample in {span} "
                                  f"{stream.summary()}: every image missing or undecodable, or caption empty or "
                                  f"missing{besides}; fix it or remove it from data.train_shards")

    def _local(self, reference: tuple[int, int]) -> tuple[int, tuple[int, int]]:
        shard, sample = reference
        source = bisect.bisect_right(self.offsets, shard) - 1
        return source, (shard - self.offsets[source], sample)

    def read(self, reference: tuple[int, int]) -> tuple[str, dict[str, bytes]]:
        source, local = self._local(reference)
        key, fields = self.streams[source].read(local)
        return f"{self.names[source]}:{key}", fields

    def describe(self, reference: tuple[int, int]) -> str:
        source, local = self._local(reference)
        return f"{self.names[source]}:{self.streams[source].describe(local)}"

    def summary(self) -> str:
        return f"{len(self.streams)} sources ({'; '.join(s.summary() for s in self.streams)})"

    def state_dict(self) -> dict[str, Any]:
        return {"sources": [stream.state_dict() for stream in self.streams], "rng": self.rng.bit_generator.state,
                "drawn": list(self.drawn), "names": list(self.names), "since_usable": list(self.since_usable),
                "good_pass": list(self.good_pass), "last": self._last, "left_out": list(self.left_out),
                "used": list(self.used), "redraw": self._redraw}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("names") != self.names:
            raise ClipModuleError(f"the checkpoint's data position is for the sources {state.get('names')}, "
                                  f"data.train_shards now names {self.names}: resume with the data it was saved with")
        for stream, stream_state in zip(self.streams, state["sources"]):
            stream.load_state_dict(stream_state)
        self.rng.bit_generator.state = state["rng"]
        self.drawn = list(state["drawn"])
        # absent from checkpoints of earlier versions: every source counts as alive from here
        self.since_usable = list(state.get("since_usable", [0] * len(self.streams)))
        self.good_pass = list(state.get("good_pass", [stream.pass_index for stream in self.streams]))
        self._last = state.get("last", 0)
        self.left_out = list(state.get("left_out", [0] * len(self.streams)))
        self.used = list(state.get("used", [0] * len(self.streams)))
        self._redraw = bool(state.get("redraw", False))


def drawn_per_source(state: Any, counted: str = "drawn") -> dict[str, int]:
    """Samples drawn from each named source, summed over the workers whose (nested) loader state is given
    (`counted="used"`: the usable samples delivered, whose mix follows the shares under online curation too)."""
    totals: dict[str, int] = {}
    stack = [state]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if isinstance(item.get("drawn"), list) and isinstance(item.get("names"), list):
                for name, count in zip(item["names"], item.get(counted, [])):
                    totals[name] = totals.get(name, 0) + int(count)
                continue
            stack.extend(value for value in item.values() if isinstance(value, (dict, list)))
        elif isinstance(item, list):
            stack.extend(value for value in item if isinstance(value, (dict, list)))
    return totals
