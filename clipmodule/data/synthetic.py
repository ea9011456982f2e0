"""Synthetic image-text data with a ground truth: coloured shapes and captions that name them.

`write_synthetic_shards` writes them in img2dataset's webdataset layout (jpg + txt + json per sample,
`<shard>_stats.json` beside each tar), so tests and benchmarks run the real shard reader. `draw_shape` is
the one shape renderer: the built-in `shapes` evaluation set, the demo's scenes and the tests draw with it.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

DRAWN_SHAPES = ("circle", "square", "triangle", "cross")
COLORS = {"red": (220, 30, 30), "green": (30, 170, 60), "blue": (40, 70, 220), "yellow": (235, 210, 40)}
SHAPES = ("circle", "square", "triangle")
CLASSNAMES = [f"{color} {shape}" for color in COLORS for shape in SHAPES]
CAPTIONS = ("a {}", "a photo of a {}", "a {} on a plain background", "a drawing of a {}")


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: tuple[float, float, float, float], colour: object) -> None:
    """Fill `shape` (one of DRAWN_SHAPES) inside `box` (left, top, right, bottom) with `colour` (any PIL colour).
    A triangle points up from the bottom edge; a cross is two bars a third of the box wide."""
    left, top, right, bottom = box
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    elif shape == "triangle":
        draw.polygon([((left + right) / 2, top), (right, bottom), (left, bottom)], fill=colour)
    elif shape == "cross":
        third = (right - left) // 3
        draw.rectangle((left + third, top, right - third, bottom), fill=colour)
        draw.rectangle((left, top + third, right, bottom - third), fill=colour)
    else:
        raise ValueError(f"unknown shape {shape!r} (expected one of {', '.join(DRAWN_SHAPES)})")


def render_sample(number: int, image_size: int = 64, seed: int = 0) -> tuple[Image.Image, str, int]:
    """The number-th synthetic sample: (image, caption, label into CLASSNAMES)."""
    rng = np.random.default_rng([seed, number])
    label = int(rng.integers(len(CLASSNAMES)))
    color, shape = CLASSNAMES[label].split()
    background = tuple(int(v) for v in rng.integers(200, 256, size=3))
    image = Image.new("RGB", (image_size, image_size), background)
    draw = ImageDraw.Draw(image)
    half = image_size * rng.uniform(0.2, 0.35)
    cx, cy = rng.uniform(half, image_size - half, size=2)
    draw_shape(draw, shape, (cx - half, cy - half, cx + half, cy + half), COLORS[color])
    caption = CAPTIONS[int(rng.integers(len(CAPTIONS)))].format(CLASSNAMES[label])
    return image, caption, label


def write_synthetic_shards(directory: str | Path, num_shards: int, samples_per_shard: int,
                           image_size: int = 64, seed: int = 0, first_sample: int = 0) -> list[Path]:
    """Write `num_shards` tars of `samples_per_shard` samples each; returns their paths."""
    import webdataset as wds  # here: the demo draws shapes with this module and does not need it

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for shard in range(num_shards):
        path = directory / f"{shard:05d}.tar"
        with wds.TarWriter(str(path)) as sink:
            for offset in range(samples_per_shard):
                number = first_sample + shard * samples_per_shard + offset
                image, caption, label = render_sample(number, image_size, seed)
                jpeg = io.BytesIO()
                image.save(jpeg, format="JPEG", quality=90)
                key = f"{shard:05d}{offset:04d}"
                meta = {"key": key, "caption": caption, "status": "success", "label": label}
                sink.write({"__key__": key, "jpg": jpeg.getvalue(), "txt": caption, "json": json.dumps(meta)})
        stats = {"count": samples_per_shard, "successes": samples_per_shard, "failed_to_download": 0}
        (directory / f"{shard:05d}_stats.json").write_text(json.dumps(stats))
        paths.append(path)
    return paths
