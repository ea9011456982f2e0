"""`curation filter`: keep the samples that pass DataComp's baselines, decided on their embeddings and json.

* CLIP score: the cosine of a sample's image and caption embeddings (both L2-normalised, so a dot product),
  kept at or above a threshold, or the top fraction of all input samples (exactly floor(fraction x n) of
  them; DataComp turns a fraction into the score of that rank and keeps ties too, we break ties by key);
* basic: caption words and characters, the image's shorter original side and its aspect ratio;
* image-based clustering (DataComp's ImageNet-cluster baseline): spherical k-means of the input images;
  a sample is kept when its nearest centre is the nearest centre of at least one target embedding.

A sample the embed stage skipped (no decodable image) is dropped as `no_embedding`.

Every sample gets one decision: kept, or dropped for the first filter it fails (in `REASONS` order). The
kept samples are copied byte for byte into shards of the same names in `out` (the shard contract, so
`clipmodule fit` reads them). Beside `out`: `<out>.rows.parquet` (shard, key, clip_score, kept, reason for
every input sample), `<out>.png` (the CLIP-score histogram, kept and dropped) and `<out>.stats.json`.
Decisions depend only on the inputs and settings, so a resumed run writes the shards it had not finished.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from clipformats.files import atomic_path
from clipformats.webdataset import content_hash, shard_records
from curation.config import FilterConfig
from curation.embedding_rows import SampleRows, embedding_files, load_rows, reference_set, write_kept_shards
from curation.kmeans import kmeans, nearest, resolve_backend
from curation.progress import report
from curation.shardio import input_shards
from curation.stage import Stage, file_signature, sidecar
from curation.stages.filter.plots import plot_score_histogram
from curation.stages.sieve import backfill_identity, inherited_identity

REASONS = ("no_embedding", "caption_words", "caption_chars", "image_side", "aspect_ratio", "clip_score",
           "image_cluster")
BINS = 40
ACTIVE = ("clip_score_threshold", "clip_score_fraction", "min_caption_words", "min_caption_chars", "min_image_side",
          "max_aspect_ratio", "image_clusters", "target_embeddings")
"""The settings that switch a filter on (the card lists those that are on)."""


def clip_scores(image: np.ndarray, text: np.ndarray) -> np.ndarray:
    """Cosine of each row's image and caption embedding (rows are unit vectors)."""
    return np.einsum("ij,ij->i", image, text).astype(np.float32)


def top_fraction(scores: np.ndarray, fraction: float) -> np.ndarray:
    """Mask of the floor(fraction x n) highest scores; among equal scores the earlier row wins."""
    keep = np.zeros(len(scores), dtype=bool)
    count = int(np.floor(fraction * len(scores) + 1e-9))  # 0.3 x 50 is 15, not 14.999…
    order = np.lexsort((np.arange(len(scores)), -scores.astype(np.float64)))
    keep[order[:count]] = True
    return keep


def basic_failures(meta: list[dict[str, Any]], config: FilterConfig) -> dict[str, np.ndarray]:
    """Per basic filter that is on, the mask of samples failing it."""
    captions = [m["caption"] or "" for m in meta]
    sides = np.array([[m["width"] or 0, m["height"] or 0] for m in meta], dtype=np.float64).reshape(-1, 2)
    short, long = sides.min(axis=1), sides.max(axis=1)
    failing = {}
    if config.min_caption_words:
        failing["caption_words"] = np.array([len(c.split()) < config.min_caption_words for c in captions], bool)
    if config.min_caption_chars:
        failing["caption_chars"] = np.array([len(c) < config.min_caption_chars for c in captions], bool)
    if config.min_image_side:
        failing["image_side"] = short < config.min_image_side
    if config.max_aspect_ratio is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            failing["aspect_ratio"] = ~(long / short <= config.max_aspect_ratio)  # no sides: NaN, fails
    return failing


def cluster_keep(image: np.ndarray, target: np.ndarray, config: FilterConfig) -> tuple[np.ndarray, dict[str, Any]]:
    """Mask of samples whose nearest k-means centre is the nearest centre of some target embedding."""
    backend = resolve_backend(config.kmeans_backend)
    if not len(image):
        return np.zeros(0, dtype=bool), {"clusters": 0, "clusters_targeted": 0, "target_embeddings": len(target),
                                         "kmeans_backend": backend}
    centres = kmeans(image, config.image_clusters, config.seed, config.kmeans_iterations, backend)
    assigned, _ = nearest(image, centres)
    targeted = np.unique(nearest(target, centres)[0])
    return np.isin(assigned, targeted), {"clusters": len(centres), "clusters_targeted": len(targeted),
                                         "target_embeddings": len(target), "kmeans_backend": backend}


def decide(rows: SampleRows, config: FilterConfig, target: np.ndarray | None) -> tuple[np.ndarray, np.ndarray,
                                                                                         dict[str, Any]]:
    """(reason per sample, '' when kept; CLIP scores; clustering facts). The first failing filter names it."""
    scores = clip_scores(rows.image, rows.text)
    failing = {"no_embedding": ~rows.embedded, **basic_failures(rows.meta, config)}
    if config.clip_score_threshold is not None:
        failing["clip_score"] = ~(scores >= config.clip_score_threshold)
    elif config.clip_score_fraction is not None:
        failing["clip_score"] = ~top_fraction(scores, config.clip_score_fraction)
    clustering: dict[str, Any] = {}
    if config.image_clusters:
        kept_by_cluster, clustering = cluster_keep(rows.image[rows.embedded], target, config)
        failing["image_cluster"] = np.ones(len(rows), dtype=bool)
        failing["image_cluster"][rows.embedded] = ~kept_by_cluster
    reasons = np.full(len(rows), "", dtype=object)
    for reason in reversed(REASONS):  # the earliest failing filter is written last, so it is the one that stays
        if reason in failing:
            reasons[failing[reason]] = reason
    return reasons, scores, clustering


