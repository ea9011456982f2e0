"""Online curation (`data.curation`): each epoch's balanced subset drawn in the loader from matched shards is the
subset `curation balance` keeps with that epoch's seed; a fresh draw per epoch; an exact resume mid-epoch."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from clipmodule.data.datamodule import EpochLoader, ShardDataModule, ShardTrainDataset, TokenizingCollate
from clipmodule.data.online_curation import EpochSelection, OnlineCuration
from clipmodule.errors import ClipModuleError
from clipmodule.transforms import image_transform
from curation.config import BalanceConfig
from curation.stages.balance.balancing import run_balance
from tests.curation.test_balancing import write_matched

T, SEED = 60, 11


def _jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 30)).save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """A finished `match` output (1,200 rows over 3 queries, 80/15/5 %) and the same rows as 4 tar shards,
    downloaded as `save_columns: [query_ids]` stores them: the json holds url and query_ids."""
    root = tmp_path_factory.mktemp("pool")
    write_matched(root / "matched", shards=2)
    rows = pq.read_table(root / "matched").to_pylist()
    image, urls = _jpeg(), {}
    (root / "shards").mkdir()
    for number, part in enumerate(np.array_split(np.arange(len(rows)), 4)):
        with tarfile.open(root / "shards" / f"{number:05d}.tar", "w") as tar:
            for i in part:
                key, row = f"{i:09d}", rows[i]
                urls[key] = row["url"]
                meta = json.dumps({"url": row["url"], "caption": f"photo {i}", "query_ids": row["query_ids"]})
                for suffix, payload in ((".jpg", image), (".txt", f"photo {i}".encode()), (".json", meta.encode())):
                    info = tarfile.TarInfo(key + suffix)
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
    return root, urls


def selected(root, urls, selection, epoch) -> set[str]:
    chosen = set()
    for path in sorted((root / "shards").glob("*.tar")):
        with tarfile.open(path) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".json"):
                    key = member.name[:-5]
                    if selection.keep(key, {"json": tar.extractfile(member).read()}, epoch):
                        chosen.add(urls[key])
    return chosen


def test_each_epoch_draws_what_balance_keeps_with_that_epoch_s_seed(pool, tmp_path):
    root, urls = pool
    selection = EpochSelection(OnlineCuration(counts=str(root / "matched.counts.parquet"), t=T, seed=SEED))
    draws = []
    for epoch in (0, 1):
        run_balance(BalanceConfig(t=T, seed=SEED + epoch, workers=1), root / "matched", tmp_path / f"balanced{epoch}")
        balanced = set(pq.read_table(tmp_path / f"balanced{epoch}")["url"].to_pylist())
        draws.append(selected(root, urls, selection, epoch))
        assert draws[-1] == balanced
    assert len(draws[0] & draws[1]) < 0.5 * len(draws[0])  # every query is over t here: a fresh draw each epoch


def loader(root, selection, batches=10, workers=1):
    dataset = ShardTrainDataset([str(p) for p in sorted((root / "shards").glob("*.tar"))],
                                image_transform(32, train=True), batch_size=4, batches_per_rank=batches,
                                shuffle_buffer=16, seed=3, selection=selection)
    return EpochLoader(dataset, batch_size=4, num_workers=workers, collate_fn=TokenizingCollate())


def test_the_loader_yields_only_the_epoch_s_subset_and_resumes_exactly(pool):
    root, urls = pool
    selection = EpochSelection(OnlineCuration(counts=str(root / "matched.counts.parquet"), t=T, seed=SEED))
    straight = loader(root, selection)
    epochs = [[key for batch in straight for key in batch["key"]] for _ in range(2)]
    for epoch, keys in enumerate(epochs):
        assert len(keys) == 40 and {urls[k.split("/")[-1]] for k in keys} <= selected(root, urls, selection, epoch)
    interrupted = loader(root, selection)
    iterator = iter(interrupted)
    for _ in range(4):
        next(iterator)
    resumed = loader(root, selection)
    resumed.load_state_dict(interrupted.state_dict())
    assert [key for batch in resumed for key in batch["key"]] == epochs[0][16:]


def test_settings_are_checked_in_one_line(pool, tmp_path):
    root, _ = pool
    counts = str(root / "matched.counts.parquet")
    module = ShardDataModule(train_shards=str(root / "shards"), batch_size=4, num_workers=1,
                             curation=OnlineCuration(counts=counts, t=T))
    with pytest.raises(ClipModuleError, match="needs data.samples_per_epoch"):
        module.train_dataset()
    with pytest.raises(ClipModuleError, match="not both"):
        EpochSelection(OnlineCuration(counts=counts, t=5, tail_proportion=0.1))
    assert EpochSelection(OnlineCuration(counts=counts, tail_proportion=0.5)).t > 0
    with pytest.raises(ClipModuleError, match="no 'url' and 'query_ids'"):
        EpochSelection(OnlineCuration(counts=counts)).keep("k", {"json": b"{}"}, 0)
    # the record a resume checks names the counts' content: new counts at the same path are another selection
    import pyarrow.parquet as pq

    copy = tmp_path / "matched.counts.parquet"
    table = pq.read_table(counts)
    pq.write_table(table, copy)
    before = EpochSelection(OnlineCuration(counts=str(copy), t=T)).record()
    pq.write_table(table.set_column(table.schema.get_field_index("matched"), "matched",
                                    [[value + 1 for value in table["matched"].to_pylist()]]), copy)
    after = EpochSelection(OnlineCuration(counts=str(copy), t=T)).record()
    assert before["counts"] == after["counts"] and before != after


def test_per_language_t_is_balance_s(tmp_path):
    import pyarrow as pa

    from curation.stages.balance.thresholds import thresholds

    table = pa.table({"matched": [400, 120, 40, 10, 300, 60, 20, 5], "lang": ["en"] * 4 + ["de"] * 4})
    pq.write_table(table, tmp_path / "counts.parquet")
    online = EpochSelection(OnlineCuration(counts=str(tmp_path / "counts.parquet"), t=100, per_language=True))
    offline = thresholds(BalanceConfig(t=100, per_language=True), table, "counts")
    assert online.by_language == offline.by_language and online.by_language["de"] < 100
    assert np.array_equal(online.probabilities, offline.probabilities(table["matched"].to_numpy()))
    with pytest.raises(ClipModuleError, match="not a match counts table"):
        EpochSelection(OnlineCuration(counts=str(tmp_path / "none.parquet"), per_language=True))


def test_a_mixture_counts_only_selected_samples_toward_the_unusable_guard(pool, tmp_path):
    """About one sample in six is selected: runs of left-out samples far longer than max_unusable are no sign of
    missing images; a source whose selected samples are all unusable still stops training."""
    from clipmodule.data.sources import TrainSource

    root, _ = pool
    selection = EpochSelection(OnlineCuration(counts=str(root / "matched.counts.parquet"), t=T, seed=SEED))
    shards = [str(p) for p in sorted((root / "shards").glob("*.tar"))]

    def epoch(sources, max_unusable=3):
        dataset = ShardTrainDataset([s for source in sources for s in source.shards], image_transform(32, train=True),
                                    batch_size=4, batches_per_rank=10, shuffle_buffer=16, seed=3, selection=selection,
                                    sources=sources, shares=[0.5, 0.5], max_unusable=max_unusable)
        return [key for batch in EpochLoader(dataset, batch_size=4, num_workers=0, collate_fn=TokenizingCollate())
                for key in batch["key"]]

    keys = epoch([TrainSource("a", shards), TrainSource("b", shards)])
    assert len(keys) == 40 and {key.split(":")[0] for key in keys} == {"a", "b"}
    broken = tmp_path / "broken"  # the same samples, selected alike, with every image removed
    broken.mkdir()
    for path in shards:
        with tarfile.open(path) as source, tarfile.open(broken / Path(path).name, "w") as tar:
            for member in source.getmembers():
                if not member.name.endswith(".jpg"):
                    tar.addfile(member, source.extractfile(member))
    with pytest.raises(ClipModuleError, match=r"source 'b' gave no usable sample in 3 samples in a row .* left out"):
        epoch([TrainSource("a", shards), TrainSource("b", sorted(str(p) for p in broken.glob("*.tar")))])


def test_old_counts_given_as_a_path_find_their_match_s_recorded_identity(tmp_path):
    """Counts without an identity in their schema (a match made before it recorded one) named as a Path."""
    import pyarrow as pa

    pq.write_table(pa.table({"matched": [4, 2]}), tmp_path / "matched.counts.parquet")
    (tmp_path / "matched.stats.json").write_text(json.dumps({"stage": "match", "rows_identity": "3" * 64}))
    assert EpochSelection(OnlineCuration(counts=tmp_path / "matched.counts.parquet", t=2)).rows_identity == "3" * 64


def test_the_origin_is_found_for_relative_and_linked_folders_and_remote_shards_are_named(tmp_path, monkeypatch):
    import pyarrow as pa

    from clipformats.curation_outputs import recorded_identity

    (tmp_path / "work" / "shards").mkdir(parents=True)
    (tmp_path / "work" / "shards.stats.json").write_text(json.dumps({"stage": "download", "rows_identity": "4" * 64}))
    (tmp_path / "link").symlink_to(tmp_path / "work" / "shards")
    monkeypatch.chdir(tmp_path / "work" / "shards")
    assert recorded_identity(Path(".")) == recorded_identity(Path("../shards")) == "4" * 64
    assert recorded_identity(tmp_path / "link") == "4" * 64
    pq.write_table(pa.table({"matched": [4, 2]}).replace_schema_metadata({"rows_identity": "4" * 64}),
                   tmp_path / "counts.parquet")
    selection = EpochSelection(OnlineCuration(counts=str(tmp_path / "counts.parquet"), t=2))
    selection.check_origin([Path("."), tmp_path / "link"])
    with pytest.raises(ClipModuleError, match=r"s3://b/x: online curation cannot check the origin of remote shards"
                                              r".*verify: false"):
        selection.check_origin(["s3://b/x"])


@pytest.mark.slow  # two mixed epochs' worth of online-curation draws (~15 s on a loaded core)
def test_a_mixture_s_shares_hold_for_the_samples_online_curation_selects(pool, tmp_path):
    """Source a holds the head query's rows (about 6 % kept at t), b the rest (about 40 %): at shares 0.5/0.5 the
    samples training sees are half a's, as a left-out sample is replaced from its own source."""
    from clipmodule.data.mixing import drawn_per_source
    from clipmodule.data.sources import TrainSource

    root, _ = pool
    selection = EpochSelection(OnlineCuration(counts=str(root / "matched.counts.parquet"), t=T, seed=SEED))
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    for path in sorted((root / "shards").glob("*.tar")):
        with tarfile.open(path) as source, tarfile.open(tmp_path / "a" / path.name, "w") as a, \
                tarfile.open(tmp_path / "b" / path.name, "w") as b:
            members = source.getmembers()
            head = {m.name[:-5] for m in members if m.name.endswith(".json")
                    and json.loads(source.extractfile(m).read())["query_ids"] == [0]}
            for member in members:
                (a if member.name.split(".")[0] in head else b).addfile(member, source.extractfile(member))
    sources = [TrainSource(name, sorted(str(p) for p in (tmp_path / name).glob("*.tar"))) for name in ("a", "b")]

    def mixed() -> EpochLoader:
        dataset = ShardTrainDataset([s for source in sources for s in source.shards], image_transform(32, train=True),
                                    batch_size=4, batches_per_rank=25, shuffle_buffer=16, seed=3, selection=selection,
                                    sources=sources, shares=[0.5, 0.5])
        return EpochLoader(dataset, batch_size=4, num_workers=0, collate_fn=TokenizingCollate())

    keys = [key for batch in mixed() for key in batch["key"]]
    from_a = sum(key.startswith("a:") for key in keys)
    assert len(keys) == 100 and 35 <= from_a <= 65, from_a
    interrupted = mixed()
    iterator = iter(interrupted)
    for _ in range(10):
        next(iterator)
    used = drawn_per_source(interrupted.state_dict(), "used")
    assert sum(used.values()) == 40 and drawn_per_source(interrupted.state_dict())["a"] > used["a"]
    resumed = mixed()
    resumed.load_state_dict(interrupted.state_dict())
    assert [key for batch in resumed for key in batch["key"]] == keys[40:]  # a resume makes the same draws
