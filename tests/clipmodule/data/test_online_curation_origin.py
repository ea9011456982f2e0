"""Online curation's counts count the *matched* rows: the loader refuses shards downloaded from any other rows (a
balanced output would be balanced a second time), by the row identity `curation match` records with its counts
and `curation download --from_matched` records with its shards; the filter stages pass it on."""

from __future__ import annotations

import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from clipformats.curation_outputs import ROWS_IDENTITY, recorded_identity, rows_identity
from clipmodule.data.datamodule import ShardDataModule
from clipmodule.data.online_curation import OnlineCuration
from clipmodule.errors import ClipModuleError
from curation.config import BalanceConfig, DownloadConfig, MatchConfig
from curation.stages.balance.balancing import run_balance
from curation.stages.download.downloading import run_download
from curation.stages.image_shape import ImageShapeConfig, ImageShapeSieve
from curation.stages.match.matching import run_match
from curation.stages.sieve import run_sieve

TERMS = ["red", "blue", "green"]
pytestmark = pytest.mark.slow  # an img2dataset run (~20 s on a loaded core)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """match → balance (t=2) → download of the matched rows (file: URLs), and shards recorded as the balanced rows'."""
    root = tmp_path_factory.mktemp("origin")
    images, rows = root / "images", []
    images.mkdir()
    for i in range(24):
        path = images / f"{i}.png"
        Image.new("RGB", (40, 40), (10 * i, 0, 0)).save(path)
        rows.append({"url": path.as_uri(), "caption": f"a {TERMS[0] if i % 4 else TERMS[i % 3]} thing {i}"})
    (root / "captions").mkdir()
    pq.write_table(pa.Table.from_pylist(rows), root / "captions" / "c.parquet")
    pq.write_table(pa.table({"id": pa.array(range(3), pa.int32()), "term": TERMS, "source": ["test"] * 3,
                             "count": pa.nulls(3, pa.int64())}), root / "queries.parquet")
    run_match(MatchConfig(workers=1, allow_schemes=["file"]), root / "queries.parquet", [str(root / "captions")],
              root / "matched")
    run_balance(BalanceConfig(t=2, workers=1), root / "matched", root / "balanced")
    options = {"image_size": 32, "processes": 1, "threads": 2, "allow_schemes": ["file"], "save_columns": ["query_ids"]}
    run_download(DownloadConfig(from_matched=True, **options), root / "matched", root / "shards")
    # the balanced rows' download, as `curation download` records it (a second img2dataset run costs ~20 s): the
    # same tars, and the identity of the balanced rows
    shutil.copytree(root / "shards", root / "balanced_shards")
    stats = json.loads((root / "shards.stats.json").read_text())
    stats[ROWS_IDENTITY] = rows_identity(sorted((root / "balanced").glob("*.parquet")))
    (root / "balanced_shards.stats.json").write_text(json.dumps(stats))
    return root


def module(root, shards: str, **curation) -> ShardDataModule:
    return ShardDataModule(train_shards=shards, batch_size=2, num_workers=1, samples_per_epoch=8,
                           curation=OnlineCuration(counts=str(root / "matched.counts.parquet"), t=2, **curation))


def test_balanced_shards_are_refused_and_matched_shards_are_read(work):
    identity = pq.read_schema(work / "matched.counts.parquet").metadata[ROWS_IDENTITY.encode()].decode()
    assert recorded_identity(work / "matched") == identity == recorded_identity(work / "shards")
    assert recorded_identity(work / "balanced") == recorded_identity(work / "balanced_shards") != identity
    with pytest.raises(ClipModuleError, match="balanced a second time") as refused:
        module(work, str(work / "balanced_shards")).train_dataset()
    assert len(str(refused.value).splitlines()) == 1 and str(work / "balanced_shards") in str(refused.value)
    dataset = module(work, str(work / "shards")).train_dataset()
    assert dataset.selection is not None and len(dataset) == 8
    assert module(work, str(work / "balanced_shards"), verify=False).train_dataset() is not None  # vouched for


