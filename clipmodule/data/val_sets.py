"""Labelled evaluation sets for zero-shot classification during `fit` (`data.zeroshot_sets`), each reported
under its own name: `val/zeroshot/<name>/top1` and `.../top5`.

A set is labelled webdataset shards (`cls` field or the json's `label`) or an ImageNet-style folder: one
sub-folder per class, the sorted folder order being the class index (torchvision's ImageFolder, open_clip's
`--imagenet-val`), with the class names from a file (one per line, in that order) or the folder names. When the
folders are named after the classes themselves, images are labelled by name, so a class-name file in another
order still labels them right. Everything a set needs is checked when the DataModule is built, before training.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from clipformats.webdataset import IMAGE_EXTENSIONS, is_shard_spec
from clipmodule.data.name_files import CLASSNAME_FILES, read_lines
from clipmodule.errors import ClipModuleError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass
class ZeroShotSet:
    """A labelled set for zero-shot top-1/top-5 during fit (a value of the `data.zeroshot_sets` mapping).

    Args:
        data: labelled webdataset shards (folder of tars, brace pattern, glob or list), or an ImageNet-style
            folder with one sub-folder of images per class.
        classnames: the class names in label order: a list, a file with one name per line, or "imagenet"
            (the 1000 names that ship). Default for a folder: its sub-folder names, "_" read as a space.
        templates: prompts with "{}" for the class name: a list, a file, "imagenet" (the paper's 80) or
            "simple"; default: `model.zeroshot_templates`.
        task: the task kind that tracks it (`clipmodule.eval.tasks`, a kind with a tracker): "zeroshot" (top-1/top-5,
            the default), or e.g. "segmentation": `data` names a segmentation set (`builtin:shapes-seg`, or a
            benchmark name with `root`), scored by MaskCLIP's mIoU and pixel accuracy (`val/seg/<name>/mIoU|aAcc`,
            and `val/seg_mIoU` their mean over the segmentation sets).
        root: the local copy of a named benchmark.
    """

    data: str | list[str]
    classnames: list[str] | str | None = None
    templates: list[str] | str | None = None
    task: str = "zeroshot"
    root: str | None = None


@dataclass
class OpenedSet:
    """A checked zero-shot set: its name, class names, templates as given, and what to read."""

    name: str
    classnames: list[str]
    templates: list[str] | str | None
    shards: str | list[str] | None = None
    folder: Path | None = None
    task: str = "zeroshot"
    source: tuple[str, str | None] | None = None
    """(data, root) of a set named by a dataset spec (`builtin:shapes-seg`, a benchmark and its root): no loader
    reads it; its kind's tracker reads it whole at the validation epoch's end."""


def read_classnames(source: list[str] | str, where: str) -> list[str]:
    if not isinstance(source, str):
        names = [str(name).strip() for name in source]
    else:
        try:
            names = read_lines(source, CLASSNAME_FILES, "class-name")
        except ClipModuleError as error:
            raise ClipModuleError(f"{where}: {error}") from None
    names = [name for name in names if name]
    if not names:
        raise ClipModuleError(f"{where}: no class names")
    return names


def class_folders(root: Path) -> list[str]:
    return sorted(entry.name for entry in os.scandir(root) if entry.is_dir() and not entry.name.startswith("."))


def open_set(name: str, spec: ZeroShotSet | dict) -> OpenedSet:
    """Checks a set (name, data, class names) and returns what the loader and the classifier need."""
    where = f"data.zeroshot_sets.{name}"
    if not isinstance(name, str) or not _NAME.match(name):
        raise ClipModuleError(f"data.zeroshot_sets: {name!r} is not a metric name (letters, digits, _ . -)")
    if isinstance(spec, dict):
        try:
            spec = ZeroShotSet(**spec)
        except TypeError as error:
            raise ClipModuleError(f"{where}: {error}") from None
    data = spec.data
    if spec.root is not None or (isinstance(data, str) and not os.path.isdir(data) and not is_shard_spec(data)):
        if not isinstance(data, str):
            raise ClipModuleError(f"{where}: a set with a root is named by one dataset spec, not a list")
        names = read_classnames(spec.classnames, where) if spec.classnames is not None else []
        return OpenedSet(name, names, spec.templates, task=spec.task, source=(data, spec.root))
    if isinstance(data, str) and os.path.isdir(data) and not is_shard_spec(data):
        folders = class_folders(Path(data))
        if not folders:
            raise ClipModuleError(f"{where}: {data} has no class sub-folders (and no .tar shards)")
        names = read_classnames(spec.classnames, where) if spec.classnames is not None else [
            folder.replace("_", " ") for folder in folders]
        if len(names) != len(folders):
            raise ClipModuleError(f"{where}: {data} has {len(folders)} class folders but {len(names)} class names")
        return OpenedSet(name, names, spec.templates, folder=Path(data), task=spec.task)
    if spec.classnames is None:
        raise ClipModuleError(f"{where}: shards carry class indices; give the class names (classnames: ...)")
    return OpenedSet(name, read_classnames(spec.classnames, where), spec.templates, shards=data, task=spec.task)


def folder_items(root: Path, classnames: list[str]) -> list[tuple[str, int]]:
    """(image path, label) of every image under the class folders, sorted. Folders named after the classes
    (in another order than the names) are labelled by name; otherwise sorted folder i is class i."""
    folders = class_folders(root)
    readable = [folder.replace("_", " ") for folder in folders]
    by_name = set(readable) == set(classnames) and readable != list(classnames)
    suffixes = {f".{ext}" for ext in IMAGE_EXTENSIONS}
    items = []
    for number, folder in enumerate(folders):
        label = classnames.index(readable[number]) if by_name else number
        for directory, subdirectories, files in os.walk(root / folder):
            subdirectories.sort()
            items.extend((os.path.join(directory, file), label) for file in sorted(files)
                         if Path(file).suffix.lower() in suffixes and not file.startswith("."))
    if not items:
        raise ClipModuleError(f"{root}: no images in its {len(folders)} class folders")
    return items
