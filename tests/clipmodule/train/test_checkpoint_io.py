"""Checkpoint writes in a real fit: a full disk ends the fit in one line naming the file, the checkpoints
written before stay intact and nothing half-written is left; temporaries of killed fits are cleaned."""

from __future__ import annotations

import errno
import os

import torch

from clipmodule.data.synthetic import write_synthetic_shards
from tests.clipformats.test_locks import dead_pid
from tests.clipmodule.train.test_cli import TINY, _runs


class FillsUpAfter:
    """A file (or path) that takes `room` bytes, then fails every write with ENOSPC."""

    def __init__(self, target, room: int):
        self.handle = target if hasattr(target, "write") else open(target, "wb")  # noqa: SIM115 (a path: torch.save before the fix)
        self.room = room

    def write(self, data) -> int:
        if len(data) > self.room:
            self.handle.write(bytes(data[:self.room]))  # part of it reached the disk
            self.handle.flush()
            self.room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.handle.write(data)

    def flush(self) -> None:
        self.handle.flush()


def test_a_full_disk_during_a_checkpoint_write_is_one_line_and_loses_nothing(tmp_path, monkeypatch, capsys):
    from clipmodule.cli import main

    write_synthetic_shards(tmp_path / "shards", 2, 16, image_size=32)
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    killed = dead_pid()
    for name in (f".last.ckpt.tmp-{killed}", f".step00000001.ckpt.tmp-{killed}", ".last.ckpt.tmp-1"):
        (ckpt / name).write_bytes(b"half a checkpoint")  # two of a killed fit; pid 1 is alive: a writer at work

    real_save, saves = torch.save, []

    def disk_fills_up(checkpoint, target, *args, **kwargs):
        """Step 2 and last.ckpt fit on the disk; step 4 stops with ENOSPC after 64 kB, as a full disk does (torch's
        writer then raises its own error over it as it closes the file)."""
        saves.append(target)
        if len(saves) >= 3:
            target = FillsUpAfter(target, 65536)
        return real_save(checkpoint, target, *args, **kwargs)

    monkeypatch.setattr(torch, "save", disk_fills_up)
    monkeypatch.chdir(tmp_path)
    code = main(["fit", *TINY, "--data.train_shards", str(tmp_path / "shards"), "--data.num_workers", "1",
                 "--data.batch_size", "8", "--trainer.max_steps", "6", "--checkpoint.every_n_train_steps", "2",
                 "--checkpoint.dirpath", str(ckpt), "--trainer.enable_progress_bar", "false"])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert code == 2 and "Traceback" not in err, err[-3000:]
    assert errors == [f"clipmodule fit: error: cannot write checkpoint {ckpt / 'step00000004.ckpt'}: No space left "
                      "on device; the checkpoints written before it are intact"], err[-3000:]
    assert sorted(p.name for p in ckpt.iterdir()) == [".last.ckpt.tmp-1", "last.ckpt", "step00000002.ckpt"]
    assert torch.load(ckpt / "last.ckpt", weights_only=True)["global_step"] == 2
    assert torch.load(ckpt / "step00000002.ckpt", weights_only=True)["global_step"] == 2
    _, runs = _runs(tmp_path, "tiny_cpu")
    assert [run.info.status for run in runs] == ["FAILED"]
