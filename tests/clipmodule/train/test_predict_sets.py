"""`clipmodule predict` into a folder an earlier predict wrote is refused by the writer, and a folder holding parts
of another run beside the finished set's is refused by every reader (never a silent mix)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from clipformats.embeddings import EmbeddingFilesError, normalise, read_embeddings, write_part
from clipmodule.cli import main
from clipmodule.data.synthetic import write_synthetic_shards

REPO = Path(__file__).resolve().parents[3]
TINY = ["-c", str(REPO / "experiments" / "base.yaml"), "-c", str(REPO / "experiments" / "tiny_cpu.yaml")]


def test_a_second_predict_into_the_same_folder_is_not_read_as_a_mix(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_synthetic_shards(tmp_path / "val", 2, 8, image_size=32)
    out = tmp_path / "emb"

    def predict(batches_per_file: int) -> int:
        return main(["predict", *TINY, "--data.val_shards", str(tmp_path / "val"), "--data.batch_size", "4",
                     "--data.num_workers", "0", "--trainer.logger", "false", "--progress_bar.refresh_rate", "0",
                     "--prediction_writer.output_dir", str(out),
                     "--prediction_writer.batches_per_file", str(batches_per_file)])

    assert predict(1) == 0  # 4 parts of 4 rows
    assert len(read_embeddings(out)[1]) == 16
    capsys.readouterr()
    assert predict(4) == 2  # the writer refuses the folder: the first run's parts would stay beside the second's
    assert "output folder is not empty" in capsys.readouterr().err
    assert len(read_embeddings(out)[1]) == 16
    vectors = normalise(np.random.default_rng(0).normal(size=(2, 4)).astype(np.float32))
    write_part(out, "0009_00000", vectors, vectors, {"key": ["a", "b"], "shard": ["x.tar", "x.tar"]},
               info={"run": "another run"})  # a part slipped in by hand (or by another writer)
    with pytest.raises(EmbeddingFilesError, match="1 part.s. not of the run that finished the set"):
        read_embeddings(out)
