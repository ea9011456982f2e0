"""The dataset classes of the evaluation data, one family: a list of (image source, target) items decoded
lazily (`images.read_image`) through an optional transform. `LabelledImages` (class index targets) and
`CaptionedImages` (caption lists) are what the generic sources build (folders, CSV/TSV, builtin:<name>);
`BenchmarkDataset` is what every named benchmark reader returns and adds the benchmark's split, task kind,
copy root and templates. Webdataset shards stream instead (`shards.ShardImages`). `make_loader` batches any.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from clipmodule.errors import ClipModuleError
from clipmodule.eval.readers.images import Transform, read_image

TASKS = ("zeroshot_classification", "multilabel", "retrieval", "attributes", "image_caption_selection")


class ImageItems(Dataset):
    """(image source, target) items; an item reads as (image, target): the image is a PIL RGB image, or
    `transform(image)` when a transform is set. Only the attributes every kind has live here (`name`,
    `items`, `transform`, `classnames`): the data identity of a suite row reads the others by name."""

    def __init__(self, items: list[tuple[Any, Any]], name: str, transform: Callable | None,
                 classnames: list[str] | None):
        self.items, self.name, self.transform, self.classnames = items, name, transform, classnames

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        source, target = self.items[index]
        image = read_image(source)
        return (self.transform(image) if self.transform is not None else image), self.target(target)

    def target(self, stored: Any) -> Any:
        """An item's target as a batch takes it (the stored one, unless a kind converts it)."""
        return stored

    def with_transform(self, transform: Callable | None) -> ImageItems:
        """The same items, decoded through `transform` (the model's preprocessing)."""
        other = copy.copy(self)
        other.transform = transform
        return other

    def labels(self) -> list[Any]:
        """Every item's target as stored (class index, class-index list, captions), without decoding images."""
        return [target for _, target in self.items]


class LabelledImages(ImageItems):
    """Images with integer labels into `classnames`; items load lazily, (image tensor, label)."""

    def __init__(self, items: list[tuple[Any, int]], classnames: list[str], transform: Transform, name: str):
        if not items:
            raise ClipModuleError(f"{name}: dataset is empty")
        super().__init__(items, name, transform, classnames)


class CaptionedImages(ImageItems):
    """Images with one or more captions each; items are (image tensor, list of captions)."""

    def __init__(self, items: list[tuple[Any, list[str]]], transform: Transform, name: str):
        if not items:
            raise ClipModuleError(f"{name}: dataset is empty")
        super().__init__(items, name, transform, None)


class BenchmarkDataset(ImageItems):
    """A benchmark dataset read from its local copy.

    The target is the class index (`zeroshot_classification`), a 0/1 float tensor over `classnames`
    (`multilabel`, CLIP_benchmark's convention, so batches stack), or the list of captions (`retrieval`).
    `classnames` are the dataset's own, in label order (folder names, its class-list file; for a dataset
    that ships no names, the label ids as it writes them); `templates` are set only when the copy carries
    its own (CLIP_benchmark's webdataset layout). No transform until `with_transform`."""

    def __init__(self, name: str, split: str, task: str, items: list[tuple[Any, Any]],
                 classnames: list[str] | None = None, root: str | Path = "", templates: list[str] | None = None):
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}")
        if not items:
            raise ClipModuleError(f"{name} ({split}) at {root}: the split holds no images")
        if task in ("zeroshot_classification", "multilabel"):
            _check_labels(name, split, root, items, classnames or [])
        super().__init__(items, name, None, classnames)
        self.split, self.task, self.root, self.templates = split, task, str(root), templates

    def target(self, stored: Any) -> Any:
        if self.task == "multilabel":
            return torch.zeros(len(self.classnames)).index_fill_(0, torch.as_tensor(stored, dtype=torch.long), 1)
        if self.task == "attributes":
            return torch.as_tensor(stored, dtype=torch.long)
        return stored

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name}, split={self.split}, {len(self)} items, root={self.root})"


def _check_labels(name: str, split: str, root: str | Path, items: list[tuple[Any, Any]], classnames: list[str]) -> None:
    """Every label indexes `classnames`: a label past the names would score silently wrong."""
    flat = [label for _, target in items for label in (target if isinstance(target, (list, tuple)) else [target])]
    bad = next((label for label in flat if not 0 <= label < len(classnames)), None)
    if bad is not None:
        raise ClipModuleError(f"{name} ({split}) at {root}: label {bad} is not an index into its "
                              f"{len(classnames)} classes")


def collate_captions(batch: list[tuple[torch.Tensor, list[str]]]) -> tuple[torch.Tensor, list[list[str]]]:
    """Stacks the images and keeps each image's captions as a list (they differ in number)."""
    return torch.stack([image for image, _ in batch]), [captions for _, captions in batch]


def make_loader(dataset: Dataset, batch_size: int, num_workers: int,
                captions: bool = False) -> torch.utils.data.DataLoader:
    if hasattr(dataset, "indexes"):  # shards (`shards.ShardImages`): indexed here, once, before workers copy it
        dataset.indexes()
        num_workers = min(num_workers, dataset.num_shards)  # a worker without a shard would idle
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate_captions if captions else None,
    )
