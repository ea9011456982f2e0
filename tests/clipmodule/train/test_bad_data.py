"""Training on shards with nothing usable stops with one line instead of looping; warnings are rate-limited;
bad sizes are refused; SIGTERM stops a fit and leaves its checkpoints loadable."""

from __future__ import annotations

import io
import logging
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from clipmodule.data.datamodule import ShardDataModule
from clipmodule.data.synthetic import write_synthetic_shards
from clipmodule.errors import ClipModuleError
from tests.clipmodule.train.test_cli import _runs
from tests.conftest import QUIET_WORKER, tree_env

REPO = Path(__file__).resolve().parents[3]
TINY = ["-c", str(REPO / "experiments" / "base.yaml"), "-c", str(REPO / "experiments" / "tiny_cpu.yaml")]


def _jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buffer, format="JPEG")
    return buffer.getvalue()


def write_bad_shards(directory: Path, kind: str, shards: int = 2, samples: int = 12) -> Path:
    """Shards whose every sample is unusable: `kind` is "image" (undecodable), "empty" (blank caption) or
    "notxt" (no caption member)."""
    directory.mkdir(parents=True, exist_ok=True)
    fields = {"image": {"jpg": b"not a jpeg", "txt": b"a caption"}, "empty": {"jpg": _jpeg(), "txt": b"  \n"},
              "notxt": {"jpg": _jpeg()}}[kind]
    for shard in range(shards):
        with tarfile.open(directory / f"{shard:05d}.tar", "w") as tar:
            for sample in range(samples):
                for ext, data in fields.items():
                    info = tarfile.TarInfo(f"{shard:05d}{sample:04d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return directory


def _first_batch(directory: Path, **options):
    data = ShardDataModule(train_shards=str(directory), batch_size=4, image_size=32, shuffle_buffer=4, **options)
    return next(iter(data.train_dataloader()))


@pytest.mark.parametrize("kind", ["image", "empty", "notxt"])
def test_a_shard_set_without_a_usable_sample_stops_after_a_pass(tmp_path, kind, caplog):
    directory = write_bad_shards(tmp_path / kind, kind)
    with caplog.at_level(logging.WARNING), pytest.raises(ClipModuleError, match="no usable training sample in a "
                                                         "whole pass over 2 shards"):
        _first_batch(directory, num_workers=0)
    skips = [r for r in caplog.records if "skipping corrupt" in r.getMessage()]
    assert len(skips) == 5  # 48 unusable samples read (2 passes), 5 named


def test_resampled_shards_stop_after_a_window_of_unusable_samples_from_a_worker(tmp_path):
    directory = write_bad_shards(tmp_path / "bad", "image")
    with pytest.raises(ClipModuleError, match="no usable training sample in 30 samples in a row") as error:
        _first_batch(directory, num_workers=1, resample=True, samples_per_epoch=40, max_unusable_samples=30)
    assert "\n" not in str(error.value).strip().splitlines()[-1]


def test_usable_samples_between_bad_ones_keep_training_going(tmp_path, caplog):
    write_synthetic_shards(tmp_path / "mixed", 1, 8, image_size=32)
    write_bad_shards(tmp_path / "bad", "image", shards=3, samples=700)
    for path in sorted((tmp_path / "bad").glob("*.tar")):
        path.rename(tmp_path / "mixed" / f"bad{path.name}")
    data = ShardDataModule(train_shards=str(tmp_path / "mixed"), batch_size=4, num_workers=0, image_size=32,
                           shuffle_buffer=4000, samples_per_epoch=8)
    with caplog.at_level(logging.WARNING):
        batches = list(data.train_dataloader())
    assert [len(b["key"]) for b in batches] == [4, 4]
    messages = [r.getMessage() for r in caplog.records]
    # at most 2100 skipped: 5 named, then one running count per 1000
    assert 5 <= len(messages) <= 7 and any("corrupt or incomplete samples so far" in m for m in messages), messages


@pytest.mark.parametrize("option, value", [("batch_size", 0), ("batch_size", -4), ("num_workers", -1),
                                           ("max_unusable_samples", 0)])
def test_bad_loader_sizes_are_refused_naming_the_option(option, value):
    with pytest.raises(ClipModuleError, match=f"data.{option} must be an integer >= ., got {value}"):
        ShardDataModule(train_shards="x", **{option: value})


def test_fit_on_unusable_shards_exits_2_with_one_line(tmp_path, monkeypatch, capsys):
    from clipmodule.cli import main

    directory = write_bad_shards(tmp_path / "bad", "notxt", samples=40)
    monkeypatch.chdir(tmp_path)
    code = main(["fit", *TINY, "--data.train_shards", str(directory), "--data.num_workers", "1",
                 "--data.batch_size", "8", "--trainer.max_steps", "2"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("clipmodule fit: error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err[-2000:]
    assert "no usable training sample in a whole pass over 2 shards" in lines[0]


def test_fit_batch_size_zero_is_one_line(tmp_path, monkeypatch, capsys):
    from clipmodule.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["fit", *TINY, "--data.train_shards", str(tmp_path), "--data.batch_size", "0"]) == 2
    err = capsys.readouterr().err
    assert "clipmodule fit: error: data.batch_size must be an integer >= 1, got 0" in err and len(
        err.strip().splitlines()) == 1, err


@pytest.mark.slow
def test_sigterm_stops_fit_and_leaves_its_checkpoints_loadable(tmp_path):
    shards = tmp_path / "shards"
    write_synthetic_shards(shards, 2, 32, image_size=32)
    env = tree_env(**QUIET_WORKER)
    args = [sys.executable, "-m", "clipmodule", "fit", *TINY, "--data.train_shards", str(shards),
            "--data.num_workers", "1", "--data.batch_size", "8", "--trainer.max_steps", "100000",
            "--checkpoint.every_n_train_steps", "2", "--trainer.default_root_dir",
            str(tmp_path / "runs"), "--checkpoint.dirpath", str(tmp_path / "ckpt")]
    process = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not (tmp_path / "ckpt" / "last.ckpt").exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert (tmp_path / "ckpt" / "last.ckpt").exists(), "no checkpoint written"
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 2, err[-2000:]
    assert "clipmodule fit: error: stopped by SIGTERM at step" in err
    last = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    assert last["global_step"] >= 2 and not list((tmp_path / "ckpt").glob("*.tmp*"))
    _, runs = _runs(tmp_path, "tiny_cpu")
    assert [run.info.status for run in runs] == ["KILLED"]
