"""`curation index`: the index kind follows size and memory; recall@10 against brute force on 20k vectors."""

from __future__ import annotations

import numpy as np
import pytest

from clipformats.embeddings import finish_set, normalise, write_part
from clipformats.knn import read_index
from curation.cli import main
from curation.config import IndexConfig
from curation.errors import CurationError
from curation.stages.index.knn_index import GIB, choose_index, recall_at_k, run_index


def clustered(rows: int, dim: int, seed: int) -> np.ndarray:
    """Unit vectors around 200 centres, as CLIP embeddings of a web crawl cluster by subject."""
    rng = np.random.default_rng(seed)
    centres = normalise(rng.standard_normal((200, dim)))
    return normalise(centres[rng.integers(200, size=rows)] + 0.09 * rng.standard_normal((rows, dim)))


@pytest.fixture(scope="module")
def folder_20k(tmp_path_factory):
    """20k image vectors in 4 parts; each text vector is its image vector plus noise (a caption query)."""
    folder = tmp_path_factory.mktemp("emb") / "emb"
    image = clustered(20_000, 64, seed=1)
    text = normalise(image + 0.04 * np.random.default_rng(2).standard_normal(image.shape))
    for part in range(4):
        rows = slice(part * 5000, (part + 1) * 5000)
        keys = [f"{part:05d}{i:05d}" for i in range(5000)]
        write_part(folder, f"{part:05d}", image[rows], text[rows], {"key": keys, "shard": [f"{part:05d}.tar"] * 5000},
                   dtype="float32")
    finish_set(folder)
    return folder, image


def brute_force(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-(queries @ vectors.T), axis=1, kind="stable")[:, :k]


def test_choose_index_follows_size_and_memory():
    assert choose_index(50_000, 512, 4 * GIB, 100_000)[0] == "Flat"
    assert choose_index(1_000_000, 512, 4 * GIB, 100_000)[0] == "HNSW32,Flat"  # 2.1 GiB of vectors + links
    assert choose_index(1_000_000, 512, 1 * GIB, 100_000)[0] == "IVF4096,SQ8"  # 520 bytes a vector
    factory = choose_index(1_000_000, 512, 0.25 * GIB, 100_000)[0]
    assert factory.startswith("IVF4096,PQ") and 1_000_000 * int(factory.split("PQ")[1].split("x")[0]) < GIB / 4
    with pytest.raises(CurationError, match="do not fit"):
        choose_index(1_000_000_000, 512, 1 * GIB, 100_000)
    assert recall_at_k(np.array([[1, 2, -1]]), np.array([[2, 1, 3]])) == pytest.approx(2 / 3)


@pytest.mark.parametrize("memory_gb, kind", [(1.0, "HNSW"), (0.005, "IVF512,SQ8")])
def test_recall_at_10_on_20k_vectors_against_brute_force(tmp_path, folder_20k, memory_gb, kind):
    folder, image = folder_20k
    config = IndexConfig(exact_max=1000, max_memory_gb=memory_gb, recall_queries=300, threads=1)
    stats = run_index(config, folder, tmp_path / "index")
    assert stats["factory"].startswith(kind) and stats["rows"] == 20_000
    assert stats["recall"] >= 0.95 and stats["tried"][-1]["recall"] == stats["recall"]
    # queries the tuning never saw: fresh noisy copies of other rows, searched through the stored index
    rng = np.random.default_rng(9)
    queries = normalise(image[rng.choice(20_000, 200, replace=False)] + 0.05 * rng.standard_normal((200, 64)))
    opened = read_index(tmp_path / "index")
    _, found = opened.search(queries, 10)
    assert recall_at_k(found, brute_force(image, queries, 10)) >= 0.95
    assert opened.rows["key"][int(found[0, 0])].as_py()[:5] == opened.rows["part"][int(found[0, 0])].as_py()


def test_flat_index_is_exact_and_a_rerun_is_a_no_op(tmp_path, folder_20k):
    folder, image = folder_20k
    stats = run_index(IndexConfig(recall_queries=100), folder, tmp_path / "index")
    assert (stats["factory"], stats["recall"]) == ("Flat", 1.0)
    _, found = read_index(tmp_path / "index").search(image[:50], 10)
    assert (found == brute_force(image, image[:50], 10)).mean() > 0.99  # exact (ties aside)
    assert run_index(IndexConfig(recall_queries=100), folder, tmp_path / "index") == stats


def test_bad_embedding_folder_is_one_line(tmp_path, capsys):
    assert main(["index", "--embeddings", str(tmp_path / "missing"), "--out", str(tmp_path / "index")]) == 2
    error = capsys.readouterr().err
    assert "embedding folder not found" in error and len(error.strip().splitlines()) == 1
    (tmp_path / "emb" / "metadata").mkdir(parents=True)
    (tmp_path / "emb" / "metadata" / "metadata_00000.parquet").write_bytes(b"junk")
    assert main(["index", "--embeddings", str(tmp_path / "emb"), "--out", str(tmp_path / "index")]) == 2
    assert "not one finished set of embeddings" in capsys.readouterr().err
    (tmp_path / "emb" / "embeddings.json").write_text('{"parts": {"00000": {"id": ""}}, "model": null}')
    assert main(["index", "--embeddings", str(tmp_path / "emb"), "--out", str(tmp_path / "index")]) == 2
    assert "cannot read embedding metadata" in capsys.readouterr().err
    assert not (tmp_path / "index").exists()
