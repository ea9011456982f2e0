"""Captions/s of `curation.stages.match.matching.Matcher` with 500,000 queries, against its peers in the same run.

Peers: a raw pyahocorasick loop over the lower-cased caption that checks word boundaries per hit in
Python (what one writes by hand), and a naive `query in caption` loop (on a subsample: it is very slow).
All methods get the same normalised query list and must agree on every caption they both see. Rates are
per CPU second of this process (best of `--repeats`), so other jobs on a shared machine do not skew them.

    .venv/bin/python bench/matching.py                       # 500k queries, 50k captions, best of 3
    .venv/bin/python bench/matching.py --captions 5000 --repeats 1   # quick look
"""

from __future__ import annotations

import argparse
import collections
import resource
import time
import unicodedata

import ahocorasick
import numpy as np
import pyarrow as pa
import wordfreq

from curation.stages.match.matching import Matcher
from curation.stages.queries.sources import wordnet_lemmas
from curation.text import normalize_all


def caption_vocabulary() -> tuple[list[str], np.ndarray]:
    """wordfreq's English words (letters, digits, ' and - only) with their frequencies."""
    frequencies = wordfreq.get_frequency_dict("en", wordlist="large")
    words = [w for w in frequencies if any(c.isalpha() for c in w) and all(c.isalnum() or c in "'-" for c in w)]
    weights = np.array([frequencies[w] for w in words])
    return words, weights / weights.sum()


def make_captions(count: int, seed: int = 0) -> list[str]:
    """Zipf-like alt-text: 5-20 words drawn by frequency, capitalised, some commas, a full stop."""
    rng = np.random.default_rng(seed)
    words, p = caption_vocabulary()
    lengths = rng.integers(5, 21, count)
    drawn = rng.choice(len(words), size=int(lengths.sum()), p=p)
    captions, start = [], 0
    for length in lengths:
        parts = [words[i] for i in drawn[start:start + length]]
        start += length
        if length > 8:
            parts[length // 2] += ","
        captions.append(" ".join(parts).capitalize() + ".")
    return captions


def make_queries(total: int, captions: list[str]) -> list[str]:
    """wordfreq words + WordNet lemmas + the most frequent caption bigrams, normalised, deduped, `total` long."""
    terms = dict.fromkeys(normalize_all(wordfreq.get_frequency_dict("en", wordlist="large")))
    terms.update(dict.fromkeys(normalize_all(wordnet_lemmas("/usr/share/wordnet")[0]["term"].to_pylist())))
    pairs: collections.Counter[str] = collections.Counter()
    for caption in captions:
        tokens = caption.lower().replace(",", "").rstrip(".").split()
        pairs.update(f"{a} {b}" for a, b in zip(tokens, tokens[1:]))
    for pair, _ in pairs.most_common():
        if len(terms) >= total:
            break
        terms.setdefault(pair)
    terms.pop("", None)
    return list(terms)[:total]


class RawLoop:
    """pyahocorasick over the lower-cased caption, boundaries checked per hit in Python."""

    def __init__(self, terms: list[str]):
        self.automaton = ahocorasick.Automaton()
        for index, term in enumerate(terms):
            self.automaton.add_word(term, (index, len(term)))
        self.automaton.make_automaton()

    def find(self, caption: str) -> list[int]:
        text = " ".join(unicodedata.normalize("NFC", caption.lower()).split())
        found = set()
        last = len(text) - 1
        for end, (index, length) in self.automaton.iter(text):
            start = end - length + 1
            if (start == 0 or not text[start - 1].isalnum()) and (end == last or not text[end + 1].isalnum()):
                found.add(index)
        return sorted(found)


def naive_find(terms: list[str], caption: str) -> list[int]:
    """`query in caption`, then the same boundary check at every occurrence."""
    text = " ".join(unicodedata.normalize("NFC", caption.lower()).split())
    found = []
    for index, term in enumerate(terms):
        if term in text:
            start = text.find(term)
            while start >= 0:
                end = start + len(term)
                if (start == 0 or not text[start - 1].isalnum()) and (end == len(text) or not text[end].isalnum()):
                    found.append(index)
                    break
                start = text.find(term, start + 1)
    return found


def best_rate(run, items: int, repeats: int) -> tuple[float, object]:
    """Items per CPU second of this process (other jobs on a shared machine do not count against it)."""
    best, result = 0.0, None
    for _ in range(repeats):
        start = time.process_time()
        result = run()
        best = max(best, items / (time.process_time() - start))
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=500_000)
    parser.add_argument("--captions", type=int, default=50_000)
    parser.add_argument("--naive-captions", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    captions = make_captions(args.captions)
    terms = make_queries(args.queries, captions)
    start = time.perf_counter()
    matcher = Matcher(terms)
    build_ours = time.perf_counter() - start
    start = time.perf_counter()
    raw = RawLoop(terms)
    build_raw = time.perf_counter() - start

    rates = {}
    rates["Matcher.match_column: Arrow column in/out, as `curation match` runs (ours)"], ours = best_rate(
        lambda: matcher.match_column(pa.array(captions)).to_pylist(), len(captions), args.repeats)
    rates["Matcher.find per caption (ours)"], ours_single = best_rate(
        lambda: [matcher.find(c) for c in captions], len(captions), args.repeats)
    rates["raw pyahocorasick loop, boundary check per hit"], theirs = best_rate(
        lambda: [raw.find(c) for c in captions], len(captions), args.repeats)
    sample = captions[: args.naive_captions]
    rates["naive `query in caption` loop"], naive = best_rate(
        lambda: [naive_find(terms, c) for c in sample], len(sample), 1)

    assert ours == theirs, "Matcher and the raw loop disagree"
    assert ours_single == ours and naive == ours[: len(sample)], "methods disagree"
    hits = sum(len(x) for x in ours) / len(ours)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{len(terms):,} queries, {len(captions):,} captions ({hits:.1f} queries matched per caption), "
          f"best of {args.repeats}; automaton build: ours {build_ours:.1f} s, raw {build_raw:.1f} s; "
          f"peak RSS {peak:,.0f} MiB")
    print("\n| method | captions/s | × raw loop |\n|---|---|---|")
    reference = rates["raw pyahocorasick loop, boundary check per hit"]
    for name, rate in rates.items():
        print(f"| {name} | {rate:,.0f} | {rate / reference:.3g} |")


if __name__ == "__main__":
    main()
