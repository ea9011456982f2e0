"""Evaluation data: class names, prompt templates, images, and the dataset classes the evaluations read.

Which dataset a spec string names (folder, CSV, shards, builtin) is `clipmodule.eval.sources`'s business;
the classes here only hold items and decode them (shards: `clipmodule.eval.shards`). Every failure
(missing file, unreadable image, unknown label) raises `ClipModuleError` naming the input.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset

from clipmodule.data.name_files import ASSETS, CLASSNAME_FILES, read_lines
from clipmodule.data.tables import read_regular_file
from clipmodule.errors import ClipModuleError, one_line
from clipmodule.eval.prompts import check_class_prompts, check_templates

TEMPLATE_FILES = {"imagenet": ASSETS / "imagenet_templates.txt"}
SIMPLE_TEMPLATES = ["a photo of a {}."]

Transform = Callable[[Image.Image], torch.Tensor]


def read_classnames(source: str) -> list[str]:
    """Class names, one per line, from a file or a built-in name ("imagenet": the 1000 ImageNet classes)."""
    return read_lines(source, CLASSNAME_FILES, "class-name")


def read_templates(source: str) -> list[str] | dict[str, list[str]]:
    """Prompt templates with one "{}" (or "{c}") for the class name, one per line, from a file, "imagenet"
    (the paper's 80) or "simple"; or a .json file holding such a list, or a CuPL-style dict of class-specific
    prompts {class name: [prompt, …]}."""
    if source == "simple":
        return list(SIMPLE_TEMPLATES)
    if source.endswith(".json"):
        return _read_json_prompts(source)
    return check_templates(read_lines(source, TEMPLATE_FILES, "template"), source)


def _read_json_prompts(source: str) -> list[str] | dict[str, list[str]]:
    try:
        data = json.loads(Path(source).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ClipModuleError(f"{source}: no such template file") from None
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ClipModuleError(f"{source}: unreadable JSON template file ({one_line(error)})") from None
    if isinstance(data, dict):
        return check_class_prompts(data, source)
    if isinstance(data, list):
        return check_templates(data, source)
    raise ClipModuleError(f"{source}: JSON templates are a list of templates or a dict of class name -> prompts")


def load_image(source: str | Path | bytes | Image.Image, name: str | None = None) -> Image.Image:
    """An RGB PIL image from a path, encoded bytes or a PIL image; unreadable input names itself."""
    if isinstance(source, Image.Image):
        return source if source.mode == "RGB" else source.convert("RGB")
    try:
        data = read_regular_file(source) if isinstance(source, (str, Path)) else source  # a FIFO would block
        with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as image:
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


def collate_captions(batch: list[tuple[torch.Tensor, list[str]]]) -> tuple[torch.Tensor, list[list[str]]]:
    """Stacks the images and keeps each image's captions as a list (they differ in number)."""
    return torch.stack([image for image, _ in batch]), [captions for _, captions in batch]


def make_loader(dataset: Dataset, batch_size: int, num_workers: int,
                captions: bool = False) -> torch.utils.data.DataLoader:
    if hasattr(dataset, "indexes"):  # shards (`eval.shards`): indexed here, once, before workers copy the dataset
        dataset.indexes()
        num_workers = min(num_workers, dataset.num_shards)  # a worker without a shard would idle
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate_captions if captions else None,
    )
