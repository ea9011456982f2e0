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
a different benchmark. `.npy` labels are read with numpy's pickle-free loader.
"""

from __future__ import annotations

import io
from pathlib import Path

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


def _target(task: str, fields: dict[str, bytes], where: str, classes: int):
    try:
        if task == "retrieval":
            return [line.strip() for line in fields["txt"].decode("utf-8").splitlines() if line.strip()]
        if task == "attributes":  # DataComp's FairFace/UTKFace: [age, gender, race, race_binary]
            vector = np.asarray(np.load(io.BytesIO(fields["npy"]), allow_pickle=False)).reshape(-1)
            return [int(value) for value in vector]
        if task == "multilabel":
            vector = np.asarray(np.load(io.BytesIO(fields["npy"]), allow_pickle=False)).reshape(-1)
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
        return [int(value) for value in np.asarray(np.load(io.BytesIO(fields["npy"]), allow_pickle=False)).reshape(-1)]
    except (ValueError, OSError, TypeError) as error:
        raise ClipModuleError(f"{where}: unreadable npy metadata ({error})") from None


def _items(shard: Path, task: str, classes: int, metadata: list[list[int]]) -> list[tuple[FileSlice, object]]:
    """The shard's (image, target) items; a classification sample's `.npy` metadata is appended to `metadata`."""
    index = index_shard(str(shard))
    if index.error is not None or not _complete(shard):
        reason = f" ({index.error})" if index.error else ""
        raise ClipModuleError(f"{shard}: truncated or corrupt shard{reason}; fetch it again")
    wanted = TARGET_FIELDS[task]
    items = []
    for key, members in zip(index.keys, index.members):
        where, image = f"{shard}:{key}", image_field(members)
        if image is None or wanted not in members:
            raise ClipModuleError(f"{where}: sample lacks an image (webp|png|jpg|jpeg) or its '{wanted}' field")
        target = _target(task, {wanted: _read(shard, *members[wanted])}, where, classes)
        items.append((FileSlice(str(shard), *members[image]), target))
        if task == "zeroshot_classification" and "npy" in members:
            metadata.append(_metadata({"npy": _read(shard, *members["npy"])}, where))
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
