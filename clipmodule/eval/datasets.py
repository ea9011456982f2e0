"""Evaluation data: class names, prompt templates, and the datasets the evaluations read.

A dataset is named by one string (`open_classification` / `open_retrieval`):

    path/to/folder                ImageFolder layout: one sub-folder per class, sorted order = class index
    path/to/labels.csv (.tsv)     header with a path column (path|filepath|image) and label (label|class)
                                  or caption (caption|text|title); several rows per image = several captions
    shards/{00000..00009}.tar     webdataset shards: an image (jpg|jpeg|png|webp) and `cls` (an int) or `txt`
    builtin:digits[:train|:test]  data that ships with the installed packages (see `eval_builtin`)

Relative paths in a CSV are relative to the CSV's folder. Every failure (missing file, empty folder,
unreadable image, unknown label) raises `ClipModuleError` naming the input.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from PIL import Image
from torch.utils.data import Dataset, IterableDataset

from clipmodule.errors import ClipModuleError

ASSETS = Path(__file__).resolve().parents[1] / "assets"
# Named lists shipped as package data (OpenAI's, MIT: assets/LICENSE-openai-clip-imagenet-prompts.txt).
CLASSNAME_FILES = {"imagenet": ASSETS / "imagenet_classnames.txt"}
TEMPLATE_FILES = {"imagenet": ASSETS / "imagenet_templates.txt"}
SIMPLE_TEMPLATES = ["a photo of a {}."]
IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")
_PATH_COLUMNS = ("path", "filepath", "image", "filename")
_LABEL_COLUMNS = ("label", "class")
_CAPTION_COLUMNS = ("caption", "text", "title")

Transform = Callable[[Image.Image], torch.Tensor]


def _read_lines(source: str, named: dict[str, Path], what: str) -> list[str]:
    path = named.get(source, Path(source))
    if not path.is_file():
        raise ClipModuleError(f"{source}: no such {what} file (or built-in name: {', '.join(named)})")
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as error:
        raise ClipModuleError(f"{source}: unreadable {what} file ({error})") from None
    lines = [line for line in lines if line]
    if not lines:
        raise ClipModuleError(f"{source}: empty {what} file")
    return lines


def read_classnames(source: str) -> list[str]:
    """Class names, one per line, from a file or a built-in name ("imagenet": the 1000 ImageNet classes)."""
    return _read_lines(source, CLASSNAME_FILES, "class-name")


def read_templates(source: str) -> list[str]:
    """Prompt templates with "{}" for the class name, from a file, "imagenet" (the paper's 80) or "simple"."""
    if source == "simple":
        return list(SIMPLE_TEMPLATES)
    templates = _read_lines(source, TEMPLATE_FILES, "template")
    broken = [template for template in templates if "{}" not in template]
    if broken:
        raise ClipModuleError(f"{source}: template {broken[0]!r} has no {{}} for the class name")
    return templates


def load_image(source: str | Path | bytes | Image.Image, name: str | None = None) -> Image.Image:
    """An RGB PIL image from a path, encoded bytes or a PIL image; unreadable input names itself."""
    if isinstance(source, Image.Image):
        return source if source.mode == "RGB" else source.convert("RGB")
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
            return image.convert("RGB")
    except FileNotFoundError:
        raise ClipModuleError(f"{name or source}: no such image file") from None
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise ClipModuleError(f"{name or source}: unreadable image ({str(error).splitlines()[0][:160]})") from None


class LabelledImages(Dataset):
    """Images with integer labels into `classnames`; items load lazily, (image tensor, label)."""

    def __init__(self, items: list[tuple[Any, int]], classnames: list[str], transform: Transform, name: str):
        if not items:
            raise ClipModuleError(f"{name}: dataset is empty")
        self.items, self.classnames, self.transform, self.name = items, classnames, transform, name

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        source, label = self.items[index]
        return self.transform(load_image(source)), label


class CaptionedImages(Dataset):
    """Images with one or more captions each; items are (image tensor, list of captions)."""

    def __init__(self, items: list[tuple[Any, list[str]]], transform: Transform, name: str):
        if not items:
            raise ClipModuleError(f"{name}: dataset is empty")
        self.items, self.transform, self.name = items, transform, name

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, list[str]]:
        source, captions = self.items[index]
        return self.transform(load_image(source)), captions


@dataclass
class ShardSpec:
    """Webdataset shards read in order (no shuffling: evaluation is deterministic)."""

    urls: list[str]
    """Local shard paths after brace expansion."""
    field: str
    """`cls` for classification (an int class index), `txt` for retrieval (one caption per line)."""


