"""Segmentation data: images with a class index per pixel (255: not labelled), from the built-in rendered set or a
benchmark's local copy in its released layout (`seg_benchmarks`).

    builtin:shapes-seg   64 rendered 96x96 scenes, seed 0, drawn as the demo's held-out shapes row draws them
                         (what `python -m demo` teaches: the same vocabulary and image statistics): one circle,
                         square or triangle, 55-90% of the canvas wide, in pink, grey or white, on a plain
                         background from the other named colours that stands out from it. The masks are drawn
                         with the same rasteriser as the pixels, so they are exact. Class 0 is the background,
                         prompted by its colours ("red background; green background; ...", `prompt_names`: the
                         demo's captions name a background by its colour).
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
SHAPES_SEG_CLASSES = ["background", "circle", "square", "triangle"]
SHAPES_SEG_SIZE = 96
# The demo's palette (demo/source.py: COLOURS): shapes in its held-out colours, backgrounds in the others.
_SHAPE_COLOURS = {"pink": (240, 150, 190), "grey": (128, 128, 128), "white": (245, 245, 245)}
_BACKGROUNDS = {"red": (200, 40, 40), "green": (40, 160, 60), "blue": (40, 80, 200), "yellow": (230, 200, 40),
                "purple": (130, 60, 170), "orange": (240, 140, 30), "black": (20, 20, 20)}
_CONTRAST = 120.0
"""A background is at least this RGB distance from its shape's colour (the demo's SHAPE_CONTRAST)."""
SHAPES_SEG_PROMPT_NAMES = ["; ".join(f"{name} background" for name in _BACKGROUNDS), *SHAPES_SEG_CLASSES[1:]]


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
    prompt_names: list[str] | None = None
    """What each class is prompted as, if not its name: alternatives separated by "; ", a pixel scored by the
    best of them (`dense.segment.split_alternatives`)."""
    labels_source: str | None = None
    """Where the labels come from when they are not the benchmark's own (Pascal Context's .mat release): the
    records say so."""

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


def render_shape_scene(number: int, size: int = SHAPES_SEG_SIZE, seed: int = 0) -> tuple[Image.Image, np.ndarray]:
    """The number-th scene of `builtin:shapes-seg` (another `seed`: another split of the same distribution):
    (image, labels into SHAPES_SEG_CLASSES)."""
    rng = np.random.default_rng([seed, number])
    label = int(rng.integers(1, len(SHAPES_SEG_CLASSES)))
    colour = list(_SHAPE_COLOURS.values())[int(rng.integers(len(_SHAPE_COLOURS)))]
    backgrounds = [rgb for rgb in _BACKGROUNDS.values() if np.linalg.norm(np.subtract(rgb, colour)) >= _CONTRAST]
    image = Image.new("RGB", (size, size), backgrounds[int(rng.integers(len(backgrounds)))])
    mask = Image.new("L", (size, size), 0)
    extent = int(size * rng.uniform(0.55, 0.9))
    left, top = (int(rng.uniform(0, size - extent)) for _ in range(2))
    box = (left, top, left + extent, top + extent)
    draw_shape(ImageDraw.Draw(image), SHAPES_SEG_CLASSES[label], box, colour)
    draw_shape(ImageDraw.Draw(mask), SHAPES_SEG_CLASSES[label], box, label)  # the same pixels, the class as "colour"
    return image, np.asarray(mask, dtype=np.int64)


def shapes_seg(spec: str, count: int | None = None, seed: int = 0) -> SegmentationSet:
    items = [render_shape_scene(number, seed=seed) for number in range(count or SHAPES_SEG_COUNT)]
    return SegmentationSet(spec, list(SHAPES_SEG_CLASSES), items, background_index=0,
                           prompt_names=list(SHAPES_SEG_PROMPT_NAMES))
