"""`curation index` on 1M vectors of dim 512: build time, index bytes, peak memory and recall@10.

    .venv/bin/python bench/index_build.py [--rows 1000000] [--dim 512] [--max-memory-gb 1.0]

The vectors are clustered unit vectors (2,000 centres plus noise, as CLIP embeddings of a crawl cluster by
subject), written through the embedding contract as 10 fp16 parts, with each text vector its image vector
plus noise (the held-out caption queries). The memory bound picks the index kind (see
`curation.stages.index.knn_index.choose_index`): 1 GiB for 1M x 512 gives IVF-SQ8 (4 GiB would give HNSW32,
whose graph build took 112 s for 50k vectors on this 2-core machine: about 40 minutes for 1M, so it is not the
default here).
Peak memory is the process's maximum RSS, which includes the 2 GiB of float32 vectors the stage loads.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from clipformats.embeddings import finish_set, normalise, write_part
from curation.config import IndexConfig
from curation.stages.index.knn_index import run_index

PARTS = 10


def write_vectors(folder: Path, rows: int, dim: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    centres = normalise(rng.standard_normal((2000, dim)))
    per_part = rows // PARTS
    for part in range(PARTS):
        image = normalise(centres[rng.integers(2000, size=per_part)]
                          + (1.2 / np.sqrt(dim)) * rng.standard_normal((per_part, dim), dtype=np.float32))
        text = normalise(image + (0.5 / np.sqrt(dim)) * rng.standard_normal(image.shape, dtype=np.float32))
        keys = [f"{part:05d}{i:07d}" for i in range(per_part)]
        write_part(folder, f"{part:05d}", image, text, {"key": keys, "shard": [f"{part:05d}.tar"] * per_part})
    finish_set(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--max-memory-gb", type=float, default=1.0)
    parser.add_argument("--queries", type=int, default=1000)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="index_bench_"))
    started = time.perf_counter()
    write_vectors(root / "emb", args.rows, args.dim)
    print(f"wrote {args.rows:,} x {args.dim} fp16 vectors in {time.perf_counter() - started:.1f} s ({root / 'emb'})")
    started = time.perf_counter()
    config = IndexConfig(max_memory_gb=args.max_memory_gb, recall_queries=args.queries)
    stats = run_index(config, root / "emb", root / "index")
    wall = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1 << 20)
    print(f"index {stats['factory']} ({stats['chosen_because']})")
    print(f"  stage wall time {wall:.1f} s: train {stats['train_seconds']:.1f} s, add {stats['add_seconds']:.1f} s, "
          f"build incl. brute-force truth and tuning {stats['build_seconds']:.1f} s")
    print(f"  index file {stats['index_bytes'] / (1 << 30):.3f} GiB, peak RSS {peak:.2f} GiB")
    print(f"  recall@{stats['k']} {stats['recall']:.3f} at {stats['search_parameters']} on {stats['queries']} "
          f"held-out caption queries; tried: " + ", ".join(f"{t['value']}→{t['recall']:.3f} ({t['ms_per_query']:.2f}"
                                                           " ms/q)" for t in stats["tried"]))


if __name__ == "__main__":
    main()
