"""Weighted mixing of training sources: the measured mix, open_clip's `a::b` form, exact resume, refusals."""

from __future__ import annotations

import collections
import math

import pytest
import torch

from clipmodule.data.datamodule import EpochLoader, ShardDataModule, ShardTrainDataset, TokenizingCollate
from clipmodule.data.mixing import drawn_per_source
from clipmodule.data.sources import mixture_shares, open_sources
from clipmodule.data.synthetic import write_synthetic_shards
from clipmodule.errors import ClipModuleError
from clipmodule.transforms import image_transform

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def two_sources(tmp_path_factory) -> tuple[str, str]:
    """A small source (2 shards of 12) and a large one (4 shards of 24): sizes 24 and 96."""
    root = tmp_path_factory.mktemp("mix")
    write_synthetic_shards(root / "small", 2, 12, image_size=16)
    write_synthetic_shards(root / "large", 4, 24, image_size=16, first_sample=1000)
    return str(root / "small"), str(root / "large")


def _loader(train_shards, *, batches, factors=None, workers=2, batch_size=8) -> EpochLoader:
    sources = open_sources(train_shards, factors)
    shares = mixture_shares(sources, [source.samples() for source in sources])
    dataset = ShardTrainDataset([], image_transform(16, train=True), batch_size=batch_size, batches_per_rank=batches,
                                shuffle_buffer=16, sources=sources, shares=shares)
    return EpochLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=TokenizingCollate())


def _source_of(key: str) -> str:
    return key.split(":", 1)[0]


def test_the_mix_of_an_epoch_matches_the_weights_not_the_sizes(two_sources):
    small, large = two_sources
    loader = _loader([{"shards": small, "weight": 3, "name": "small"}, {"shards": large, "weight": 1, "name": "large"}],
                     batches=120, workers=0)
    iterator = iter(loader)
    keys = [key for batch in iterator for key in batch["key"]]
    counts = collections.Counter(_source_of(key) for key in keys)
    n = len(keys)
    assert n == 960
    # Stated tolerance: each sample's source is an independent draw, so a share is within 4 binomial standard
    # deviations of its weight (fails by chance about once in 16,000 runs; the seed is fixed, so never here).
    for name, weight in (("small", 0.75), ("large", 0.25)):
        assert abs(counts[name] / n - weight) <= 4 * math.sqrt(weight * (1 - weight) / n), counts
    # the small source (24 samples) was read about 30 times over, each pass a new order: with replacement
    assert len({key for key in keys if key.startswith("small:")}) == 24
    assert drawn_per_source(iterator.state_dict()) == dict(counts)  # nothing corrupt: drawn == delivered


def test_open_clip_form_weighs_samples_by_factor_times_size(two_sources):
    small, large = two_sources
    sources = open_sources(f"{small}::{large}")
    assert mixture_shares(sources, [24, 96]) == [0.2, 0.8]  # no factors: every sample equally likely
    sources = open_sources(f"{small}::{large}", "4::1")
    assert mixture_shares(sources, [24, 96]) == [0.5, 0.5]  # open_clip weighs each shard by its factor
    loader = _loader(f"{small}::{large}", factors=[4, 1], batches=60, workers=0)
    keys = [key for batch in loader for key in batch["key"]]
    share = sum(key.startswith("source0:") for key in keys) / len(keys)
    assert abs(share - 0.5) <= 4 * math.sqrt(0.25 / len(keys))


def test_resume_mid_epoch_keeps_the_mix_and_every_sample(two_sources):
    small, large = two_sources
    spec = [{"shards": small, "weight": 0.4}, {"shards": large, "weight": 0.6}]
    batches = list(_loader(spec, batches=12))
    interrupted = _loader(spec, batches=12)
    iterator = iter(interrupted)
    for _ in range(5):
        next(iterator)
    resumed = _loader(spec, batches=12)
    resumed.load_state_dict(interrupted.state_dict())
    rest = list(resumed)
    assert [b["key"] for b in rest] == [b["key"] for b in batches[5:]]
    assert all(torch.equal(a["image"], b["image"]) for a, b in zip(rest, batches[5:]))
    assert {_source_of(key) for b in batches for key in b["key"]} == {"source0", "source1"}


