"""Reading caption tables (parquet, csv, tsv, jsonl; optionally .gz/.bz2/.zst) batch by batch, with checks;
and what the stages' own parquet shards record (`query_ids` per row, the input rows they were made from).

Every problem a user can cause becomes a one-line `CurationError` naming the file: missing file, unknown
format, empty or corrupt file, missing column, non-text column, text that is not UTF-8, null caption or URL,
a URL column that does not hold URLs.
"""

from __future__ import annotations

import glob
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.errors import CurationError, one_line

FORMATS = ("parquet", "csv", "tsv", "jsonl")
COMPRESSIONS = (".gz", ".bz2", ".zst")
# scheme://: garbage here usually means shifted columns, so it stops the run. A URL that has one but may not be
# fetched (whitespace, no host, credentials...) is one bad row: `clipformats.urls` drops and counts it.
URL_PATTERN = r"^\s*[a-zA-Z][a-zA-Z0-9+.-]*://"
ROWS_IN_KEY = b"curation.rows_in"
"""Parquet metadata of a stage's output shard: the input rows it was made from."""


def table_format(path: Path) -> str:
    """`x.csv.gz` → `csv`; raises for anything that is not a caption table."""
    suffixes = [s.lower() for s in Path(path).suffixes]
    if suffixes and suffixes[-1] in COMPRESSIONS:
        suffixes = suffixes[:-1]
    fmt = suffixes[-1].lstrip(".") if suffixes else ""
    if fmt == "json":
        fmt = "jsonl"
    if fmt not in FORMATS:
        raise CurationError(f"{path}: unknown table format (expected one of {', '.join(FORMATS)})")
    return fmt


def expand_inputs(patterns: list[str]) -> list[Path]:
    """Files, folders (every table inside, sorted) and glob patterns → a sorted, duplicate-free file list."""
    files: list[Path] = []
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            found = [p for p in sorted(path.iterdir()) if p.is_file() and not p.name.startswith((".", "_"))]
            found = [p for p in found if _is_table(p)]
            if not found:
                raise CurationError(f"{path}: folder holds no caption tables ({', '.join(FORMATS)})")
        elif path.is_file():
            found = [path]
        else:
            found = [Path(p) for p in sorted(glob.glob(pattern)) if Path(p).is_file()]
            if not found:
                raise CurationError(f"{pattern}: no such file")
        files.extend(found)
    return sorted(set(files))


def _is_table(path: Path) -> bool:
    try:
        table_format(path)
        return True
    except CurationError:
        return False


def read_batches(path: Path, columns: list[str] | None = None, column_names: list[str] | None = None,
                 batch_rows: int = 65536) -> Iterator[pa.RecordBatch]:
    """Stream a table's record batches (all columns, or `columns`); `column_names` names headerless csv/tsv."""
    fmt = table_format(path)
    if not Path(path).is_file():
        raise CurationError(f"{path}: no such file")
    if Path(path).stat().st_size == 0:
        raise CurationError(f"{path}: file is empty (0 bytes)")
    try:
        if fmt == "parquet":
            yield from _parquet_batches(path, columns, batch_rows)
        elif fmt in ("csv", "tsv"):
            yield from _csv_batches(path, fmt, column_names, batch_rows)
        else:
            yield from _jsonl_batches(path, batch_rows)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as error:
        message = one_line(error)
        if "utf8" in message.lower() or "utf-8" in message.lower():
            message = f"not valid UTF-8 text ({message})"
        raise CurationError(f"{path}: cannot read {fmt} ({message})") from None


def _parquet_batches(path: Path, columns: list[str] | None, batch_rows: int) -> Iterator[pa.RecordBatch]:
    parquet = pq.ParquetFile(path)
    if parquet.metadata.num_rows == 0:
        raise CurationError(f"{path}: parquet file has no rows")
    yield from parquet.iter_batches(batch_size=batch_rows, columns=columns)


def _csv_batches(path: Path, fmt: str, column_names: list[str] | None, batch_rows: int) -> Iterator[pa.RecordBatch]:
    import pyarrow.csv as csv

    read = csv.ReadOptions(column_names=column_names, block_size=max(1 << 20, batch_rows * 256))
    # TSV is taken literally (no quoting), as the CC3M/CC12M files are written; CSV follows RFC 4180.
    if fmt == "tsv":
        parse = csv.ParseOptions(delimiter="\t", quote_char=False)
    else:
        parse = csv.ParseOptions(newlines_in_values=True)
    with pa.input_stream(str(path), compression="detect") as stream:
        header = csv.open_csv(stream, read_options=read, parse_options=parse).schema.names
    # Every column is read as text (empty fields stay ""): ids and numbers stay exactly as written, and
    # nothing is guessed block by block.
    convert = csv.ConvertOptions(column_types={name: pa.string() for name in header})
    with pa.input_stream(str(path), compression="detect") as stream:
        yield from csv.open_csv(stream, read_options=read, parse_options=parse, convert_options=convert)


