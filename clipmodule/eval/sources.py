"""Which dataset a spec string names: `open_classification` / `open_retrieval`.

    path/to/folder                ImageFolder layout: one sub-folder per class, sorted order = class index
    path/to/labels.csv (.tsv)     header with a path column (path|filepath|image) and label (label|class)
                                  or caption (caption|text|title); several rows per image = several captions
    shards/{00000..00009}.tar     webdataset shards, named and read by the shard contract
                                  (`clipformats.webdataset`): an image and a label (`cls`, or the json's
                                  `label`) or `txt`; a folder of .tar files or a glob works too
    builtin:digits[:train|:test]  data that ships with the installed packages (see `clipmodule.eval.builtin`)
    cifar10 (with root=DIR)       a benchmark dataset by name, read from its local copy in the layout it is
                                  distributed in (`clipmodule.eval.readers`; `wds/<name>`: CLIP_benchmark's
                                  webdataset layout); `split` picks the split (default: its test split)

Relative paths in a CSV are relative to the CSV's folder. Every failure (missing file, empty folder,
unknown label) raises `ClipModuleError` naming the input.
"""

from __future__ import annotations

import csv
from pathlib import Path

from torch.utils.data import Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

from clipformats.webdataset import ShardSpecError, expand_shards, is_shard_spec
from clipmodule.errors import ClipModuleError
from clipmodule.eval.builtin import builtin_classification, builtin_retrieval
from clipmodule.eval.datasets import CaptionedImages, LabelledImages, Transform
from clipmodule.eval.readers import BenchmarkDataset, is_benchmark_name, open_dataset, reader
from clipmodule.eval.shards import ShardImages, ShardSpec

_PATH_COLUMNS = ("path", "filepath", "image", "filename")
_LABEL_COLUMNS = ("label", "class")
_CAPTION_COLUMNS = ("caption", "text", "title")


def _shard_spec(spec: str, field: str) -> ShardSpec:
    try:
        return ShardSpec(urls=expand_shards(spec), field=field)
    except ShardSpecError as error:
        raise ClipModuleError(f"{spec}: {error}") from None


def _image_folder(root: Path, classnames: list[str] | None, transform: Transform) -> LabelledImages:
    try:
        folders, folder_to_index = find_classes(str(root))
        samples = make_dataset(str(root), folder_to_index, extensions=IMG_EXTENSIONS)
    except FileNotFoundError as error:
        raise ClipModuleError(f"{root}: empty dataset folder ({str(error).splitlines()[0]})") from None
    names = [folder.replace("_", " ") for folder in folders]
    if classnames is None:
        classnames = names
    elif len(classnames) != len(folders):
        raise ClipModuleError(f"{root}: {len(folders)} class folders but {len(classnames)} class names")
    elif set(names) == set(classnames) and names != list(classnames):
        # Folders named after the classes: label by name, so a class-name file in any order stays right
        # (torchvision's sorted-folder indices would silently scramble the labels).
        index = {name: classnames.index(name) for name in names}
        samples = [(path, index[names[label]]) for path, label in samples]
    return LabelledImages([(Path(path), label) for path, label in samples], classnames, transform, str(root))


def _read_csv(path: Path, wanted: tuple[str, ...], what: str) -> list[tuple[Path, str]]:
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle, delimiter="\t" if path.suffix == ".tsv" else ","))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise ClipModuleError(f"{path}: unreadable CSV ({error})") from None
    if not rows:
        raise ClipModuleError(f"{path}: dataset is empty")
    header = [column.strip().lower() for column in rows[0]]
    path_column = next((header.index(name) for name in _PATH_COLUMNS if name in header), None)
    value_column = next((header.index(name) for name in wanted if name in header), None)
    if path_column is None or value_column is None:
        raise ClipModuleError(
            f"{path}: header {rows[0]} needs a path column ({'|'.join(_PATH_COLUMNS)}) "
            f"and a {what} column ({'|'.join(wanted)})"
        )
    out = []
    for line, row in enumerate(rows[1:], start=2):
        if len(row) <= max(path_column, value_column):
            raise ClipModuleError(f"{path}:{line}: expected at least {max(path_column, value_column) + 1} columns")
        out.append((path.parent / row[path_column].strip(), row[value_column].strip()))
    return out


def _label_index(label: str, classnames: list[str], where: str) -> int:
    if label in classnames:
        return classnames.index(label)
    if label.isdigit() and int(label) < len(classnames):
        return int(label)
    raise ClipModuleError(f"{where}: label {label!r} is neither a class name nor an index below {len(classnames)}")


