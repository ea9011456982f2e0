"""THE embedding contract: what `curation embed` and `clipmodule predict` write, and what `curation index`,
`filter`, `dedup` and `clipmodule search` read. clip-retrieval's layout, one *part* per input shard:

    <dir>/img_emb/img_emb_<part>.npy            [n, d] image embeddings (float16 by default, or float32)
    <dir>/text_emb/text_emb_<part>.npy          [n, d] caption embeddings of the same samples
    <dir>/metadata/metadata_<part>.parquet      n rows: `key`, `shard` and whatever else was recorded

Row i of the three files of a part is one sample. `curation embed` names a part after its shard's stem
(`00000.tar` → part `00000`); `clipmodule predict` after its rank and chunk (`0000_00003`). The metadata
columns: `key` (the sample's key inside its shard, the shard contract's member-name rule) and `shard` (the
shard's file name) always; `curation embed` adds `caption` (its txt), `width`, `height` (of the decoded
image) and `url` (from its json, null without one). Samples without a decodable image have no row.

Convention: every row is L2-normalised in float32 before it is stored, so a dot product of two rows is their
cosine (in float16 within about 1e-3). Readers need not normalise again; `normalise` is here for writers.

A part is complete when its metadata file exists: the two .npy files are written first, the metadata last,
each to a temporary name and renamed. A folder is finished when `<dir>/manifest.json` exists (`write_manifest`,
written last, once every writer of the folder is done: `clipmodule predict` after all ranks): it names every
part with its rows, so a reader can tell a finished folder from one being written or mixed with another run's
parts. `parts` lists only complete parts; `read_part` checks that its three
files agree (rows, width, finite values) and reports a mismatch as one line. Arrays are read without
unpickling (`allow_pickle=False`) and memory-mapped, so a set larger than memory can be iterated.

The model side is a plugin: `curation embed` never imports a model library (curation never imports clipmodule).
It loads the class its config names (`clipmodule.embedding:ShardEmbedder` by default) with importlib, at run
time, and talks to it through `ShardEmbedder` below; the plugin returns `ShardEmbeddings` and raises
`EmbedderError` for input it cannot use.

numpy and pyarrow only (no torch): both packages import it (curation's stages, clipmodule's writer and search).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curation.formats.files import atomic_path, remove_stale_temporaries, write_json

KINDS = {"image": "img_emb", "text": "text_emb"}
"""Embedding kind → its folder and file prefix (clip-retrieval's names)."""
METADATA = "metadata"
KEY, SHARD = "key", "shard"
DTYPES = ("float16", "float32")
FOLDERS = (*KINDS.values(), METADATA)
"""What an embedding folder holds: a stage's `made` patterns for it."""
MANIFEST = "manifest.json"
"""The finished marker of a folder: its parts and their rows (see `write_manifest`)."""
INFO_KEY = b"curation.embeddings.info"
"""Parquet metadata of a part's metadata file: JSON about how it was made (samples read, skipped by reason)."""


class EmbeddingFilesError(ValueError):
    """An embedding folder or part that is missing, incomplete or inconsistent; the message is one line."""


class EmbedderError(ValueError):
    """Input an embedder cannot use (a model it cannot load, a shard it cannot read): one line naming it."""


@dataclass
class ShardEmbeddings:
    """What an embedder returns for one shard: row i of each field is the i-th embedded sample, in shard order."""

    metadata: dict[str, list[Any]]
    """Columns: `key` (required) and any others (`caption`, `width`, `height`, `url`); `shard` is added by the
    writer's caller."""
    image: np.ndarray
    """[n, d] float32, L2-normalised rows."""
    text: np.ndarray
    """[n, d] float32, L2-normalised rows (the captions' embeddings)."""
    samples: int
    """Samples in the shard, embedded or not."""
    skipped: dict[str, int] = field(default_factory=dict)
    """Samples without a row, by reason ("no image", "undecodable image", ...)."""


class ShardEmbedder(Protocol):
    """The plugin `curation embed` loads by class path (`module:Class`, constructed without arguments).

    `setup` runs once per worker (a Ray actor, a local process) and loads the model; it returns a description
    of the model (`embed_dim` at least) for the stats. `embed_shard` embeds one webdataset shard's samples."""

    def setup(self, model: str, device: str, batch_size: int, threads: int, max_image_pixels: int) -> dict[str, Any]:
        ...

    def embed_shard(self, shard: str) -> ShardEmbeddings: ...


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, in float32 (an all-zero row stays zero rather than becoming NaN)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, np.finfo(np.float32).tiny)


def part_name(shard: str | os.PathLike) -> str:
    """The part a shard's embeddings go to: its file name up to the first dot (`00012.tar` → `00012`)."""
    return Path(shard).name.split(".")[0]


