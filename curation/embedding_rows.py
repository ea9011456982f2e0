"""The samples of some shards joined with their embeddings: what filter, dedup and decontaminate decide on.

The input shards say which samples there are (a filtered shard holds fewer than were embedded); the
embedding folder (`clipformats.embeddings`, one part per shard, named by its stem) gives each one's
vectors. A sample without an embedding row is an error, never a silent keep. Rows are sorted by (shard,
key), so every decision that depends on order (k-means, which duplicate is kept) is the same however the
shards are listed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from clipformats.embeddings import (
    EmbeddingFilesError,
    part_info,
    part_name,
    part_paths,
    parts,
    read_embeddings,
    read_part,
)
from curation.errors import CurationError
from curation.progress import progress_bar
from curation.shardio import sample_meta, tar_samples, write_subset


@dataclass
class SampleRows:
    """One entry per sample of the input shards, sorted by (shard, key)."""

    shard: list[str]
    key: list[str]
    meta: list[dict[str, Any]]
    image: np.ndarray
    """[n, d] float32 unit rows."""
    text: np.ndarray | None
    embedded: np.ndarray
    """Whether each sample has an embedding row (the embed stage skips samples without a decodable image)."""

    def __len__(self) -> int:
        return len(self.key)

    def by_shard(self) -> dict[str, np.ndarray]:
        """Row indices of each shard."""
        names = np.asarray(self.shard, dtype=object)
        return {name: np.flatnonzero(names == name) for name in dict.fromkeys(self.shard)}


def embedding_files(folder: Path, shards: list[Path]) -> list[Path]:
    """The files of the parts these shards need (for a stage's fingerprint); a missing part is an error."""
    files = [path for shard in shards for path in part_paths(folder, part_name(shard))]
    if (missing := next((p for p in files if not p.is_file()), None)) is not None:
        raise CurationError(f"{missing}: missing; embed these shards first (`curation embed --shards "
                            f"{shards[0].parent} --out {folder}`)")
    return files


def _shard_samples(shards: list[Path]) -> list[tuple[str, str, dict[str, Any]]]:
    found = []
    with progress_bar("read shards", len(shards)) as advance:
        for shard in shards:
            found += [(shard.name, key, sample_meta(members)) for key, members in tar_samples(shard)]
            advance(1)
    return sorted(found, key=lambda row: (row[0], row[1]))


def _part_rows(folder: Path, shard: str, keys: list[str], kinds: tuple[str, ...]) -> tuple[np.ndarray, Any]:
    """The row of each key in its shard's part (-1: none). A sample may lack a row only when the embed stage
    recorded skipping that many of the shard's samples (no image, undecodable, over the pixel limit)."""
    try:
        part = read_part(folder, part_name(shard), kinds)
        info = part_info(folder, part_name(shard))
    except EmbeddingFilesError as error:
        raise CurationError(str(error)) from None
    where = {key: row for row, key in enumerate(part.keys)}
    absent = [k for k in keys if k not in where]
    skipped = int(info.get("rows_in", 0)) - int(info.get("rows_out", 0)) if info else 0
    if len(absent) > skipped:
        raise CurationError(f"{shard}: sample {absent[0]!r} has no row in {folder} (embedded from other shards?)")
    return np.asarray([where.get(k, -1) for k in keys], dtype=np.int64), part


def load_rows(shards: list[Path], folder: Path, text: bool = True) -> SampleRows:
    """Every sample of `shards` with its image (and caption) embedding from `folder`; a sample the embed stage
    skipped has zero vectors and `embedded` False."""
    samples = _shard_samples(shards)
    kinds = ("image", "text") if text else ("image",)
    image = text_rows = None
    embedded = np.zeros(len(samples), dtype=bool)
    by_shard: dict[str, list[int]] = {}
    for index, (shard, _, _) in enumerate(samples):
        by_shard.setdefault(shard, []).append(index)
    for shard, indices in by_shard.items():
        picked, part = _part_rows(folder, shard, [samples[i][1] for i in indices], kinds)
        if image is None:
            width = part.image.shape[1]
            image = np.zeros((len(samples), width), np.float32)
            text_rows = np.zeros((len(samples), width), np.float32) if text else None
        have = picked >= 0
        targets = np.asarray(indices, dtype=np.int64)[have]
        embedded[targets] = True
        image[targets] = np.asarray(part.image, dtype=np.float32)[picked[have]]
        if text:
            text_rows[targets] = np.asarray(part.text, dtype=np.float32)[picked[have]]
    if image is None:
        raise CurationError(f"{', '.join(str(s) for s in shards[:3])}: the input shards hold no samples")
    return SampleRows([s[0] for s in samples], [s[1] for s in samples], [s[2] for s in samples], image, text_rows,
                      embedded)


def reference_set(folder: Path, what: str) -> tuple[list[str], np.ndarray, list[Path]]:
    """(reference `shard::key`, image embeddings, files) of a whole embedding folder: a target or evaluation set."""
    try:
        metadata, image = read_embeddings(folder, "image")
        files = [p for part in parts(folder) for p in part_paths(folder, part)]
    except EmbeddingFilesError as error:
        raise CurationError(f"{what}: {error}") from None
    references = [f"{shard}::{key}" for shard, key in zip(metadata["shard"].to_pylist(), metadata["key"].to_pylist())]
    return references, image, files


def write_kept_shards(out: Path, sources: list[Path], rows: SampleRows, kept: np.ndarray,
                      created: Callable[[Path], None]) -> dict[str, int]:
    """`out/<shard>` per input shard with its kept samples (`created` hears of each written); a shard a killed
    run finished is kept as it is (decisions depend only on the inputs and settings). Kept samples per shard."""
    out.mkdir(parents=True, exist_ok=True)
    by_shard = rows.by_shard()
    counts = {}
    with progress_bar("write shards", len(sources)) as advance:
        for source in sources:
            indices = by_shard.get(source.name, np.zeros(0, np.int64))
            wanted = {rows.key[i] for i in indices if kept[i]}
            counts[source.name] = len(wanted)
            if not (out / source.name).exists():
                write_subset(source, out / source.name, wanted.__contains__)
                created(out / source.name)
            advance(1)
    return counts


def read_truth(path: Path) -> set[tuple[str, str]]:
    """The (shard, key) pairs of a truth table (parquet with `shard` and `key` columns)."""
    try:
        table = pq.read_table(path, columns=["shard", "key"])
    except FileNotFoundError:
        raise CurationError(f"{path}: truth table not found") from None
    except (pa.ArrowInvalid, OSError, KeyError) as error:
        raise CurationError(f"{path}: cannot read the truth table, a parquet with shard and key columns "
                            f"({str(error).splitlines()[0]})") from None
    return set(zip(table["shard"].to_pylist(), table["key"].to_pylist()))


def precision_recall(dropped: set[tuple[str, str]], truth: set[tuple[str, str]]) -> dict[str, Any]:
    hits = len(dropped & truth)
    return {"truth": len(truth), "dropped": len(dropped), "true_drops": hits,
            "precision": hits / len(dropped) if dropped else None, "recall": hits / len(truth) if truth else None}
