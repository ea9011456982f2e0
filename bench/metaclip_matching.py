"""`match.rule: metaclip` against MetaCLIP's released matchers, in one run on the same 500,000 queries and captions.

MetaCLIP is not pip-installable, so its two released matchers are written here as released (facebookresearch/
MetaCLIP): metaclip/metaclip1/substr_matching_ahocorasick.py (pyahocorasick over " entry " keys with (id, key)
values, the caption spaced by its chain of str.replace calls, a set of ids) and metaclip/metaclip1/
substr_matching.py (`" entry " in text` for every entry). Every method returns the same ids for every caption it
sees (asserted). Captions and queries are bench/matching.py's (queries as written, not normalised: the rule is
case-sensitive). Rates are captions per CPU second of this process, best of `--repeats`.

    .venv/bin/python bench/metaclip_matching.py
"""

from __future__ import annotations

import argparse
import importlib.util
import resource
import time
from pathlib import Path

import ahocorasick

from curation.stages.match.metaclip import MetaClipMatcher


def _sibling(name: str):
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def released_spacing(text: str) -> str:
    spaced = f" {text} "
    for punct in [",", ".", ";", ":", "?", "!", "`"]:
        spaced = spaced.replace(punct, f" {punct} ")
    for char in ["\t", "\n", "\r"]:
        spaced = spaced.replace(char, " ")
    return spaced


class ReleasedAhoCorasick:
    """MetaCLIP's substr_matching_ahocorasick.py, as released."""

    def __init__(self, metadata: list[str]):
        self.automaton = ahocorasick.Automaton()
        for idx, key in enumerate(f" {entry} " for entry in metadata):
            self.automaton.add_word(key, (idx, key))
        self.automaton.make_automaton()

    def find(self, text: str) -> list[int]:
        matched = set()
        for _, (entry_id, _) in self.automaton.iter(released_spacing(text)):
            matched.add(entry_id)
        return list(matched)


def released_naive(metadata_spaced: list[str], text: str) -> list[int]:
    """MetaCLIP's substr_matching.py, as released."""
    text = released_spacing(text)
    return [entry_id for entry_id, entry in enumerate(metadata_spaced) if entry in text]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=500_000)
    parser.add_argument("--captions", type=int, default=20_000)
    parser.add_argument("--naive-captions", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    bench = _sibling("matching")
    captions = bench.make_captions(args.captions)
    terms = bench.make_queries(args.queries, captions)
    start = time.process_time()
    ours = MetaClipMatcher(terms, "metaclip")
    built_ours = time.process_time() - start
    start = time.process_time()
    released = ReleasedAhoCorasick(terms)
    built_released = time.process_time() - start
    import pyarrow as pa

    column = pa.array(captions, pa.string())
    rate_find, found = bench.best_rate(lambda: [ours.find(c) for c in captions], len(captions), args.repeats)
    rate_column, ids = bench.best_rate(lambda: ours.match_column(column), len(captions), args.repeats)
    rate_released, theirs = bench.best_rate(lambda: [released.find(c) for c in captions], len(captions), args.repeats)
    assert found == [sorted(t) for t in theirs] == ids.to_pylist(), "a method disagrees"
    spaced = [f" {entry} " for entry in terms]
    few = captions[: args.naive_captions]
    rate_naive, naive = bench.best_rate(lambda: [released_naive(spaced, c) for c in few], len(few), 1)
    assert naive == found[: len(few)], "the naive matcher disagrees"
    hits = sum(map(len, found)) / len(found)
    print(f"{len(terms):,} queries, {len(captions):,} captions, {hits:.1f} queries matched per caption")
    print("| method | captions/s | x released aho-corasick |\n|---|---|---|")
    for name, rate in (("MetaClipMatcher.match_column (ours, as `curation match` runs)", rate_column),
                       ("MetaClipMatcher.find per caption (ours)", rate_find),
                       ("MetaCLIP substr_matching_ahocorasick.py (released)", rate_released),
                       ("MetaCLIP substr_matching.py, naive (released)", rate_naive)):
        print(f"| {name} | {rate:,.0f} | {rate / rate_released:.3g} |")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"automaton build: ours {built_ours:.1f} s, released {built_released:.1f} s; peak RSS {rss:.0f} MiB")


if __name__ == "__main__":
    main()
