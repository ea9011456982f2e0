"""The balancing rule both libraries apply: `curation balance` writes the balanced subset once, a training loader
with `data.curation` draws it afresh each epoch. One formula, so both give the same rows for the same seed.

A row with queries Q is kept when, for some q in Q, its coin u(key, q, seed) < p[q], with p[q] = min(1, t / count[q])
(MetaCLIP's `count_to_prob`, metaclip/curation/curate.py). The coins are independent uniform values fixed by a hash
of (row key, query, seed), so a row is kept with probability 1 - prod_q (1 - p[q]) (MetaCLIP 2's `curate`), and
whether it is kept depends on nothing but the row, the counts and the seed: not on shard order or worker count.
`p_to_t` / `t_to_p` turn the share of matches in the tail (queries under t) into t and back, as MetaCLIP does.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

GOLDEN = 0x9E3779B97F4A7C15
MASK64 = (1 << 64) - 1


def keep_probabilities(counts: np.ndarray, t: float) -> np.ndarray:
    """p[q] = min(1, t / count[q]) (queries that matched nothing get 1; they are never asked)."""
    return np.minimum(1.0, t / np.maximum(counts, 1).astype(np.float64))


def p_to_t(counts: np.ndarray, tail_proportion: float) -> int:
    """t such that the queries under t hold about `tail_proportion` of all matches: the count at which the
    cumulative share of the ascending counts is nearest the proportion (MetaCLIP's p_to_t)."""
    ordered = np.sort(np.asarray(counts, dtype=np.float64))
    total = ordered.sum()
    if total <= 0:
        raise ValueError("p_to_t: no query matched any row")
    share = np.cumsum(ordered) / total
    return int(ordered[int(np.abs(share - tail_proportion).argmin())])


def t_to_p(counts: np.ndarray, t: float) -> float:
    """The share of all matches held by queries with fewer than t rows (MetaCLIP's t_to_p)."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    return float(counts[counts < t].sum() / total) if total > 0 else 0.0


def language_thresholds(counts: np.ndarray, langs: Sequence[str], t: int | None = None,
                        tail_proportion: float | None = None, english: str = "en") -> tuple[dict[str, int], float]:
    """MetaCLIP 2's per-language t (`global_count`, metaclip/curation/curate.py): English's t is `t` (or p_to_t of
    its counts at `tail_proportion`); its tail share p = t_to_p(English's counts, t) gives every other language
    p_to_t(its counts, p) (at least 1; a language that matched nothing gets English's t, never used).
    Returns ({language: t}, p). `langs` names each query's language."""
    counts, langs = np.asarray(counts), np.asarray(list(langs), dtype=object)
    mine = counts[langs == english]
    if mine.sum() <= 0:
        raise ValueError(f"no {english!r} query matched a row; per-language t starts from {english!r}'s tail")
    t_en = int(t) if tail_proportion is None else p_to_t(mine, tail_proportion)
    if t_en < 1:
        raise ValueError(f"the tail proportion gives t = {t_en} for {english!r}; give a larger one")
    share = t_to_p(mine, t_en)
    chosen = {}
    for lang in sorted(set(langs.tolist())):
        theirs = counts[langs == lang]
        chosen[lang] = t_en if lang == english or theirs.sum() <= 0 else max(1, p_to_t(theirs, share))
    return chosen, share


def selection_probabilities(query_ids: pa.ListArray, probabilities: np.ndarray) -> np.ndarray:
    """Each row's chance of being kept: 1 - prod over its queries of (1 - p[q])."""
    flat = query_ids.flatten().to_numpy(zero_copy_only=False).astype(np.int64)
    rows = pc.list_parent_indices(query_ids).to_numpy(zero_copy_only=False)
    miss = np.ones(len(query_ids), dtype=np.float64)
    np.multiply.at(miss, rows, 1.0 - probabilities[flat])
    return 1.0 - miss


def key_hashes(keys: Sequence[str]) -> np.ndarray:
    """A stable 64-bit hash of each row key (BLAKE2b; Python's hash() changes between processes)."""
    digests = b"".join(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest() for key in keys)
    return np.frombuffer(digests, dtype="<u8").copy()


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: every input bit flips about half the output bits."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def coins(key_hash: np.ndarray, query_ids: np.ndarray, seed: int) -> np.ndarray:
    """Uniform [0, 1) values, one per (row key hash, query id) pair, fixed by the seed."""
    salt = _mix(np.uint64((seed * GOLDEN) & MASK64) + query_ids.astype(np.uint64))
    return (_mix(key_hash ^ salt) >> np.uint64(11)).astype(np.float64) * 2.0**-53


def balance_mask(key_hash: np.ndarray, query_ids: pa.ListArray, probabilities: np.ndarray, seed: int) -> np.ndarray:
    """Which rows to keep: those where at least one of their queries' coins comes up."""
    flat = query_ids.flatten().to_numpy(zero_copy_only=False).astype(np.int64)
    rows = pc.list_parent_indices(query_ids).to_numpy(zero_copy_only=False)
    heads = coins(key_hash[rows], flat, seed) < probabilities[flat]
    keep = np.zeros(len(query_ids), dtype=bool)
    keep[rows[heads]] = True
    return keep