def embedding_path(folder: str | os.PathLike, kind: str, part: str) -> Path:
    if kind not in KINDS:
        raise EmbeddingFilesError(f"unknown embedding kind {kind!r} (expected one of {', '.join(KINDS)})")
    return Path(folder) / KINDS[kind] / f"{KINDS[kind]}_{part}.npy"


def metadata_path(folder: str | os.PathLike, part: str) -> Path:
    return Path(folder) / METADATA / f"{METADATA}_{part}.parquet"


def part_paths(folder: str | os.PathLike, part: str) -> list[Path]:
    """The three files of one part, in the order they are written (the metadata, which marks it done, last)."""
    return [embedding_path(folder, "image", part), embedding_path(folder, "text", part), metadata_path(folder, part)]


def remove_part_temporaries(folder: str | os.PathLike, part: str) -> None:
    """The temporaries a killed writer of this part left (a live writer's are kept)."""
    for path in part_paths(folder, part):
        remove_stale_temporaries(path)


def write_part(folder: str | os.PathLike, part: str, image: np.ndarray, text: np.ndarray,
               metadata: Mapping[str, Sequence[Any] | pa.Array], dtype: str = "float16",
               info: Mapping[str, Any] | None = None) -> int:
    """Write one part: `image` and `text` ([n, d], rows already L2-normalised: see `normalise`) and the
    metadata columns (`key` and `shard` required, n values each); `info` (JSON-ready) goes into the metadata
    file's parquet metadata (`part_info`). Returns n. A part of zero rows is written too (a shard whose
    samples all failed is done, not missing)."""
    if dtype not in DTYPES:
        raise EmbeddingFilesError(f"embedding dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
    missing = [name for name in (KEY, SHARD) if name not in metadata]
    if missing:
        raise EmbeddingFilesError(f"part {part}: metadata needs a {missing[0]!r} column")
    columns = {name: pa.array(values, pa.string()) if name in (KEY, SHARD) else values
               for name, values in metadata.items()}
    table = pa.table(columns)
    arrays = {"image": np.asarray(image), "text": np.asarray(text)}
    for kind, array in arrays.items():
        if array.ndim != 2 or len(array) != table.num_rows:
            raise EmbeddingFilesError(f"part {part}: {kind} embeddings of shape {array.shape} for "
                                      f"{table.num_rows} metadata rows")
    if arrays["image"].shape[1] != arrays["text"].shape[1]:
        raise EmbeddingFilesError(f"part {part}: image width {arrays['image'].shape[1]} != text width "
                                  f"{arrays['text'].shape[1]}")
    for kind, array in arrays.items():
        path = embedding_path(folder, kind, part)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            np.save(handle, array.astype(dtype), allow_pickle=False)
    path = metadata_path(folder, part)
    path.parent.mkdir(parents=True, exist_ok=True)
    if info is not None:
        table = table.replace_schema_metadata({INFO_KEY: json.dumps(dict(info), default=str)})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return table.num_rows


def write_manifest(folder: str | os.PathLike, writer: str, info: Mapping[str, Any] | None = None) -> Path:
    """Mark `folder` finished: `manifest.json` holds `finished: true`, the `writer` (e.g. "clipmodule predict"),
    every complete part with its rows (read from the .npy headers), the total rows, and `info` (JSON-ready).
    Call it once, after every writer of the folder is done; it is written atomically."""
    names = parts(folder) if (Path(folder) / METADATA).is_dir() else []  # no sample at all: finished, empty
    rows = {part: len(np.load(embedding_path(folder, "image", part), mmap_mode="r", allow_pickle=False))
            for part in names}
    manifest = {"finished": True, "writer": writer, "parts": rows, "rows": sum(rows.values()), **dict(info or {})}
    return write_json(Path(folder) / MANIFEST, manifest)


def part_info(folder: str | os.PathLike, part: str) -> dict[str, Any]:
    """The `info` a part was written with ({} without one)."""
    path = metadata_path(folder, part)
    try:
        metadata = pq.read_schema(path).metadata or {}
    except (FileNotFoundError, pa.ArrowInvalid, OSError) as error:
        raise EmbeddingFilesError(f"{path}: cannot read embedding metadata ({str(error).splitlines()[0]})") from None
    return json.loads(metadata[INFO_KEY]) if INFO_KEY in metadata else {}


def parts(folder: str | os.PathLike) -> list[str]:
    """The complete parts of an embedding folder, sorted (EmbeddingFilesError when it is not one)."""
    folder = Path(folder)
    meta = folder / METADATA
    if not meta.is_dir():
        what = "not found" if not folder.exists() else f"has no {METADATA}/ folder"
        raise EmbeddingFilesError(f"{folder}: embedding folder {what} (write one with `curation embed`)")
    prefix = f"{METADATA}_"
    return sorted(p.name[len(prefix):-len(".parquet")] for p in meta.glob(f"{prefix}*.parquet")
                  if not p.name.startswith("."))


@dataclass
class EmbeddingPart:
    """One part, read: metadata rows and the embeddings asked for (None for a kind not asked for)."""

    part: str
    metadata: pa.Table
    image: np.ndarray | None
    text: np.ndarray | None

    @property
    def keys(self) -> list[str]:
        return self.metadata[KEY].to_pylist()

    @property
    def shards(self) -> list[str]:
        return self.metadata[SHARD].to_pylist()


def _load_array(path: Path, rows: int, part: str) -> np.ndarray:
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise EmbeddingFilesError(f"{path}: missing (part {part} has metadata but no embeddings)") from None
    except (OSError, ValueError) as error:
        raise EmbeddingFilesError(f"{path}: not a readable .npy array ({str(error).splitlines()[0]})") from None
    if array.ndim != 2 or len(array) != rows or array.dtype not in (np.float16, np.float32):
        raise EmbeddingFilesError(f"{path}: {array.dtype} array of shape {array.shape}, expected [{rows}, d] "
                                  f"float16/float32 rows for the {rows} metadata rows of part {part}")
    return array


def read_part(folder: str | os.PathLike, part: str, kinds: Sequence[str] = ("image", "text"),
              columns: Sequence[str] | None = None, check_finite: bool = True) -> EmbeddingPart:
    """One part's metadata (all columns, or `key`, `shard` and `columns`) and embeddings (memory-mapped)."""
    path = metadata_path(folder, part)
    try:
        wanted = None if columns is None else list(dict.fromkeys([KEY, SHARD, *columns]))
        metadata = pq.read_table(path, columns=wanted)
    except FileNotFoundError:
        raise EmbeddingFilesError(f"{path}: missing (no part {part!r} in {folder})") from None
    except (pa.ArrowInvalid, OSError, KeyError) as error:
        raise EmbeddingFilesError(f"{path}: cannot read embedding metadata ({str(error).splitlines()[0]})") from None
    arrays: dict[str, np.ndarray | None] = {"image": None, "text": None}
    for kind in kinds:
        array = _load_array(embedding_path(folder, kind, part), metadata.num_rows, part)
        if check_finite and not np.isfinite(array).all():
            raise EmbeddingFilesError(f"{embedding_path(folder, kind, part)}: holds NaN or infinite values")
        arrays[kind] = array
    widths = {a.shape[1] for a in arrays.values() if a is not None}
    if len(widths) > 1:
        raise EmbeddingFilesError(f"part {part} of {folder}: image and text embeddings differ in width {widths}")
    return EmbeddingPart(part, metadata, arrays["image"], arrays["text"])


def iter_parts(folder: str | os.PathLike, kinds: Sequence[str] = ("image", "text"),
               columns: Sequence[str] | None = None) -> Iterator[EmbeddingPart]:
    """Every complete part, in part order (the order `read_embeddings` concatenates)."""
    width = None
    for part in parts(folder):
        read = read_part(folder, part, kinds, columns)
        for array in (read.image, read.text):
            if array is not None and width is not None and array.shape[1] != width:
                raise EmbeddingFilesError(f"part {part} of {folder}: width {array.shape[1]}, earlier parts {width}")
            width = array.shape[1] if array is not None else width
        yield read


def read_embeddings(folder: str | os.PathLike, kind: str = "image",
                    columns: Sequence[str] | None = None) -> tuple[pa.Table, np.ndarray]:
    """Every row of a folder: (metadata, [N, d] float32 embeddings of `kind`), parts in order. For sets that
    fit in memory (1M x 512 is 2 GiB); larger ones go part by part through `iter_parts`."""
    tables, arrays = [], []
    for read in iter_parts(folder, (kind,), columns):
        tables.append(read.metadata)
        arrays.append(np.asarray(read.image if kind == "image" else read.text, dtype=np.float32))
    if not tables:
        raise EmbeddingFilesError(f"{folder}: embedding folder holds no complete part")
    return pa.concat_tables(tables, promote_options="permissive"), np.concatenate(arrays)


def summary(folder: str | os.PathLike) -> dict[str, Any]:
    """Parts, rows, width and dtype of a folder, from the file headers alone (nothing is loaded)."""
    rows, width, dtype = 0, None, None
    names = parts(folder)
    for part in names:
        array = np.load(embedding_path(folder, "image", part), mmap_mode="r", allow_pickle=False)
        rows, width, dtype = rows + len(array), array.shape[1], str(array.dtype)
    return {"parts": len(names), "rows": rows, "dim": width, "dtype": dtype}
