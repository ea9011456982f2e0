"""Balancing: deterministic row by row, independent of sharding and workers, ≈ min(count, t) per query."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.config import BalanceConfig
from curation.errors import CurationError
from curation.stages.balance.balancing import balance_mask, coins, keep_probabilities, key_hashes, run_balance


def single_query_rows(counts: dict[int, int]) -> tuple[list[str], pa.ListArray]:
    keys, ids = [], []
    for query, count in counts.items():
        keys += [f"https://example.com/{query}/{i}.jpg" for i in range(count)]
        ids += [[query]] * count
    return keys, pa.array(ids, pa.list_(pa.int32()))


def test_coins_are_uniform_and_fixed_by_key_query_and_seed():
    hashes = key_hashes([f"row {i}" for i in range(20000)])
    values = coins(hashes, np.full(len(hashes), 3), seed=0)
    assert values.min() >= 0.0 and values.max() < 1.0
    assert abs(values.mean() - 0.5) < 0.01 and abs((values < 0.1).mean() - 0.1) < 0.01
    assert np.array_equal(values, coins(key_hashes([f"row {i}" for i in range(20000)]), np.full(20000, 3), seed=0))
    assert np.mean(values == coins(hashes, np.full(len(hashes), 4), seed=0)) < 0.001  # another query: other coins
    assert np.mean(values == coins(hashes, np.full(len(hashes), 3), seed=1)) < 0.001  # another seed: other coins


def test_kept_per_query_is_about_min_count_t():
    t = 200
    counts = {0: 50, 1: 200, 2: 800, 3: 5000, 4: 20000}
    keys, ids = single_query_rows(counts)
    probabilities = keep_probabilities(np.array([counts[q] for q in sorted(counts)]), t)
    keep = balance_mask(key_hashes(keys), ids, probabilities, seed=7)
    query = ids.flatten().to_numpy()
    for q, count in counts.items():
        kept = int(keep[query == q].sum())
        if count <= t:
            assert kept == count  # p = 1: all kept
        else:
            p = t / count
            assert abs(kept - t) < 4 * np.sqrt(count * p * (1 - p)), (q, kept)


def test_a_row_is_kept_when_any_of_its_queries_keeps_it():
    probabilities = np.array([1.0, 0.0])
    ids = pa.array([[0], [1], [0, 1], [1, 0]], pa.list_(pa.int32()))
    assert balance_mask(key_hashes(["a", "b", "c", "d"]), ids, probabilities, 0).tolist() == [True, False, True, True]


def test_decision_does_not_depend_on_how_rows_are_sharded():
    keys, ids = single_query_rows({0: 300, 1: 1000})
    probabilities = keep_probabilities(np.array([300, 1000]), 100)
    whole = balance_mask(key_hashes(keys), ids, probabilities, seed=3)
    order = np.random.default_rng(0).permutation(len(keys))
    parts = np.array_split(order, 7)
    pieces = np.zeros(len(keys), dtype=bool)
    for part in parts:
        pieces[part] = balance_mask(key_hashes([keys[i] for i in part]), ids.take(pa.array(part)), probabilities, 3)
    assert np.array_equal(whole, pieces)


def write_matched(folder, shards: int, rows: int = 400) -> None:
    """A finished `match` output over `shards` files: queries 0-2 with very different counts, some rows with two."""
    folder.mkdir()
    query = np.random.default_rng(1).choice(3, size=rows * 3, p=[0.8, 0.15, 0.05])
    ids = [sorted({int(q), 2}) if i % 10 == 0 else [int(q)] for i, q in enumerate(query)]
    urls = [f"http://x/{i}.jpg" for i in range(len(ids))]
    names = []
    for index, part in enumerate(np.array_split(np.arange(len(ids)), shards)):
        names.append(f"{index:05d}-p.parquet")
        query_ids = pa.array([ids[i] for i in part], pa.list_(pa.int32()))
        pq.write_table(pa.table({"url": [urls[i] for i in part], "caption": ["c"] * len(part), "query_ids": query_ids}),
                       folder / names[-1])
    matched = np.bincount([q for row in ids for q in row], minlength=3)
    counts_file = folder.with_name(folder.name + ".counts.parquet")
    pq.write_table(pa.table({"id": [0, 1, 2], "term": ["a", "b", "c"], "matched": matched}), counts_file)
    (folder.with_name(folder.name + ".stats.json")).write_text(json.dumps(
        {"stage": "match", "finished": True, "counts_file": str(counts_file), "shards": [{"name": n} for n in names]}))


def balanced_urls(folder) -> set[str]:
    return {u for p in folder.glob("*.parquet") for u in pq.read_table(p)["url"].to_pylist()}


def test_stage_output_is_the_same_for_any_sharding_and_worker_count(tmp_path):
    write_matched(tmp_path / "three", shards=3)
    write_matched(tmp_path / "five", shards=5)
    config = BalanceConfig(t=100, seed=5, workers=1)
    a = run_balance(config, tmp_path / "three", tmp_path / "out_a")
    b = run_balance(BalanceConfig(t=100, seed=5, workers=2), tmp_path / "five", tmp_path / "out_b")
    assert balanced_urls(tmp_path / "out_a") == balanced_urls(tmp_path / "out_b")
    assert a["rows_in"] == 1200 and a["rows_out"] == b["rows_out"] < 400
    counts = pq.read_table(tmp_path / "out_a.counts.parquet").to_pydict()
    assert counts["kept"][0] < 160 and counts["matched"][0] > 900  # query 0 cut to about t
    again = run_balance(config, tmp_path / "three", tmp_path / "out_a")  # finished: a no-op
    assert again == a
    with pytest.raises(CurationError, match="t: 100 → 50.*--overwrite"):
        run_balance(BalanceConfig(t=50, seed=5), tmp_path / "three", tmp_path / "out_a")
    assert run_balance(BalanceConfig(t=50, seed=5), tmp_path / "three", tmp_path / "out_a", overwrite=True)["t"] == 50
    other_seed = run_balance(BalanceConfig(t=100, seed=6, workers=1), tmp_path / "three", tmp_path / "out_c")
    assert balanced_urls(tmp_path / "out_c") != balanced_urls(tmp_path / "out_a") and other_seed["rows_out"] > 0


def test_an_output_not_made_by_a_stage_is_never_replaced(tmp_path):
    write_matched(tmp_path / "matched", shards=1)
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "data.txt").write_text("keep me")
    for overwrite in (False, True):
        with pytest.raises(CurationError, match="precious: already exists and has no precious.stats.json"):
            run_balance(BalanceConfig(workers=1), tmp_path / "matched", precious, overwrite=overwrite)
    assert (precious / "data.txt").read_text() == "keep me"


def test_seeds_outside_64_bits_are_refused_not_folded_onto_others():
    with pytest.raises(CurationError, match=r"balance.seed must be in \[0, 2\*\*64\), got 18446744073709551616"):
        BalanceConfig(seed=2**64)
    with pytest.raises(CurationError, match="got -1"):
        BalanceConfig(seed=-1)
    hashes = key_hashes([f"row {i}" for i in range(1000)])
    ids = np.zeros(1000, dtype=np.int64)
    assert not np.array_equal(coins(hashes, ids, BalanceConfig(seed=2**64 - 1).seed), coins(hashes, ids, 0))
