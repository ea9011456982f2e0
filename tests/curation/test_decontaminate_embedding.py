"""`curation decontaminate`'s embedding pass: planted evaluation copies that the perceptual hash misses (other
pixels, near embedding) are dropped beside the ones it catches, precision and recall are in the stats."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from curation.cli import main
from curation.config import DecontaminateConfig
from curation.stages.decontaminate.decontamination import run_decontaminate

DIM = 32


def test_embedding_pass_finds_the_copies_the_hash_misses(tmp_path, embedded, capsys):
    rng = np.random.default_rng(0)
    evaluation = [embedded.Sample(f"e{i:02d}", rng.normal(size=DIM), rng.normal(size=DIM),
                                  picture=embedded.picture(i)) for i in range(20)]
    eval_shards, eval_embeddings = embedded.write(tmp_path / "evalset", {"test.tar": evaluation})
    eval_tar = eval_shards / "test.tar"
    train = [embedded.Sample(f"u{i:02d}", rng.normal(size=DIM), rng.normal(size=DIM),
                             picture=embedded.picture(1000 + i)) for i in range(40)]
    near = {f"n{j:02d}": f"e{j:02d}" for j in range(10)}  # edited beyond the hash: other pixels, near embedding
    train += [embedded.Sample(key, evaluation[int(e[1:])].image / np.linalg.norm(evaluation[int(e[1:])].image)
                              + rng.normal(size=DIM) * 0.03, rng.normal(size=DIM), picture=embedded.picture(2000 + j))
              for j, (key, e) in enumerate(near.items())]
    copies = {f"c{j}": f"e{10 + j:02d}" for j in range(3)}  # pixel copies, unrelated embeddings: the hash's
    train += [embedded.Sample(key, rng.normal(size=DIM), rng.normal(size=DIM), picture=embedded.picture(int(e[1:])))
              for key, e in copies.items()]
    shards, embeddings = embedded.write(tmp_path / "train", {"00000.tar": train[:30], "00001.tar": train[30:]})
    where = {s.key: "00000.tar" if i < 30 else "00001.tar" for i, s in enumerate(train)}
    truth = tmp_path / "truth.parquet"
    planted = [*near, *copies]
    pq.write_table(pa.table({"shard": [where[k] for k in planted], "key": planted}), truth)

    config = DecontaminateConfig(truth=truth, workers=1, thumbnails=0)
    hash_only = run_decontaminate(config, [str(eval_tar)], [str(shards)], tmp_path / "h")
    assert hash_only["truth"]["precision"] == 1.0 and hash_only["truth"]["recall"] == 3 / 13

    out = tmp_path / "clean"
    assert main(["decontaminate", "--eval", str(eval_tar), "--shards", str(shards), "--out", str(out),
                 "--embeddings", str(embeddings), "--eval_embeddings", str(eval_embeddings),
                 "--embedding_threshold", "0.9", "--truth", str(truth), "--workers", "1", "--thumbnails", "4"]) == 0
    stats = json.loads((tmp_path / "clean.stats.json").read_text())
    assert stats["truth"]["precision"] == 1.0 and stats["truth"]["recall"] == 1.0
    assert stats["dropped_by_pass"] == {"phash": 3, "embedding": 10}
    assert stats["embedding_pass"]["samples_dropped_only_by_embedding"] == 10
    drops = pq.read_table(tmp_path / "clean.drops.parquet").to_pylist()
    assert {d["key"]: d["eval_image"] for d in drops if d["pass"] == "embedding"} == \
        {k: f"{eval_tar}::{e}" for k, e in near.items()}
    assert all(d["cosine"] >= 0.9 for d in drops if d["pass"] == "embedding")
    kept = {k for path in out.glob("*.tar") for k in embedded.keys(path)}
    assert kept == {f"u{i:02d}" for i in range(40)}
    assert Image.open(tmp_path / "clean.png").size[0] > 200

    assert main(["decontaminate", "--eval", str(eval_tar), "--shards", str(shards), "--out", str(tmp_path / "x"),
                 "--eval_embeddings", str(eval_embeddings)]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--eval_embeddings needs --embeddings" in error and not (tmp_path / "x").exists()
