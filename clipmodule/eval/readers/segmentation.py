"""Segmentation data: images with a class index per pixel (255: not labelled), from the built-in rendered set or a
benchmark's local copy in its released layout (`seg_benchmarks`).

    builtin:shapes-seg   64 rendered 64x64 scenes of one to three shapes (circle, square, triangle, cross) in
                         named colours on a plain background, seed 0; the masks are drawn with the same
                         rasteriser as the pixels, so they are exact. Class 0 is the background.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from clipmodule.data.synthetic import draw_shape
from clipmodule.errors import ClipModuleError, one_line
from clipmodule.eval.readers.images import load_image

IGNORE_INDEX = 255
SHAPES_SEG_COUNT = 64
SHAPES_SEG_CLASSES = ["background", "circle", "square", "triangle", "cross"]
_SCENE_COLOURS = {"red": (220, 30, 30), "green": (30, 170, 60), "blue": (40, 70, 220), "yellow": (240, 210, 30)}
_SCENE_BACKGROUNDS = ((255, 255, 255), (235, 235, 235), (20, 20, 20))


def _identity(labels: np.ndarray) -> np.ndarray:
    return labels


def read_png_labels(path: str) -> np.ndarray:
    with Image.open(path) as png:  # a palette PNG's indices, not its colours
        return np.asarray(png, dtype=np.int64)


@dataclass
class SegmentationSet:
    """Images and their label maps, read lazily. `items[i]` is (image: a file path or a PIL image, labels: a file
    path of a label file or an [H, W] array); `decode` maps a label file's values to class indices (255: ignored)."""

    name: str
    classnames: list[str]
    items: list[tuple[str | Image.Image, str | np.ndarray]]
    background_index: int | None = None
    """The class that stands for "none of the others" (VOC's and Context-60's background), or None."""
    decode: Callable[[np.ndarray], np.ndarray] = _identity
    ignore_index: int = IGNORE_INDEX
    split: str | None = None
    task: str = "segmentation"
    read_labels: Callable[[str], np.ndarray] = read_png_labels
    """Reads a label file's raw values (a PNG's; Pascal Context's release: a .mat file's LabelMap)."""

    def __len__(self) -> int:
        return len(self.items)

    def _read(self, index: int) -> tuple[Image.Image, np.ndarray]:
        image, labels = self.items[index]
        try:
            image = load_image(image) if isinstance(image, str) else image
            if isinstance(labels, str):
                labels = self.decode(self.read_labels(labels))
        except OSError as error:
            raise ClipModuleError(f"{self.name}: item {index}: unreadable ({one_line(error)[:160]})") from None
        return image, labels

    def __getitem__(self, index: int) -> tuple[Image.Image, np.ndarray]:
        image, labels = self._read(index)
        if labels.shape != (image.height, image.width):
            raise ClipModuleError(f"{self.name}: item {index}'s label map is {labels.shape[1]}x{labels.shape[0]} "
                                  f"but its image is {image.width}x{image.height}")
        return image, labels


def render_shape_scene(number: int, size: int = 64, seed: int = 0) -> tuple[Image.Image, np.ndarray]:
    """The number-th scene of `builtin:shapes-seg`: (image, labels into SHAPES_SEG_CLASSES)."""
    rng = np.random.default_rng([seed, number])
    background = _SCENE_BACKGROUNDS[int(rng.integers(len(_SCENE_BACKGROUNDS)))]
    image = Image.new("RGB", (size, size), background)
    mask = Image.new("L", (size, size), 0)
    draw, draw_mask = ImageDraw.Draw(image), ImageDraw.Draw(mask)
    for _ in range(int(rng.integers(1, 4))):
        label = int(rng.integers(1, len(SHAPES_SEG_CLASSES)))
        extent = int(rng.integers(size // 4, size // 2 + 1))
        left, top = (int(v) for v in rng.integers(0, size - extent, size=2))
        box = (left, top, left + extent, top + extent)
        colour = list(_SCENE_COLOURS.values())[int(rng.integers(len(_SCENE_COLOURS)))]
        draw_shape(draw, SHAPES_SEG_CLASSES[label], box, colour)
        draw_shape(draw_mask, SHAPES_SEG_CLASSES[label], box, label)  # the same pixels, the class as the "colour"
    return image, np.asarray(mask, dtype=np.int64)


def shapes_seg(spec: str, count: int | None = None) -> SegmentationSet:
    items = [render_shape_scene(number) for number in range(count or SHAPES_SEG_COUNT)]
    return SegmentationSet(spec, list(SHAPES_SEG_CLASSES), items, background_index=0)
