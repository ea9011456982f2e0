"""The query list: offline defaults, 500k from a big enough corpus, PMI bigrams, titles, source switches."""

from __future__ import annotations

import itertools

import pyarrow.parquet as pq
import pytest

from curation.config import QueriesConfig
from curation.errors import CurationError
from curation.stages.queries.query_list import run_queries


def read(path) -> dict[str, dict]:
    return {row["term"]: row for row in pq.read_table(path).to_pylist()}


def test_offline_defaults_give_over_100k_normalised_terms_with_sources(tmp_path):
    stats = run_queries(QueriesConfig(), tmp_path / "queries.parquet")
    table = pq.read_table(tmp_path / "queries.parquet")
    assert stats["terms"] == table.num_rows >= 100_000
    assert table["id"].to_pylist() == list(range(table.num_rows))
    terms = read(tmp_path / "queries.parquet")
    assert terms["dog"]["source"] == "unigram,wordnet" and terms["dog"]["count"] >= 100
    assert terms["new york"]["source"].endswith("wordnet")  # WordNet's new_york, underscore → space
    assert "zymurgy" in terms and terms["zymurgy"]["source"] == "wordnet"
    assert "caf\u00e9" in terms and "cafe\u0301" not in terms  # stored composed (NFC)
    assert all(t == t.lower().strip() and "_" not in t for t in itertools.islice(terms, 0, None, 997))
    assert stats["sources"]["wordnet"]["candidates"] > 140_000 and stats["wordnet_synsets"] > 110_000
    # a finished stage is a no-op; other settings need --overwrite
    assert run_queries(QueriesConfig(), tmp_path / "queries.parquet") == stats
    with pytest.raises(CurationError, match="max_terms: 500000 → 10.*--overwrite"):
        run_queries(QueriesConfig(max_terms=10), tmp_path / "queries.parquet")


def pseudo_words(count: int) -> list[str]:
    syllables = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
    words = ("".join(parts) for size in (3, 4) for parts in itertools.product(syllables, repeat=size))
    return list(itertools.islice(words, count))


def test_a_big_enough_corpus_reaches_500k_and_the_cap_keeps_the_best(tmp_path):
    words = pseudo_words(380_000)
    corpus = tmp_path / "corpus.txt"
    with open(corpus, "w") as handle:
        for _ in range(2):
            for start in range(0, len(words), 12):
                handle.write(" ".join(words[start:start + 12]) + ".\n")
    config = QueriesConfig(corpus=[str(corpus)], min_count=2, bigram_min_count=2)
    stats = run_queries(config, tmp_path / "queries.parquet")
    table = pq.read_table(tmp_path / "queries.parquet", columns=["term", "source"])
    assert stats["terms"] == table.num_rows == 500_000
    assert stats["unique_candidates"] > 500_000 and stats["dropped_by_cap"] == stats["unique_candidates"] - 500_000
    assert sum(s.startswith("unigram") for s in table["source"].to_pylist()) == 380_000  # every corpus word is in
    ranked = stats["sources"]  # the cap cuts from the bottom of the ranking: unigram, bigram, title, wordnet
    assert ranked["unigram"]["in_list"] == ranked["unigram"]["candidates"] == 380_000
    assert ranked["bigram"]["in_list"] > 100_000 and ranked["wordnet"]["in_list"] < ranked["wordnet"]["candidates"]


def test_bigrams_are_kept_by_pmi(tmp_path):
    lines = ["we saw new york today"] * 100 + [f"the w{i}x is here" for i in range(500)] + ["the cat sat"] * 20
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(f'{{"text": "{line}"}}\n' for line in lines))
    config = QueriesConfig(corpus=[str(corpus)], wordnet=False, min_count=20, bigram_min_count=15, min_pmi=2.5)
    run_queries(config, tmp_path / "queries.parquet")
    terms = read(tmp_path / "queries.parquet")
    assert terms["new york"]["source"] == "bigram" and terms["new york"]["count"] == 100
    assert "the cat" not in terms and "is here" not in terms  # frequent words together by chance: low PMI
    assert terms["the"]["source"] == "unigram" and terms["the"]["count"] == 520 and "w1x" not in terms


def test_titles_with_views_and_switching_sources_off(tmp_path):
    titles = tmp_path / "titles.csv"
    titles.write_text("title,views\nEiffel  Tower,5000\nObscure Page,3\nMona Lisa,120\n")
    config = QueriesConfig(wordnet=False, unigrams="none", titles=str(titles), min_views=100)
    stats = run_queries(config, tmp_path / "queries.parquet")
    assert list(read(tmp_path / "queries.parquet")) == ["eiffel tower", "mona lisa"]
    assert stats["sources"] == {"title": {"candidates": 2, "in_list": 2}}


def test_unreadable_wordnet_dir_is_one_clear_error_and_leaves_nothing(tmp_path):
    (tmp_path / "wordnet").mkdir()
    (tmp_path / "wordnet" / "data.noun").write_text("this is not wordnet\n")
    out = tmp_path / "queries.parquet"
    with pytest.raises(CurationError, match=r"data.noun: line 1 is not a WordNet data line"):
        run_queries(QueriesConfig(unigrams="none", wordnet_dir=tmp_path / "wordnet"), out)
    with pytest.raises(CurationError, match=r"missing: WordNet file data.noun not found"):
        run_queries(QueriesConfig(unigrams="none", wordnet_dir=tmp_path / "missing"), out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wordnet"]
