"""The shard reader keeps open every shard its shuffle buffer still holds samples of: a shard's index is read
once per pass, however many shards the buffer spans (an LRU of 8 re-read them every few samples)."""

from __future__ import annotations

import collections

import pytest

import clipmodule.data.shards as shards_module
from clipmodule.data.shards import ShardStream, StreamPlan, shard_paths
from clipmodule.data.synthetic import write_synthetic_shards

SHARDS, PER_SHARD, BUFFER = 12, 20, 100  # the buffer spans ~15 shards: more than the cache's 8


@pytest.fixture(scope="module")
def paths(tmp_path_factory) -> list[str]:
    folder = tmp_path_factory.mktemp("shards")
    write_synthetic_shards(folder, SHARDS, PER_SHARD, image_size=8)
    return shard_paths(str(folder))


@pytest.fixture()
def opened(monkeypatch) -> collections.Counter:
    """How many times each shard was opened (its index read)."""
    counts: collections.Counter = collections.Counter()
    real = shards_module.open_shard

    def counting(path: str):
        counts[path] += 1
        return real(path)

    monkeypatch.setattr(shards_module, "open_shard", counting)
    return counts


def _stream(paths: list[str]) -> ShardStream:
    return ShardStream(paths, StreamPlan(len(paths), seed=0, epoch=0, worker=0, num_workers=1), BUFFER)


def _take(stream: ShardStream, count: int) -> list[str]:
    return [stream.read(stream.next_reference())[0] for _ in range(count)]


def test_each_shard_is_opened_once_per_pass_while_the_buffer_spans_many(paths, opened):
    stream = _stream(paths)
    first = _take(stream, SHARDS * PER_SHARD)
    assert sorted(first) == sorted(set(first)) and len(first) == SHARDS * PER_SHARD  # every sample, once
    assert max(len({name.split("/")[0] for name in first[i : i + BUFFER]}) for i in range(0, 200, 10)) > 8
    assert set(opened.values()) == {1} and len(opened) == SHARDS


def test_resume_holds_the_restored_buffer_and_reads_the_same_samples(paths, opened):
    unbroken = _take(_stream(paths), 150)
    stream = _stream(paths)
    _take(stream, 70)
    state = stream.state_dict()
    opened.clear()
    resumed = _stream(paths)
    resumed.load_state_dict(state)
    assert resumed.held == collections.Counter(shard for shard, _ in state["buffer"])
    assert _take(resumed, 80) == unbroken[70:]
    assert set(opened.values()) == {1}
