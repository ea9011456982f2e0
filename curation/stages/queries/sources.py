"""Term sources for the query list. Each returns an Arrow table (term, count) of raw, unnormalised terms.

* WordNet: the lemmas of every synset in the WordNet 3.0 database files (`data.noun` …); count is null.
* wordfreq: English words whose estimated count (frequency × an assumed corpus size) reaches a threshold.
* corpus: unigram and bigram counts of the user's text; bigrams kept by pointwise mutual information.
* titles: a user list (e.g. Wikipedia article titles), with an optional view count threshold.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from curation.errors import CurationError
from curation.formats.tables import read_batches, table_format
from curation.text import has_letter

WORDNET_FILES = ("data.noun", "data.verb", "data.adj", "data.adv")
COUNTS_SCHEMA = pa.schema([("term", pa.string()), ("count", pa.int64())])


def wordnet_lemmas(wordnet_dir: Path) -> tuple[pa.Table, int]:
    """Every lemma of every synset (underscores → spaces, adjective markers like `(a)` dropped), and the
    number of synsets."""
    lemmas: list[str] = []
    synsets = 0
    for name in WORDNET_FILES:
        path = Path(wordnet_dir) / name
        try:
            with open(path, encoding="utf-8") as handle:
                for number, line in enumerate(handle, start=1):
                    if line.startswith("  "):  # licence header
                        continue
                    lemmas.extend(_synset_lemmas(path, number, line))
                    synsets += 1
        except FileNotFoundError:
            raise CurationError(f"{wordnet_dir}: WordNet file {name} not found "
                                f"(install the wordnet-base package or set queries.wordnet_dir)") from None
        except (OSError, UnicodeDecodeError) as error:
            raise CurationError(f"{path}: cannot read WordNet file ({error})") from None
    terms = pa.array(lemmas, pa.string())
    return pa.table({"term": terms, "count": pa.nulls(len(terms), pa.int64())}), synsets


def _synset_lemmas(path: Path, number: int, line: str) -> list[str]:
    # synset_offset lex_filenum ss_type w_cnt(hex) word lex_id [word lex_id …] p_cnt …
    fields = line.split(" ", 80)
    try:
        count = int(fields[3], 16)
        words = fields[4:4 + 2 * count:2]
    except (IndexError, ValueError):
        raise CurationError(f"{path}: line {number} is not a WordNet data line") from None
    if len(words) != count:
        raise CurationError(f"{path}: line {number} is not a WordNet data line")
    return [word.split("(", 1)[0].replace("_", " ") for word in words]


def wordfreq_unigrams(min_count: int, corpus_words: int, lang: str = "en") -> pa.Table:
    """Words of `lang` (wordfreq's large list, else its best) whose frequency × corpus_words is at least min_count."""
    import wordfreq

    if lang not in wordfreq.available_languages(wordlist="best"):
        raise CurationError(f"queries.languages: wordfreq has no word list for {lang!r} (it has: "
                            f"{', '.join(sorted(wordfreq.available_languages(wordlist='best')))})")
    large = lang in wordfreq.available_languages(wordlist="large")
    frequencies = wordfreq.get_frequency_dict(lang, wordlist="large" if large else "best")
    terms = pa.array(list(frequencies), pa.string())
    counts = pc.cast(pc.round(pc.multiply(pa.array(list(frequencies.values()), pa.float64()), float(corpus_words))),
                     pa.int64())
    table = pa.table({"term": terms, "count": counts})
    return table.filter(pc.and_(pc.greater_equal(counts, min_count), has_letter(terms)))


def _corpus_chunks(path: Path, text_field: str) -> Iterator[pa.Array]:
    """Raw text of a corpus file in chunks: txt line by line, jsonl/parquet from column `text_field`."""
    if Path(path).suffix.lower() in (".txt", ".text"):
        try:
            with open(path, encoding="utf-8") as handle:
                while lines := handle.readlines(1 << 24):
                    yield pa.array(lines, pa.string())
        except FileNotFoundError:
            raise CurationError(f"{path}: corpus file not found") from None
        except UnicodeDecodeError as error:
            raise CurationError(f"{path}: not valid UTF-8 text (byte {error.start} of a chunk)") from None
        return
    table_format(path)
    for batch in read_batches(path, None):
        if text_field not in batch.schema.names:
            raise CurationError(f"{path}: no column {text_field!r} (columns: {', '.join(batch.schema.names)}); "
                                f"set queries.corpus_field")
        yield pc.fill_null(batch.column(text_field).cast(pa.string()), "")


def _words(chunk: pa.Array) -> tuple[pa.Array, pa.Array]:
    """Tokens of a chunk and the line each came from. A token is a run of word characters, ' and -,
    trimmed of ' and -; other punctuation becomes a `|` token, so no bigram spans it. (Arrow kernels:
    a corpus is large; the terms found are normalised like every other term afterwards.)"""
    text = pc.replace_substring(pc.utf8_lower(chunk), "\u2019", "'")
    text = pc.replace_substring_regex(text, r"[^\pL\pN\pM'\s-]+", " | ")
    tokens = pc.utf8_split_whitespace(text)
    return pc.utf8_trim(tokens.flatten(), "'-"), pc.list_parent_indices(tokens)


class _Counter:
    """Unigram and bigram counts of the chunks added (partial counts merged every few chunks)."""

    def __init__(self, bigrams: bool):
        self.bigrams, self.tokens = bigrams, 0
        self.unigram_parts: list[pa.Table] = [_empty_counts(["term"])]
        self.bigram_parts: list[pa.Table] = [_empty_counts(["left", "right"])]

    def add(self, chunk: pa.Array) -> None:
        words, lines = _words(chunk)
        is_word = has_letter(words)
        self.tokens += pc.sum(is_word).as_py() or 0
        self.unigram_parts.append(_count_rows(pa.table({"term": words.filter(is_word)}), ["term"]))
        if self.bigrams and len(words) > 1:
            self.bigram_parts.append(_chunk_bigrams(words, lines, is_word))
        if len(self.unigram_parts) >= 16:
            self.unigram_parts = [_sum_counts(self.unigram_parts, ["term"])]
            self.bigram_parts = [_sum_counts(self.bigram_parts, ["left", "right"])]

    def result(self) -> tuple[pa.Table, pa.Table, int]:
        return (_sum_counts(self.unigram_parts, ["term"]), _sum_counts(self.bigram_parts, ["left", "right"]),
                self.tokens)


def count_corpus(paths: list[Path], text_field: str, bigrams: bool) -> tuple[pa.Table, pa.Table, int]:
    """Unigram counts (term, count), bigram counts (left, right, count) and the number of word tokens.

    All distinct unigrams and bigrams are held in memory (partial counts are merged every few chunks).
    """
    counter = _Counter(bigrams)
    for path in paths:
        for chunk in _corpus_chunks(Path(path), text_field):
            counter.add(chunk)
    return counter.result()


def count_corpus_by_language(paths: list[Path], text_field: str, languages: list[str],
                             bigrams: bool = True) -> dict[str, tuple[pa.Table, pa.Table, int]]:
    """`count_corpus` of each language's documents (lines or rows) only, each identified with lid.176 as `match`
    identifies captions: the corpus's own bigrams per language (MetaCLIP 2's per-language lists)."""
    from curation.stages.match.languages import LanguageIdentifier

    identifier, counters = LanguageIdentifier(), {lang: _Counter(bigrams) for lang in languages}
    for path in paths:
        for chunk in _corpus_chunks(Path(path), text_field):
            found = pa.array(identifier.identify(chunk.to_pylist())[0], pa.string())
            for lang, counter in counters.items():
                mine = chunk.filter(pc.equal(found, lang))
                if len(mine):
                    counter.add(mine)
    return {lang: counter.result() for lang, counter in counters.items()}


def _empty_counts(keys: list[str]) -> pa.Table:
    return pa.schema([(key, pa.string()) for key in keys] + [("count", pa.int64())]).empty_table()


def _count_rows(table: pa.Table, keys: list[str]) -> pa.Table:
    return table.group_by(keys).aggregate([([], "count_all")]).rename_columns([*keys, "count"])


def _chunk_bigrams(words: pa.Array, lines: pa.Array, is_word: pa.Array) -> pa.Table:
    import numpy as np

    valid = is_word.to_numpy(zero_copy_only=False)
    line = lines.to_numpy()
    first = np.flatnonzero(valid[:-1] & valid[1:] & (line[:-1] == line[1:]))
    table = pa.table({"left": words.take(pa.array(first)), "right": words.take(pa.array(first + 1))})
    return _count_rows(table, ["left", "right"])


def _sum_counts(parts: list[pa.Table], keys: list[str]) -> pa.Table:
    table = pa.concat_tables(parts).group_by(keys).aggregate([("count", "sum")])
    return table.rename_columns([*keys, "count"])


def pmi_bigrams(unigrams: pa.Table, pairs: pa.Table, tokens: int, min_count: int, min_pmi: float) -> pa.Table:
    """Bigrams seen at least min_count times with PMI = ln(c(ab)·N / (c(a)·c(b))) ≥ min_pmi, as (term, count)."""
    pairs = pairs.filter(pc.greater_equal(pairs["count"], min_count))
    if pairs.num_rows == 0 or tokens == 0:
        return COUNTS_SCHEMA.empty_table()
    left = unigrams.rename_columns(["left", "count_left"])
    right = unigrams.rename_columns(["right", "count_right"])
    joined = pairs.join(left, "left").join(right, "right")
    pair, first, second = (pc.cast(joined[c], pa.float64()) for c in ("count", "count_left", "count_right"))
    ratio = pc.divide(pc.multiply(pair, float(tokens)), pc.multiply(first, second))
    keep = pc.greater_equal(pc.ln(ratio), min_pmi)
    joined = joined.filter(keep)
    terms = pc.binary_join_element_wise(joined["left"], joined["right"], " ")
    return pa.table({"term": terms, "count": joined["count"]})


def titles_of(table: pa.Table, lang: str) -> pa.Table:
    """The titles of one language (a `lang` column's; a title without one is English), as (term, count)."""
    if "lang" not in table.column_names:
        return table if lang == "en" else COUNTS_SCHEMA.empty_table()
    mine = pc.equal(pc.fill_null(table["lang"], "en"), lang)
    return table.filter(mine).select(["term", "count"])


def titles_left_out(table: pa.Table, languages: list[str]) -> dict[str, int]:
    """How many titles of each language that has no list (`languages`) join none: {code: titles}."""
    if "lang" not in table.column_names:
        return {}
    codes = pc.fill_null(table["lang"], "en")
    counts = pc.value_counts(codes.filter(pc.invert(pc.is_in(codes, pa.array(languages, pa.string()))))).to_pylist()
    return {row["values"]: row["counts"] for row in sorted(counts, key=lambda r: (-r["counts"], r["values"]))}


def language_codes(codes: pa.ChunkedArray) -> pa.ChunkedArray:
    """Language codes as the lists name them: lower-case, trimmed, region dropped ("de-DE", "pt_BR" → "de", "pt")."""
    trimmed = pc.utf8_lower(pc.utf8_trim_whitespace(codes))
    return pc.replace_substring_regex(trimmed, r"[-_].*$", "")


def titles(path: Path, title_column: str, views_column: str, min_views: int,
           language_column: str | None = None, language_required: bool = False) -> pa.Table:
    """Titles (txt: one per line; tables: `title_column`), keeping those with views ≥ min_views when counted;
    with `language_column` present in the table, a `lang` column too (codes lower-case, region dropped: "de-DE"
    is "de"); a `language_required` column that is missing is an error."""
    if Path(path).suffix.lower() in (".txt", ".text"):
        chunks = list(_corpus_chunks(Path(path), ""))
        names = pc.utf8_trim_whitespace(pa.concat_arrays(chunks)) if chunks else pa.array([], pa.string())
        table = pa.table({"term": names, "count": pa.nulls(len(names), pa.int64())})
        if min_views > 0:
            raise CurationError(f"{path}: min_views is {min_views} but a txt title list has no view counts")
        return table.filter(pc.greater(pc.utf8_length(names), 0))
    batches = list(read_batches(Path(path), None))
    table = pa.Table.from_batches(batches)
    if title_column not in table.column_names:
        raise CurationError(f"{path}: no column {title_column!r} (columns: {', '.join(table.column_names)})")
    views = pa.nulls(table.num_rows, pa.int64())
    if views_column in table.column_names:
        try:
            views = pc.cast(table[views_column], pa.int64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise CurationError(f"{path}: column {views_column!r} does not hold whole numbers") from None
    elif min_views > 0:
        raise CurationError(f"{path}: min_views is {min_views} but there is no column {views_column!r}")
    if language_required and language_column not in table.column_names:
        raise CurationError(f"{path}: no column {language_column!r} for title_language_column "
                            f"(columns: {', '.join(table.column_names)})")
    names = pc.fill_null(table[title_column].cast(pa.string()), "")
    result = pa.table({"term": names, "count": views,
                       **({"lang": language_codes(table[language_column].cast(pa.string()))}
                          if language_column in table.column_names else {})})
    if min_views > 0:
        result = result.filter(pc.greater_equal(pc.fill_null(views, 0), min_views))
    return result

