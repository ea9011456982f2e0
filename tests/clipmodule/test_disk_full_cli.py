"""`clipmodule eval --output` on a full disk (ENOSPC simulated in-process): one line naming the results file,
no partial or temporary file left, and the same command then writes it."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import torch

from clipformats import files
from clipmodule.checkpoints.io import save_checkpoint
from clipmodule.cli import main
from clipmodule.eval.readers.builtin import SHAPE_CLASSES, render_shapes
from clipmodule.models import create_model


def test_eval_output_on_a_full_disk_is_one_line_and_a_rerun_writes_it(tmp_path, capsys, monkeypatch, one_thread):
    torch.manual_seed(0)
    save_checkpoint(create_model("tiny-vit"), tmp_path / "tiny.safetensors")
    images, labels, _ = render_shapes(per_class=2)
    for index, (image, label) in enumerate(zip(images, labels)):
        path = tmp_path / "test" / SHAPE_CLASSES[label] / f"{index}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path)
    output = tmp_path / "results" / "zs.json"
    argv = ["eval", "zeroshot", "--model", str(tmp_path / "tiny.safetensors"), "--dataset", str(tmp_path / "test"),
            "--templates", "simple", "--output", str(output), "--tracking.uri", "none"]
    real = Path.write_text

    def full(self, *args, **kwargs):  # part of the bytes land, then the disk is full
        real(self, "{\"metr", encoding="utf-8")
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(files.Path, "write_text", full)
        assert main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1, error
    assert error.startswith(f"clipmodule eval: error: {output}: no space left on device"), error
    assert not output.exists() and [p.name for p in output.parent.iterdir()] == []
    assert main(argv) == 0
    assert "top1" in json.loads(output.read_text())["metrics"]

