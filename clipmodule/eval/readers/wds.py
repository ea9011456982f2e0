"""CLIP_benchmark's webdataset layout, read as is (its hosted `wds_*` sets, or `clip_benchmark_export_wds`):

    <root>/classnames.txt                          one class name per line, in label order (classification)
    <root>/zeroshot_classification_templates.txt   optional: the set's own templates ("{c}" for the class)
    <root>/dataset_type.txt                        optional: `retrieval` or `multilabel` (else classification)
    <root>/<split>/nshards.txt                     the number of shards n
    <root>/<split>/{0..n-1}.tar                    samples `s0000000.webp|png|jpg|jpeg` with `.cls` (the class
                                                   index as text), `.npy` (multilabel: a 0/1 vector over the
                                                   classes) or `.txt` (retrieval: one caption per line)

Named `wds` or `wds/<name>` (CLIP_benchmark's `wds/vtab/cifar10` …). The tars are indexed (headers only,
the reader training uses) and read by offset, so the set has a length and any worker can read any item.
A shard that is truncated or corrupt is refused by name: a benchmark number on part of a test set would be
a different benchmark. `.npy` labels and metadata are read without pickle: the header by numpy's own parser, once
per distinct header (a copy's samples share one), the values straight from the bytes. Indexing opens each shard
once (not once per sample member).
"""

from __future__ import annotations

import functools
import io
import math
from pathlib import Path
from typing import BinaryIO

import numpy as np

from clipformats.webdataset import image_field, sample_label
from clipmodule.data.shards import index_shard
from clipmodule.errors import ClipModuleError
from clipmodule.eval.readers.base import read_text_lines, register
from clipmodule.eval.readers.images import FileSlice
from clipmodule.eval.readers.items import BenchmarkDataset

TARGET_FIELDS = {"zeroshot_classification": "cls", "multilabel": "npy", "retrieval": "txt", "attributes": "npy"}


ATTRIBUTE_OBJECTIVES = ("race", "gender", "age", "toxic")


def _dataset_type(folder: Path) -> str:
    path = folder / "dataset_type.txt"
    kind = read_text_lines(path)[0].lower() if path.is_file() else "classification"
    tasks = {"classification": "zeroshot_classification", "multilabel": "multilabel", "retrieval": "retrieval"}
    if kind not in tasks:
        raise ClipModuleError(f"{path}: dataset type {kind!r} is not classification, multilabel or retrieval")
    return tasks[kind]


def _shards(folder: Path, split: str) -> list[Path]:
    count_file = folder / split / "nshards.txt"
    text = read_text_lines(count_file)
    if not text or not text[0].isdigit() or int(text[0]) < 1:
        raise ClipModuleError(f"{count_file}: expected the number of shards, got {text[:1]}")
    shards = [folder / split / f"{number}.tar" for number in range(int(text[0]))]
    missing = [shard.name for shard in shards if not shard.is_file()]
    if missing:
        raise ClipModuleError(f"{folder / split}: nshards.txt says {len(shards)} shards but {missing[0]} is missing")
    return shards


def _read(path: Path, offset: int, size: int) -> bytes:
    with path.open("rb") as handle:
        handle.seek(offset)
        return handle.read(size)


@functools.lru_cache(maxsize=64)
def _npy_header(header: bytes) -> tuple[np.dtype, tuple[int, ...], bool]:
    """(dtype, shape, Fortran order) of an `.npy` header (magic, version, length, dict), by numpy's own parser."""
    handle = io.BytesIO(header)
    version = np.lib.format.read_magic(handle)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read(handle)
    if dtype.hasobject:
        raise ValueError("an object array (pickled) is not read")
    return dtype, tuple(shape), fortran


def npy_values(data: bytes) -> np.ndarray:
    """The flat values of one `.npy` file's bytes, as `np.load(allow_pickle=False).reshape(-1)` gives them."""
    if data[:6] != b"\x93NUMPY" or len(data) < 10:
        raise ValueError("not an .npy file")
    start = 10 + int.from_bytes(data[8:10], "little") if data[6] == 1 else 12 + int.from_bytes(data[8:12], "little")
    dtype, shape, fortran = _npy_header(bytes(data[:start]))
    if any(size < 0 for size in shape):
        raise ValueError(f"the .npy header's shape {shape} has a negative size")
    count = math.prod(shape)  # exact: numpy's int64 product wraps round on absurd shapes
    if len(data) != start + count * dtype.itemsize:
        which = "shorter" if len(data) < start + count * dtype.itemsize else "longer"
        raise ValueError(f"the .npy data is {which} than its header says (shape {shape}, {dtype})")
    values = np.frombuffer(data, dtype=dtype, count=count, offset=start)
    return values.reshape(shape, order="F" if fortran else "C").reshape(-1)


def whole_numbers(values: np.ndarray, where: str, what: str) -> list[int]:
    """`values` as ints: an integer or boolean array, or floats that are all whole numbers; else one line."""
    if values.dtype.kind in "iub" or (values.dtype.kind == "f" and bool(np.all(np.isfinite(values)))
                                      and bool(np.all(values == np.round(values)))):
        return [int(value) for value in values]
    raise ClipModuleError(f"{where}: its npy {what} holds {values.dtype} values, not whole numbers")


