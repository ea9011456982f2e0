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

import itertools
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import ahocorasick
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.config import MatchConfig
from curation.engines import run_job
from curation.errors import CurationError
from curation.formats.files import atomic_path
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
from curation.text import LEFT, RIGHT, mark_boundaries, normalize, normalize_all


class Matcher:
    """Finds every query of `terms` contained in a text; build once (per worker), use for many texts.

    >>> m = Matcher(["cat", "New York", "york"])
    >>> m.find("A cat in new york.")
    [0, 1, 2]
    """

    def __init__(self, terms: Sequence[str]):
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

    def find_many(self, texts: Sequence[str]) -> list[list[int]]:
        """`find` for each text."""
        return [self.find(text) for text in texts]

    def match_column(self, texts: pa.Array) -> pa.ListArray:
        """For a string column (no nulls), the sorted query indices of each row, as list<int32>."""
        found = [self.find(text) for text in texts.to_pylist()]
        # flat offsets + values: pa.array() on a list of lists costs more than the matching itself
        offsets = np.zeros(len(found) + 1, dtype=np.int32)
        np.cumsum(np.fromiter(map(len, found), np.int32, len(found)), out=offsets[1:])
        values = np.fromiter(itertools.chain.from_iterable(found), np.int32, int(offsets[-1]))
        return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values))


# ---- the `curation match` stage -------------------------------------------------------------------------

@dataclass(frozen=True)
class MatchTask:
    source: Path
    output: Path
    config: MatchConfig


def match_shard(task: MatchTask, matcher: Matcher) -> dict[str, Any]:
    """Match one caption table; write its matching rows (with `query_ids`) to `task.output`."""
    config, rows, kept, writer = task.config, 0, 0, None
    with atomic_path(task.output) as tmp:
        try:
            for batch in caption_batches(task.source, config.url_column, config.caption_column, config.column_names,
                                         config.batch_rows):
                ids = matcher.match_column(batch.column("caption"))
                matched = batch.append_column("query_ids", ids).filter(pc.greater(pc.list_value_length(ids), 0))
                if writer is None:
                    if "query_ids" in batch.schema.names:
                        raise CurationError(f"{task.source}: already has a column 'query_ids' (is it matched output?)")
                    writer = pq.ParquetWriter(tmp, matched.schema)
                writer.write_batch(matched.cast(writer.schema) if matched.schema != writer.schema else matched)
                rows, kept = rows + batch.num_rows, kept + matched.num_rows
            if writer is None:
                raise CurationError(f"{task.source}: table has no rows")
            writer.add_key_value_metadata({ROWS_IN_KEY: str(rows)})
        finally:
            if writer is not None:
                writer.close()
    return {"name": task.output.name, "source": str(task.source), "rows_in": rows, "rows_out": kept}


@dataclass(frozen=True)
class MatchJob:
    """`curation match` for an engine: each worker builds the automaton once; a shard matched by an earlier,
    interrupted run is only counted. Every result carries the rows per query of its output shard."""

    queries: Path
    description: str = "match"

    def setup(self) -> Matcher:
        return Matcher(read_queries(self.queries)["term"].to_pylist())

    def run(self, matcher: Matcher, task: MatchTask) -> dict[str, Any]:
        done = task.output.exists()
        result = {"name": task.output.name, "created": False} if done else \
            {**match_shard(task, matcher), "created": True}
        return {**result, "counts": query_id_counts(task.output)}


def _output_name(index: int, source: Path) -> str:
    stem = source.name.split(".")[0] or "part"
    return f"{index:05d}-{stem}.parquet"


def run_match(config: MatchConfig, queries: Path, captions: list[str], out: Path,
              overwrite: bool = False) -> dict[str, Any]:
    """Match every caption table against the query list: `out/*.parquet`, `<out>.counts.parquet`, `<out>.stats.json`."""
    out, queries = Path(out), Path(queries)
    terms = read_queries(queries)
    sources = expand_inputs(captions)
    counts_file = sidecar(out, ".counts.parquet")
    settings = {k: v for k, v in asdict(config).items() if k not in ("workers", "batch_rows", "engine", "ray_address")}
    fingerprint = {"config": settings, "inputs": file_signature(sources), "queries": file_signature([queries])}
    stage = Stage("match", out, fingerprint, overwrite, extra_outputs=(counts_file,))
    if (done := stage.finished()) is not None:
        report(f"match: up to date ({done['rows_matched']:,} of {done['rows_in']:,} rows matched in {out})")
        return done
    with stage.running():
        out.mkdir(parents=True, exist_ok=True)
        tasks = [MatchTask(src, out / _output_name(i, src), config) for i, src in enumerate(sources)]
        todo = [task for task in tasks if not task.output.exists()]
        counts = run_job(MatchJob(queries), tasks, engine=config.engine, workers=config.workers,
                         ray_address=config.ray_address, total_rows=_known_rows(todo), count_size=terms.num_rows,
                         on_result=stage.record_output).counts
        sources = terms["source"] if "source" in terms.column_names else pa.nulls(len(counts), pa.string())
        table = pa.table({"id": terms["id"], "term": terms["term"], "source": sources, "matched": pa.array(counts)})
        with atomic_path(counts_file) as tmp:
            pq.write_table(table, tmp)
        stats = stage.finish(_match_stats(tasks, counts, queries, counts_file))
    report(f"match: {stats['rows_matched']:,} of {stats['rows_in']:,} rows contain a query "
           f"({stats['match_rate']:.1%}); {stats['queries_matched']:,} queries matched → {out}")
    return stats


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
               "rows_out": input_rows(t.output)} for t in tasks]
    rows, kept = sum(s["rows_in"] for s in shards), sum(s["rows_out"] for s in shards)
    return {"queries_file": str(queries), "counts_file": str(counts_file), "rows_in": rows, "rows_matched": kept,
            "rows_dropped": rows - kept, "match_rate": kept / rows if rows else 0.0, "queries": int(len(counts)),
            "queries_matched": int((counts > 0).sum()), "shards": shards}
