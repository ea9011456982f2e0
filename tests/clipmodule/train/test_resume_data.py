"""A resumed fit reads the data and loader settings its checkpoint was written with, or refuses in one line naming
what changed: a checkpoint stores loader positions, which mean other samples over other shards, another seed,
buffer, batch size or worker count. A folder moved with its files' times kept resumes."""

from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path

import pytest
import torch

from clipmodule.data.datamodule import ShardDataModule
from clipmodule.data.provenance import record_change
from clipmodule.data.synthetic import write_synthetic_shards
from clipmodule.errors import ClipModuleError
from tests.clipmodule.data.test_remote import BUCKET, local_shards, s3, s3fs  # noqa: F401 (fixtures)
from tests.clipmodule.data.test_tables import write_csv, write_pairs
from tests.clipmodule.train.test_cli import TINY

OPTIONS = {"batch_size": 8, "num_workers": 1, "shuffle_buffer": 16, "seed": 0, "image_size": 32}


def _fit(args: list[str], cwd: Path) -> int:
    """`clipmodule fit` in this process (one start-up for the file), 8-sample batches, a checkpoint every 2 steps."""
    from clipmodule.cli import main

    previous = Path.cwd()
    os.chdir(cwd)
    try:
        return main(["fit", *TINY, "--trainer.enable_progress_bar", "false", "--data.batch_size", "8",
                     "--data.shuffle_buffer", "16", "--checkpoint.every_n_train_steps", "2", *args])
    finally:
        os.chdir(previous)


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> tuple[Path, Path]:
    """(shards, checkpoint): 4 shards of 16 samples and the checkpoint of a 2-step fit over them, 1 loader worker."""
    root = tmp_path_factory.mktemp("resume_data")
    write_synthetic_shards(root / "shards", 4, 16, image_size=32)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CLIPMODULE_CACHE", str(root / "cache"))
        code = _fit(["--data.train_shards", str(root / "shards"), "--data.num_workers", "1",
                     "--trainer.max_steps", "2"], root)
    assert code == 0
    (checkpoint,) = root.glob("runs/*/*/checkpoints/last.ckpt")
    return root / "shards", checkpoint


@pytest.fixture(autouse=True)
def _private_index_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPMODULE_CACHE", str(tmp_path / "cache"))


def _resume(checkpoint: Path, **options) -> None:
    """What a resumed fit does with the datamodule: hand it the checkpoint's state, then build the train loader."""
    state = torch.load(checkpoint, weights_only=True)["ShardDataModule"]
    module = ShardDataModule(**{**OPTIONS, **options})
    module.load_state_dict(state)  # (outside a Trainer it cannot know the checkpoint's path)
    module.train_dataloader()


def _refusal(checkpoint: Path, **options) -> str:
    with pytest.raises(ClipModuleError) as error:
        _resume(checkpoint, **options)
    message = str(error.value)
    assert "\n" not in message and message.startswith("cannot resume from the checkpoint: "), message
    return message[len("cannot resume from the checkpoint: "):]


def test_the_checkpoint_records_each_shard_and_the_loader_settings(written):
    shards, checkpoint = written
    record = torch.load(checkpoint, weights_only=True)["ShardDataModule"]["training_data"]
    assert record["settings"] == {"seed": 0, "batch_size": 8, "num_workers": 1, "shuffle_buffer": 16,
                                  "resample": False, "samples_per_epoch": None, "batches_per_rank": 8}
    (source,) = record["sources"]
    stat = (shards / "00002.tar").stat()
    assert source["shards"][2] == [str((shards / "00002.tar").absolute()), stat.st_size, f"mtime_ns={stat.st_mtime_ns}"]
    _resume(checkpoint, train_shards=str(shards))  # the same data and settings: accepted


