"""`curation index`: a faiss kNN index over an embedding folder, its recall measured against brute force.

The index kind follows the set's size and a memory bound, as autofaiss chooses (`choose_index`): an exact
flat index for small sets, HNSW (graph; the vectors kept whole) while it fits, else IVF with 8-bit scalar
codes while they fit, else IVF-PQ with the largest codes that fit. Recall is measured on held-out queries:
the other kind's embeddings (the captions, for an image index) of a random sample of rows, which are not in
the index, against their exact top-k by brute force; the search parameter (nprobe or efSearch) is the
smallest that reaches `target_recall`, and is stored with the index for `clipmodule search`. Output: the
index contract's folder (`clipformats.knn`) and `<out>.stats.json` (the choice, recall per parameter,
build time, bytes).
"""

from __future__ import annotations

import math
import resource
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from clipformats.embeddings import (
    KINDS,
    EmbeddingFilesError,
    iter_parts,
    part_paths,
    part_rows,
    parts,
    read_embeddings,
    set_info,
)
from clipformats.knn import FILES, INDEX_FILE, set_search_parameters, write_index
from curation.config import IndexConfig
from curation.errors import CurationError
from curation.progress import progress_bar, report
from curation.stage import Stage, file_signature, read_json, stats_path

GIB = 1 << 30
HNSW_M = 32
ADD_CHUNK = 65536


