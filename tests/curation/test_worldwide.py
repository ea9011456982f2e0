"""Worldwide curation (MetaCLIP 2): language ID of every caption, per-language automata, per-language t."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.card_markdown import _languages
from curation.config import BalanceConfig, MatchConfig, QueriesConfig
from curation.errors import CurationError
from curation.stages.balance.balancing import run_balance
from curation.stages.match.languages import LanguageIdentifier
from curation.stages.match.matching import run_match
from curation.stages.queries.query_list import run_queries
from tests.curation.test_metaclip_reference import ref_count_to_prob, ref_p_to_t, ref_t_to_p

EN = {"cat": 400, "dog": 120, "bird": 40, "house": 10}
DE = {"katze": 300, "hund": 60, "vogel": 20, "haus": 5}
EN_TEXT = "a photo of a {} sitting quietly on the wooden table in the kitchen"
DE_TEXT = "ein Foto von einer {} die ruhig auf dem hölzernen Tisch in der Küche sitzt"


def write_inputs(tmp_path):
    terms = [*EN, *DE]
    pq.write_table(pa.table({"id": pa.array(range(len(terms)), pa.int32()), "term": terms,
                             "lang": ["en"] * len(EN) + ["de"] * len(DE)}), tmp_path / "queries.parquet")
    captions = [EN_TEXT.format(w) for w, n in EN.items() for _ in range(n)]
    captions += [DE_TEXT.format(w.capitalize()) for w, n in DE.items() for _ in range(n)]
    captions += ["ein Foto von einer cat die ruhig auf dem hölzernen Tisch in der Küche sitzt"] * 7  # en word, de text
    captions += ["une photo d'un chat assis tranquillement sur la table en bois de la cuisine"] * 3  # no fr list
    (tmp_path / "captions").mkdir()
    pq.write_table(pa.table({"url": [f"http://x/{i}.jpg" for i in range(len(captions))], "caption": captions}),
                   tmp_path / "captions" / "part.parquet")
    return terms


def test_language_identification_ships_offline():
    langs, scores = LanguageIdentifier().identify([EN_TEXT.format("cat"), DE_TEXT.format("Katze"), "1234 !!"])
    assert langs == ["en", "de", "und"] and scores[0] > 0.5 and scores[1] > 0.9 and scores[2] == 0.0


def test_captions_match_only_their_language_and_each_language_gets_its_t(tmp_path):
    terms = write_inputs(tmp_path)
    stats = run_match(MatchConfig(workers=1), tmp_path / "queries.parquet", [str(tmp_path / "captions")],
                      tmp_path / "matched")
    assert stats["rows_in_by_language"] == {"en": 570, "de": 392, "fr": 3}
    counts = pq.read_table(tmp_path / "matched.counts.parquet")
    assert dict(zip(counts["term"].to_pylist(), counts["matched"].to_pylist(), strict=True)) == {**EN, **DE}
    assert counts["lang"].to_pylist() == ["en"] * 4 + ["de"] * 4  # the German captions' "cat" is not English's
    matched = pq.read_table(tmp_path / "matched")
    assert set(matched["lang"].to_pylist()) == {"en", "de"}

    balanced = run_balance(BalanceConfig(t=100, per_language=True, workers=1), tmp_path / "matched",
                           tmp_path / "balanced")
    en, de = np.array(list(EN.values()), np.uint64), np.array(list(DE.values()), np.uint64)
    share = ref_t_to_p(en, 100)  # MetaCLIP 2's global_count: English's tail share at t_en ...
    t_de = ref_p_to_t(de, share)  # ... gives each other language its t
    assert balanced["t_per_language"] == {"de": int(t_de), "en": 100} and balanced["tail_proportion_at_t"] == share
    assert set(balanced["rows_by_language"]) == {"en", "de"}
    assert balanced["rows_by_language"]["de"]["matched"] == 385
    kept_de = pq.read_table(tmp_path / "balanced").filter(pa.compute.equal(pa.compute.field("lang"), "de"))
    expected = sum(min(1.0, p) * n for p, n in zip(ref_count_to_prob(de, t_de), DE.values(), strict=True))
    assert abs(kept_de.num_rows - expected) < 4 * np.sqrt(expected)
    section = _languages({**balanced, "rows_in_by_language": stats["rows_in_by_language"]})
    assert "| de | 392 | 385 |" in section and terms


def test_per_language_balance_needs_languages(tmp_path):
    pq.write_table(pa.table({"id": pa.array([0], pa.int32()), "term": ["cat"]}), tmp_path / "queries.parquet")
    (tmp_path / "captions").mkdir()
    pq.write_table(pa.table({"url": ["http://x/0.jpg"], "caption": ["a cat"]}), tmp_path / "captions" / "p.parquet")
    run_match(MatchConfig(workers=1), tmp_path / "queries.parquet", [str(tmp_path / "captions")], tmp_path / "matched")
    with pytest.raises(CurationError, match="no `lang` column"):
        run_balance(BalanceConfig(per_language=True, workers=1), tmp_path / "matched", tmp_path / "balanced")


def test_queries_gain_a_language_column_from_wordfreq(tmp_path):
    stats = run_queries(QueriesConfig(wordnet=False, languages=["de"], max_terms=300), tmp_path / "queries.parquet")
    table = pq.read_table(tmp_path / "queries.parquet")
    assert stats["languages"] == {"en": 300, "de": 300}
    assert table["id"].to_pylist() == list(range(600)) and table["lang"].to_pylist() == ["en"] * 300 + ["de"] * 300
    assert "und" in table["term"].to_pylist()[300:]
    with pytest.raises(CurationError, match="no word list for 'xx'"):
        run_queries(QueriesConfig(wordnet=False, languages=["xx"]), tmp_path / "other.parquet")


def test_the_worldwide_dataset_yaml_parses():
    from pathlib import Path

    from curation.stages import dataset_config_type
    from curation.typed import load_yaml

    config = load_yaml(Path(__file__).parents[2] / "experiments" / "datasets" / "metaclip_worldwide.yaml",
                       dataset_config_type())
    assert config.match.rule == "metaclip2" and config.balance.per_language and config.balance.t == 170_000
    assert config.queries.languages == ["de", "fr", "es", "ja", "zh"] and config.download.blur_faces


def test_each_language_gains_the_bigrams_of_its_own_corpus_documents(tmp_path):
    """With a corpus, a language's list adds the PMI bigrams of the corpus documents lid.176 gives that language
    (as English's list has the corpus's bigrams); no other language's collocation enters it."""
    german = ["wir wünschen allen frohe weihnachten und ein gutes neues jahr",
              "die kinder singen am abend frohe weihnachten im warmen wohnzimmer",
              "der alte bahnhof liegt direkt neben dem großen marktplatz der stadt"]
    english = ["the old railway station stands next to the large market square of the town",
               "we wish everyone a merry christmas and a happy new year together"]
    (tmp_path / "corpus.txt").write_text("\n".join((german + english) * 20) + "\n")
    config = QueriesConfig(wordnet=False, unigrams="wordfreq", corpus=[str(tmp_path / "corpus.txt")],
                           languages=["de"], bigram_min_count=20, min_pmi=1.0, wordfreq_corpus_words=100_000)
    run_queries(config, tmp_path / "queries.parquet")
    rows = pq.read_table(tmp_path / "queries.parquet").to_pylist()
    german_bigrams = {r["term"] for r in rows if r["lang"] == "de" and "bigram" in r["source"]}
    assert {"frohe weihnachten", "alte bahnhof"} <= german_bigrams
    assert not {"merry christmas", "market square"} & german_bigrams
    assert "merry christmas" in {r["term"] for r in rows if r["lang"] == "en"}