@pytest.mark.parametrize(("option", "value", "expected"), [
    ("num_workers", 2, "data.num_workers is 2, the checkpoint's fit ran with 1 (each worker's position lies in "
                       "its own slice of the shards and cannot be dealt to other workers): resume with "
                       "--data.num_workers 1"),
    ("num_workers", 0, "resume with --data.num_workers 1"),
    ("seed", 5, "data.seed is 5, the checkpoint's fit ran with 0: resume with --data.seed 0"),
    ("batch_size", 4, "data.batch_size is 4, the checkpoint's fit ran with 8: resume with --data.batch_size 8"),
    ("shuffle_buffer", 32, "resume with --data.shuffle_buffer 16"),
    ("resample", True, "data.resample is true, the checkpoint's fit ran with false: resume with --data.resample false"),
    ("samples_per_epoch", 32, "data.samples_per_epoch is 32, the checkpoint's fit ran with null"),
])
def test_another_loader_setting_is_refused_naming_it_and_the_value_to_resume_with(written, option, value, expected):
    shards, checkpoint = written
    assert expected in _refusal(checkpoint, train_shards=str(shards), **{option: value})


def _copy(shards: Path, target: Path) -> Path:
    shutil.copytree(shards, target)  # copy2: the files keep their modification times
    return target


def test_a_shard_replaced_under_its_name_is_refused(written, tmp_path):
    shards, checkpoint = written
    copy_ = _copy(shards, tmp_path / "shards")
    write_synthetic_shards(tmp_path / "other", 4, 16, image_size=32, first_sample=1000)
    shutil.copy(tmp_path / "other" / "00001.tar", copy_ / "00001.tar")
    message = _refusal(checkpoint, train_shards=str(copy_))
    assert message.startswith(f"{copy_ / '00001.tar'} ")
    assert message.endswith("; resume on the data the checkpoint was written with, or start a new fit from its "
                            "weights (model.init_from)")
    # the same size (other bytes, or the same bytes rewritten): its modification time tells
    shutil.copy2(shards / "00001.tar", copy_ / "00001.tar")
    os.utime(copy_ / "00001.tar", ns=(1, (shards / "00001.tar").stat().st_mtime_ns + 10**9))
    assert _refusal(checkpoint, train_shards=str(copy_)).startswith(
        f"{copy_ / '00001.tar'} is another file than the checkpoint's {shards / '00001.tar'} (modified 20")
    record = {"settings": {}, "sources": [{"name": "source0", "share": 1.0,
                                           "shards": [["/d/00000.tar", 10, "mtime_ns=1000000000"]]}]}
    replaced = copy.deepcopy(record)
    replaced["sources"][0]["shards"][0][2] = "mtime_ns=2000000001"
    assert record_change(record, replaced).startswith(
        "/d/00000.tar was replaced or modified since the checkpoint (modified 1970-01-01 00:00:01.000000000 UTC "
        "then, modified 1970-01-01 00:00:02.000000001 UTC now); resume on the data")


def test_a_shorter_shard_and_another_folder_are_refused(written, tmp_path):
    shards, checkpoint = written
    copy_ = _copy(shards, tmp_path / "shards")
    write_synthetic_shards(tmp_path / "short", 4, 10, image_size=32)
    shutil.copy(tmp_path / "short" / "00003.tar", copy_ / "00003.tar")
    size = (shards / "00003.tar").stat().st_size
    assert _refusal(checkpoint, train_shards=str(copy_)).startswith(
        f"{copy_ / '00003.tar'} is {(copy_ / '00003.tar').stat().st_size} bytes, the checkpoint's "
        f"{shards / '00003.tar'} was {size}")
    assert _refusal(checkpoint, train_shards=str(tmp_path / "short")).startswith("4 of 4 training shards differ")
    write_synthetic_shards(tmp_path / "fewer", 3, 16, image_size=32)
    assert _refusal(checkpoint, train_shards=str(tmp_path / "fewer")).startswith(
        f"training source 'source0' has 3 shards (e.g. {tmp_path / 'fewer' / '00000.tar'}), the checkpoint's had 4")
    assert "the sources source0, source1" in _refusal(checkpoint, train_shards=f"{shards}::{tmp_path / 'fewer'}")


