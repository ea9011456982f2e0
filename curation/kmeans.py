"""Spherical k-means over L2-normalised embeddings, and nearest-centre assignment (filter's image-based
clustering, dedup's SemDeDup clusters).

Centres are renormalised after every update, so "nearest" is the same under cosine and L2. The result
depends only on the rows (in the order given), `k`, the seed and the iterations: callers sort rows by
(shard, key) first, so shard order and worker count never change it. faiss-cpu (`faiss.Kmeans`,
spherical) is used when `backend` asks for it or, with `auto`, when it is installed; the numpy path is
Lloyd's algorithm from greedy k-means++ seeds.
"""

from __future__ import annotations

import importlib.util

import numpy as np

from curation.errors import CurationError

CHUNK = 8192  # rows per block of the rows x centres product: bounds memory at CHUNK * k floats


def normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)


def resolve_backend(backend: str) -> str:
    """`auto` → faiss when installed, else numpy; `faiss` without faiss installed is refused."""
    have_faiss = importlib.util.find_spec("faiss") is not None
    if backend == "faiss" and not have_faiss:
        raise CurationError("kmeans backend 'faiss' needs faiss-cpu, which this install lacks: pip install faiss-cpu")
    if backend == "auto":
        return "faiss" if have_faiss else "numpy"
    return backend


def nearest(vectors: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index, cosine) of each row's nearest centre (ties: the lower index)."""
    index = np.empty(len(vectors), dtype=np.int64)
    score = np.empty(len(vectors), dtype=np.float32)
    for start in range(0, len(vectors), CHUNK):
        sims = vectors[start : start + CHUNK] @ centres.T
        index[start : start + CHUNK] = sims.argmax(axis=1)
        score[start : start + CHUNK] = sims.max(axis=1)
    return index, score


def kmeans(vectors: np.ndarray, k: int, seed: int = 0, iterations: int = 20, backend: str = "numpy") -> np.ndarray:
    """`k` unit-norm centres of the unit-norm rows `vectors` (k is cut to the number of rows)."""
    vectors = normalise(vectors)
    k = max(1, min(k, len(vectors)))
    if backend == "faiss":
        import faiss

        model = faiss.Kmeans(vectors.shape[1], k, niter=iterations, seed=seed, spherical=True,
                             max_points_per_centroid=len(vectors),  # never sub-sample the rows
                             min_points_per_centroid=1)  # few rows per centre is allowed: no warning printed
        model.train(vectors)
        return normalise(model.centroids)
    centres = _plus_plus(vectors, k, np.random.default_rng(seed))
    for _ in range(iterations):
        assigned, _ = nearest(vectors, centres)
        sums = np.zeros_like(centres)
        np.add.at(sums, assigned, vectors)
        filled = np.bincount(assigned, minlength=k) > 0
        updated = centres.copy()
        updated[filled] = normalise(sums[filled])  # an empty cluster keeps its centre
        if np.array_equal(updated, centres):
            break
        centres = updated
    return centres


def _plus_plus(vectors: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Greedy k-means++ (as scikit-learn seeds): of 2 + ln k candidates drawn by squared distance, the one that
    lowers the total squared distance most, so one unlucky draw does not put two seeds in one group."""
    trials = 2 + int(np.log(k))
    chosen = [int(rng.integers(len(vectors)))]
    gap = np.maximum(0.0, 2.0 - 2.0 * (vectors @ vectors[chosen[0]]))  # squared L2 between unit rows
    for _ in range(1, k):
        total = float(gap.sum())
        if total <= 0:  # fewer distinct rows than k: the rest repeat a seed (their clusters stay empty)
            chosen.append(chosen[-1])
            continue
        candidates = rng.choice(len(vectors), size=trials, p=gap / total)
        gaps = np.minimum(gap, np.maximum(0.0, 2.0 - 2.0 * (vectors[candidates] @ vectors.T)))
        best = int(gaps.sum(axis=1).argmin())
        chosen.append(int(candidates[best]))
        gap = gaps[best]
    return vectors[chosen].copy()
