"""`curation dedup`: drop near-duplicate samples by image embedding (SemDeDup, Abbas et al. 2023).

The image embeddings of the input samples are clustered (spherical k-means, `curation.kmeans`); within
each cluster the samples are taken in (shard, key) order and, as SemDeDup decides, a sample whose cosine
with any earlier sample of its cluster (kept or itself dropped) is above `threshold` is dropped, naming
that most similar earlier sample. So of every group of near-copies the first is kept, whatever the shard
order, and a chain a~b~c keeps only a even when a and c are apart. (SemDeDup orders a cluster by distance
to its centre; the (shard, key) order makes the choice independent of the clustering.) Pairs split
across clusters are not compared: more clusters are faster and miss more.

Kept samples are copied byte for byte into shards of the same names in `out`. Beside it:
`<out>.drops.parquet` (dropped shard/key, the earlier shard/key it duplicates, their cosine, the cluster),
`<out>.png` (thumbnails of the closest pairs) and `<out>.stats.json` (with precision and recall when a
`truth` table of planted duplicates is given).
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from clipformats.files import atomic_path
from clipformats.webdataset import content_hash, shard_records
from curation.config import DedupConfig
from curation.decontaminate_plot import plot_pairs
from curation.embedding_rows import (
    SampleRows,
    embedding_files,
    load_rows,
    precision_recall,
    read_truth,
    write_kept_shards,
)
from curation.kmeans import kmeans, nearest, resolve_backend
from curation.progress import progress_bar, report
from curation.shardio import input_shards, shard_images
from curation.stage import Stage, file_signature, sidecar
from curation.stages.sieve import backfill_identity, inherited_identity

BLOCK = 512
TOP_PAIRS = 50


def greedy_duplicates(vectors: np.ndarray, threshold: float) -> list[tuple[int, int, float]]:
    """SemDeDup's rule: (row, its most similar earlier row, their cosine) for each row whose cosine with any
    earlier row, dropped or not, is above `threshold`; the earliest of equal matches is named. Rows are
    compared a block at a time against every row before them."""
    drops = []
    for start in range(0, len(vectors), BLOCK):
        chunk = vectors[start : start + BLOCK]
        sims = chunk @ vectors[: start + len(chunk)].T
        earlier = np.arange(start + len(chunk))[None, :] < np.arange(start, start + len(chunk))[:, None]
        sims = np.where(earlier, sims, -np.inf)
        best = sims.argmax(axis=1)
        cosine = sims[np.arange(len(chunk)), best]
        drops += [(start + j, int(best[j]), float(cosine[j])) for j in np.flatnonzero(cosine > threshold)]
    return drops


def find_duplicates(image: np.ndarray, config: DedupConfig) -> tuple[list[tuple[int, int, float, int]],
                                                                      dict[str, Any]]:
    """(dropped row, the earlier row it duplicates, cosine, cluster) of every duplicate, and facts about the
    clustering."""
    backend = resolve_backend(config.kmeans_backend)
    if not len(image):
        return [], {"clusters": 0, "kmeans_backend": backend, "largest_cluster": 0, "mean_cluster": 0.0}
    k = config.clusters or math.ceil(math.sqrt(len(image)))
    centres = kmeans(image, k, config.seed, config.kmeans_iterations, backend)
    assigned, _ = nearest(image, centres)
    drops = []
    sizes = np.bincount(assigned, minlength=len(centres))
    with progress_bar("dedup: compare within clusters", len(centres)) as advance:
        for cluster in range(len(centres)):
            members = np.flatnonzero(assigned == cluster)  # ascending: (shard, key) order
            drops += [(int(members[a]), int(members[b]), c, cluster)
                      for a, b, c in greedy_duplicates(image[members], config.threshold)]
            advance(1)
    return sorted(drops), {"clusters": len(centres), "kmeans_backend": backend,
                           "largest_cluster": int(sizes.max()), "mean_cluster": round(float(sizes.mean()), 2)}


def run_dedup(config: DedupConfig, shards: list[str], embeddings: Path, out: Path,
              overwrite: bool = False) -> dict[str, Any]:
    """Write `out/<shard>.tar` without the near-duplicates, with the drop list, thumbnails and stats."""
    out, embeddings = Path(out), Path(embeddings)
    sources = input_shards(shards, "input shards")
    fingerprint = {"config": {k: v for k, v in asdict(config).items() if k != "thumbnails"},
                   "inputs": file_signature(sources),
                   "embeddings": file_signature(embedding_files(embeddings, sources))}
    if config.truth is not None:
        fingerprint["truth"] = file_signature([config.truth]) if config.truth.is_file() else str(config.truth)
    drop_list, plot = sidecar(out, ".drops.parquet"), sidecar(out, ".png")
    stage = Stage("dedup", out, fingerprint, overwrite, extra_outputs=(drop_list, plot),
                  inputs=(*sources, embeddings), made=("*.tar",))
    if (done := stage.finished()) is not None:
        done = backfill_identity(stage, done, sources)
        report(f"dedup: up to date ({done['rows_dropped']:,} of {done['rows_in']:,} dropped in {out})")
        return done
    with stage.running():
        truth = read_truth(config.truth) if config.truth is not None else None
        rows = load_rows(sources, embeddings, text=False)
        present = np.flatnonzero(rows.embedded)  # samples the embed stage skipped are kept, not compared
        found, clustering = find_duplicates(rows.image[present], config)
        duplicates = [(int(present[a]), int(present[b]), c, cluster) for a, b, c, cluster in found]
        kept = np.ones(len(rows), dtype=bool)
        kept[[d[0] for d in duplicates]] = False
        write_kept_shards(out, sources, rows, kept, stage.created)
        drops = _drop_rows(rows, duplicates)
        _write_drop_list(drops, drop_list)
        if drops and config.thumbnails:
            _plot_pairs(drops[: config.thumbnails], {s.name: s for s in sources}, plot)
        stats = stage.finish({**_stats(config, sources, out, rows, kept, drops, clustering, truth, drop_list,
                                       plot if plot.exists() else None), **inherited_identity(sources)})
    report(f"dedup: dropped {stats['rows_dropped']:,} of {stats['rows_in']:,} samples as near-duplicates "
           f"(cosine > {config.threshold}, {clustering['clusters']:,} clusters) → {out}")
    return stats


def _drop_rows(rows: SampleRows, duplicates: list[tuple[int, int, float, int]]) -> list[dict[str, Any]]:
    found = [{"shard": rows.shard[a], "key": rows.key[a], "duplicate_of_shard": rows.shard[b],
              "duplicate_of_key": rows.key[b], "cosine": round(min(cosine, 1.0), 6), "cluster": cluster}
             for a, b, cosine, cluster in duplicates]
    return sorted(found, key=lambda d: (-d["cosine"], d["shard"], d["key"]))


def _write_drop_list(drops: list[dict[str, Any]], path: Path) -> None:
    schema = pa.schema([("shard", pa.string()), ("key", pa.string()), ("duplicate_of_shard", pa.string()),
                        ("duplicate_of_key", pa.string()), ("cosine", pa.float64()), ("cluster", pa.int64())])
    with atomic_path(path) as tmp:
        pq.write_table(pa.Table.from_pylist(drops, schema=schema), tmp)


def _plot_pairs(drops: list[dict[str, Any]], sources: dict[str, Path], path: Path) -> None:
    wanted: dict[str, set[str]] = {}
    for d in drops:
        wanted.setdefault(d["shard"], set()).add(d["key"])
        wanted.setdefault(d["duplicate_of_shard"], set()).add(d["duplicate_of_key"])
    images = {(shard, key): data for shard, keys in wanted.items()
              for key, data in shard_images(sources[shard], keys).items()}
    shown = [d for d in drops if (d["shard"], d["key"]) in images]
    plot_pairs([(images.get((d["duplicate_of_shard"], d["duplicate_of_key"])), images[d["shard"], d["key"]])
                for d in shown],
               [("earlier", f"dropped, cos={d['cosine']:.3f}") for d in shown],
               [f"{d['shard']}:{d['key']}" for d in shown], "Closest near-duplicates (cosine of image embeddings)",
               path)


def _stats(config: DedupConfig, sources: list[Path], out: Path, rows: SampleRows, kept: np.ndarray,
           drops: list[dict[str, Any]], clustering: dict[str, Any], truth: set[tuple[str, str]] | None,
           drop_list: Path, plot: Path | None) -> dict[str, Any]:
    per_shard = {name: int(kept[indices].sum()) for name, indices in rows.by_shard().items()}
    shards = shard_records([out / s.name for s in sources], samples={s.name: per_shard.get(s.name, 0)
                                                                     for s in sources})
    cosines = np.array([d["cosine"] for d in drops])
    edges = np.linspace(config.threshold, 1.0, 11) if config.threshold < 1 else np.array([1.0, 1.0 + 1e-6])
    dropped = {(d["shard"], d["key"]) for d in drops}
    return {"threshold": config.threshold, **clustering, "rows_in": len(rows), "rows_kept": int(kept.sum()),
            "rows_dropped": len(drops), "kept_without_embedding": int((~rows.embedded).sum()),
            "cosine_histogram": {"edges": [round(float(e), 4) for e in edges],
                                 "counts": np.histogram(np.clip(cosines, edges[0], edges[-1]), edges)[0].tolist()},
            "truth": precision_recall(dropped, truth) if truth is not None else None,
            "top_pairs": drops[:TOP_PAIRS], "drop_list": str(drop_list), "thumbnails": str(plot) if plot else None,
            "content_hash": content_hash(shards), "shards": shards}
