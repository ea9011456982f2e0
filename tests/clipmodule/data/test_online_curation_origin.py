"""Online curation's counts count the *matched* rows: the loader refuses shards downloaded from any other rows (a
balanced output would be balanced a second time), by the row identity `curation match` records with its counts
and `curation download --from_matched` records with its shards; the filter stages pass it on."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from clipformats.curation_outputs import ROWS_IDENTITY, recorded_identity
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
pytestmark = pytest.mark.slow  # two img2dataset runs (~45 s on a loaded core)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """match → balance (t=2) → download of the matched rows and of the balanced rows (file: URLs)."""
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
    run_download(DownloadConfig(**options), root / "balanced", root / "balanced_shards")
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