def _member(handle: BinaryIO, offset: int, size: int) -> bytes:
    handle.seek(offset)
    return handle.read(size)


def _target(task: str, fields: dict[str, bytes], where: str, classes: int):
    try:
        if task == "retrieval":
            return [line.strip() for line in fields["txt"].decode("utf-8").splitlines() if line.strip()]
        if task == "attributes":  # DataComp's FairFace/UTKFace: [age, gender, race, race_binary]
            return whole_numbers(npy_values(fields["npy"]), where, "attributes")
        if task == "multilabel":
            vector = np.array(whole_numbers(npy_values(fields["npy"]), where, "label vector"), dtype=np.int64)
            if len(vector) != classes:  # a vector over another class list: classnames.txt gained or lost a line
                raise ClipModuleError(f"{where}: its npy label vector has {len(vector)} entries but classnames.txt "
                                      f"lists {classes} classes")
            return [int(index) for index in np.flatnonzero(vector)]
        return sample_label(fields)
    except (ValueError, UnicodeDecodeError, OSError) as error:
        raise ClipModuleError(f"{where}: unreadable {TARGET_FIELDS[task]} field ({error})") from None


def _complete(shard: Path) -> bool:
    """A whole tar: whole 512-byte blocks ending in the two zero blocks that close an archive (the indexer
    stops quietly at a shard cut inside a member, so this is checked here)."""
    size = shard.stat().st_size
    if size < 1024 or size % 512:
        return False
    return _read(shard, size - 1024, 1024) == bytes(1024)


def _metadata(fields: dict[str, bytes], where: str) -> list[int]:
    """A classification sample's `.npy` metadata vector (DataComp's WILDS and fairness copies: region, income…)."""
    try:
        return whole_numbers(npy_values(fields["npy"]), where, "metadata")
    except (ValueError, OSError) as error:
        raise ClipModuleError(f"{where}: unreadable npy metadata ({error})") from None


def _items(shard: Path, task: str, classes: int, metadata: list[list[int]]) -> list[tuple[FileSlice, object]]:
    """The shard's (image, target) items; a classification sample's `.npy` metadata is appended to `metadata`."""
    index = index_shard(str(shard))
    if index.error is not None or not _complete(shard):
        reason = f" ({index.error})" if index.error else ""
        raise ClipModuleError(f"{shard}: truncated or corrupt shard{reason}; fetch it again")
    wanted = TARGET_FIELDS[task]
    items = []
    with shard.open("rb") as handle:  # one open per shard: a set of 60k samples is not 120k opens
        for key, members in zip(index.keys, index.members):
            where, image = f"{shard}:{key}", image_field(members)
            if image is None or wanted not in members:
                raise ClipModuleError(f"{where}: sample lacks an image (webp|png|jpg|jpeg) or its '{wanted}' field")
            target = _target(task, {wanted: _member(handle, *members[wanted])}, where, classes)
            items.append((FileSlice(str(shard), *members[image]), target))
            if task == "zeroshot_classification" and "npy" in members:
                metadata.append(_metadata({"npy": _member(handle, *members["npy"])}, where))
    return items


@register("wds", splits=("train", "val", "test"), expected=lambda split: [f"{split}/nshards.txt"],
          metric="as its dataset_type: top-1 / mAP / recall@k",
          layout="CLIP_benchmark's webdataset: classnames.txt, zeroshot_classification_templates.txt, "
                 "<split>/nshards.txt + {0..n-1}.tar")
def open_wds(folder: Path, split: str) -> BenchmarkDataset:
    task = _dataset_type(folder)
    classnames = templates = None
    if task != "retrieval":
        if not (folder / "classnames.txt").is_file():
            raise ClipModuleError(f"wds at {folder}: classnames.txt is missing (one class name per line)")
        classnames = read_text_lines(folder / "classnames.txt")
        if task == "zeroshot_classification" and all(name.partition(":")[0] in ATTRIBUTE_OBJECTIVES
                                                     and ":" in name for name in classnames):
            task = "attributes"  # DataComp's face sets: `objective:name` classes, `.npy` attributes, no `.cls`
        template_file = folder / "zeroshot_classification_templates.txt"
        templates = read_text_lines(template_file) if template_file.is_file() else None
    metadata: list[list[int]] = []
    items = [item for shard in _shards(folder, split) for item in _items(shard, task, len(classnames or []), metadata)]
    dataset = BenchmarkDataset("wds", split, task, items, classnames, folder, templates)
    if metadata:  # DataComp's copies: every sample carries it (`eval.subgroups` names its fields)
        if len(metadata) != len(items):
            raise ClipModuleError(f"wds at {folder}: {len(items) - len(metadata)} of {len(items)} samples lack the "
                                  ".npy metadata the others carry")
        dataset.metadata = {"npy": metadata}
    return dataset
