"""`clipmodule predict` on 2 ranks (DDP over gloo, CPU) writes, for every sample of the shards, the embeddings
`encode_image` / `encode_text` give that sample, filed under its key, in parts named after the rank that read it.

The expected values are computed apart from the loader: each shard is read with `tarfile`, each image decoded
with PIL and put through the eval transform, each caption tokenised, and the checkpoint's model encodes them."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import lightning
import numpy as np
import pyarrow.parquet as pq
import torch
from PIL import Image

from clipformats.embeddings import set_info
from clipmodule.api import tokenize
from clipmodule.data.synthetic import write_synthetic_shards
from clipmodule.train.module import ClipLitModule, build_network
from clipmodule.transforms import image_transform

REPO = Path(__file__).resolve().parents[3]
TINY = ["-c", str(REPO / "experiments" / "base.yaml"), "-c", str(REPO / "experiments" / "tiny_cpu.yaml")]


def tree_env() -> dict[str, str]:
    """The environment for a worker process: it imports the tree under test (this file's repository), not an
    installed copy, and keeps one thread (2 ranks on a small machine)."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def expected_embeddings(model: torch.nn.Module, shards: list[Path]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{"<shard file>/<key>": (image embedding, caption embedding)} for every sample, read without the loader."""
    transform = image_transform(model.config.vision.image_size, train=False)
    samples: dict[str, dict[str, bytes]] = {}
    for shard in shards:
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                key, extension = member.name.split(".", 1)
                samples.setdefault(f"{shard.name}/{key}", {})[extension] = tar.extractfile(member).read()
    keys = sorted(samples)
    images = torch.stack([transform(Image.open(io.BytesIO(samples[key]["jpg"]))) for key in keys])
    texts = tokenize([samples[key]["txt"].decode() for key in keys])
    with torch.no_grad():
        image, text = model.encode_image(images, normalize=True), model.encode_text(texts, normalize=True)
    return {key: (image[i].numpy(), text[i].numpy()) for i, key in enumerate(keys)}


def written_by_rank(out: Path) -> dict[int, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """{rank: {"<shard>/<key>": (image row, text row)}}, the rank read from each part's name `<rank>_<chunk>`."""
    found: dict[int, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    for metadata in sorted((out / "metadata").glob("metadata_*.parquet")):
        part = metadata.stem[len("metadata_"):]
        rank, _chunk = part.split("_")
        table = pq.read_table(metadata)
        image = np.load(out / "img_emb" / f"img_emb_{part}.npy").astype(np.float32)
        text = np.load(out / "text_emb" / f"text_emb_{part}.npy").astype(np.float32)
        assert len(image) == len(text) == table.num_rows, part
        rows = found.setdefault(int(rank), {})
        for i, (shard, key) in enumerate(zip(table["shard"].to_pylist(), table["key"].to_pylist(), strict=True)):
            assert f"{shard}/{key}" not in rows, f"{shard}/{key} written twice"
            rows[f"{shard}/{key}"] = (image[i], text[i])
    return found


def test_two_rank_predict_writes_each_samples_own_embeddings_in_its_ranks_parts(tmp_path):
    shards = write_synthetic_shards(tmp_path / "val", 2, 7, image_size=32)  # 14 samples: 7 per rank
    torch.manual_seed(123)  # other weights than the CLI's seeded initialisation: the checkpoint must be read
    module = ClipLitModule(build_network("tiny-vit"))
    checkpoint = tmp_path / "model.ckpt"
    torch.save({"state_dict": module.state_dict(), "pytorch-lightning_version": lightning.__version__}, checkpoint)
    out = tmp_path / "emb"
    command = [sys.executable, "-m", "clipmodule", "predict", *TINY, "--data.val_shards", str(tmp_path / "val"),
               "--data.batch_size", "2", "--data.num_workers", "0", "--trainer.devices", "2",
               "--trainer.strategy", "ddp", "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
               "--prediction_writer.output_dir", str(out), "--prediction_writer.batches_per_file", "2",
               "--ckpt_path", str(checkpoint)]
    done = subprocess.run(command, cwd=tmp_path, env=tree_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    written = written_by_rank(out)
    expected = expected_embeddings(module.model.eval(), shards)
    # the loader deals the samples of all shards, in order, round-robin over the ranks: rank r has every
    # second sample from the r-th on, in parts of its own (4 batches of 2 in chunks of 2 batches: 2 parts)
    order = sorted(expected)
    assert sorted(written) == [0, 1]
    for rank in (0, 1):
        assert sorted(written[rank]) == sorted(order[rank::2]), f"rank {rank} wrote another rank's samples"
        assert len(list((out / "metadata").glob(f"metadata_{rank:04d}_*.parquet"))) == 2
    for rank, rows in written.items():
        for key, (image, text) in rows.items():
            assert np.allclose(image, expected[key][0], atol=2e-3), f"rank {rank}: image embedding of {key}"
            assert np.allclose(text, expected[key][1], atol=2e-3), f"rank {rank}: caption embedding of {key}"
    # rank 0 marks the folder one finished set once both ranks' parts are written: all four are in it
    record = set_info(out)
    assert len(record["parts"]) == 4 and record["model"]["world_size"] == 2
    assert not (tmp_path / "emb.lock").exists()
    # a mix-up of rows would pass a check of norms alone: the samples' embeddings really differ
    assert not np.allclose(expected[order[0]][0], expected[order[1]][0], atol=2e-3)
