"""`clipmodule predict` writes the embeddings it computes (clip-retrieval's layout), row-aligned with keys."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from clipformats.embeddings import read_embeddings
from clipmodule.cli import main
from clipmodule.data.synthetic import write_synthetic_shards
from clipmodule.train.embeddings import EmbeddingWriter

REPO = Path(__file__).resolve().parents[3]
TINY = ["-c", str(REPO / "experiments" / "base.yaml"), "-c", str(REPO / "experiments" / "tiny_cpu.yaml")]


def test_predict_writes_normalised_embeddings_and_their_keys(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_synthetic_shards(tmp_path / "val", 2, 20, image_size=32)
    out = tmp_path / "emb"
    code = main(["predict", *TINY, "--data.val_shards", str(tmp_path / "val"), "--data.batch_size", "8",
                 "--data.num_workers", "0", "--trainer.logger", "false", "--progress_bar.refresh_rate", "0",
                 "--prediction_writer.output_dir", str(out), "--prediction_writer.batches_per_file", "3"])
    assert code == 0
    images = [np.load(path) for path in sorted((out / "img_emb").glob("*.npy"))]
    texts = [np.load(path) for path in sorted((out / "text_emb").glob("*.npy"))]
    keys = [pq.read_table(path)["key"].to_pylist() for path in sorted((out / "metadata").glob("*.parquet"))]
    assert len(images) == len(texts) == len(keys) == 2  # 5 batches of 8 in chunks of 3 batches
    assert [len(chunk) for chunk in images] == [len(chunk) for chunk in texts] == [len(chunk) for chunk in keys]
    assert sum(len(chunk) for chunk in keys) == 40 and len({key for chunk in keys for key in chunk}) == 40
    assert images[0].dtype == np.float16 and images[0].shape[1] == texts[0].shape[1]
    assert np.allclose(np.linalg.norm(images[0].astype(np.float32), axis=1), 1.0, atol=1e-2)
    # the embedding contract's reader sees the same rows, each named by shard file and sample key
    metadata, vectors = read_embeddings(out, "image")
    assert vectors.shape == (40, images[0].shape[1])
    assert set(metadata["shard"].to_pylist()) == {"00000.tar", "00001.tar"}
    assert sorted(metadata["key"].to_pylist()) == sorted(f"{s:05d}{i:04d}" for s in range(2) for i in range(20))


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_writer_rows_stay_aligned_across_chunks(tmp_path, dtype):
    class Trainer:
        global_rank, default_root_dir = 1, str(tmp_path)

    writer = EmbeddingWriter(batches_per_file=2, dtype=dtype)
    features = torch.nn.functional.normalize(torch.randn(7, 4), dim=-1)
    for start in range(0, 7, 3):
        rows = slice(start, start + 3)
        writer.write_on_batch_end(Trainer, None, {"key": [f"k{i}" for i in range(7)][rows],
                                                  "image_features": features[rows], "text_features": -features[rows]},
                                  None, None, start)
    writer.on_predict_epoch_end(Trainer, None)
    folder = tmp_path / "embeddings"
    names = sorted(path.name for path in (folder / "img_emb").iterdir())
    assert names == ["img_emb_0001_00000.npy", "img_emb_0001_00001.npy"]
    image = np.concatenate([np.load(folder / "img_emb" / name) for name in names])
    text = np.concatenate([np.load(p) for p in sorted((folder / "text_emb").iterdir())])
    keys = [k for p in sorted((folder / "metadata").iterdir()) for k in pq.read_table(p)["key"].to_pylist()]
    assert keys == [f"k{i}" for i in range(7)] and image.dtype == np.dtype(dtype)
    assert np.allclose(image, features.numpy(), atol=1e-3) and np.allclose(text, -features.numpy(), atol=1e-3)
