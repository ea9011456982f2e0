"""`match.rule: metaclip`/`metaclip2` and `balance.tail_proportion` against MetaCLIP's released functions.

MetaCLIP is not pip-installable, so the reference functions are written here from their released behaviour,
independently of the code under test (facebookresearch/MetaCLIP at f47f784):
  metaclip/metaclip1/substr_matching.py      spacing, substr_matching (the naive loop over every entry)
  metaclip/curation/substr_matching.py       is_cjk_or_similar, get_spaced_metadata (MetaCLIP 2)
  metaclip/curation/curate.py                p_to_t, t_to_p, count_to_prob, curate's 1 - prod(1 - p)
  metaclip/metaclip1/balancing.py            balance_sampling (a coin per matched entry, in order)
"""

from __future__ import annotations

import json
import random
import string

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clipformats.balancing import keep_probabilities, p_to_t, selection_probabilities, t_to_p
from curation.config import BalanceConfig, MatchConfig
from curation.stages.balance.balancing import run_balance
from curation.stages.match.matching import run_match
from curation.stages.match.metaclip import MetaClipMatcher

# ---- the reference, as released --------------------------------------------------------------------------

def ref_spacing(text):
    spaced = f" {text} "
    for punct in [",", ".", ";", ":", "?", "!", "`"]:
        spaced = spaced.replace(punct, f" {punct} ")
    for char in ["\t", "\n", "\r"]:
        spaced = spaced.replace(char, " ")
    return spaced


def ref_substr_matching(text, metadata):
    spaced_metadata = [f" {entry} " for entry in metadata]
    text = ref_spacing(text)
    return [entry_id for entry_id, entry in enumerate(spaced_metadata) if entry in text]


def ref_is_cjk_or_similar(char):
    extra = "，。、；：？！“”‘’（）【】《》〈〉「」『』～—"
    code = ord(char)
    ranges = [(0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
              (0x2B820, 0x2CEAF), (0x2CEB0, 0x2EBEF), (0xF900, 0xFAFF), (0x2E80, 0x2EFF), (0x2F00, 0x2FDF),
              (0x2FF0, 0x2FFF), (0x0E00, 0x0E7F), (0x0E80, 0x0EFF), (0x1000, 0x109F), (0x1780, 0x17FF),
              (0x0F00, 0x0FFF)]
    return any(lo <= code <= hi for lo, hi in ranges) or char in string.punctuation or char in extra


def ref_substr_matching_v2(text, metadata):
    spaced = []
    for entry in metadata:
        if not ref_is_cjk_or_similar(entry[0]):
            entry = f" {entry}"
        if not ref_is_cjk_or_similar(entry[-1]):
            entry = f"{entry} "
        spaced.append(entry)
    text = ref_spacing(text)
    return [entry_id for entry_id, entry in enumerate(spaced) if entry in text]


def ref_p_to_t(entry_counts, p=0.1):
    counts = np.sort(entry_counts)
    portion = np.cumsum(counts) / counts.sum()
    return counts[(np.abs(portion - p)).argmin()]


def ref_t_to_p(entry_counts, t=20000):
    return float(entry_counts[entry_counts < t].sum() / entry_counts.sum())


def ref_count_to_prob(entry_count, t):
    counts = np.array(entry_count)
    counts[counts < t] = t
    return t / counts


def ref_balance_sampling(matched_entry_ids, entry_prob, rng):
    return any(rng.random() < entry_prob[entry_id] for entry_id in matched_entry_ids)


# ---- data --------------------------------------------------------------------------------------------------

TERMS = ["cat", "Cat", "dog", "new york", "New York", "york", "a.m.", "c++", "hot dog", "dog house", "t-shirt",
         "rock 'n' roll", "9", "猫", "东京", "東京タワー", "แมว", "(cat)", "cat's", "e.g", "café", "ca", "at", "cat"]
WORDS = ["cat", "Cat", "CAT", "cats", "dog", "hot", "house", "new", "New", "york", "York", "a.m.", "c++", "t-shirt",
         "rock", "'n'", "roll", "9", "猫", "东京", "東京タワー", "แมว", "(cat)", "cat's", "e.g.", "café", "cafe"]
SEPARATORS = [" ", " ", " ", ",", ".", ";", ":", "?", "!", "`", "\t", "\n", "\r", "-", "(", ")", "'", "", "  ", "，"]


def random_captions(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(WORDS) + rng.choice(SEPARATORS) for _ in range(rng.randint(1, 8))).strip(" ")
            for _ in range(count)]


@pytest.mark.parametrize(("rule", "reference"), [("metaclip", ref_substr_matching),
                                                  ("metaclip2", ref_substr_matching_v2)])
def test_matches_equal_the_reference_matcher(rule, reference):
    captions = random_captions(3000, seed=1) + ["A cat in New York.", "cat,dog", "hot dog house", "Cat!", "猫と东京"]
    matcher = MetaClipMatcher(TERMS, rule)
    for caption in captions:
        assert matcher.find(caption) == reference(caption, TERMS), caption
    assert MetaClipMatcher(TERMS, rule).find("a cat.") == [0, 23]  # a duplicate term matches under both indices