def choose_index(rows: int, dim: int, max_bytes: float, exact_max: int) -> tuple[str, str]:
    """(faiss factory string, why) for `rows` vectors of `dim` floats in at most `max_bytes`."""
    flat = rows * dim * 4
    if rows <= exact_max and flat <= max_bytes:
        return "Flat", f"{rows:,} vectors ≤ exact_max {exact_max:,}: exact search ({flat / GIB:.2f} GiB)"
    hnsw = flat + rows * HNSW_M * 2 * 4 * 1.1  # level-0 links (2M ids) plus the upper levels' few
    if hnsw <= max_bytes:
        return f"HNSW{HNSW_M},Flat", f"HNSW fits the bound ({hnsw / GIB:.2f} of {max_bytes / GIB:.2f} GiB)"
    lists = ivf_lists(rows)
    centroids = lists * dim * 4
    scalar = rows * (dim + 8) + centroids  # one byte per dimension + the id
    if scalar <= max_bytes:
        return (f"IVF{lists},SQ8", f"vectors whole do not fit ({hnsw / GIB:.2f} GiB): 8-bit scalar codes in {lists} "
                f"lists ({scalar / GIB:.2f} of {max_bytes / GIB:.2f} GiB)")
    # PQ is the last resort: its codes lose more (recall@10 0.72 where SQ8 has 0.99 on the tests' clustered
    # vectors) and faiss-cpu trains it slowly; sub-vectors of at least 4 dimensions
    for code in sorted((m for m in range(1, dim // 4 + 1) if dim % m == 0), reverse=True):
        size = rows * (code + 8) + centroids + 256 * dim * 4  # codes + ids, centroids, PQ codebooks
        if size <= max_bytes:
            return (f"IVF{lists},PQ{code}x8", f"8-bit codes do not fit ({scalar / GIB:.2f} GiB): {code}-byte PQ "
                    f"codes in {lists} lists ({size / GIB:.2f} of {max_bytes / GIB:.2f} GiB)")
    raise CurationError(f"{rows:,} vectors of dim {dim} do not fit in {max_bytes / GIB:.2f} GiB even as the "
                        f"smallest PQ codes; raise --max_memory_gb")


def ivf_lists(rows: int) -> int:
    """Inverted lists: about 4·sqrt(rows) (faiss's guideline), a power of two, with ≥ 39 training points each."""
    target = 2 ** round(math.log2(max(1.0, 4 * math.sqrt(rows))))
    return int(max(1, min(target, rows // 39, 65536)))


def search_grid(factory: str, k: int) -> tuple[str | None, list[int]]:
    """The search parameter of an index kind and the values tried, cheapest first."""
    if factory.startswith("IVF"):
        lists = int(factory[3:].split(",")[0])
        return "nprobe", [2**i for i in range(int(math.log2(lists)) + 1)] + ([lists] if lists & (lists - 1) else [])
    if factory.startswith("HNSW"):
        return "efSearch", [v for v in (16, 32, 64, 128, 256, 512, 1024, 2048) if v >= k]
    return None, [0]


def recall_at_k(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean over queries of |found ∩ exact| / k (both [queries, k] ids; faiss's -1 for "none" never matches)."""
    hits = [len(np.intersect1d(f[f >= 0], e)) for f, e in zip(found, exact)]
    return float(np.mean(hits) / exact.shape[1]) if len(hits) else 1.0


def held_out_queries(folder: Path, kind: str, rows: int, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(row numbers, [q, d] float32 vectors of the other kind for those rows): the queries are not indexed."""
    other = "text" if kind == "image" else "image"
    chosen = np.sort(np.random.default_rng(seed).choice(rows, size=min(count, rows), replace=False))
    vectors, start = [], 0
    for read in iter_parts(folder, (other,), columns=()):
        array = read.text if other == "text" else read.image
        mine = chosen[(chosen >= start) & (chosen < start + len(array))] - start
        vectors.append(np.asarray(array[mine], dtype=np.float32))
        start += len(array)
    return chosen, np.concatenate(vectors)


def build(vectors: np.ndarray, factory: str, seed: int) -> tuple[Any, dict[str, float]]:
    """The faiss index (inner product) trained on a seeded sample and filled chunk by chunk, with timings."""
    import faiss

    index = faiss.index_factory(vectors.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    started = time.perf_counter()
    if not index.is_trained:
        lists = int(factory[3:].split(",")[0]) if factory.startswith("IVF") else 1
        size = min(len(vectors), 39 * max(256, lists))  # faiss's least for k-means: 39 points a centroid
        sample = np.random.default_rng(seed).choice(len(vectors), size=size, replace=False)
        index.train(np.ascontiguousarray(vectors[np.sort(sample)]))
    trained = time.perf_counter()
    with progress_bar(f"index ({factory})", len(vectors)) as advance:
        for start in range(0, len(vectors), ADD_CHUNK):
            chunk = np.ascontiguousarray(vectors[start : start + ADD_CHUNK])
            index.add(chunk)
            advance(len(chunk))
    return index, {"train_seconds": round(trained - started, 3), "add_seconds": round(time.perf_counter() - trained, 3)}


def tune(index: Any, factory: str, queries: np.ndarray, exact: np.ndarray, target: float) -> dict[str, Any]:
    """Try the search parameter from cheap to dear; keep the first that reaches `target` (else the dearest)."""
    name, values = search_grid(factory, exact.shape[1])
    tried = []
    for value in values:
        if name is not None:
            set_search_parameters(index, {name: value})
        started = time.perf_counter()
        _, found = index.search(queries, exact.shape[1])
        milliseconds = (time.perf_counter() - started) * 1000 / max(1, len(queries))
        tried.append({"value": value, "recall": round(recall_at_k(found, exact), 4),
                      "ms_per_query": round(milliseconds, 4)})
        if tried[-1]["recall"] >= target:
            break
    best = tried[-1]
    if name is not None:
        set_search_parameters(index, {name: best["value"]})
    return {"parameter": name, "search_parameters": {name: best["value"]} if name else {},
            "recall": best["recall"], "tried": tried}


def exact_neighbours(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Brute-force top-k ids by inner product (faiss's flat index: the same maths as numpy, faster)."""
    import faiss

    flat = faiss.IndexFlatIP(vectors.shape[1])
    for start in range(0, len(vectors), ADD_CHUNK):
        flat.add(np.ascontiguousarray(vectors[start : start + ADD_CHUNK]))
    return flat.search(np.ascontiguousarray(queries), k)[1]


def _rows_table(metadata: pa.Table, part_of_row: list[str]) -> pa.Table:
    columns = {"shard": metadata["shard"], "key": metadata["key"], "part": pa.array(part_of_row, pa.string())}
    if "caption" in metadata.column_names:
        columns["caption"] = metadata["caption"]
    return pa.table(columns)


def _source_info(embeddings: Path) -> dict[str, Any]:
    """The model the set records (with its weights' hash) and, for a `curation embed` folder, the shard files."""
    stats = read_json(stats_path(embeddings), "embed stats") if stats_path(embeddings).is_file() else {}
    shards = {s["name"]: s["path"] for s in stats.get("shards", [])} if stats.get("stage") == "embed" else {}
    return {"model": set_info(embeddings).get("model"), "shards": shards}


def run_index(config: IndexConfig, embeddings: Path, out: Path, overwrite: bool = False) -> dict[str, Any]:
    """Build `out/` (the index contract's files) over `embeddings`, with the recall in `<out>.stats.json`."""
    embeddings, out = Path(embeddings), Path(out)
    try:
        names = parts(embeddings)
        rows = sum(part_rows(embeddings, name) for name in names)
    except EmbeddingFilesError as error:
        raise CurationError(str(error)) from None
    if not rows:
        raise CurationError(f"{embeddings}: no embeddings to index ({len(names)} part(s), all without rows)")
    wanted = (KINDS[config.kind], "metadata")  # a missing file is reported when the part is read
    files = [p for name in names for p in part_paths(embeddings, name) if p.parent.name in wanted and p.exists()]
    settings = {k: v for k, v in asdict(config).items() if k != "threads"}
    stage = Stage("index", out, {"config": settings, "inputs": file_signature(files)}, overwrite,
                  inputs=(embeddings,), made=FILES)
    if (done := stage.finished()) is not None:
        report(f"index: up to date ({done['factory']}, recall@{done['k']} {done['recall']:.3f} in {out})")
        return done
    with stage.running():
        if config.threads:
            import faiss

            faiss.omp_set_num_threads(config.threads)
        stats = stage.finish(_build_index(config, embeddings, out, names, stage))
    report(f"index: {stats['rows']:,} {config.kind} vectors in {stats['factory']}, recall@{config.k} "
           f"{stats['recall']:.3f} ({stats['parameter'] or 'exact'}) → {out}")
    return stats


def _build_index(config: IndexConfig, embeddings: Path, out: Path, names: list[str], stage: Stage) -> dict[str, Any]:
    try:
        metadata, vectors = read_embeddings(embeddings, config.kind)
        part_of_row = [name for read in iter_parts(embeddings, (), columns=()) for name in
                       [read.part] * read.metadata.num_rows]
        chosen, queries = held_out_queries(embeddings, config.kind, len(vectors), config.recall_queries, config.seed)
    except EmbeddingFilesError as error:
        raise CurationError(str(error)) from None
    rows, dim = vectors.shape
    factory, reason = choose_index(rows, dim, config.max_memory_gb * GIB, config.exact_max)
    k = min(config.k, rows)
    started = time.perf_counter()
    index, timings = build(vectors, factory, config.seed)
    exact = exact_neighbours(vectors, queries, k)
    tuned = tune(index, factory, queries, exact, config.target_recall)
    source = _source_info(embeddings)
    info = {"kind": config.kind, "metric": "inner_product", "factory": factory, "dim": dim, "rows": rows,
            "search_parameters": tuned["search_parameters"], "embeddings": str(embeddings.resolve()), **source}
    for name in FILES:
        stage.created(out / name)
    write_index(out, index, _rows_table(metadata, part_of_row), info)
    if tuned["recall"] < config.target_recall:
        report(f"index: recall@{k} {tuned['recall']:.3f} stays under the target {config.target_recall} "
               f"(raise --max_memory_gb for a finer index)")
    return {"kind": config.kind, "rows": rows, "dim": dim, "factory": factory, "chosen_because": reason, "k": k,
            "queries": len(chosen), "queries_from": "text" if config.kind == "image" else "image",
            "target_recall": config.target_recall, **tuned, **timings,
            "build_seconds": round(time.perf_counter() - started, 3),
            "index_bytes": (out / INDEX_FILE).stat().st_size, "max_memory_gb": config.max_memory_gb,
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "parts": len(names), "embeddings": str(embeddings), "model": source["model"]}
