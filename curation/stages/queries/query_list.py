"""`curation queries`: the query list (CLIP's 500,000 queries) from sources that can each be switched off.

Output `queries.parquet` with columns id (row number, the id `match` attaches), term (lower-case, single
spaces, NFC; the matcher normalises it again exactly as it normalises captions), source (comma-joined
sources that produced the term, best first) and count
(the term's count in its best source: corpus or wordfreq estimate for unigrams, corpus count for bigrams,
views for titles, null for WordNet). Rows are ranked by source (unigram, bigram, title, wordnet), then by
count (highest first), then alphabetically; `max_terms` keeps the top of that ranking.
"""

from __future__ import annotations

from dataclasses import asdict
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from clipformats.files import atomic_path
from curation.config import QueriesConfig
from curation.errors import CurationError
from curation.progress import progress_bar, report
from curation.stage import Stage, file_signature
from curation.stages.queries import sources
from curation.text import normalize_all

SOURCE_ORDER = ("unigram", "bigram", "title", "wordnet")


def other_languages(config: QueriesConfig) -> list[str]:
    return list(dict.fromkeys(lang for lang in config.languages if lang != "en"))


def corpus_counts(config: QueriesConfig, unigram_source: str) -> dict[str, tuple[pa.Table, pa.Table, int]]:
    """The corpus's counts: all of it as "en" without `languages`; with them, each language's documents only
    (one language-ID pass), so that no other language's words enter English's list."""
    corpus = [Path(p) for p in config.corpus]
    if not corpus or not (unigram_source == "corpus" or config.bigrams):
        return {}
    if not config.languages:
        return {"en": sources.count_corpus(corpus, config.corpus_field, config.bigrams)}
    return sources.count_corpus_by_language(corpus, config.corpus_field, ["en", *other_languages(config)],
                                            config.bigrams)


def collect_sources(config: QueriesConfig, advance=lambda units: None,
                    counted: dict | None = None) -> tuple[dict[str, pa.Table], dict[str, Any]]:
    """Each enabled source's raw (term, count) table, plus facts about the sources for the stats. `counted`:
    `corpus_counts`' result (computed here when not given)."""
    found: dict[str, pa.Table] = {}
    facts: dict[str, Any] = {}
    unigram_source = _unigram_source(config)
    facts["unigram_source"] = unigram_source
    counted = corpus_counts(config, unigram_source) if counted is None else counted
    if "en" in counted:
        unigrams, pairs, tokens = counted["en"]
        facts["corpus_tokens"] = tokens
        if unigram_source == "corpus":
            found["unigram"] = unigrams.filter(pc.greater_equal(unigrams["count"], config.min_count))
        if config.bigrams:
            found["bigram"] = sources.pmi_bigrams(unigrams, pairs, tokens, config.bigram_min_count, config.min_pmi)
        advance(1)
    if unigram_source == "wordfreq":
        found["unigram"] = sources.wordfreq_unigrams(config.min_count, config.wordfreq_corpus_words)
        advance(1)
    if config.titles:
        found["title"] = sources.titles_of(_titles(config), "en")
        advance(1)
    if config.wordnet:
        found["wordnet"], facts["wordnet_synsets"] = sources.wordnet_lemmas(config.wordnet_dir)
        advance(1)
    return found, facts


def _unigram_source(config: QueriesConfig) -> str:
    if config.unigrams == "auto":
        return "corpus" if config.corpus else "wordfreq"
    return config.unigrams


def _titles(config: QueriesConfig) -> pa.Table:
    """The titles table; with `languages`, its language column too (each title then joins its language's list)."""
    return sources.titles(Path(config.titles), config.title_column, config.views_column, config.min_views,
                          config.title_language_column if config.languages else None,
                          language_required=bool(config.languages) and config.title_language_column != "lang")


def merge_sources(found: dict[str, pa.Table], max_terms: int) -> tuple[pa.Table, dict[str, Any]]:
    """Normalise, dedupe (recording every source of a term), rank and cap. Returns the list and its counts."""
    parts = []
    for rank, name in enumerate(SOURCE_ORDER):
        if name in found:
            table = found[name]
            terms = pa.array(normalize_all(table["term"].to_pylist()), pa.string())
            parts.append(pa.table({"term": terms, "count": table["count"], "source": pa.repeat(name, len(terms)),
                                   "rank": pa.repeat(rank, len(terms))}))
    if not parts:
        raise CurationError("queries: every source is switched off (wordnet, unigrams, bigrams, titles)")
    table = pa.concat_tables(parts)
    table = table.filter(pc.greater(pc.utf8_length(table["term"]), 0))
    per_source = table.group_by(["term", "source"], use_threads=False).aggregate([("rank", "min"), ("count", "max")])
    per_source = per_source.sort_by([("term", "ascending"), ("rank_min", "ascending")])
    terms = per_source.group_by("term", use_threads=False).aggregate(
        [("rank_min", "first"), ("count_max", "first"), ("source", "list")])
    terms = terms.sort_by([("rank_min_first", "ascending"), ("count_max_first", "descending"), ("term", "ascending")])
    kept = terms.slice(0, max_terms)
    result = pa.table({
        "id": pa.array(range(kept.num_rows), pa.int32()),
        "term": kept["term"],
        "source": pc.binary_join(kept["source_list"], ","),
        "count": kept["count_max_first"],
    })
    counts = {}
    for name in found:
        in_list = pc.sum(pc.match_substring_regex(result["source"], rf"(^|,){name}(,|$)")).as_py() or 0
        candidates = pc.sum(pc.equal(per_source["source"], name)).as_py() or 0
        counts[name] = {"candidates": candidates, "in_list": in_list}
    return result, {"terms": result.num_rows, "unique_candidates": terms.num_rows,
                    "dropped_by_cap": terms.num_rows - result.num_rows, "sources": counts}