def test_the_rules_differ_where_metaclip_says():
    matcher, words = MetaClipMatcher(["cat", "猫"], "metaclip"), MetaClipMatcher(["cat", "猫"], "metaclip2")
    assert matcher.find("Cat") == [] and matcher.find("(cat)") == [] and matcher.find("cat-like") == []
    assert matcher.find("我的猫很可爱") == [] and words.find("我的猫很可爱") == [1]


def write_captions(folder, captions: list[str], shards: int = 3) -> None:
    folder.mkdir()
    for index, part in enumerate(np.array_split(np.arange(len(captions)), shards)):
        pq.write_table(pa.table({"url": [f"http://x/{i}.jpg" for i in part], "caption": [captions[i] for i in part]}),
                       folder / f"{index}.parquet")


def test_entry_counts_and_probabilities_equal_the_reference(tmp_path):
    captions = random_captions(4000, seed=2)
    pq.write_table(pa.table({"term": TERMS, "id": list(range(len(TERMS)))}), tmp_path / "queries.parquet")
    write_captions(tmp_path / "captions", captions)
    run_match(MatchConfig(rule="metaclip", workers=1), tmp_path / "queries.parquet", [str(tmp_path / "captions")],
              tmp_path / "matched")
    reference = np.zeros(len(TERMS), dtype=np.uint64)
    matched_ids = []
    for caption in captions:
        ids = ref_substr_matching(caption, TERMS)
        reference[ids] += 1
        matched_ids.append(ids)
    counts = pq.read_table(tmp_path / "matched.counts.parquet")["matched"].to_numpy()
    assert counts.tolist() == reference.tolist()

    t = ref_p_to_t(reference, 0.3)
    stats = run_balance(BalanceConfig(tail_proportion=0.3, workers=1), tmp_path / "matched", tmp_path / "balanced")
    assert stats["t"] == t == p_to_t(counts, 0.3) and stats["tail_proportion"] == 0.3
    assert stats["tail_proportion_at_t"] == ref_t_to_p(reference, t) == t_to_p(counts, t)
    probabilities = keep_probabilities(counts, t)
    assert np.allclose(probabilities, ref_count_to_prob(reference, t), rtol=0, atol=1e-15)
    rows = [ids for ids in matched_ids if ids]
    expected = [1.0 - np.prod(1.0 - ref_count_to_prob(reference, t)[ids]) for ids in rows]
    assert np.allclose(selection_probabilities(pa.array(rows, pa.list_(pa.int32())), probabilities), expected,
                       rtol=0, atol=1e-12)
    card = json.loads((tmp_path / "balanced.stats.json").read_text())
    assert card["t"] == t and card["tail_proportion"] == 0.3


def test_p_to_t_and_t_to_p_equal_the_reference_on_skewed_counts():
    rng = np.random.default_rng(0)
    counts = (rng.pareto(1.2, size=5000) * 50).astype(np.uint64)
    for p in (0.01, 0.1, 0.5, 0.9):
        assert p_to_t(counts, p) == ref_p_to_t(counts, p)
    for t in (1, 20, 170, 5000):
        assert t_to_p(counts, t) == pytest.approx(ref_t_to_p(counts, t), abs=1e-12)


def test_our_coins_keep_rows_as_often_as_the_reference_sampler():
    """Hash coins over many seeds vs MetaCLIP's random.random() coins: both keep each row at 1 - prod(1 - p)."""
    from clipformats.balancing import balance_mask, key_hashes

    probabilities = np.array([1.0, 0.5, 0.1, 0.02])
    rows = [[1], [2], [3], [1, 2], [2, 3], [1, 2, 3], [0, 3]]
    ids = pa.array(rows, pa.list_(pa.int32()))
    expected = selection_probabilities(ids, probabilities)
    hashes, rng, draws = key_hashes([f"row{i}" for i in range(len(rows))]), random.Random(0), 4000
    ours = np.mean([balance_mask(hashes, ids, probabilities, seed) for seed in range(draws)], axis=0)
    theirs = np.mean([[ref_balance_sampling(r, probabilities, rng) for r in rows] for _ in range(draws)], axis=0)
    assert np.allclose(expected, [0.5, 0.1, 0.02, 0.55, 0.118, 0.559, 1.0])
    bound = 4 * np.sqrt(expected * (1 - expected) / draws) + 1e-9
    assert np.all(np.abs(ours - expected) <= bound) and np.all(np.abs(theirs - expected) <= bound)


def test_the_card_gives_t_and_its_tail_proportion():
    from curation.card_markdown import _tail

    asked = _tail({"t": 23, "tail_proportion": 0.3, "tail_proportion_at_t": 0.2957})
    assert asked == " (from tail proportion 0.3: queries under t hold 29.6% of matches)"
    given = _tail({"t": 100, "tail_proportion": None, "tail_proportion_at_t": 0.415, "t_per_language": {"de": 62}})
    assert given == " (queries under t hold 41.5% of matches); per language t = de 62"
    assert _tail({"t": 5}) == ""  # stats written before tail proportions were recorded
