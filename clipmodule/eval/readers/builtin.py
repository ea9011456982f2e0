"""Evaluation sets made from data that ships with the installed packages (nothing is downloaded).

    builtin:digits   scikit-learn's 1,797 handwritten 8x8 digits, upscaled; classes "0".."9"
    builtin:shapes   200 rendered shapes (circle, square, triangle, cross) in named colours, seed 0;
                     retrieval captions state shape, colour, size and background
    builtin:skimage  17 of scikit-image's sample photographs, two hand-written captions each (retrieval)
    builtin:shape-swaps  image-caption selection (compositionality): 96 renders of a shape on a coloured
                     background, each with its caption ("a circle on a red background") and the caption with the
                     relation's two sides swapped ("a red background on a circle"): the same words, another meaning
    builtin:shape-replace-shape, builtin:shape-replace-colour  the same renders, the negative an equally likely
                     sentence that only the image rules out: another shape ("a square on a red background") or
                     another background colour ("a circle on a green background")

`:train` / `:test` select a fixed stratified half (for linear probes); no suffix means the whole set.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from clipmodule.data.synthetic import draw_shape
from clipmodule.errors import ClipModuleError
from clipmodule.eval.readers.images import Transform
from clipmodule.eval.readers.items import CaptionedImages, LabelledImages

DIGIT_CLASSES = [str(digit) for digit in range(10)]
SHAPE_CLASSES = ["circle", "square", "triangle", "cross"]
COLOURS = {"red": (220, 30, 30), "green": (30, 170, 60), "blue": (40, 70, 220), "yellow": (240, 210, 30)}
BACKGROUNDS = {"white": (255, 255, 255), "black": (0, 0, 0)}
SHAPES_PER_CLASS = 50
SKIMAGE_CAPTIONS = {
    "astronaut": ["a portrait of an astronaut in a spacesuit", "a woman astronaut in front of a flag"],
    "camera": ["a black and white photo of a cameraman", "a man standing behind a camera on a tripod"],
    "chelsea": ["a photo of a tabby cat", "a cat looking to the side"],
    "coffee": ["a cup of coffee on a saucer", "a photo of a coffee cup seen from above"],
    "rocket": ["a rocket on a launch pad", "a photo of a space rocket before launch"],
    "horse": ["the silhouette of a horse", "a binary image of a horse"],
    "moon": ["a photo of the surface of the moon", "grey lunar craters"],
    "coins": ["a photo of old coins", "many small coins in rows"],
    "clock": ["a photo of a wall clock", "a clock face"],
    "page": ["a scanned page of a book", "a page of printed text"],
    "brick": ["a brick wall texture", "a grey photo of a brick wall"],
    "grass": ["a photo of grass", "a texture of grass blades"],
    "gravel": ["a photo of gravel", "a texture of small stones"],
    "colorwheel": ["a color wheel", "a circle of rainbow colours"],
    "hubble_deep_field": ["the Hubble deep field full of galaxies", "many distant galaxies in space"],
    "immunohistochemistry": ["a microscope image of stained tissue", "an immunohistochemistry slide"],
    "retina": ["a photo of the retina of a human eye", "a fundus image of an eye"],
}


def _digits() -> tuple[list[Image.Image], list[int]]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = (digits.images * (255.0 / 16.0)).round().astype(np.uint8)
    images = [Image.fromarray(image, mode="L").resize((32, 32), Image.Resampling.NEAREST) for image in pixels]
    return images, [int(label) for label in digits.target]


def render_shapes(per_class: int = SHAPES_PER_CLASS, seed: int = 0,
                  size: int = 64) -> tuple[list[Image.Image], list[int], list[list[str]]]:
    """(images, labels into SHAPE_CLASSES, captions) of shapes with random colour, size, place, background."""
    rng = np.random.default_rng(seed)
    images, labels, captions = [], [], []
    for label, shape in enumerate(SHAPE_CLASSES):
        for _ in range(per_class):
            colour = list(COLOURS)[rng.integers(len(COLOURS))]
            background = list(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))]
            big = bool(rng.integers(2))
            extent = int(rng.integers(size // 2, size - 4)) if big else int(rng.integers(size // 5, size // 3))
            left, top = (int(v) for v in rng.integers(0, size - extent, size=2))
            image = Image.new("RGB", (size, size), BACKGROUNDS[background])
            draw_shape(ImageDraw.Draw(image), shape, (left, top, left + extent, top + extent), COLOURS[colour])
            images.append(image)
            labels.append(label)
            size_word = "large" if big else "small"
            captions.append([f"a {colour} {shape}", f"a {size_word} {colour} {shape} on a {background} background"])
    return images, labels, captions


SWAP_SHAPES = ("circle", "square", "triangle")
SWAP_BACKGROUNDS = {"red": (200, 40, 40), "green": (40, 160, 60), "blue": (40, 80, 200), "yellow": (230, 200, 40),
                    "purple": (130, 60, 170), "orange": (240, 140, 30), "white": (245, 245, 245),
                    "black": (20, 20, 20)}


SELECTION_SETS = ("shape-swaps", "shape-replace-shape", "shape-replace-colour")


NAMES_WITHIN = 100  # RGB distance: a colour name this close to a colour in the image could name it


def names_in_image(background: str) -> set[str]:
    """The colour names that could describe a render on `background`: those within NAMES_WITHIN of the background
    or of the shape, drawn in its complement (`render_shape_swaps`: blue's is yellow-orange, white's black)."""
    colours = [np.array(SWAP_BACKGROUNDS[background]), np.array([255 - v for v in SWAP_BACKGROUNDS[background]])]
    return {name for name, rgb in SWAP_BACKGROUNDS.items()
            if min(float(np.linalg.norm(colour - np.array(rgb))) for colour in colours) <= NAMES_WITHIN}


def _negative(kind: str, shape: str, colour: str) -> str:
    """The negative caption of a render: the relation swapped, the next shape in its list, or the next background
    colour in its list that names neither the background nor the shape's own colour (`names_in_image`)."""
    if kind == "shape-swaps":
        return f"a {colour} background on a {shape}"
    if kind == "shape-replace-shape":
        return f"a {SWAP_SHAPES[(SWAP_SHAPES.index(shape) + 1) % len(SWAP_SHAPES)]} on a {colour} background"
    names, taken = list(SWAP_BACKGROUNDS), names_in_image(colour)
    start = names.index(colour)
    other = next(names[(start + step) % len(names)] for step in range(1, len(names))
                 if names[(start + step) % len(names)] not in taken)
    return f"a {shape} on a {other} background"