def add_languages(english: pa.Table, config: QueriesConfig,
                  counted: dict | None = None) -> tuple[pa.Table, dict[str, int], dict[str, int]]:
    """The English list and each other language's wordfreq list (plus, with a corpus and bigrams on, the PMI
    bigrams of the corpus's documents in that language), one table with a `lang` column, ids renumbered.
    `counted`: `corpus_counts`' result (computed here when not given). Also: the titles of languages without a
    list, by language (left out of every list)."""
    parts, sizes = [english.append_column("lang", pa.repeat("en", english.num_rows))], {"en": english.num_rows}
    others = other_languages(config)
    if counted is None:
        counted = corpus_counts(config, "corpus") if config.corpus and config.bigrams else {}
    corpus = counted if config.bigrams else {}
    titles = _titles(config) if config.titles else None
    for lang in others:
        found = {"unigram": sources.wordfreq_unigrams(config.min_count, config.wordfreq_corpus_words, lang)}
        if lang in corpus:
            found["bigram"] = sources.pmi_bigrams(*corpus[lang], config.bigram_min_count, config.min_pmi)
        if config.titles and (own := sources.titles_of(titles, lang)).num_rows:
            found["title"] = own
        words, _ = merge_sources(found, config.max_terms)
        parts.append(words.append_column("lang", pa.repeat(lang, words.num_rows)))
        sizes[lang] = words.num_rows
    table = pa.concat_tables(parts)
    left_out = sources.titles_left_out(titles, ["en", *others]) if titles is not None else {}
    return table.set_column(0, "id", pa.array(range(table.num_rows), pa.int32())), sizes, left_out


def _fingerprint(config: QueriesConfig) -> dict[str, Any]:
    inputs = [Path(p) for p in config.corpus] + ([Path(config.titles)] if config.titles else [])
    missing = [p for p in inputs if not p.is_file()]
    if missing:
        raise CurationError(f"{missing[0]}: no such file")
    wordnet = [config.wordnet_dir / name for name in ("data.noun", "data.verb", "data.adj", "data.adv")]
    settings = {k: v for k, v in asdict(config).items()  # lists made before these settings existed stay valid
                if (k != "languages" or v) and (k != "title_language_column" or v != "lang")}
    if config.languages and config.corpus and config.bigrams:  # lists made before had no per-language bigrams
        settings["language_bigrams"] = True
    if config.languages and config.corpus and (_unigram_source(config) == "corpus" or config.bigrams):
        # nor English counts from English documents only (the corpus is read only for these)
        settings["english_corpus_by_language"] = True
    if config.languages and config.titles:  # nor titles split by their language column
        settings["language_titles"] = True
        settings["title_language_codes"] = "lower-case, no region"  # nor "de-DE" read as "de"
    return {"config": settings, "inputs": file_signature(inputs),
            "wordnet": file_signature([p for p in wordnet if p.is_file()]) if config.wordnet else [],
            "wordfreq": version("wordfreq")}


def run_queries(config: QueriesConfig, out: Path, overwrite: bool = False) -> dict[str, Any]:
    """Build the query list into `out` (a parquet file) and `<out stem>.stats.json`; a no-op when up to date."""
    out = Path(out)
    if out.is_dir():
        raise CurationError(f"{out}: is a folder; the query list is a file (e.g. {out / 'queries.parquet'})")
    inputs = [Path(p) for p in config.corpus] + ([Path(config.titles)] if config.titles else [])
    stage = Stage("queries", out, _fingerprint(config), overwrite, inputs=tuple(inputs))
    if (done := stage.finished()) is not None:
        report(f"queries: up to date ({done['terms']:,} terms in {out})")
        return done
    with stage.running():
        steps = sum([bool(config.corpus), config.unigrams != "none", bool(config.titles), config.wordnet])
        with progress_bar("queries: reading sources", max(steps, 1)) as advance:
            counted = corpus_counts(config, _unigram_source(config))
            found, facts = collect_sources(config, advance, counted)
        table, counts = merge_sources(found, config.max_terms)
        if config.languages:
            table, counts["languages"], left_out = add_languages(table, config, counted)
            if config.titles:
                counts["titles_left_out_by_language"] = left_out
            counts["terms"] = table.num_rows
        with atomic_path(out) as tmp:
            pq.write_table(table, tmp)
        stats = stage.finish({"output": str(out), "max_terms": config.max_terms, **counts, **facts})
    report(f"queries: {table.num_rows:,} terms → {out} (" +
           ", ".join(f"{name} {c['in_list']:,}" for name, c in counts["sources"].items()) + ")")
    return stats