def _jsonl_batches(path: Path, batch_rows: int) -> Iterator[pa.RecordBatch]:
    import pyarrow.json as json

    read = json.ReadOptions(block_size=max(1 << 20, batch_rows * 256))
    with pa.input_stream(str(path), compression="detect") as stream:
        yield from json.open_json(stream, read_options=read)


def caption_batches(path: Path, url_column: str, caption_column: str, column_names: list[str] | None = None,
                    batch_rows: int = 65536) -> Iterator[pa.RecordBatch]:
    """Checked batches with the URL and caption columns renamed to `url` and `caption` (other columns kept)."""
    row = 0
    for batch in read_batches(path, None, column_names, batch_rows):
        yield check_caption_batch(path, batch, url_column, caption_column, row)
        row += batch.num_rows


def check_caption_batch(path: Path, batch: pa.RecordBatch, url_column: str, caption_column: str,
                        first_row: int) -> pa.RecordBatch:
    names = batch.schema.names
    for wanted in (url_column, caption_column):
        if wanted not in names:
            raise CurationError(f"{path}: no column {wanted!r} (columns: {', '.join(names) or 'none'}); "
                                f"set url_column/caption_column")
    for taken in ("url", "caption"):
        if taken in names and taken not in (url_column, caption_column):
            raise CurationError(f"{path}: column {taken!r} clashes with the renamed "
                                f"{url_column}/{caption_column} columns")
    columns = {}
    for name in names:
        values = batch.column(name)
        if name in (url_column, caption_column):
            values = _as_text(path, name, values)
            _check_no_nulls(path, name, values, first_row)
        columns["url" if name == url_column else "caption" if name == caption_column else name] = values
    checked = pa.RecordBatch.from_pydict(columns)
    try:
        checked.validate(full=True)
    except pa.ArrowInvalid as error:
        raise CurationError(f"{path}: not valid UTF-8 text near row {first_row} ({error})") from None
    _check_urls(path, url_column, checked.column("url"), first_row)
    return checked


def _as_text(path: Path, name: str, values: pa.Array) -> pa.Array:
    if pa.types.is_string(values.type):
        return values
    kind = values.type
    if pa.types.is_large_string(kind) or pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        try:
            return values.cast(pa.string())
        except pa.ArrowInvalid:
            raise CurationError(f"{path}: column {name!r} is not valid UTF-8 text") from None
    if pa.types.is_null(values.type):
        return values.cast(pa.string())
    raise CurationError(f"{path}: column {name!r} holds {values.type}, expected text")


def _check_no_nulls(path: Path, name: str, values: pa.Array, first_row: int) -> None:
    if values.null_count:
        first = pc.index(pc.is_null(values), True).as_py()
        raise CurationError(f"{path}: column {name!r} has {values.null_count} empty (null) values, "
                            f"first at row {first_row + first}")


def _check_urls(path: Path, name: str, urls: pa.Array, first_row: int) -> None:
    bad = pc.invert(pc.match_substring_regex(urls, URL_PATTERN))
    if pc.any(bad).as_py():
        first = pc.index(bad, True).as_py()
        shown = urls[first].as_py()
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise CurationError(f"{path}: column {name!r} holds {shown!r} at row {first_row + first}, not a URL")


# ---- the stages' own parquet shards ---------------------------------------------------------------------

def rows_in(path: Path) -> int:
    """Input rows a stage read to write this output shard (recorded in the shard's metadata)."""
    metadata = pq.read_metadata(path).metadata or {}
    return int(metadata.get(ROWS_IN_KEY, b"0"))


def input_rows(path: Path) -> int:
    return pq.ParquetFile(path).metadata.num_rows


def query_id_counts(path: Path) -> tuple[list[int], list[int]]:
    """(query ids, rows containing each) of one matched or balanced shard: sparse, so a worker sends back
    a few numbers instead of the whole (500k-long) count vector."""
    ids = pq.read_table(path, columns=["query_ids"])["query_ids"].combine_chunks().flatten()
    unique, counts = np.unique(ids.to_numpy(zero_copy_only=False), return_counts=True)
    return unique.tolist(), counts.tolist()


def read_queries(path: Path) -> pa.Table:
    """The query list `curation queries` writes (id, term, source, count), checked."""
    path = Path(path)
    if not path.is_file():
        raise CurationError(f"{path}: query list not found (run `curation queries` first)")
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as error:
        raise CurationError(f"{path}: cannot read query list ({one_line(error)})") from None
    missing = {"id", "term"} - set(table.column_names)
    if missing:
        raise CurationError(f"{path}: not a query list (no column {sorted(missing)[0]!r})")
    if table.num_rows == 0:
        raise CurationError(f"{path}: query list is empty")
    return table