def test_a_filter_stage_passes_the_identity_on_and_unknown_shards_are_refused(work, tmp_path):
    run_sieve(ImageShapeSieve(ImageShapeConfig(min_side=1)), ImageShapeConfig(min_side=1), [str(work / "shards")],
              tmp_path / "image_shape")
    assert recorded_identity(tmp_path / "image_shape") == recorded_identity(work / "shards")
    assert module(work, str(tmp_path / "image_shape")).train_dataset() is not None
    copied = tmp_path / "copied"
    copied.mkdir()
    for tar in (work / "shards").glob("*.tar"):
        (copied / tar.name).write_bytes(tar.read_bytes())
    with pytest.raises(ClipModuleError, match="no recorded origin"):
        module(work, str(copied)).train_dataset()
    counts = tmp_path / "old.counts.parquet"  # counts written before match recorded an identity
    pq.write_table(pq.read_table(work / "matched.counts.parquet").replace_schema_metadata({}), counts)
    with pytest.raises(ClipModuleError, match="records no identity"):
        ShardDataModule(train_shards=str(work / "shards"), batch_size=2, num_workers=1, samples_per_epoch=8,
                        curation=OnlineCuration(counts=str(counts), t=2)).train_dataset()
    assert json.loads((work / "shards.stats.json").read_text())[ROWS_IDENTITY]


def test_an_earlier_match_output_gains_its_identity_when_match_runs_again(work, tmp_path):
    stats = json.loads((work / "matched.stats.json").read_text())
    identity = stats.pop(ROWS_IDENTITY)
    (work / "matched.stats.json").write_text(json.dumps(stats))
    assert recorded_identity(work / "matched") is None
    run_match(MatchConfig(workers=1, allow_schemes=["file"]), work / "queries.parquet", [str(work / "captions")],
              work / "matched")  # up to date: nothing rematched, the identity recorded
    assert recorded_identity(work / "matched", stage="match") == identity
    plain = pq.read_table(work / "matched.counts.parquet")  # counts without the metadata: the stats beside say it
    pq.write_table(plain.replace_schema_metadata({}), tmp_path / "matched.counts.parquet")
    (tmp_path / "matched.stats.json").write_text((work / "matched.stats.json").read_text())
    counts = OnlineCuration(counts=str(tmp_path / "matched.counts.parquet"), t=2)
    assert ShardDataModule(train_shards=str(work / "shards"), batch_size=2, num_workers=1, samples_per_epoch=8,
                           curation=counts).train_dataset() is not None
    (tmp_path / "matched.stats.json").write_text(json.dumps({**stats, "stage": "balance", ROWS_IDENTITY: identity}))
    with pytest.raises(ClipModuleError, match="records no identity"):  # only a match's stats vouch for counts
        ShardDataModule(train_shards=str(work / "shards"), batch_size=2, num_workers=1, samples_per_epoch=8,
                        curation=counts).train_dataset()


def test_the_faked_balanced_identity_is_what_download_records_for_a_balance_input(work, tmp_path, monkeypatch):
    """The fixture's balanced shards carry recorded_identity(balanced) without a second img2dataset run: the
    identity `curation download` records for a balance input is that one (img2dataset replaced by its outputs)."""
    from curation.stages.download import downloading

    def fetched(config, source, out, expected_rows, log_file, stage):  # one shard, every row a success
        (out / "00000.tar").write_bytes((work / "shards" / "00000.tar").read_bytes())
        (out / "00000_stats.json").write_text(json.dumps({"count": expected_rows, "successes": expected_rows,
                                                          "failed_to_download": 0, "failed_to_resize": 0}))

    monkeypatch.setattr(downloading, "run_img2dataset", fetched)
    stats = run_download(DownloadConfig(image_size=32, processes=1, threads=2, allow_schemes=["file"],
                                        save_columns=["query_ids"]), work / "balanced", tmp_path / "balanced_shards")
    assert stats[ROWS_IDENTITY] == recorded_identity(work / "balanced") == recorded_identity(work / "balanced_shards")
    assert recorded_identity(tmp_path / "balanced_shards") == recorded_identity(work / "balanced_shards")
