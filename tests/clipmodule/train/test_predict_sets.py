"""`clipmodule predict` into a folder an earlier predict wrote: the finished set is the second run's parts only,
so readers refuse the folder while the first run's extra parts are in it (never a silent mix)."""

from __future__ import annotations

from pathlib import Path

import pytest

from clipformats.embeddings import EmbeddingFilesError, read_embeddings
from clipmodule.cli import main
from clipmodule.data.synthetic import write_synthetic_shards

REPO = Path(__file__).resolve().parents[3]
TINY = ["-c", str(REPO / "experiments" / "base.yaml"), "-c", str(REPO / "experiments" / "tiny_cpu.yaml")]


def test_a_second_predict_into_the_same_folder_is_not_read_as_a_mix(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_synthetic_shards(tmp_path / "val", 2, 8, image_size=32)
    out = tmp_path / "emb"

    def predict(batches_per_file: int) -> None:
        assert main(["predict", *TINY, "--data.val_shards", str(tmp_path / "val"), "--data.batch_size", "4",
                     "--data.num_workers", "0", "--trainer.logger", "false", "--progress_bar.refresh_rate", "0",
                     "--prediction_writer.output_dir", str(out),
                     "--prediction_writer.batches_per_file", str(batches_per_file)]) == 0

    predict(1)  # 4 parts of 4 rows
    assert len(read_embeddings(out)[1]) == 16
    predict(4)  # 1 part of 16 rows; the first run's parts 1-3 are still there
    with pytest.raises(EmbeddingFilesError, match="3 part.s. not of the run that finished the set"):
        read_embeddings(out)