def _labelled_csv(path: Path, classnames: list[str] | None, transform: Transform) -> LabelledImages:
    rows = _read_csv(path, _LABEL_COLUMNS, "label")
    if classnames is None:
        labels = sorted({label for _, label in rows})
        if labels and all(label.isdigit() for label in labels):
            raise ClipModuleError(f"{path}: labels are indices; give the class names (--classnames)")
        classnames = labels
    items = [(image, _label_index(label, classnames, f"{path}:{line}")) for line, (image, label) in enumerate(rows, 2)]
    return LabelledImages(items, classnames, transform, str(path))


def _captioned_csv(path: Path, transform: Transform) -> CaptionedImages:
    captions: dict[Path, list[str]] = {}
    for image, caption in _read_csv(path, _CAPTION_COLUMNS, "caption"):
        captions.setdefault(image, []).append(caption)
    return CaptionedImages(list(captions.items()), transform, str(path))


def _is_named(spec: str, root: str | None) -> bool:
    """A benchmark name: given with a root, or a registered name that is not also a path here."""
    if root is not None:
        return True
    if is_benchmark_name(spec) and not Path(spec).exists():
        raise ClipModuleError(f"{spec}: a benchmark dataset; give the folder of its local copy "
                              "(--dataset_root DIR, or `root:` in the suite row)")
    return False


def open_benchmark(name: str, root: str, split: str | None, transform: Transform, tasks: tuple[str, ...],
                   classnames: list[str] | None = None) -> BenchmarkDataset:
    """A named benchmark dataset's split, decoded through `transform`. `split="train"` on a dataset whose
    training split is called `trainval` (Pets) reads that; `classnames` replace its own names."""
    entry = reader(name)
    if split == "train" and "train" not in entry.splits:
        if entry.train_split is None:
            raise ClipModuleError(f"{name}: no training split (splits: {', '.join(entry.splits)})")
        split = entry.train_split
    dataset = open_dataset(name, root, split).with_transform(transform)
    if dataset.task not in tasks:
        wanted = "retrieval" if "retrieval" in tasks else "classification"
        raise ClipModuleError(f"{name}: a {dataset.task.replace('_', ' ')} dataset, not a {wanted} one")
    if classnames is not None:
        if len(classnames) != len(dataset.classnames):
            raise ClipModuleError(f"{name}: has {len(dataset.classnames)} classes but {len(classnames)} class "
                                  "names were given")
        dataset.classnames = list(classnames)
    return dataset


def open_classification(spec: str, transform: Transform, classnames: list[str] | None = None,
                        root: str | None = None, split: str | None = None) -> Dataset:
    """A labelled dataset (see the module docstring); `classnames` override folder names / CSV labels.
    With `root`, `spec` names a benchmark dataset (multi-label ones too: VOC2007) and `split` its split."""
    if _is_named(spec, root):
        return open_benchmark(spec, root or "", split, transform, ("zeroshot_classification", "multilabel"),
                              classnames)
    if spec.startswith("builtin:"):
        return builtin_classification(spec, transform, classnames)
    if is_shard_spec(spec):
        if classnames is None:
            raise ClipModuleError(f"{spec}: shards carry class indices; give the class names (--classnames)")
        return ShardImages(_shard_spec(spec, "cls"), transform, spec, classnames)
    path = Path(spec)
    if path.is_dir():
        return _image_folder(path, classnames, transform)
    if path.suffix in (".csv", ".tsv") and path.is_file():
        return _labelled_csv(path, classnames, transform)
    raise ClipModuleError(f"{spec}: not an image folder, a .csv/.tsv file, webdataset .tar shards or builtin:<name>")


def open_retrieval(spec: str, transform: Transform, root: str | None = None, split: str | None = None) -> Dataset:
    """A dataset of images with several captions each (see the module docstring)."""
    if _is_named(spec, root):
        return open_benchmark(spec, root or "", split, transform, ("retrieval",))
    if spec.startswith("builtin:"):
        return builtin_retrieval(spec, transform)
    if is_shard_spec(spec):
        return ShardImages(_shard_spec(spec, "txt"), transform, spec)
    path = Path(spec)
    if path.suffix in (".csv", ".tsv") and path.is_file():
        return _captioned_csv(path, transform)
    raise ClipModuleError(
        f"{spec}: retrieval data is a .csv/.tsv of path,caption, webdataset .tar shards or builtin:<name>")


