"""`curation embed`: the stored rows are the model's own `encode_image`/`encode_text` of each sample; a killed
run resumes without duplicating or skipping a shard; Ray writes the same files as the local engine."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import clipmodule
from clipformats.embeddings import (
    EmbeddingFilesError,
    iter_parts,
    part_info,
    parts,
    read_part,
    set_info,
    written_parts,
)
from clipformats.files import TEMP_MARK
from clipmodule.data.synthetic import write_synthetic_shards
from curation.cli import main
from curation.config import EmbedConfig
from curation.stages.embed.embedding import run_embed
from tests.conftest import tree_env
from tests.curation.slow_embedder import InterruptedShardEmbedder

REPO = Path(__file__).resolve().parents[2]
SLOW = "tests.curation.slow_embedder:SlowShardEmbedder"
INTERRUPTED = "tests.curation.slow_embedder:InterruptedShardEmbedder"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    clipmodule.save_checkpoint(clipmodule.create_model("tiny-vit"), path)
    return path


def odd_shard(path: Path) -> Path:
    """Two good samples around one without an image and one whose jpg does not decode."""
    def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))

    good = io.BytesIO()
    Image.new("RGB", (40, 24), (200, 30, 30)).save(good, "PNG")
    with tarfile.open(path, "w") as tar:
        for key, fields in (("a0", {"png": good.getvalue(), "txt": b"a wide red box",
                                    "json": json.dumps({"url": "http://x/a0.png"}).encode()}),
                            ("a1", {"txt": b"no image here"}),
                            ("a2", {"jpg": b"not a jpeg", "txt": b"broken"}),
                            ("a3", {"png": good.getvalue(), "txt": b"the same box " * 40})):  # > 77 tokens
            for field, data in fields.items():
                add(tar, f"{key}.{field}", data)
    return path


def test_embeddings_equal_encode_image_and_encode_text(tmp_path, tiny_model, one_thread):
    shards = write_synthetic_shards(tmp_path / "shards", 2, 5, image_size=32)
    odd_shard(tmp_path / "shards" / "00002.tar")
    stats = run_embed(EmbedConfig(model=str(tiny_model), dtype="float32", batch_size=3), [str(tmp_path / "shards")],
                      tmp_path / "emb")
    assert parts(tmp_path / "emb") == ["00000", "00001", "00002"]
    assert (stats["rows_in"], stats["rows_out"]) == (14, 12)
    assert stats["skipped"] == {"no image": 1, "undecodable image": 1}

    model, preprocess = clipmodule.load(tiny_model)
    tokenizer = clipmodule.get_tokenizer(model)
    for shard in [*shards, tmp_path / "shards" / "00002.tar"]:
        read = read_part(tmp_path / "emb", shard.stem)
        with tarfile.open(shard) as tar:
            members = {m.name: tar.extractfile(m).read() for m in tar}
        images = [Image.open(io.BytesIO(members.get(f"{k}.jpg") or members[f"{k}.png"])).convert("RGB")
                  for k in read.keys]
        captions = [members[f"{k}.txt"].decode().strip() for k in read.keys]  # as the shard reader strips them
        with torch.no_grad():
            image = model.encode_image(torch.stack([preprocess(i) for i in images]), normalize=True).numpy()
            text = model.encode_text(tokenizer(captions, truncate=True), normalize=True).numpy()
        np.testing.assert_allclose(read.image, image, atol=1e-5)
        np.testing.assert_allclose(read.text, text, atol=1e-5)
        assert read.shards == [shard.name] * len(read.keys)
        assert read.metadata["caption"].to_pylist() == captions
    odd = read_part(tmp_path / "emb", "00002")
    assert odd.keys == ["a0", "a3"] and odd.metadata["width"].to_pylist() == [40, 40]
    assert odd.metadata["url"].to_pylist() == ["http://x/a0.png", None]
    assert part_info(tmp_path / "emb", "00002")["skipped"] == {"no image": 1, "undecodable image": 1}


def test_fp16_default_rows_are_unit_and_a_rerun_is_a_no_op(tmp_path, tiny_model, one_thread):
    write_synthetic_shards(tmp_path / "shards", 1, 4, image_size=32)
    config = EmbedConfig(model=str(tiny_model))
    run_embed(config, [str(tmp_path / "shards")], tmp_path / "emb")
    read = read_part(tmp_path / "emb", "00000")
    assert read.image.dtype == np.float16
    assert np.allclose(np.linalg.norm(read.image.astype(np.float32), axis=1), 1.0, atol=1e-3)
    recorded = set_info(tmp_path / "emb")  # the finished set names the model by its weights' content
    assert recorded["model"]["weights_sha256"] == hashlib.sha256(tiny_model.read_bytes()).hexdigest()
    assert list(recorded["parts"]) == ["00000"]
    written = (tmp_path / "emb" / "metadata" / "metadata_00000.parquet").stat().st_mtime_ns
    assert run_embed(config, [str(tmp_path / "shards")], tmp_path / "emb")["rows_out"] == 4
    assert (tmp_path / "emb" / "metadata" / "metadata_00000.parquet").stat().st_mtime_ns == written


def test_bad_model_and_bad_embedder_are_one_line(tmp_path, tiny_model, capsys):
    write_synthetic_shards(tmp_path / "shards", 1, 2, image_size=32)
    for extra, expected in ((["--model", str(tmp_path / "nope.safetensors")], "neither an existing checkpoint"),
                            (["--model", str(tiny_model), "--embedder", "no_such_module:X"], "cannot import"),
                            (["--model", str(tiny_model), "--embedder", "clipmodule.embedding"], "module:Class")):
        code = main(["embed", "--shards", str(tmp_path / "shards"), "--out", str(tmp_path / "emb"), *extra])
        error = capsys.readouterr().err.strip()
        assert code == 2 and expected in error and len(error.splitlines()) == 1, error
        assert not (tmp_path / "emb").exists() and not (tmp_path / "emb.stats.json").exists()


def test_an_interrupted_run_resumes_with_the_shards_it_had_not_finished(tmp_path, tiny_model, one_thread):
    write_synthetic_shards(tmp_path / "shards", 4, 3, image_size=32)
    config = EmbedConfig(model=str(tiny_model), embedder=INTERRUPTED)
    InterruptedShardEmbedder.stop_at, InterruptedShardEmbedder.started = 3, 0
    with pytest.raises(KeyboardInterrupt):
        run_embed(config, [str(tmp_path / "shards")], tmp_path / "emb")
    assert written_parts(tmp_path / "emb") == ["00000", "00001"]
    with pytest.raises(EmbeddingFilesError, match="not one finished set"):
        parts(tmp_path / "emb")  # readers refuse the unfinished set
    assert not json.loads((tmp_path / "emb.stats.json").read_text())["finished"]
    InterruptedShardEmbedder.stop_at = None
    stats = run_embed(config, [str(tmp_path / "shards")], tmp_path / "emb")
    assert parts(tmp_path / "emb") == ["00000", "00001", "00002", "00003"]
    assert (stats["rows_out"], stats["embedded_this_run"]) == (12, 6)
    keys = [key for read in iter_parts(tmp_path / "emb", ()) for key in read.keys]
    assert keys == [f"{n:05d}{i:04d}" for n in range(4) for i in range(3)]


@pytest.mark.slow  # a real process killed: ~30 s here, most of it the child importing torch
def test_resume_after_sigkill_neither_duplicates_nor_skips_a_shard(tmp_path, tiny_model, one_thread):
    shards = write_synthetic_shards(tmp_path / "shards", 6, 6, image_size=32)
    out = tmp_path / "emb"
    argv = [sys.executable, "-m", "curation", "embed", "--shards", str(tmp_path / "shards"), "--out", str(out),
            "--model", str(tiny_model), "--embedder", SLOW, "--threads", "1", "--batch_size", "4"]
    process = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env=tree_env())
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if len(list((out / "metadata").glob("metadata_*.parquet"))) >= 2:
            break
        time.sleep(0.05)
    assert process.poll() is None, process.stderr.read().decode()
    process.send_signal(signal.SIGKILL)
    process.wait()
    before = {p.name: p.stat().st_mtime_ns for p in (out / "metadata").glob("metadata_*.parquet")}
    assert 2 <= len(before) < 6

    stats = run_embed(EmbedConfig(model=str(tiny_model), embedder=SLOW, threads=1, batch_size=4),
                      [str(tmp_path / "shards")], out)
    after = {p.name: p.stat().st_mtime_ns for p in (out / "metadata").glob("metadata_*.parquet")}
    assert all(after[name] == mtime for name, mtime in before.items())  # finished parts were not redone
    assert stats["embedded_this_run"] == 6 * (6 - len(before))
    keys = [(read.part, key) for read in iter_parts(out, ()) for key in read.keys]
    expected = [(s.stem, f"{n:05d}{i:04d}") for n, s in enumerate(shards) for i in range(6)]
    assert keys == expected  # every sample once, in shard order
    assert not [p for p in out.rglob("*") if TEMP_MARK in p.name]


@pytest.mark.slow  # Ray's start and two actors importing torch: about a minute here
def test_ray_engine_writes_the_same_files_as_the_local_engine(tmp_path, tiny_model, one_thread):
    import logging

    import ray

    write_synthetic_shards(tmp_path / "shards", 3, 5, image_size=32)
    odd_shard(tmp_path / "shards" / "00003.tar")
    run_embed(EmbedConfig(model=str(tiny_model), threads=1), [str(tmp_path / "shards")], tmp_path / "local")
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    try:
        run_embed(EmbedConfig(model=str(tiny_model), threads=1, engine="ray", workers=2),
                  [str(tmp_path / "shards")], tmp_path / "ray")
    finally:
        ray.shutdown()
    local = sorted(p.relative_to(tmp_path / "local") for p in (tmp_path / "local").rglob("*") if p.is_file())
    assert local == sorted(p.relative_to(tmp_path / "ray") for p in (tmp_path / "ray").rglob("*") if p.is_file())
    assert len(local) == 4 * 3 + 1  # the parts' three files each and the finished-set record
    for path in local:
        assert (tmp_path / "local" / path).read_bytes() == (tmp_path / "ray" / path).read_bytes(), path


def test_an_embedder_name_that_is_no_embedder_class_is_refused_before_anything_is_called(tmp_path, tiny_model,
                                                                                          capsys, monkeypatch):
    """`os:getcwd` and `os:system` are refused without being called; so is a class lacking embed_shard()."""
    called, getcwd = [], os.getcwd

    def recorded(name, result):
        return lambda *args: called.append(name) or result(*args)

    monkeypatch.setattr(os, "getcwd", recorded("getcwd", getcwd))
    monkeypatch.setattr(os, "system", recorded("system", lambda *args: 0))
    write_synthetic_shards(tmp_path / "shards", 1, 2, image_size=32)
    for name, expected in (("os:getcwd", "not a class"), ("os:system", "not a class"),
                           ("collections:OrderedDict", "no setup() method")):
        code = main(["embed", "--shards", str(tmp_path / "shards"), "--out", str(tmp_path / "emb"),
                     "--model", str(tiny_model), "--embedder", name])
        error = capsys.readouterr().err.strip()
        assert code == 2 and expected in error and len(error.splitlines()) == 1, error
    assert called == []