def test_a_folder_moved_with_its_times_resumes_exactly(written, tmp_path):
    shards, checkpoint = written
    state = torch.load(checkpoint, weights_only=True)
    loader_state = state["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]
    batches = []
    for folder in (shards, _copy(shards, tmp_path / "moved")):
        module = ShardDataModule(**{**OPTIONS, "train_shards": str(folder)})
        module.load_state_dict(state["ShardDataModule"])
        loader = module.train_dataloader()
        loader.load_state_dict(loader_state)
        batches.append(next(iter(loader)))
    assert batches[0]["key"] == batches[1]["key"] and torch.equal(batches[0]["image"], batches[1]["image"])


def test_a_changed_table_and_changed_shares_are_refused(tmp_path):
    pairs = write_pairs(tmp_path, rows=24)
    csv = write_csv(tmp_path / "pairs.csv", pairs, header=("path", "caption"))
    write_synthetic_shards(tmp_path / "shards", 2, 12, image_size=32)
    mixture = [{"shards": str(csv), "weight": 0.5}, {"shards": str(tmp_path / "shards"), "weight": 0.5}]
    module = ShardDataModule(**{**OPTIONS, "num_workers": 0, "train_shards": mixture})
    module.train_dataset()
    saved = copy.deepcopy(module.state_dict())

    def refusal(train_shards) -> str:
        again = ShardDataModule(**{**OPTIONS, "num_workers": 0, "train_shards": train_shards})
        again.load_state_dict(saved)
        with pytest.raises(ClipModuleError) as error:
            again.train_dataset()
        return str(error.value)

    write_csv(csv, pairs[::-1], header=("path", "caption"))  # the same rows in another order
    assert f"the rows of {csv} (image paths, captions) differ from the checkpoint's {csv}" in refusal(mixture)
    write_csv(csv, pairs[:20], header=("path", "caption"))
    assert f"{csv} has 20 rows, the checkpoint's {csv} had 24" in refusal(mixture)
    write_csv(csv, pairs, header=("path", "caption"))
    assert "has a share of 0.3, the checkpoint's fit drew 0.5" in refusal(
        [{**mixture[0], "weight": 0.3}, {**mixture[1], "weight": 0.7}])
    assert "training source 'source0' is shards, the checkpoint's was a table" in refusal(
        [{**mixture[1], "weight": 0.5}, {**mixture[1], "weight": 0.5}])


def test_a_checkpoint_without_a_record_resumes_unchecked():
    saved = {"settings": {"seed": 0}, "sources": []}
    assert record_change(saved, copy.deepcopy(saved)) is None
    module = ShardDataModule(**OPTIONS, train_shards="unused")
    module.load_state_dict({})
    assert module._resumed == (None, "the checkpoint")


def test_fit_resumed_with_other_workers_or_seed_is_one_line(written, tmp_path, capsys):
    shards, checkpoint = written
    for args, expected in ((["--data.num_workers", "2"], "resume with --data.num_workers 1"),
                           (["--data.seed", "3", "--data.num_workers", "1"], "resume with --data.seed 0")):
        capsys.readouterr()
        code = _fit(["--data.train_shards", str(shards), "--trainer.max_steps", "4", "--ckpt_path",
                     str(checkpoint), *args], tmp_path)
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.startswith("clipmodule fit: error:")]
        assert code == 2 and len(lines) == 1 and "Traceback" not in err, err[-3000:]
        assert lines[0].startswith(f"clipmodule fit: error: cannot resume from {checkpoint}: ") and expected in lines[0]


def test_an_object_replaced_by_one_of_the_same_size_is_refused_by_its_etag(s3, local_shards):  # noqa: F811
    import boto3

    url = f"s3://{BUCKET}/resume/"
    client = boto3.client("s3")
    for path in sorted(local_shards.glob("*.tar")):
        client.upload_file(str(path), BUCKET, f"resume/{path.name}")
    options = {**OPTIONS, "num_workers": 0, "batch_size": 4, "train_shards": url}
    module = ShardDataModule(**options)
    module.train_dataset()
    saved = module.state_dict()
    assert saved["training_data"]["sources"][0]["shards"][1][2]  # the ETag
    data = bytearray((local_shards / "00001.tar").read_bytes())
    data[len(data) // 2] ^= 0xFF  # other contents, the same size
    client.put_object(Bucket=BUCKET, Key="resume/00001.tar", Body=bytes(data))
    s3fs.S3FileSystem.clear_instance_cache()  # a new fit: no listing cached from the first
    again = ShardDataModule(**options)
    again.load_state_dict(saved)
    with pytest.raises(ClipModuleError, match=rf"^cannot resume from the checkpoint: s3://{BUCKET}/resume/00001.tar "
                                              r"was replaced or modified since the checkpoint \("):
        again.train_dataset()