def test_english_list_counts_only_the_english_documents_of_the_corpus(tmp_path):
    """With `languages`, English's corpus unigrams and bigrams come from the documents lid.176 gives English."""
    german = ["wir wünschen allen frohe weihnachten und ein gutes neues jahr",
              "die kinder singen am abend frohe weihnachten im warmen wohnzimmer"]
    english = ["we wish everyone a merry christmas and a happy new year together",
               "the old railway station stands next to the large market square of the town"]
    (tmp_path / "corpus.txt").write_text("\n".join((german + english) * 20) + "\n")
    config = QueriesConfig(wordnet=False, unigrams="corpus", corpus=[str(tmp_path / "corpus.txt")], min_count=5,
                           languages=["de"], bigram_min_count=20, min_pmi=1.0, wordfreq_corpus_words=100_000)
    run_queries(config, tmp_path / "queries.parquet")
    rows = pq.read_table(tmp_path / "queries.parquet").to_pylist()
    english_terms = {r["term"] for r in rows if r["lang"] == "en"}
    assert {"merry christmas", "market square", "railway"} <= english_terms
    assert not {"frohe weihnachten", "weihnachten", "wohnzimmer"} & english_terms


def test_titles_join_the_list_of_their_language_column(tmp_path):
    pq.write_table(pa.table({"title": ["Brandenburger Tor", "Golden Gate Bridge", "Eiffel Tower"],
                             "lang": ["de", "en", None]}), tmp_path / "titles.parquet")
    config = QueriesConfig(wordnet=False, titles=str(tmp_path / "titles.parquet"), languages=["de"],
                           wordfreq_corpus_words=100_000)
    run_queries(config, tmp_path / "queries.parquet")
    titles = {(r["term"], r["lang"]) for r in pq.read_table(tmp_path / "queries.parquet").to_pylist()
              if "title" in r["source"]}
    assert titles == {("brandenburger tor", "de"), ("golden gate bridge", "en"), ("eiffel tower", "en")}


def test_title_language_codes_are_normalised_and_a_named_column_must_exist(tmp_path):
    pq.write_table(pa.table({"title": ["Brandenburger Tor", "Kölner Dom", "Torre Eiffel", "Big Ben"],
                             "language": ["de-DE", "DE", "it_IT", "EN-gb"]}), tmp_path / "titles.parquet")
    config = QueriesConfig(wordnet=False, titles=str(tmp_path / "titles.parquet"), languages=["de"],
                           title_language_column="language", wordfreq_corpus_words=100_000)
    stats = run_queries(config, tmp_path / "queries.parquet")
    titles = {(r["term"], r["lang"]) for r in pq.read_table(tmp_path / "queries.parquet").to_pylist()
              if "title" in r["source"]}
    assert titles == {("brandenburger tor", "de"), ("kölner dom", "de"), ("big ben", "en")}
    assert stats["titles_left_out_by_language"] == {"it": 1}
    missing = QueriesConfig(wordnet=False, titles=str(tmp_path / "titles.parquet"), languages=["de"],
                            title_language_column="wiki_lang", wordfreq_corpus_words=100_000)
    with pytest.raises(CurationError, match=r"titles.parquet: no column 'wiki_lang' for title_language_column"):
        run_queries(missing, tmp_path / "other.parquet")
