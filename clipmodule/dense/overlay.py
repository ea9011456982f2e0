"""Segmentation pictures: labels as colours blended over the image, with a legend of the classes present."""

from __future__ import annotations

import colorsys
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw


def palette(count: int) -> np.ndarray:
    """[count, 3] uint8 colours, evenly spaced hues (golden-ratio steps, so neighbours differ)."""
    hues = (np.arange(count) * 0.618033988749895) % 1.0
    return np.array([[round(255 * c) for c in colorsys.hsv_to_rgb(hue, 0.75, 0.95)] for hue in hues], dtype=np.uint8)


def overlay(image: Image.Image, labels: np.ndarray, classnames: Sequence[str], alpha: float = 0.5) -> Image.Image:
    """`image` with each pixel tinted by its label's colour (`labels` [H, W] at the image's size) and a legend."""
    colours = palette(len(classnames))
    base = np.asarray(image.convert("RGB"), dtype=np.float32)
    tinted = (1 - alpha) * base + alpha * colours[labels].astype(np.float32)
    picture = Image.fromarray(tinted.round().clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    present = [index for index in range(len(classnames)) if (labels == index).any()]
    for row, index in enumerate(present):
        top = 4 + 14 * row
        draw.rectangle([4, top, 14, top + 10], fill=tuple(int(c) for c in colours[index]), outline=(0, 0, 0))
        draw.text((18, top - 1), classnames[index], fill=(255, 255, 255), stroke_width=1, stroke_fill=(0, 0, 0))
    return picture
