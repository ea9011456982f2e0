"""THE balancing coin: `curation balance` keeps a row when, for one of its queries q, the coin
u(row key, q, seed) < min(1, t / rows matching q). The coin is a hash of (row key, query id, seed) mapped to
[0, 1), so it depends on nothing but the row: readers outside curation (`clipmodule serve`'s browse view)
recompute the very coins the stage tossed. numpy only.
"""

from __future__ import annotations

import hashlib

import numpy as np

GOLDEN = 0x9E3779B97F4A7C15
MASK64 = (1 << 64) - 1


def key_hashes(keys: list[str]) -> np.ndarray:
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
