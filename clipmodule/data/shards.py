"""Reading img2dataset's webdataset shards with a position that can be saved and restored.

webdataset's own pipeline streams tar files and keeps no state: resuming it means re-reading everything
that was skipped. Here a shard is first *indexed* (its tar headers only: member names, offsets, sizes),
and a sample is a reference (shard id, sample number). The shuffle buffer holds references, not decoded
images, so the whole reader position — pass, shard cursor, sample cursor, buffer, RNG state — is a few
integers that a checkpoint stores and `load_state_dict` restores exactly. Samples are decoded only when
they leave the buffer, reading their bytes by offset.

Which tars a spec names and how members group into samples is the shard contract curation writes
(`clipformats.webdataset`): a member `dir/000123.jpg` belongs to sample key `dir/000123`, field `jpg`.
"""

from __future__ import annotations

import functools
import logging
import os
from collections import Counter, OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from clipformats.webdataset import ShardSpecError, expand_shards, recorded_samples
from clipmodule.data import remote
from clipmodule.data.tar_index import ShardIndex, cached_index
from clipmodule.errors import ClipModuleError

log = logging.getLogger(__name__)

__all__ = ["ShardCache", "ShardIndex", "ShardStream", "StreamPlan", "count_samples", "index_shard", "shard_paths"]


def shard_paths(spec: str | list[str]) -> list[str]:
    """The tars a shard spec names (the rule is the shard contract's `expand_shards`; `s3://`, `gs://`,
    `https://` URLs through fsspec), with a bad spec reported as a `ClipModuleError` (one line)."""
    items = [spec] if isinstance(spec, (str, os.PathLike)) else list(spec)
    try:
        if not any(remote.is_remote(str(item)) for item in items):
            return expand_shards(spec)
        return [path for item in items for path in
                (remote.expand_remote(str(item)) if remote.is_remote(str(item)) else expand_shards(item))]
    except ShardSpecError as error:
        raise ClipModuleError(str(error)) from None


def open_shard(path: str) -> tuple[BinaryIO | None, ShardIndex]:
    """The open file of a shard and its index (an index with `error` set and no file when it cannot be read).

    Indexes are cached on local disk (`clipmodule.data.tar_index`): a shard's headers are read once."""
    try:
        if remote.is_remote(path):
            handle, size, version = remote.open_remote(path)
            identity = path
        else:
            handle = open(path, "rb")  # noqa: SIM115 - kept open while the shard is in use
            stat = os.fstat(handle.fileno())
            identity, size, version = os.path.abspath(path), stat.st_size, f"mtime_ns={stat.st_mtime_ns}"
    except (OSError, ClipModuleError) as error:
        return None, ShardIndex(path, error=str(error))
    return handle, cached_index(path, identity, handle, size, version)


def index_shard(path: str) -> ShardIndex:
    """The index of one shard (its tar headers; member data is not read)."""
    handle, index = open_shard(path)
    if handle is not None:
        handle.close()
    return index


def count_samples(paths: list[str]) -> int:
    """Samples in the shards: from img2dataset's `<shard>_stats.json` ("successes") where present,
    else by indexing the tar headers."""
    total = 0
    for path in paths:
        recorded = remote.read_remote_stats(path) if remote.is_remote(path) else recorded_samples(path)
        total += recorded if recorded is not None else len(index_shard(path).keys)
    return total


