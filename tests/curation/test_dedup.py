"""`curation dedup`: planted near-duplicates are found (precision and recall in the stats), the first of each group
by (shard, key) is kept whatever the shard order, the drops name it, and re-runs are no-ops."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from clipformats.embeddings import read_embeddings
from curation.cli import main
from curation.config import DedupConfig
from curation.stages.dedup.semdedup import greedy_duplicates, run_dedup

DIM = 32
UNIQUE = 60
PLANTED = 15


@pytest.fixture
def planted(tmp_path, embedded):
    """60 unrelated samples and 15 near-copies (cosine ~0.98) of some of them, keyed after their originals."""
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(UNIQUE, DIM))
    samples = [embedded.Sample(f"a{i:03d}", vectors[i], rng.normal(size=DIM), colour=(4 * i, 100, 200))
               for i in range(UNIQUE)]
    copies = {}
    for j, i in enumerate(rng.choice(UNIQUE, PLANTED, replace=False)):
        noisy = vectors[i] / np.linalg.norm(vectors[i]) + rng.normal(size=DIM) * 0.035
        copies[f"b{j:03d}"] = f"a{i:03d}"
        samples.append(embedded.Sample(f"b{j:03d}", noisy, rng.normal(size=DIM), colour=(4 * i, 100, 200)))
    # originals and copies spread over both shards; a copy sorts after its original by (shard, key)
    samples.append(embedded.Sample("a999", vectors[0], vectors[0], embedded=False))  # no embedding: kept
    shards = {"00000.tar": samples[:40], "00001.tar": samples[40:]}
    shard_dir, embeddings = embedded.write(tmp_path, shards)
    where = {s.key: name for name, group in shards.items() for s in group}
    truth = tmp_path / "truth.parquet"
    pq.write_table(pa.table({"shard": [where[k] for k in copies], "key": list(copies)}), truth)
    return shard_dir, embeddings, copies, where, truth


def test_greedy_keeps_the_first_of_each_group_and_names_it():
    base = np.eye(4, dtype=np.float32)
    rows = np.stack([base[0], base[1], base[0], base[2], base[1], base[0]])
    assert greedy_duplicates(rows, 0.99) == [(2, 0, 1.0), (4, 1, 1.0), (5, 0, 1.0)]
    assert greedy_duplicates(rows, 1.5) == []


def test_planted_duplicates_are_found_and_the_originals_kept(planted, tmp_path, embedded):
    shards, embeddings, copies, where, truth = planted
    out = tmp_path / "deduplicated"
    stats = run_dedup(DedupConfig(threshold=0.95, truth=truth), [str(shards)], embeddings, out)
    assert stats["truth"]["precision"] == 1.0 and stats["truth"]["recall"] == 1.0
    kept = {k for path in out.glob("*.tar") for k in embedded.keys(path)}
    assert kept == {f"a{i:03d}" for i in range(UNIQUE)} | {"a999"} and stats["kept_without_embedding"] == 1
    drops = pq.read_table(tmp_path / "deduplicated.drops.parquet").to_pylist()
    assert {d["key"]: d["duplicate_of_key"] for d in drops} == copies
    assert all(d["duplicate_of_shard"] == where[d["duplicate_of_key"]] and d["cosine"] >= 0.95 for d in drops)
    assert stats["rows_in"] == UNIQUE + PLANTED + 1 and stats["rows_kept"] + stats["rows_dropped"] == stats["rows_in"]
    assert sum(s["samples"] for s in stats["shards"]) == UNIQUE + 1
    assert Image.open(tmp_path / "deduplicated.png").size[0] > 300

    reversed_out = tmp_path / "reversed"  # the shards listed the other way round: the same decisions
    listed = [str(p) for p in sorted(shards.glob("*.tar"))[::-1]]
    run_dedup(DedupConfig(threshold=0.95, thumbnails=0), listed, embeddings, reversed_out)
    assert pq.read_table(tmp_path / "reversed.drops.parquet").to_pylist() == drops
    run_dedup(DedupConfig(threshold=0.95, thumbnails=0, kmeans_backend="numpy"), listed, embeddings,
              tmp_path / "numpy")  # the other k-means (faiss is used when installed) finds the same pairs
    numpy_drops = pq.read_table(tmp_path / "numpy.drops.parquet").to_pylist()
    assert {d["key"]: d["duplicate_of_key"] for d in numpy_drops} == copies


def test_rerun_is_a_no_op_and_bad_truth_is_one_line(planted, tmp_path, capsys):
    shards, embeddings, _, _, truth = planted
    args = ["dedup", "--shards", str(shards), "--embeddings", str(embeddings), "--thumbnails", "0",
            "--out", str(tmp_path / "d")]
    assert main(args) == 0
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "d").iterdir()}
    assert main(args) == 0
    assert "up to date" in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "d").iterdir()} == before
    (tmp_path / "bad.parquet").write_text("not parquet")
    assert main([*args[:-1], str(tmp_path / "e"), "--truth", str(tmp_path / "bad.parquet")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "bad.parquet: cannot read the truth table" in error
    assert not (tmp_path / "e").exists() and not (tmp_path / "e.stats.json").exists()


def semdedup_reference(vectors: np.ndarray, threshold: float) -> set[int]:
    """SemDeDup's rule over all pairs (Abbas et al. 2023, its `semdedup`): the upper triangle of the cosine
    matrix, a row's largest cosine with any earlier row, dropped when above the threshold (1 - eps)."""
    upper = np.triu(vectors @ vectors.T, k=1)
    most = upper.max(axis=0)
    return set(np.flatnonzero(~(most > threshold)).tolist())


