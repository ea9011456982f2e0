"""`curation filter`: the documented rows are kept (threshold, top fraction, basic filters, image clusters), every
row is accounted for with its reason, the shards hold exactly the kept samples, re-runs are no-ops."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from clipformats.embeddings import read_embeddings
from curation.cli import main
from curation.config import FilterConfig
from curation.stages.filter.filtering import run_filter

SAMPLES = 50
DIM = 16


def pool(embedded, rng: np.random.Generator) -> list:
    """Samples whose caption embedding leans towards the image by a random amount: scores spread over [-0.3, 1]."""
    samples = []
    for i in range(SAMPLES):
        image = rng.normal(size=DIM)
        image /= np.linalg.norm(image)
        text = rng.random() * 3 * image + rng.normal(size=DIM) / np.sqrt(DIM)
        samples.append(embedded.Sample(f"s{i:03d}", image, text))
    return samples


@pytest.fixture
def scored(tmp_path, embedded):
    samples = pool(embedded, np.random.default_rng(0))
    shards, embeddings = embedded.write(tmp_path, {"00000.tar": samples[:30], "00001.tar": samples[30:]})
    meta, image = read_embeddings(embeddings, "image")
    _, text = read_embeddings(embeddings, "text")
    scores = dict(zip(meta["key"].to_pylist(), (image * text).sum(axis=1)))  # from the stored fp16, independently
    return shards, embeddings, scores


def kept_keys(out, embedded) -> set[str]:
    return {key for path in sorted(out.glob("*.tar")) for key in embedded.keys(path)}


def test_threshold_keeps_exactly_the_samples_at_or_above_it(scored, tmp_path, embedded):
    shards, embeddings, scores = scored
    out = tmp_path / "filtered"
    stats = run_filter(FilterConfig(clip_score_threshold=0.5), [str(shards)], embeddings, out)
    expected = {k for k, s in scores.items() if s >= 0.5}
    assert 5 < len(expected) < SAMPLES - 5
    assert kept_keys(out, embedded) == expected
    rows = pq.read_table(tmp_path / "filtered.rows.parquet").to_pylist()
    assert len(rows) == SAMPLES and {r["key"] for r in rows if r["kept"]} == expected
    assert all(r["reason"] == ("" if r["kept"] else "clip_score") for r in rows)
    assert np.allclose([r["clip_score"] for r in rows], [scores[r["key"]] for r in rows], atol=1e-5)
    assert stats["rows_kept"] + sum(stats["dropped_by_reason"].values()) == stats["rows_in"] == SAMPLES
    assert sum(s["samples"] for s in stats["shards"]) == len(expected)
    assert sum(stats["clip_score"]["histogram"]["kept"]) == len(expected)
    assert Image.open(tmp_path / "filtered.png").size[0] > 300


def test_fraction_keeps_the_top_floor_fraction(scored, tmp_path, embedded):
    shards, embeddings, scores = scored
    out = tmp_path / "top"
    stats = run_filter(FilterConfig(clip_score_fraction=0.3), [str(shards)], embeddings, out)
    ranked = sorted(scores, key=lambda k: (-scores[k], k))
    assert kept_keys(out, embedded) == set(ranked[:15])  # floor(0.3 x 50)
    assert stats["clip_score"]["threshold"] == pytest.approx(float(scores[ranked[14]]), abs=1e-6)
    assert stats["dropped_by_reason"] == {"clip_score": 35}


def test_basic_filters_drop_by_the_first_failing_reason(tmp_path, embedded):
    rng = np.random.default_rng(1)
    samples = pool(embedded, rng)[:8]
    samples[0].caption = "dog"                       # one word
    samples[1].caption = "a b"                       # two words, 3 chars: first reason is words
    samples[2].width = 120                           # short side 120
    samples[3].width, samples[3].height = 900, 250   # ratio 3.6
    samples[4].width, samples[4].height = 600, 200   # ratio 3.0 exactly: kept
    samples[5].embedded, samples[5].caption = False, "x"  # skipped by the embed stage: that reason comes first
    shards, embeddings = embedded.write(tmp_path, {"00000.tar": samples})
    config = FilterConfig(min_caption_words=3, min_caption_chars=6, min_image_side=200, max_aspect_ratio=3.0)
    stats = run_filter(config, [str(shards)], embeddings, tmp_path / "basic")
    rows = {r["key"]: r["reason"] for r in pq.read_table(tmp_path / "basic.rows.parquet").to_pylist()}
    assert rows == {"s000": "caption_words", "s001": "caption_words", "s002": "image_side",
                    "s003": "aspect_ratio", "s004": "", "s005": "no_embedding", "s006": "", "s007": ""}
    assert stats["dropped_by_reason"] == {"no_embedding": 1, "caption_words": 2, "image_side": 1, "aspect_ratio": 1}
    assert kept_keys(tmp_path / "basic", embedded) == {"s004", "s006", "s007"}


def test_image_clusters_keep_the_pool_clusters_nearest_the_target(tmp_path, embedded):
    rng = np.random.default_rng(2)
    centres = np.eye(DIM)[:4] * 4  # four well separated groups of 10
    samples = [embedded.Sample(f"g{g}_{i}", centres[g] + rng.normal(size=DIM) * 0.2, rng.normal(size=DIM))
               for g in range(4) for i in range(10)]
    shards, embeddings = embedded.write(tmp_path / "pool", {"00000.tar": samples[:25], "00001.tar": samples[25:]})
    target = [embedded.Sample(f"t{i}", centres[i % 2] + rng.normal(size=DIM) * 0.2, rng.normal(size=DIM))
              for i in range(6)]  # near groups 0 and 1 only
    _, target_embeddings = embedded.write(tmp_path / "target", {"00000.tar": target})
    config = FilterConfig(image_clusters=4, target_embeddings=target_embeddings, kmeans_backend="numpy")
    stats = run_filter(config, [str(shards)], embeddings, tmp_path / "clustered")
    assert kept_keys(tmp_path / "clustered", embedded) == {s.key for s in samples[:20]}
    assert stats["image_clustering"]["clusters_targeted"] == 2
    assert stats["dropped_by_reason"] == {"image_cluster": 20}


def test_rerun_is_a_no_op_other_settings_are_refused_and_bad_input_is_one_line(scored, tmp_path, capsys):
    shards, embeddings, _ = scored
    out = tmp_path / "filtered"
    args = ["filter", "--shards", str(shards), "--embeddings", str(embeddings), "--out", str(out)]
    assert main([*args, "--clip_score_threshold", "0.4"]) == 0
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert main([*args, "--clip_score_threshold", "0.4"]) == 0
    assert "up to date" in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    assert main([*args, "--clip_score_threshold", "0.6"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert json.loads((tmp_path / "filtered.stats.json").read_text())["fingerprint"]["config"][
        "clip_score_threshold"] == 0.4

    (embeddings / "metadata" / "metadata_00001.parquet").unlink()
    assert main(["filter", "--shards", str(shards), "--embeddings", str(embeddings), "--out", str(tmp_path / "x"),
                 "--clip_score_fraction", "0.5"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "metadata_00001.parquet: missing" in error and "Traceback" not in error
    assert not (tmp_path / "x").exists()
    assert main(["filter", "--shards", str(shards), "--embeddings", str(embeddings), "--out", str(tmp_path / "y"),
                 "--clip_score_fraction", "0.5", "--clip_score_threshold", "0.1"]) == 2
    assert "not both" in capsys.readouterr().err


def test_a_stopped_run_resumes_and_the_card_refuses_stale_inputs(tmp_path, embedded):
    from curation.cards import optional_stats
    from curation.config import WorkLayout
    from curation.errors import CurationError

    layout = WorkLayout(tmp_path)
    samples = pool(embedded, np.random.default_rng(3))
    shards, embeddings = embedded.write(tmp_path, {"00000.tar": samples[:25], "00001.tar": samples[25:]})
    config = FilterConfig(clip_score_fraction=0.5)
    stats = run_filter(config, [str(shards)], embeddings, layout.filtered)
    stats_file = tmp_path / "filtered.stats.json"  # as a run killed after its first shard leaves it
    stats_file.write_text(json.dumps({"stage": "filter", "finished": False, "fingerprint": stats["fingerprint"]}))
    (layout.filtered / "00001.tar").unlink()
    kept_first = (layout.filtered / "00000.tar").stat().st_mtime_ns
    resumed = run_filter(config, [str(shards)], embeddings, layout.filtered)
    assert resumed["content_hash"] == stats["content_hash"] and resumed["rows_kept"] == 25
    assert (layout.filtered / "00000.tar").stat().st_mtime_ns == kept_first

    assert list(optional_stats(layout)) == ["filter"]
    (shards / "00001.tar").write_bytes((shards / "00001.tar").read_bytes())  # rewritten after the filter read it
    with pytest.raises(CurationError, match="which is not the current"):
        optional_stats(layout)


def test_fraction_rounds_down_and_a_score_at_the_threshold_is_kept(tmp_path, embedded):
    """0.31 x 50 = 15.5 keeps 15 (floor, not ceil); a caption embedding (0.5, 0.87, 0...) against the image
    (1, 0, 0...) scores exactly 0.5 in fp16, so threshold 0.5 keeps it and 0.5 + 1e-6 drops it."""
    samples = pool(embedded, np.random.default_rng(3))
    at = np.zeros(DIM)
    at[0] = 1.0
    exact = np.zeros(DIM)
    exact[0], exact[1] = 0.5, np.sqrt(0.75)
    samples[7] = embedded.Sample("s007", at, exact)
    shards, embeddings = embedded.write(tmp_path, {"00000.tar": samples})
    meta, image = read_embeddings(embeddings, "image")
    _, text = read_embeddings(embeddings, "text")
    scores = dict(zip(meta["key"].to_pylist(), (image * text).sum(axis=1)))
    assert scores["s007"] == np.float32(0.5)
    run_filter(FilterConfig(clip_score_fraction=0.31), [str(shards)], embeddings, tmp_path / "top")
    assert len(kept_keys(tmp_path / "top", embedded)) == 15
    run_filter(FilterConfig(clip_score_threshold=0.5), [str(shards)], embeddings, tmp_path / "at")
    assert "s007" in kept_keys(tmp_path / "at", embedded)
    assert kept_keys(tmp_path / "at", embedded) == {k for k, s in scores.items() if s >= 0.5}
    run_filter(FilterConfig(clip_score_threshold=0.500001), [str(shards)], embeddings, tmp_path / "above")
    assert "s007" not in kept_keys(tmp_path / "above", embedded)