class ShardCache:
    """Open shard files and their indexes, least recently used dropped first, except the shards in `held`.

    A shuffle buffer holds samples of many shards: a sample stays in it for about `buffer_size` draws, so the
    last ~ln(shard size) × buffer_size / shard size shards all still have samples there (about 20 for the
    demo's 2,000-sample buffer over 500-sample shards). An LRU of 8 dropped and re-parsed their indexes every
    few samples; `held` (shard → samples of it in the buffer, kept by `ShardStream`) pins them instead."""

    def __init__(self, paths: list[str], capacity: int = 8, held: Counter[int] | None = None):
        self.paths = paths
        self.capacity = capacity
        self.held: Counter[int] = Counter() if held is None else held
        self._entries: OrderedDict[int, tuple[ShardIndex, BinaryIO | None]] = OrderedDict()

    def index(self, shard: int) -> ShardIndex:
        return self._entry(shard)[0]

    def read(self, shard: int, sample: int) -> tuple[str, dict[str, bytes]]:
        """A sample's key and fields, read in one request: its members lie next to each other in the tar."""
        index, handle = self._entry(shard)
        if handle is None:
            raise OSError(f"cannot open {index.path}: {index.error}")
        start, end = index.spans[sample]
        handle.seek(start)
        data = handle.read(end - start)
        if len(data) < end - start:
            raise OSError(f"{index.path}: short read at byte {start}")
        fields = {ext: data[offset - start : offset - start + size]
                  for ext, (offset, size) in index.members[sample].items()}
        return index.keys[sample], fields

    def _entry(self, shard: int):
        if shard in self._entries:
            self._entries.move_to_end(shard)
            return self._entries[shard]
        handle, index = open_shard(self.paths[shard])
        self._entries[shard] = (index, handle)
        if len(self._entries) > self.capacity:
            self._evict()
        return self._entries[shard]

    def _evict(self) -> None:
        """Drop the least recently used shards nothing in the buffer refers to, down to `capacity` (never the
        one just opened)."""
        for shard in [shard for shard in list(self._entries)[:-1] if not self.held.get(shard)]:
            if len(self._entries) <= self.capacity:
                return
            _, handle = self._entries.pop(shard)
            if handle is not None:
                handle.close()

    def sample_name(self, shard: int, key: str) -> str:
        return f"{Path(self.paths[shard]).name}/{key}"

    def describe(self, shard: int, sample: int) -> str:
        """A sample that could not be read, for the skip warning (its key is unknown then)."""
        return f"{Path(self.paths[shard]).name} sample {sample}"

    def summary(self) -> str:
        return f"{len(self.paths)} shards (e.g. {self.paths[0]})"

    def close(self) -> None:
        for _, handle in self._entries.values():
            if handle is not None:
                handle.close()
        self._entries.clear()


@functools.lru_cache(maxsize=8)
def _pass_order(num_shards: int, seed: int, epoch: int, pass_index: int, stream: int) -> np.ndarray:
    """The permutation of all shards for one pass (drawn once: it was drawn for every sample)."""
    return np.random.default_rng(_entropy(stream, seed, epoch, pass_index, 0)).permutation(num_shards)


def _entropy(stream: int, *parts: int) -> list[int]:
    """An RNG key. The other sources of a mixture add their number, so that they draw independently of the
    first, and the first source (or the only one) keeps the orders an unmixed run always had."""
    return [*parts] if stream == 0 else [*parts, stream]


@dataclass(frozen=True)
class StreamPlan:
    """Which shards one worker reads, in which order. Identical on every rank for a given seed and epoch."""

    num_shards: int
    seed: int
    epoch: int
    worker: int
    """This worker's global number: rank * workers_per_rank + local worker id."""
    num_workers: int
    """Workers over all ranks."""
    resample: bool = False
    stream: int = 0
    """Which source of a weighted mixture (`clipmodule.data.mixing`) this plan belongs to."""

    def shard_at(self, pass_index: int, cursor: int) -> int | None:
        """The cursor-th shard of a pass, None past its end. Without resampling a pass is this worker's
        slice of one permutation of all shards; with resampling shards are drawn with replacement
        (open_clip's ResampledShards) and a pass never ends."""
        if self.resample:
            draw = np.random.default_rng(_entropy(self.stream, self.seed, self.epoch, self.worker, cursor, 1))
            return int(draw.integers(self.num_shards))
        order = _pass_order(self.num_shards, self.seed, self.epoch, pass_index, self.stream)
        mine = order[self.worker :: self.num_workers]
        return int(mine[cursor]) if cursor < len(mine) else None


