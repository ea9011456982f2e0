"""Which queries does a caption contain? An Aho-Corasick automaton over boundary-marked text.

Semantics (the contract `Matcher` and `curation match` keep):

* Case-insensitive: caption and query are both lower-cased and brought to one Unicode normal form
  (`curation.text.normalize`), so "é" and "e + combining acute" are equal; accents still matter
  ("école" is not "ecole"). Runs of whitespace count as one space; the typographic apostrophe ’ equals '.
* A query matches where it occurs in the caption and the characters just before and just after the
  occurrence are not word characters (Unicode letters, marks or numbers), or the occurrence touches an end
  of the caption. So `cat` matches "a cat." and "cat-like" but not "cats" or "concat"; `new york` matches
  "New  York!"; `c++` matches "c++ code" but not "c++x".
* Overlapping and nested queries all match: "new york city" contains `new`, `york`, `new york`, `city`.
* Scripts written without spaces (Chinese, Japanese, Thai) only match where punctuation or spaces
  separate words: this is a word-boundary matcher, not a segmenter.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import ahocorasick
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from clipformats.curation_outputs import ROWS_IDENTITY, rows_identity
from clipformats.files import atomic_path
from clipformats.urls import allowed_schemes, url_problem
from curation.config import MatchConfig
from curation.engines import run_job
from curation.errors import CurationError
from curation.formats.tables import (
    ROWS_IN_KEY,
    caption_batches,
    expand_inputs,
    input_rows,
    query_id_counts,
    read_queries,
    rows_in,
)
from curation.progress import report
from curation.stage import Stage, file_signature, sidecar
from curation.stages.match.columns import TermMatcher
from curation.text import LEFT, RIGHT, mark_boundaries, normalize, normalize_all

REFUSED_KEY = b"curation.urls_refused"
"""Parquet metadata of a matched shard: its rows dropped for their URL, by reason (JSON)."""
LANGUAGES_KEY = b"curation.languages"
"""Parquet metadata of a matched shard (worldwide matching): its input rows per identified language (JSON)."""


class Matcher(TermMatcher):
    """Finds every query of `terms` contained in a text; build once (per worker), use for many texts.

    >>> m = Matcher(["cat", "New York", "york"])
    >>> m.find("A cat in new york.")
    [0, 1, 2]
    """

    def __init__(self, terms: Sequence[str]):
        if isinstance(terms, (str, bytes)):  # a str is a sequence of one-letter terms: never what was meant
            raise TypeError(f"Matcher: terms must be a list of str, got a single {type(terms).__name__} {terms!r}")
        terms = list(terms)
        if (bad := next((i for i, t in enumerate(terms) if not isinstance(t, str)), None)) is not None:
            raise TypeError(f"Matcher: terms must be str, got {type(terms[bad]).__name__} at index {bad}")
        keys = normalize_all(terms)
        if not all(keys):
            raise ValueError("Matcher: every term must contain a non-space character")
        self.num_terms = len(keys)
        marked = [mark_boundaries(key) for key in keys]
        first_index: dict[str, int] = {}
        aliases: dict[int, list[int]] = {}
        self._automaton = ahocorasick.Automaton(ahocorasick.STORE_INTS)
        for index, key in enumerate(marked):
            if key in first_index:  # the same query twice after normalisation: report both indices
                aliases.setdefault(first_index[key], [first_index[key]]).append(index)
                continue
            first_index[key] = index
            self._automaton.add_word(LEFT + key + RIGHT, index)
        self._automaton.make_automaton()
        self._aliases = aliases

    def find(self, text: str) -> list[int]:
        """Sorted indices (into `terms`) of the queries that `text` contains."""
        found = {term for _, term in self._automaton.iter(LEFT + mark_boundaries(normalize(text)) + RIGHT)}
        if self._aliases:
            for term in [t for t in found if t in self._aliases]:
                found.update(self._aliases[term])
        return sorted(found)


# ---- the `curation match` stage -------------------------------------------------------------------------

@dataclass(frozen=True)
class MatchTask:
    source: Path
    output: Path
    config: MatchConfig


def refuse_urls(batch: pa.RecordBatch, schemes: frozenset[str], refused: Counter[str]) -> pa.RecordBatch:
    """The rows whose URL may be fetched (`clipformats.urls`); the others counted by reason."""
    problems = [url_problem(url, schemes) for url in batch.column("url").to_pylist()]
    if not any(problems):
        return batch
    refused.update(p for p in problems if p is not None)
    return batch.filter(pa.array([p is None for p in problems]))


def match_shard(task: MatchTask, matcher: Matcher) -> dict[str, Any]:
    """Match one caption table; write its matching rows (with `query_ids`) to `task.output`."""
    config, rows, kept, writer = task.config, 0, 0, None
    schemes, refused, languages = allowed_schemes(config.allow_schemes), Counter(), Counter()
    with atomic_path(task.output) as tmp:
        try:
            for batch in caption_batches(task.source, config.url_column, config.caption_column, config.column_names,
                                         config.batch_rows):
                rows += batch.num_rows
                batch = refuse_urls(batch, schemes, refused)
                ids, extra = matcher.match_table(batch.column("caption"))
                for name, column in extra.items():
                    batch = batch.append_column(name, column)
                languages.update(extra["lang"].to_pylist() if "lang" in extra else [])
                matched = batch.append_column("query_ids", ids).filter(pc.greater(pc.list_value_length(ids), 0))
                if writer is None:
                    if "query_ids" in batch.schema.names:
                        raise CurationError(f"{task.source}: already has a column 'query_ids' (is it matched output?)")
                    writer = pq.ParquetWriter(tmp, matched.schema)
                writer.write_batch(matched.cast(writer.schema) if matched.schema != writer.schema else matched)
                kept += matched.num_rows
            if writer is None:
                raise CurationError(f"{task.source}: table has no rows")
            writer.add_key_value_metadata({ROWS_IN_KEY: str(rows), REFUSED_KEY: json.dumps(dict(refused)),
                                           LANGUAGES_KEY: json.dumps(dict(languages))})
        finally:
            if writer is not None:
                writer.close()
    return {"name": task.output.name, "source": str(task.source), "rows_in": rows, "rows_out": kept,
            "urls_refused": dict(refused)}


@dataclass(frozen=True)
class MatchJob:
    """`curation match` for an engine: each worker builds the automaton once; a shard matched by an earlier,
    interrupted run is only counted. Every result carries the rows per query of its output shard."""

    queries: Path
    description: str = "match"
    rule: str = "words"

    def setup(self) -> TermMatcher:
        queries = read_queries(self.queries)
        if "lang" not in queries.column_names:
            return matcher_for(self.rule)(queries["term"].to_pylist())
        from curation.stages.match.worldwide import WorldwideMatcher

        return WorldwideMatcher(queries["term"].to_pylist(), queries["lang"].to_pylist(), matcher_for(self.rule))

    def run(self, matcher: Matcher, task: MatchTask) -> dict[str, Any]:
        done = task.output.exists()
        result = {"name": task.output.name, "created": False} if done else \
            {**match_shard(task, matcher), "created": True}
        return {**result, "counts": query_id_counts(task.output)}


def matcher_for(rule: str):
    """The matcher class of a `match.rule`, as a function of the terms."""
    if rule == "words":
        return Matcher
    from curation.stages.match.metaclip import MetaClipMatcher

    return lambda terms: MetaClipMatcher(terms, rule)


def _output_name(index: int, source: Path) -> str:
    stem = source.name.split(".")[0] or "part"
    return f"{index:05d}-{stem}.parquet"


def run_match(config: MatchConfig, queries: Path, captions: list[str], out: Path,
              overwrite: bool = False) -> dict[str, Any]:
    """Match every caption table against the query list: `out/*.parquet`, `<out>.counts.parquet`, `<out>.stats.json`."""
    out, queries = Path(out), Path(queries)
    terms = read_queries(queries)
    check_terms(queries, terms["term"])
    sources = expand_inputs(captions)
    counts_file = sidecar(out, ".counts.parquet")
    settings = {k: v for k, v in asdict(config).items() if k not in ("workers", "batch_rows", "engine", "ray_address")
                and not (k == "rule" and v == "words")}  # outputs made before the rule was a setting stay valid
    fingerprint = {"config": settings, "inputs": file_signature(sources), "queries": file_signature([queries])}
    folders = [Path(c) for c in captions if Path(c).is_dir()]  # its sidecars there would be read as captions
    stage = Stage("match", out, fingerprint, overwrite, extra_outputs=(counts_file,),
                  inputs=(*sources, queries, *folders))
    if (done := stage.finished()) is not None:
        if ROWS_IDENTITY not in done:  # made before match recorded it (online curation checks it): added now
            done = stage.amend(ROWS_IDENTITY, lambda stats: {
                ROWS_IDENTITY: rows_identity([out / shard["name"] for shard in stats["shards"]])})
        report(f"match: up to date ({done['rows_matched']:,} of {done['rows_in']:,} rows matched in {out})")
        return done
    with stage.running():
        out.mkdir(parents=True, exist_ok=True)
        tasks = [MatchTask(src, out / _output_name(i, src), config) for i, src in enumerate(sources)]
        todo = [task for task in tasks if not task.output.exists()]
        counts = run_job(MatchJob(queries, rule=config.rule), tasks, engine=config.engine, workers=config.workers,
                         ray_address=config.ray_address, total_rows=_known_rows(todo), count_size=terms.num_rows,
                         on_result=stage.record_output).counts
        sources = terms["source"] if "source" in terms.column_names else pa.nulls(len(counts), pa.string())
        table = pa.table({"id": terms["id"], "term": terms["term"], "source": sources, "matched": pa.array(counts),
                          **({"lang": terms["lang"]} if "lang" in terms.column_names else {})})
        identity = rows_identity([task.output for task in tasks])  # what online curation checks its shards against
        with atomic_path(counts_file) as tmp:
            pq.write_table(table.replace_schema_metadata({ROWS_IDENTITY: identity}), tmp)
        stats = stage.finish({**_match_stats(tasks, counts, queries, counts_file), ROWS_IDENTITY: identity})
    refused = stats["rows_refused_url"]
    report(f"match: {stats['rows_matched']:,} of {stats['rows_in']:,} rows contain a query "
           f"({stats['match_rate']:.1%}); {stats['queries_matched']:,} queries matched → {out}"
           + (f"; {refused:,} rows dropped for their URL ({', '.join(stats['urls_refused'])})" if refused else ""))
    return stats


def check_terms(path: Path, terms: pa.ChunkedArray) -> None:
    """Refuse a query list the matcher cannot use, before the stage writes anything."""
    if not (pa.types.is_string(terms.type) or pa.types.is_large_string(terms.type)):
        raise CurationError(f"{path}: column 'term' holds {terms.type}, expected text")
    values = terms.to_pylist()
    bad = next((i for i, term in enumerate(values) if term is None or not normalize(term)), None)
    if bad is not None:
        count = sum(term is None or not normalize(term) for term in values)
        raise CurationError(f"{path}: {count:,} empty or null terms, first at row {bad} (every query needs a "
                            f"non-space character)")


def _known_rows(tasks: list[MatchTask]) -> int | None:
    """Rows to match, for the progress bar: known up front for parquet only."""
    if not all(task.source.suffix == ".parquet" for task in tasks):
        return None
    try:
        return sum(input_rows(task.source) for task in tasks)
    except (pa.ArrowInvalid, OSError):
        return None  # the shard's own read reports the problem


def _match_stats(tasks: list[MatchTask], counts: np.ndarray, queries: Path, counts_file: Path) -> dict[str, Any]:
    shards = [{"name": t.output.name, "source": str(t.source), "rows_in": rows_in(t.output),
               "rows_out": input_rows(t.output), "urls_refused": _refused(t.output, REFUSED_KEY),
               "languages": _refused(t.output, LANGUAGES_KEY)} for t in tasks]
    rows, kept = sum(s["rows_in"] for s in shards), sum(s["rows_out"] for s in shards)
    refused: Counter[str] = Counter()
    languages: Counter[str] = Counter()
    for shard in shards:
        refused.update(shard["urls_refused"])
        languages.update(shard.pop("languages"))
    return {"queries_file": str(queries), "counts_file": str(counts_file), "rows_in": rows, "rows_matched": kept,
            "rows_dropped": rows - kept, "rows_refused_url": sum(refused.values()),
            "urls_refused": dict(refused.most_common()), "match_rate": kept / rows if rows else 0.0,
            "queries": int(len(counts)), "queries_matched": int((counts > 0).sum()), "shards": shards,
            **({"rows_in_by_language": dict(languages.most_common())} if languages else {})}


def _refused(shard: Path, key: bytes) -> dict[str, int]:
    """A matched shard's counts by reason (REFUSED_KEY) or language (LANGUAGES_KEY)."""
    metadata = pq.read_metadata(shard).metadata or {}
    return json.loads(metadata.get(key, b"{}"))
