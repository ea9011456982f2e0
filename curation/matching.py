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

import functools
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
from curation.errors import CurationError
from curation.progress import report
from curation.engines.local import ROWS_IN_KEY, input_rows, rows_in, run_shards
from curation.stage import Stage, atomic_path, file_signature, sidecar
from curation.formats.tables import caption_batches, expand_inputs
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

@functools.cache
def _cached_matcher(queries: str, signature: tuple[int, int]) -> Matcher:
    """One matcher per process and query list (the worker keeps it for all its shards)."""
    from curation.queries import read_queries

    return Matcher(read_queries(Path(queries))["term"].to_pylist())


@dataclass(frozen=True)
class MatchTask:
    source: Path
    output: Path
    queries: Path
    config: MatchConfig


def match_shard(task: MatchTask, matcher: Matcher | None = None) -> dict[str, Any]:
    """Match one caption table; write its matching rows (with `query_ids`) to `task.output`."""
    if matcher is None:
        stat = task.queries.stat()
        matcher = _cached_matcher(str(task.queries), (stat.st_size, stat.st_mtime_ns))
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


def count_matches(paths: list[Path], num_terms: int) -> np.ndarray:
    """How many rows of the given matched shards contain each query."""
    counts = np.zeros(num_terms, dtype=np.int64)
    for path in paths:
        ids = pq.read_table(path, columns=["query_ids"])["query_ids"].combine_chunks().flatten()
        counts += np.bincount(ids.to_numpy(zero_copy_only=False), minlength=num_terms)
    return counts


def _output_name(index: int, source: Path) -> str:
    stem = source.name.split(".")[0] or "part"
    return f"{index:05d}-{stem}.parquet"


def run_match(config: MatchConfig, queries: Path, captions: list[str], out: Path,
              overwrite: bool = False) -> dict[str, Any]:
    """Match every caption table against the query list: `out/*.parquet`, `<out>.counts.parquet`, `<out>.stats.json`."""
    from curation.queries import read_queries

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
        tasks = [MatchTask(src, out / _output_name(i, src), queries, config) for i, src in enumerate(sources)]
        if config.engine == "ray":
            from curation.engines.ray import MatchActor, run_on_ray

            arguments = {"queries": str(queries.resolve()), "config": config}
            counts = run_on_ray(MatchActor, arguments, tasks, config, terms.num_rows, stage.created)
        else:
            todo = [task for task in tasks if not task.output.exists()]
            for result in run_shards(match_shard, todo, config.workers, "match", _known_rows(todo)):
                stage.created(out / result["name"])
            _cached_matcher.cache_clear()
            counts = count_matches([task.output for task in tasks], terms.num_rows)
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