class ShardStream:
    """One worker's iterator of sample references through a shuffle buffer, resumable from its state.

    Yields (shard id, sample number, key, raw fields). `state_dict()` after any sample, loaded into a
    fresh stream with the same plan, continues with exactly the next sample. `cache` reads the samples: the
    shards of `paths` by default; a table of local images (`clipmodule.data.tables`) reads one row per "shard"."""

    def __init__(self, paths: list[str], plan: StreamPlan, buffer_size: int, cache: ShardCache | None = None):
        self.paths = paths
        self.plan = plan
        self.buffer_size = max(1, buffer_size)
        self.held: Counter[int] = Counter()  # shard → its samples in the buffer (ShardCache keeps those open)
        self.cache = ShardCache(paths, held=self.held) if cache is None else cache
        self.pass_index = self.shard_cursor = self.sample_cursor = 0
        self.pass_done = False
        self.buffer: list[tuple[int, int]] = []
        self.rng = np.random.default_rng(_entropy(plan.stream, plan.seed, plan.epoch, plan.worker, 2))
        self.corrupt_shards = 0
        self._entered_shard = False

    def state_dict(self) -> dict:
        return {
            "epoch": self.plan.epoch,
            "pass_index": self.pass_index,
            "shard_cursor": self.shard_cursor,
            "sample_cursor": self.sample_cursor,
            "pass_done": self.pass_done,
            "buffer": [list(ref) for ref in self.buffer],
            "rng": self.rng.bit_generator.state,
            "corrupt_shards": self.corrupt_shards,
            "entered_shard": self._entered_shard,
        }

    def load_state_dict(self, state: dict) -> None:
        if state["epoch"] != self.plan.epoch:
            raise ClipModuleError(f"data state is for epoch {state['epoch']}, the loader is at {self.plan.epoch}")
        self.pass_index, self.shard_cursor = state["pass_index"], state["shard_cursor"]
        self.sample_cursor, self.pass_done = state["sample_cursor"], state["pass_done"]
        self.buffer = [tuple(ref) for ref in state["buffer"]]
        self.held.clear()
        self.held.update(shard for shard, _ in self.buffer)
        self.rng.bit_generator.state = state["rng"]
        self.corrupt_shards, self._entered_shard = state["corrupt_shards"], state["entered_shard"]

    def next_reference(self) -> tuple[int, int]:
        """The next (shard, sample) out of the shuffle buffer, refilling it from the shard sequence.

        At the end of a pass the buffer drains before the next pass (a new permutation) begins, so a
        sample repeats only once this worker has been through all of its shards."""
        fresh_pass = False
        while True:
            while len(self.buffer) < self.buffer_size and not self.pass_done:
                reference = self._read_reference()
                if reference is None:
                    self.pass_done = True
                else:
                    self.buffer.append(reference)
                    self.held[reference[0]] += 1
            if self.buffer:
                break
            if fresh_pass:  # a whole pass over this worker's shards gave nothing
                raise ClipModuleError(f"no readable samples in {self.cache.summary()}")
            self.pass_index, self.shard_cursor, self.sample_cursor = self.pass_index + 1, 0, 0
            self.pass_done, fresh_pass = False, True
        pick = int(self.rng.integers(len(self.buffer)))
        self.buffer[pick], self.buffer[-1] = self.buffer[-1], self.buffer[pick]
        reference = self.buffer.pop()
        self.held[reference[0]] -= 1
        if not self.held[reference[0]]:
            del self.held[reference[0]]
        return reference

    def note_usable(self) -> None:
        """The sample last drawn was usable: a lone stream's dead end is the training reader's own check (a
        mixture checks each source, `clipmodule.data.mixing`)."""

    def note_unselected(self) -> None:
        """The sample last drawn is not in the epoch's online-curation subset (the reader's own count)."""

    def read(self, reference: tuple[int, int]) -> tuple[str, dict[str, bytes]]:
        shard, sample = reference
        key, fields = self.cache.read(shard, sample)
        return self.cache.sample_name(shard, key), fields

    def describe(self, reference: tuple[int, int]) -> str:
        return self.cache.describe(*reference)

    def summary(self) -> str:
        return self.cache.summary()

    def _read_reference(self) -> tuple[int, int] | None:
        """The next sample in shard order; None at the end of this worker's slice of the pass."""
        barren = 0  # shards in a row with nothing to read: with resampling a pass never ends
        while barren <= 2 * self.plan.num_shards + 2:
            shard = self.plan.shard_at(self.pass_index, self.shard_cursor)
            if shard is None:
                return None
            index = self.cache.index(shard)
            if not self._entered_shard:
                self._entered_shard = True
                if index.error is not None:
                    self.corrupt_shards += 1
                    log.warning("corrupt shard %s (%s): using the %d samples before the damage",
                                index.path, index.error, len(index.keys))
            if self.sample_cursor < len(index.keys):
                self.sample_cursor += 1
                return shard, self.sample_cursor - 1
            self.shard_cursor, self.sample_cursor, self._entered_shard = self.shard_cursor + 1, 0, False
            barren += 1
        raise ClipModuleError(f"no readable samples in {self.cache.summary()}")