def render_shape_swaps(repeats: int = 4, seed: int = 0, size: int = 64,
                       kind: str = "shape-swaps") -> list[tuple[Image.Image, list[str]]]:
    """(image, [its caption, the negative of `kind`]) for every shape on every background, `repeats` times at
    random places and sizes (the same renders for every kind); the shape is drawn in the background's complement."""
    rng = np.random.default_rng(seed)
    items = []
    for shape in SWAP_SHAPES:
        for name, background in SWAP_BACKGROUNDS.items():
            for _ in range(repeats):
                extent = int(rng.integers(size // 3, size - 8))
                left, top = (int(v) for v in rng.integers(0, size - extent, size=2))
                image = Image.new("RGB", (size, size), background)
                draw_shape(ImageDraw.Draw(image), shape, (left, top, left + extent, top + extent),
                           tuple(255 - v for v in background))
                items.append((image, [f"a {shape} on a {name} background", _negative(kind, shape, name)]))
    return items


class BuiltinSelection(CaptionedImages):
    """Image-caption selection items read one by one: (images [1, C, H, W], [true caption, negatives...])."""

    task = "image_caption_selection"

    def __getitem__(self, index: int) -> tuple[Any, list[str]]:
        image, captions = self.items[index]
        return (self.transform(image)[None] if self.transform is not None else [image]), list(captions)


def builtin_selection(spec: str, transform: Transform | None) -> BuiltinSelection:
    name = spec.removeprefix("builtin:")
    if name not in SELECTION_SETS:
        raise ClipModuleError(f"{spec}: unknown built-in selection dataset ("
                              f"{'|'.join(f'builtin:{known}' for known in SELECTION_SETS)})")
    return BuiltinSelection(render_shape_swaps(kind=name), transform, spec)


def _skimage() -> tuple[list[Image.Image], list[list[str]]]:
    from skimage import data

    images = []
    for name in SKIMAGE_CAPTIONS:
        array = getattr(data, name)()
        if array.dtype == bool:
            array = array.astype(np.uint8) * 255
        images.append(Image.fromarray(array).convert("RGB"))
    return images, list(SKIMAGE_CAPTIONS.values())


def _parse(spec: str) -> tuple[str, str | None]:
    parts = spec.split(":")
    name, split = parts[1], parts[2] if len(parts) > 2 else None
    if len(parts) > 3 or name not in ("digits", "shapes", "skimage") or split not in (None, "train", "test"):
        raise ClipModuleError(
            f"{spec}: unknown built-in dataset (builtin:digits|shapes|skimage, optional :train|:test)")
    return name, split


def _split_indices(labels: list[int], split: str | None) -> list[int]:
    if split is None:
        return list(range(len(labels)))
    from sklearn.model_selection import train_test_split

    train, test = train_test_split(np.arange(len(labels)), test_size=0.5, random_state=0, stratify=labels)
    return sorted(int(i) for i in (train if split == "train" else test))


def builtin_classification(spec: str, transform: Transform, classnames: list[str] | None = None) -> LabelledImages:
    name, split = _parse(spec)
    if name == "skimage":
        raise ClipModuleError(f"{spec}: the skimage photographs are a retrieval set (one image per subject)")
    images, labels = _digits() if name == "digits" else render_shapes()[:2]
    default = DIGIT_CLASSES if name == "digits" else SHAPE_CLASSES
    if classnames is not None and len(classnames) != len(default):
        raise ClipModuleError(f"{spec}: has {len(default)} classes but {len(classnames)} class names were given")
    items = [(images[i], labels[i]) for i in _split_indices(labels, split)]
    return LabelledImages(items, list(classnames or default), transform, spec)


def builtin_retrieval(spec: str, transform: Transform) -> CaptionedImages:
    name, split = _parse(spec)
    if name == "digits":
        raise ClipModuleError(f"{spec}: the digits have no captions; use builtin:shapes or builtin:skimage")
    if name == "shapes":
        images, labels, captions = render_shapes()
        indices = _split_indices(labels, split)
    else:
        if split is not None:
            raise ClipModuleError(f"{spec}: the skimage set has no train/test split")
        images, captions = _skimage()
        indices = list(range(len(images)))
    return CaptionedImages([(images[i], captions[i]) for i in indices], transform, spec)
