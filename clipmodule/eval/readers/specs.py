"""The one dispatcher of the evaluation data: which dataset a spec string names (`open_data`; the tasks call
`open_classification` / `open_retrieval`).

    path/to/folder                ImageFolder layout: one sub-folder per class, sorted order = class index
    path/to/labels.csv (.tsv)     header with a path column (path|filepath|image) and label (label|class)
                                  or caption (caption|text|title); several rows per image = several captions
    shards/{00000..00009}.tar     webdataset shards, named and read by the shard contract
                                  (`clipformats.webdataset`): an image and a label (`cls`, or the json's
                                  `label`) or `txt`; a folder of .tar files or a glob works too
    builtin:digits[:train|:test]  data that ships with the installed packages (`builtin`)
    cifar10 (with root=DIR)       a benchmark dataset by name, read from its local copy in the layout it is
                                  distributed in (`base` and the readers; `wds/<name>`: CLIP_benchmark's
                                  webdataset layout); `split` picks the split (default: its test split)

Folders and CSV/TSV are read by `local`, shards by `shards`. Relative paths in a CSV are relative to the
CSV's folder. Every failure (missing file, empty folder, unknown label) raises `ClipModuleError` naming the input.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import Dataset

from clipformats.webdataset import is_shard_spec
from clipmodule.errors import ClipModuleError
from clipmodule.eval.readers.base import is_benchmark_name, open_dataset, reader
from clipmodule.eval.readers.builtin import builtin_classification, builtin_retrieval
from clipmodule.eval.readers.images import Transform
from clipmodule.eval.readers.items import BenchmarkDataset
from clipmodule.eval.readers.local import captioned_csv, image_folder, labelled_csv
from clipmodule.eval.readers.shards import shard_classification, shard_retrieval

Opener = Callable[[str, Transform, list[str] | None], Dataset]


def _is_table(spec: str) -> bool:
    path = Path(spec)
    return path.suffix in (".csv", ".tsv") and path.is_file()


@dataclass(frozen=True)
class Source:
    """One kind of spec string: whether a spec names it, and how it opens for each task (None: that kind
    holds no such data, and the spec is refused unless a later kind takes it)."""

    matches: Callable[[str], bool]
    classification: Opener | None
    retrieval: Opener | None


# In the order they are tried: `builtin:` and shard specs before paths (a folder of .tar files is shards).
SOURCES = (
    Source(lambda spec: spec.startswith("builtin:"), builtin_classification,
           lambda spec, transform, _: builtin_retrieval(spec, transform)),
    Source(is_shard_spec, shard_classification, lambda spec, transform, _: shard_retrieval(spec, transform)),
    Source(lambda spec: Path(spec).is_dir(), lambda spec, transform, names: image_folder(Path(spec), names, transform),
           None),
    Source(_is_table, lambda spec, transform, names: labelled_csv(Path(spec), names, transform),
           lambda spec, transform, _: captioned_csv(Path(spec), transform)),
)
BENCHMARK_TASKS = {"classification": ("zeroshot_classification", "multilabel", "attributes"),
                   "retrieval": ("retrieval",)}
NOT_FOUND = {
    "classification": "not an image folder, a .csv/.tsv file, webdataset .tar shards or builtin:<name>",
    "retrieval": "retrieval data is a .csv/.tsv of path,caption, webdataset .tar shards or builtin:<name>",
}


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
        if dataset.classnames is None:  # a face-attribute release ships no prompt names: the row gives them
            dataset.classnames = list(classnames)
        elif len(classnames) != len(dataset.classnames):
            raise ClipModuleError(f"{name}: has {len(dataset.classnames)} classes but {len(classnames)} class "
                                  "names were given")
        dataset.classnames = list(classnames)
    return dataset


def open_data(spec: str, transform: Transform, task: str, classnames: list[str] | None = None,
              root: str | None = None, split: str | None = None) -> Dataset:
    """The dataset `spec` names (see the module docstring) for `task` ("classification": labelled images,
    multi-label ones too; "retrieval": images with captions). `classnames` override folder names, CSV labels
    or a benchmark's own; with `root`, `spec` names a benchmark dataset and `split` its split."""
    if task not in NOT_FOUND:
        raise ValueError(f"unknown evaluation data task {task!r}")
    if _is_named(spec, root):
        return open_benchmark(spec, root or "", split, transform, BENCHMARK_TASKS[task], classnames)
    for source in SOURCES:
        opener = getattr(source, task)
        if opener is not None and source.matches(spec):
            return opener(spec, transform, classnames)
    raise ClipModuleError(f"{spec}: {NOT_FOUND[task]}")


def open_classification(spec: str, transform: Transform, classnames: list[str] | None = None,
                        root: str | None = None, split: str | None = None) -> Dataset:
    """A labelled dataset: `open_data` for classification."""
    return open_data(spec, transform, "classification", classnames, root, split)


def open_retrieval(spec: str, transform: Transform, root: str | None = None, split: str | None = None) -> Dataset:
    """A dataset of images with several captions each: `open_data` for retrieval."""
    return open_data(spec, transform, "retrieval", None, root, split)