class ShardImages(IterableDataset):
    """Samples of webdataset shards: (image tensor, label) for `cls`, (image tensor, captions) for `txt`."""

    def __init__(self, spec: ShardSpec, transform: Transform, name: str, classnames: list[str] | None = None):
        self.spec, self.transform, self.name, self.classnames = spec, transform, name, classnames

    def __iter__(self) -> Iterator[tuple[torch.Tensor, Any]]:
        import webdataset as wds

        # webdataset hands each DataLoader worker its own shards (split_by_worker).
        for sample in wds.WebDataset(self.spec.urls, shardshuffle=False, empty_check=False):
            yield self._decode(sample)

    def _decode(self, sample: dict[str, Any]) -> tuple[torch.Tensor, Any]:
        where = f"{sample.get('__url__')}:{sample.get('__key__')}"
        image_key = next((key for key in IMAGE_KEYS if key in sample), None)
        if image_key is None or self.spec.field not in sample:
            raise ClipModuleError(f"{where}: sample lacks an image ({'|'.join(IMAGE_KEYS)}) or {self.spec.field!r}")
        image = self.transform(load_image(sample[image_key], name=where))
        text = sample[self.spec.field].decode("utf-8").strip()
        if self.spec.field == "txt":
            return image, [line.strip() for line in text.splitlines() if line.strip()]
        if not text.isdigit() or int(text) >= len(self.classnames or []):
            raise ClipModuleError(f"{where}: class {text!r} is not an index into the {len(self.classnames or [])} class names")
        return image, int(text)


def _shard_spec(spec: str, field: str) -> ShardSpec:
    from braceexpand import braceexpand

    urls = list(braceexpand(spec))
    missing = [url for url in urls if not Path(url).is_file()]
    if missing:
        raise ClipModuleError(f"{spec}: no such shard {missing[0]}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    return ShardSpec(urls=urls, field=field)


def _is_shards(spec: str) -> bool:
    return spec.endswith(".tar") or ("{" in spec and ".tar" in spec)


def _image_folder(root: Path, classnames: list[str] | None, transform: Transform) -> LabelledImages:
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

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
            f"{path}: header {rows[0]} needs a path column ({'|'.join(_PATH_COLUMNS)}) and a {what} column ({'|'.join(wanted)})"
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


def open_classification(spec: str, transform: Transform, classnames: list[str] | None = None) -> Dataset:
    """A labelled dataset (see the module docstring); `classnames` override folder names / CSV labels."""
    if spec.startswith("builtin:"):
        from clipmodule.eval.builtin import builtin_classification

        return builtin_classification(spec, transform, classnames)
    if _is_shards(spec):
        if classnames is None:
            raise ClipModuleError(f"{spec}: shards carry class indices; give the class names (--classnames)")
        return ShardImages(_shard_spec(spec, "cls"), transform, spec, classnames)
    path = Path(spec)
    if path.is_dir():
        return _image_folder(path, classnames, transform)
    if path.suffix in (".csv", ".tsv") and path.is_file():
        return _labelled_csv(path, classnames, transform)
    raise ClipModuleError(f"{spec}: not an image folder, a .csv/.tsv file, webdataset .tar shards or builtin:<name>")


def open_retrieval(spec: str, transform: Transform) -> Dataset:
    """A dataset of images with several captions each (see the module docstring)."""
    if spec.startswith("builtin:"):
        from clipmodule.eval.builtin import builtin_retrieval

        return builtin_retrieval(spec, transform)
    if _is_shards(spec):
        return ShardImages(_shard_spec(spec, "txt"), transform, spec)
    path = Path(spec)
    if path.suffix in (".csv", ".tsv") and path.is_file():
        return _captioned_csv(path, transform)
    raise ClipModuleError(f"{spec}: retrieval data is a .csv/.tsv of path,caption, webdataset .tar shards or builtin:<name>")


def collate_captions(batch: list[tuple[torch.Tensor, list[str]]]) -> tuple[torch.Tensor, list[list[str]]]:
    """Stacks the images and keeps each image's captions as a list (they differ in number)."""
    return torch.stack([image for image, _ in batch]), [captions for _, captions in batch]


def make_loader(dataset: Dataset, batch_size: int, num_workers: int, captions: bool = False) -> torch.utils.data.DataLoader:
    if isinstance(dataset, ShardImages):
        num_workers = min(num_workers, len(dataset.spec.urls))  # a worker without a shard would idle
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate_captions if captions else None,
    )