def run_filter(config: FilterConfig, shards: list[str], embeddings: Path, out: Path,
               overwrite: bool = False) -> dict[str, Any]:
    """Write `out/<shard>.tar` with the samples every filter keeps, the decision per sample and the stats."""
    out, embeddings = Path(out), Path(embeddings)
    sources = input_shards(shards, "input shards")
    target = config.target_embeddings
    fingerprint = {"config": asdict(config), "inputs": file_signature(sources),
                   "embeddings": file_signature(embedding_files(embeddings, sources))}
    if target is not None:
        _, target_image, target_files = reference_set(target, "filter.target_embeddings")
        fingerprint["target"] = file_signature(target_files)
    rows_file, plot = sidecar(out, ".rows.parquet"), sidecar(out, ".png")
    stage = Stage("filter", out, fingerprint, overwrite, extra_outputs=(rows_file, plot),
                  inputs=tuple(p for p in (*sources, embeddings, target) if p is not None), made=("*.tar",))
    if (done := stage.finished()) is not None:
        done = backfill_identity(stage, done, sources)
        report(f"filter: up to date ({done['rows_kept']:,} of {done['rows_in']:,} kept in {out})")
        return done
    with stage.running():
        rows = load_rows(sources, embeddings)
        reasons, scores, clustering = decide(rows, config, target_image if target is not None else None)
        kept = reasons == ""
        write_kept_shards(out, sources, rows, kept, stage.created)
        _write_rows(rows, scores, reasons, rows_file)
        threshold = _lowest_kept(scores, kept, config)
        plot_score_histogram(scores, kept, threshold, plot)
        stats = stage.finish({**_stats(config, sources, out, rows, scores, reasons, threshold, clustering,
                                       rows_file, plot), **inherited_identity(sources)})
    dropped = ", ".join(f"{n:,} {r}" for r, n in stats["dropped_by_reason"].items()) or "none"
    report(f"filter: kept {stats['rows_kept']:,} of {stats['rows_in']:,} samples (dropped: {dropped}) → {out}")
    return stats


def _lowest_kept(scores: np.ndarray, kept: np.ndarray, config: FilterConfig) -> float | None:
    if config.clip_score_threshold is not None:
        return config.clip_score_threshold
    if config.clip_score_fraction is not None:
        in_top = top_fraction(scores, config.clip_score_fraction)
        return float(scores[in_top].min()) if in_top.any() else None
    return None


def _write_rows(rows: SampleRows, scores: np.ndarray, reasons: np.ndarray, path: Path) -> None:
    table = pa.table({"shard": pa.array(rows.shard, pa.string()), "key": pa.array(rows.key, pa.string()),
                      "clip_score": pa.array(scores, pa.float32()), "kept": pa.array(reasons == "", pa.bool_()),
                      "reason": pa.array(list(reasons), pa.string())})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def score_summary(scores: np.ndarray, kept: np.ndarray) -> dict[str, Any]:
    """Quantiles and a fixed-bin histogram (kept and dropped) of the CLIP scores, for the stats and the card."""
    low, high = (float(scores.min()), float(scores.max())) if len(scores) else (0.0, 1.0)
    edges = np.linspace(low, high if high > low else low + 1e-6, BINS + 1)
    quantiles = {f"p{q}": round(float(np.percentile(scores, q)), 4) for q in (5, 25, 50, 75, 95)}
    return {"mean": round(float(scores.mean()), 4), **quantiles,
            "histogram": {"edges": [round(float(e), 4) for e in edges],
                          "kept": np.histogram(scores[kept], edges)[0].tolist(),
                          "dropped": np.histogram(scores[~kept], edges)[0].tolist()}}


def _stats(config: FilterConfig, sources: list[Path], out: Path, rows: SampleRows, scores: np.ndarray,
           reasons: np.ndarray, threshold: float | None, clustering: dict[str, Any], rows_file: Path,
           plot: Path) -> dict[str, Any]:
    kept = reasons == ""
    per_shard = {name: int(kept[indices].sum()) for name, indices in rows.by_shard().items()}
    shards = shard_records([out / s.name for s in sources], samples={s.name: per_shard.get(s.name, 0)
                                                                     for s in sources})
    dropped = {r: int((reasons == r).sum()) for r in REASONS if (reasons == r).any()}
    active = {k: v for k, v in asdict(config).items() if k in ACTIVE and v not in (None, 0)}
    return {"rows_in": len(rows), "rows_kept": int(kept.sum()), "rows_dropped": int((~kept).sum()),
            "dropped_by_reason": dropped, "filters": active,
            "clip_score": {"threshold": threshold, **score_summary(scores, kept)},
            "image_clustering": clustering or None, "rows_file": str(rows_file), "histogram_png": str(plot),
            "content_hash": content_hash(shards), "shards": shards}
