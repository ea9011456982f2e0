"""The shard reader: splitting, shuffling, exact resume, and skipping corrupt data."""

from __future__ import annotations

import collections
from pathlib import Path

import pytest
import torch

from clipformats.webdataset import content_hash
from clipmodule.data.datamodule import EpochLoader, ShardEvalDataset, ShardTrainDataset, TokenizingCollate, sum_counters
from clipmodule.data.shards import index_shard, shard_paths
from clipmodule.data.synthetic import write_synthetic_shards
from clipmodule.errors import ClipModuleError
from clipmodule.transforms import image_transform

SAMPLES_PER_SHARD = 24


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> list[str]:
    directory = tmp_path_factory.mktemp("shards")
    return [str(p) for p in write_synthetic_shards(directory, 4, SAMPLES_PER_SHARD, image_size=32)]


def _loader(paths, *, batches, workers=2, rank=0, world_size=1, buffer=16, batch_size=4, resample=False):
    dataset = ShardTrainDataset(paths, image_transform(32, train=True), batch_size=batch_size,
                                batches_per_rank=batches, rank=rank, world_size=world_size,
                                shuffle_buffer=buffer, resample=resample)
    return EpochLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=TokenizingCollate())


def _keys(loader) -> list[str]:
    return [key for batch in loader for key in batch["key"]]


def test_expand_shards_accepts_directories_and_brace_patterns_and_names_a_missing_shard(shards):
    directory = str(Path(shards[0]).parent)
    assert shard_paths(directory) == shards
    assert shard_paths(f"{directory}/{{00000..00003}}.tar") == shards
    with pytest.raises(ClipModuleError, match="6 of 10 shards are missing, the first: .*00004.tar"):
        shard_paths(f"{directory}/{{00000..00009}}.tar")


def test_an_epoch_is_every_sample_once_in_a_new_order_each_epoch(shards):
    loader = _loader(shards, batches=len(shards) * SAMPLES_PER_SHARD // 4)
    first, second = _keys(loader), _keys(loader)
    assert len(first) == len(set(first)) == 4 * SAMPLES_PER_SHARD
    assert sorted(first) == sorted(second) and first != second
    assert len(loader) == 4 * SAMPLES_PER_SHARD // 4


def test_ranks_read_disjoint_shards_and_the_same_number_of_batches(shards):
    per_rank = [_keys(_loader(shards, batches=10, rank=r, world_size=2, workers=1)) for r in range(2)]
    assert len(per_rank[0]) == len(per_rank[1]) == 40
    assert not set(per_rank[0]) & set(per_rank[1])


def test_resume_mid_epoch_continues_with_exactly_the_next_sample_and_augmentation(shards):
    straight = _loader(shards, batches=20)
    batches = list(straight)
    interrupted = _loader(shards, batches=20)
    iterator = iter(interrupted)
    for _ in range(7):
        next(iterator)
    state = interrupted.state_dict()
    resumed = _loader(shards, batches=20)
    resumed.load_state_dict(state)
    rest = list(resumed)
    assert [b["key"] for b in rest] == [b["key"] for b in batches[7:]]
    assert all(torch.equal(a["image"], b["image"]) for a, b in zip(rest, batches[7:]))
    assert resumed.epoch == 0  # the resumed pass keeps its epoch number


def test_resampling_draws_shards_with_replacement_for_the_requested_length(shards):
    keys = _keys(_loader(shards[:1], batches=12, workers=2, resample=True))
    assert len(keys) == 48 and len(set(keys)) <= SAMPLES_PER_SHARD


def test_corrupt_shard_and_truncated_image_are_skipped_and_counted(shards, tmp_path):
    garbage = tmp_path / "00004.tar"
    garbage.write_bytes(b"this is not a tar file" * 100)
    damaged = tmp_path / "00005.tar"
    _write_shard_with_truncated_image(Path(shards[0]), damaged)
    paths = [*shards, str(garbage), str(damaged)]
    assert index_shard(str(garbage)).error is not None
    readable = 5 * SAMPLES_PER_SHARD - 1
    loader = _loader(paths, batches=readable // 4, workers=1, buffer=4)
    iterator = iter(loader)
    keys = [key for batch in iterator for key in batch["key"]]
    counts = sum_counters(iterator.state_dict())
    assert counts == {"corrupt_samples": 1, "corrupt_shards": 1}
    assert len(keys) == len(set(keys)) == readable // 4 * 4
    assert not any(key.startswith("00004.tar") for key in keys)


def _write_shard_with_truncated_image(source: Path, target: Path) -> None:
    """A copy of `source` in which the first sample's jpg is cut to half its length."""
    import io
    import tarfile

    with tarfile.open(source) as tar_in, tarfile.open(target, "w") as tar_out:
        for number, member in enumerate(tar_in.getmembers()):
            data = tar_in.extractfile(member).read()
            if number == 0 and member.name.endswith(".jpg"):
                data = data[: len(data) // 2]
            member.size = len(data)
            tar_out.addfile(member, io.BytesIO(data))


def test_evaluation_reads_every_sample_exactly_once_over_ranks_and_workers(shards):
    seen = collections.Counter()
    for rank in range(2):
        dataset = ShardEvalDataset(shards, image_transform(32, train=False), rank=rank, world_size=2)
        loader = torch.utils.data.DataLoader(dataset, batch_size=5, num_workers=2, collate_fn=TokenizingCollate())
        for batch in loader:
            seen.update(batch["key"])
            assert (batch["label"] >= 0).all()
    assert len(seen) == 4 * SAMPLES_PER_SHARD and set(seen.values()) == {1}


def test_the_run_tag_equals_the_data_cards_content_hash(shards, tmp_path):
    from clipmodule.data.datamodule import ShardDataModule

    cards = pytest.importorskip("curation.cards")
    directory = Path(shards[0]).parent
    module = ShardDataModule(train_shards=str(directory))
    layout = cards.WorkLayout(tmp_path / "work")
    layout.shards.mkdir(parents=True)
    for shard in shards:
        (layout.shards / Path(shard).name).write_bytes(Path(shard).read_bytes())
    listed = cards.shard_list(layout.shards, {"data_files": [Path(p).name for p in shards]})
    assert module.shards_content_hash() == content_hash(listed)  # the card's listing, the contract's hash
    card = tmp_path / "mydata.json"
    card.write_text('{"name": "mydata", "content_hash": "abc123"}')
    (tmp_path / "mydata.md").write_text("# card")
    assert ShardDataModule(data_card=str(tmp_path / "mydata.md")).data_card_hash() == "abc123"
    with pytest.raises(ClipModuleError, match="nocard.json"):
        ShardDataModule(data_card=str(tmp_path / "nocard.json")).data_card_hash()


def test_the_loader_state_a_checkpoint_stores_does_not_grow_as_the_epoch_goes_on(shards):
    import pickle

    loader = _loader(shards, batches=24, workers=0, buffer=16)
    iterator = iter(loader)
    sizes = {}
    for step in range(20):
        next(iterator)
        if step in (1, 19):
            sizes[step] = len(pickle.dumps(loader.state_dict()))
    assert abs(sizes[19] - sizes[1]) < 64  # a few counters change; nothing accumulates per step