def at_angle(base: np.ndarray, other: np.ndarray, cosine: float) -> np.ndarray:
    """The unit vector at `cosine` from `base` in the plane of `base` and `other` (both unit, orthogonal)."""
    return cosine * base + np.sqrt(1 - cosine**2) * other


def test_threshold_and_chains_equal_an_all_pairs_semdedup_reference(tmp_path, embedded):
    """A pair at cosine 0.96 loses its second, one at 0.94 keeps both; a chain c0~c1~c2 (0.96 each step, c0 and
    c2 at 0.84) keeps only c0, as SemDeDup does; the kept set equals the reference's, through the stage."""
    axes = np.eye(DIM)
    vectors = {"a0": axes[0], "a1": at_angle(axes[0], axes[1], 0.96),
               "b0": axes[2], "b1": at_angle(axes[2], axes[3], 0.94),
               "c0": axes[4], "c1": at_angle(axes[4], axes[5], 0.96)}
    angle = 2 * np.arccos(0.96)
    vectors["c2"] = np.cos(angle) * axes[4] + np.sin(angle) * axes[5]
    vectors.update({f"u{i}": axes[6 + i] for i in range(10)})
    rng = np.random.default_rng(0)
    samples = [embedded.Sample(key, vector, rng.normal(size=DIM)) for key, vector in sorted(vectors.items())]
    shards, embeddings = embedded.write(tmp_path, {"00000.tar": samples[:9], "00001.tar": samples[9:]})
    metadata, stored = read_embeddings(embeddings, "image")
    keys = metadata["key"].to_pylist()
    assert keys == sorted(keys)  # (shard, key) order is the reference's row order
    expected = {keys[i] for i in semdedup_reference(stored, 0.95)}
    assert expected == set(vectors) - {"a1", "c1", "c2"}
    run_dedup(DedupConfig(threshold=0.95, clusters=1, thumbnails=0), [str(shards)], embeddings, tmp_path / "d")
    kept = {k for path in (tmp_path / "d").glob("*.tar") for k in embedded.keys(path)}
    assert kept == expected
    drops = pq.read_table(tmp_path / "d.drops.parquet").to_pylist()
    assert {d["key"]: d["duplicate_of_key"] for d in drops} == {"a1": "a0", "c1": "c0", "c2": "c1"}


def test_blocks_give_the_all_pairs_reference_on_many_rows():
    """Over several blocks of rows, with random chains of near-copies, the drops are exactly the reference's."""
    rng = np.random.default_rng(1)
    rows = [rng.normal(size=DIM)]
    for _ in range(1300):  # each row is a fresh one or a near-copy of a random earlier row: chains form
        rows.append(rows[rng.integers(len(rows))] + rng.normal(size=DIM) * 0.22 if rng.random() < 0.4
                    else rng.normal(size=DIM))
    vectors = np.stack(rows)
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    kept = set(range(len(vectors))) - {row for row, _, _ in greedy_duplicates(vectors, 0.95)}
    reference = semdedup_reference(vectors, 0.95)
    assert 400 < len(vectors) - len(reference) < 900 and kept == reference  # keeping-only-kept differs in 67