def test_a_checkpoint_of_other_sources_is_refused(two_sources):
    small, large = two_sources
    saved = _loader([{"shards": small, "weight": 1, "name": "a"}, {"shards": large, "weight": 1, "name": "b"}],
                    batches=10, workers=0)
    iterator = iter(saved)
    next(iterator)
    other = _loader([{"shards": small, "weight": 1, "name": "a"}, {"shards": large, "weight": 1, "name": "c"}],
                    batches=10, workers=0)
    other.load_state_dict(saved.state_dict())
    with pytest.raises(ClipModuleError, match=r"sources \['a', 'b'\].*now names \['a', 'c'\]"):
        next(iter(other))


def test_the_datamodule_sizes_an_epoch_by_all_sources_and_refuses_bad_weights(two_sources):
    small, large = two_sources
    module = ShardDataModule(train_shards=f"{small}::{large}", batch_size=8, num_workers=2)
    assert len(module.train_dataset()) == 120  # 24 + 96 samples
    for spec, factors, message in (
        ([{"shards": small, "weight": 1}, {"shards": large}], None, "give every source a weight, or none"),
        ([{"shards": small, "weight": -1}, {"shards": large, "weight": 1}], None, "weight must be a positive"),
        (f"{small}::{large}", "1::2::3", "gives 3 factors for 2 training sources"),
        (small, "1::2", "needs several sources"),
        ([{"shards": small, "name": "x"}, {"shards": large, "name": "x"}], None, "source names repeat"),
    ):
        with pytest.raises(ClipModuleError, match=message):
            ShardDataModule(train_shards=spec, upsampling_factors=factors, num_workers=2).train_dataset()


@pytest.mark.parametrize("spec", ["{small}::", "::{small}", "", [{"shards": ""}],
                                  [{"shards": "{small}"}, {"shards": []}], ["{small}", " "]])
def test_an_empty_source_is_refused_not_read_as_the_working_folder(two_sources, spec, tmp_path, monkeypatch):
    small, _ = two_sources
    write_synthetic_shards(tmp_path / "elsewhere", 1, 4, image_size=16)  # what '.' would have found
    (tmp_path / "pairs").mkdir()
    (tmp_path / "pairs" / "a.jpg").write_bytes(b"not read")
    monkeypatch.chdir(tmp_path)
    spec = spec.replace("{small}", small) if isinstance(spec, str) else [
        item.replace("{small}", small) if isinstance(item, str) else
        {"shards": item["shards"].replace("{small}", small) if isinstance(item["shards"], str) else item["shards"]}
        for item in spec]
    with pytest.raises(ClipModuleError, match=r"data.train_shards source 'source\d': empty shard spec"):
        ShardDataModule(train_shards=spec, num_workers=0).train_dataset()


@pytest.mark.parametrize(("rows", "max_unusable", "span"), [(4, 10_000, "a whole pass over"),
                                                             (40, 5, "5 samples in a row from")])
def test_a_dead_source_stops_training_with_one_line_naming_it(two_sources, tmp_path, rows, max_unusable, span):
    small, large = two_sources
    for number in range(rows):
        (tmp_path / f"{number}.jpg").write_bytes(b"not an image")
    dead = tmp_path / "dead.csv"
    dead.write_text("path,caption\n" + "".join(f"{number}.jpg,a caption\n" for number in range(rows)))
    sources = open_sources([{"shards": small, "weight": 1, "name": "small"}, {"shards": str(dead), "weight": 1,
                                                                            "name": "dead"}])
    dataset = ShardTrainDataset([], image_transform(16, train=True), batch_size=8, batches_per_rank=30,
                                shuffle_buffer=16, sources=sources, shares=[0.5, 0.5], max_unusable=max_unusable)
    loader = EpochLoader(dataset, batch_size=8, num_workers=0, collate_fn=TokenizingCollate())
    with pytest.raises(ClipModuleError, match=rf"^training source 'dead' gave no usable sample in {span} "
                                              r"the \d+ rows of .*dead.csv: every image missing or undecodable"):
        list(loader)
