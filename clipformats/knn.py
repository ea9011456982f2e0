"""THE kNN index contract: what `curation index` writes and `clipmodule search` (and later stages) read.

    <dir>/knn.index      a faiss index (`faiss.write_index`) of L2-normalised rows: inner product = cosine
    <dir>/rows.parquet   row i is the sample with index id i: `shard`, `key`, `part` and `caption` (when known)
    <dir>/index.json     kind (image|text), factory string, search parameters, dim, rows, the embedding folder,
                         the model that made them, and the shard files (name → path) for thumbnails

faiss is imported only when an index is opened (the `curation` extra brings faiss-cpu); index files are
faiss's own binary format, never a pickle.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from clipformats.files import atomic_path, write_json

INDEX_FILE, ROWS_FILE, INFO_FILE = "knn.index", "rows.parquet", "index.json"
FILES = (INDEX_FILE, ROWS_FILE, INFO_FILE)


class IndexFilesError(ValueError):
    """An index folder that is missing or inconsistent; the message is one line naming it."""


def set_search_parameters(index: Any, parameters: dict[str, int]) -> None:
    """nprobe (IVF) or efSearch (HNSW), through faiss's ParameterSpace (which also reaches wrapped indexes)."""
    import faiss

    space = faiss.ParameterSpace()
    for name, value in parameters.items():
        space.set_index_parameter(index, name, int(value))


def write_index(folder: str | os.PathLike, index: Any, rows: pa.Table, info: dict[str, Any]) -> None:
    """Write the three files; `index.json` last, so a folder with it is complete."""
    import faiss

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if index.ntotal != rows.num_rows:
        raise IndexFilesError(f"{folder}: index of {index.ntotal} vectors for {rows.num_rows} rows")
    with atomic_path(folder / INDEX_FILE) as tmp:
        faiss.write_index(index, str(tmp))
    with atomic_path(folder / ROWS_FILE) as tmp:
        pq.write_table(rows, tmp)
    write_json(folder / INFO_FILE, info)


@dataclass
class KnnIndex:
    """An opened index folder: `search` returns (scores, ids) as faiss does, with the stored parameters set."""

    folder: Path
    index: Any
    rows: pa.Table
    info: dict[str, Any]

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.index.d:
            raise IndexFilesError(f"{self.folder}: queries of shape {queries.shape}, the index holds "
                                  f"{self.index.d}-dimensional vectors")
        return self.index.search(queries, min(k, self.index.ntotal))


def read_index(folder: str | os.PathLike) -> KnnIndex:
    """Open an index folder (IndexFilesError naming what is missing or does not fit)."""
    import faiss

    folder = Path(folder)
    if not (folder / INFO_FILE).is_file():
        what = "not found" if not folder.exists() else f"has no {INFO_FILE} (not a finished `curation index`)"
        raise IndexFilesError(f"{folder}: index folder {what}")
    try:
        info = json.loads((folder / INFO_FILE).read_text(encoding="utf-8"))
        rows = pq.read_table(folder / ROWS_FILE)
        index = faiss.read_index(str(folder / INDEX_FILE))
    except (OSError, ValueError, RuntimeError, pa.ArrowInvalid) as error:
        raise IndexFilesError(f"{folder}: cannot read the index ({str(error).strip().splitlines()[-1]})") from None
    if index.ntotal != rows.num_rows:
        raise IndexFilesError(f"{folder}: {INDEX_FILE} holds {index.ntotal} vectors, {ROWS_FILE} {rows.num_rows} rows")
    set_search_parameters(index, info.get("search_parameters", {}))
    return KnnIndex(folder, index, rows, info)
