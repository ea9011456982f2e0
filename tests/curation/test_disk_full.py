"""A full disk (ENOSPC, simulated by making writes fail in-process) ends `curation match` and `curation embed`
with one line naming the file, leaves no temporary and no lock file, keeps the finished pieces, and the same
command then resumes."""

from __future__ import annotations

import errno
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import clipmodule
from clipformats import embeddings as embedding_format
from clipformats import locks
from clipformats.files import TEMP_MARK
from clipmodule.data.synthetic import write_synthetic_shards
from curation.cli import main


def leftovers(root) -> list[str]:
    return sorted(p.name for p in root.rglob("*") if TEMP_MARK in p.name or p.name.endswith(".lock"))


def one_line(capsys) -> str:
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1, error
    return error


def full_after(calls: int, write, pyarrow_style: bool = False):
    """`write`, failing as a full disk does from its `calls`+1-th call on (after writing part of its bytes)."""
    count = {"n": 0}

    def failing(*args, **kwargs):
        count["n"] += 1
        if count["n"] > calls:
            if pyarrow_style:  # pyarrow's error carries the errno in its text only
                raise OSError("Error writing bytes to file. Detail: [errno 28] No space left on device")
            raise OSError(errno.ENOSPC, "No space left on device")
        return write(*args, **kwargs)

    return failing


def test_match_on_a_full_disk_is_one_line_and_resumes(tmp_path, tiny_queries, capsys, monkeypatch):
    folder = tmp_path / "captions"
    folder.mkdir()
    for i in range(3):
        pq.write_table(pa.table({"url": [f"http://x/{i}/{j}" for j in range(20)],
                                 "caption": ["a red square"] * 20}), folder / f"part{i}.parquet")
    argv = ["match", "--captions", str(folder), "--queries", str(tiny_queries), "--out", str(tmp_path / "m"),
            "--workers", "1"]
    with monkeypatch.context() as patch:
        patch.setattr(pq.ParquetWriter, "write_batch", full_after(1, pq.ParquetWriter.write_batch, True))
        assert main(argv) == 2
    error = one_line(capsys)
    assert f"{tmp_path / 'm' / '00001-part1.parquet'}: no space left on device" in error, error
    assert "run `curation match` again to resume" in error
    assert leftovers(tmp_path) == [] and sorted(p.name for p in (tmp_path / "m").iterdir()) == ["00000-part0.parquet"]
    kept = (tmp_path / "m" / "00000-part0.parquet").stat().st_mtime_ns
    assert main(argv) == 0
    stats = json.loads((tmp_path / "m.stats.json").read_text())
    assert stats["finished"] and stats["rows_matched"] == 60
    assert (tmp_path / "m" / "00000-part0.parquet").stat().st_mtime_ns == kept


@pytest.fixture
def tiny_model(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "tiny.safetensors"
    clipmodule.save_checkpoint(clipmodule.create_model("tiny-vit"), path)
    return path


def test_embed_on_a_full_disk_is_one_line_and_resumes(tmp_path, tiny_model, capsys, monkeypatch, one_thread):
    write_synthetic_shards(tmp_path / "shards", 3, 2, image_size=32)
    argv = ["embed", "--shards", str(tmp_path / "shards"), "--out", str(tmp_path / "emb"), "--model", str(tiny_model),
            "--threads", "1", "--workers", "1"]
    with monkeypatch.context() as patch:  # the second part's text embeddings find the disk full
        patch.setattr(embedding_format.np, "save", full_after(3, np.save))
        assert main(argv) == 2
    error = one_line(capsys)
    assert f"{tmp_path / 'emb' / 'text_emb' / 'text_emb_00001.npy'}: no space left on device" in error, error
    assert leftovers(tmp_path) == []
    assert sorted(p.name for p in (tmp_path / "emb").rglob("*.*")) == [  # the second part is whole or absent
        "img_emb_00000.npy", "metadata_00000.parquet", "text_emb_00000.npy"]
    assert main(argv) == 0
    assert json.loads((tmp_path / "emb.stats.json").read_text())["rows_out"] == 6


def test_a_lock_that_cannot_be_written_leaves_no_empty_lock_file(tmp_path, tiny_model, capsys, monkeypatch):
    write_synthetic_shards(tmp_path / "shards", 1, 2, image_size=32)
    monkeypatch.setattr(locks.os, "pwrite", full_after(0, locks.os.pwrite))
    assert main(["embed", "--shards", str(tmp_path / "shards"), "--out", str(tmp_path / "emb"),
                 "--model", str(tiny_model)]) == 2
    assert "cannot take its lock (No space left on device)" in one_line(capsys)
    assert leftovers(tmp_path) == [] and not (tmp_path / "emb").exists()
