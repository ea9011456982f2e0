"""One sample's fields -> image tensor, caption and label, with its augmentation fixed by a seed.

A training sample's seed is its place in the data: (run seed, epoch, shard, sample number), so the same
sample gets the same augmentation however the run was interrupted, resumed or split over workers. The seed
feeds a `random.Random` that the transform draws from (a few microseconds), never torch's global RNG.
"""

from __future__ import annotations

import hashlib
import io
import random
from collections.abc import Callable
from typing import Any

import torch
from PIL import Image

from clipformats.webdataset import image_field, sample_label

_MASK32, _MASK64 = (1 << 32) - 1, (1 << 64) - 1


def sample_seed(seed: int, epoch: int, shard: int, sample: int) -> int:
    """A distinct integer for each (seed, epoch, shard, sample): the fields packed side by side."""
    return ((seed & _MASK64) << 96) | ((epoch & _MASK32) << 64) | ((shard & _MASK32) << 32) | (sample & _MASK32)


def decode_sample(fields: dict[str, bytes], transform: Callable, seed: int | None) -> dict[str, Any] | None:
    """Image tensor, caption and label (-1 if none) of one sample; None if it lacks an image, the image does
    not decode or its label is not an integer (the shard contract's rules). `seed` fixes the random
    augmentation (None: the transform is deterministic), so a resumed run repeats it exactly.

    A transform with `augment(image, rng)` (`clipmodule.transforms.TrainTransform`) draws from a
    `random.Random(seed)` and returns uint8 pixels; any other transform runs with torch's CPU generator
    seeded and then restored."""
    name = image_field(fields)
    try:
        label = sample_label(fields)
    except ValueError:
        return None
    if name is None:
        return None
    try:
        with Image.open(io.BytesIO(fields[name])) as image:
            image.load()
            image = image if image.mode == "RGB" else image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError):
        return None
    if seed is None:
        pixels = transform(image)
    elif hasattr(transform, "augment"):
        pixels = transform.augment(image, random.Random(seed))
    else:
        pixels = _seeded(transform, image, seed)
    text = fields["txt"].decode("utf-8", errors="replace").strip() if "txt" in fields else ""
    return {"image": pixels, "text": text, "label": -1 if label is None else label}


def _seeded(transform: Callable, image: Image.Image, seed: int) -> Any:
    """A torchvision-style transform (global RNG) run under `seed`, the caller's RNG state left as it was.
    The default generator is seeded directly: `torch.manual_seed` would also seed every accelerator."""
    generator = torch.default_generator
    state = generator.get_state()
    generator.manual_seed(int.from_bytes(hashlib.blake2b(seed.to_bytes(24, "big"), digest_size=8).digest(), "big"))
    try:
        return transform(image)
    finally:
        generator.set_state(state)
