"""What identifies the data a suite row evaluated, so that a stored result is reused only for the same data.

`data_identity(datasets)` hashes, for each opened dataset: every item's source (file path, or the offset of
a sample inside a shard, an HDF5 row, a crop box) and target in item order, its class names and templates,
and the size and modification time of every local file behind it: the item files and, for a benchmark
copy, the annotation and array files its reader expects (CIFAR's batches, MNIST's idx files, ClassName.txt
…). Nothing is read whole, so it costs one stat per file; a file replaced, rewritten, added to the split or
removed from it changes the identity. Remote shards are identified by their size and ETag / version.

`spec_inputs(spec)` hashes, by content, the files a row names beside its data (its template and class-name
files): they join the row's resume key (`results.task_key`), so an edited template file at the same path is
never answered with the result of the old one.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from clipformats import files as content
from clipmodule.data import remote
from clipmodule.eval.readers import BenchmarkDataset, reader
from clipmodule.eval.readers.images import ArrayImage, CropImage, FileSlice, H5Image


def _source(source: Any) -> Any:
    """A JSON-able name of one item's image; the files named are collected for their stat."""
    if isinstance(source, (str, Path)):
        return str(source)
    if isinstance(source, tuple):  # the images of one image-caption selection item
        return [_source(part) for part in source]
    if isinstance(source, FileSlice):
        return [source.path, source.offset, source.size]
    if isinstance(source, H5Image):
        return [source.path, source.key, source.index]
    if isinstance(source, CropImage):
        return [str(source.path), list(source.box)]
    if isinstance(source, ArrayImage):  # the array came from the reader's expected files, stat'ed below
        return ["array", source.index]
    if isinstance(source, bytes):
        return ["bytes", hashlib.sha256(source).hexdigest()]
    if hasattr(source, "tobytes"):  # an in-memory PIL image (builtin data): small, hashed whole
        return ["image", hashlib.sha256(source.tobytes()).hexdigest()]
    return ["object", type(source).__name__]


def _source_files(source: Any) -> list[str]:
    if isinstance(source, tuple):
        return [path for part in source for path in _source_files(part)]
    if isinstance(source, (str, Path)):
        return [str(source)]
    path = getattr(source, "path", None)
    return [str(path)] if path is not None else []


def _expected_files(dataset: BenchmarkDataset) -> list[str]:
    """The files (not folders) the dataset's reader expects in its copy: annotations, arrays, class lists."""
    folder = Path(dataset.root)
    names = [name for entry in reader(dataset.name).expected(dataset.split)
             for name in (entry if isinstance(entry, tuple) else (entry,))]
    return [str(folder / name) for name in names if (folder / name).is_file()]


def _stat(path: str) -> list[Any]:
    if remote.is_remote(path):
        handle, size, version = remote.open_remote(path)
        handle.close()
        return [path, size, version]
    try:
        info = os.stat(path)
    except OSError:
        return [path, "absent"]
    return [path, info.st_size, info.st_mtime_ns]


def _update(digest: Any, dataset: Any) -> None:
    """Feeds one dataset's description to `digest`, item by item (ImageNet's train split has 1.28M)."""
    files: set[str] = set()
    for source, target in getattr(dataset, "items", None) or []:
        digest.update(json.dumps([_source(source), target], default=str).encode())
        files.update(_source_files(source))
        if isinstance(target, Path) or (isinstance(target, str) and os.path.isfile(target)):
            files.add(str(target))  # a label map (segmentation): its file, not only its name
    spec = getattr(dataset, "spec", None)  # webdataset shards given by path (eval.readers.shards.ShardImages)
    files.update(getattr(spec, "urls", None) or [])
    if isinstance(dataset, BenchmarkDataset):
        files.update(_expected_files(dataset))
    about = {"task": getattr(dataset, "task", None), "classnames": getattr(dataset, "classnames", None),
             "templates": getattr(dataset, "templates", None), "files": [_stat(path) for path in sorted(files)]}
    if getattr(dataset, "metadata", None):  # the groups of a worst-group metric (`eval.subgroups`)
        about["metadata"] = dataset.metadata
    if getattr(dataset, "games", None):  # an association set's games (`readers.winogavil`): cue, candidates, answers
        about["games"] = [[game.cue, list(game.candidates), list(game.associations)] for game in dataset.games]
    digest.update(json.dumps(about, sort_keys=True, default=str).encode())


def data_identity(datasets: tuple) -> str:
    """The identity of a row's datasets (see the module docstring): a sha256, as `data:<hex>`."""
    digest = hashlib.sha256()
    for dataset in datasets:
        _update(digest, dataset)
    return f"data:{digest.hexdigest()}"


SPEC_FILES = ("templates", "classnames")
"""A row's fields that may name a file read beside its data."""


def spec_inputs(spec: Any) -> dict[str, str]:
    """{field: sha256 of the file it names} for the row's template and class-name files (names of shipped
    lists, `imagenet` or `openai`, name no file and are left out)."""
    found = {}
    for name in SPEC_FILES:
        value = getattr(spec, name, None)
        if isinstance(value, str) and value and Path(value).is_file():
            found[name] = content.sha256_file(value)
    return found
