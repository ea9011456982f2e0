"""The one shape renderer and the samples drawn with it; the label rule as training reads it."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from clipmodule.data.datamodule import decode_sample
from clipmodule.data.synthetic import DRAWN_SHAPES, draw_shape, render_sample
from clipmodule.transforms import image_transform


def _drawn(shape: str) -> np.ndarray:
    image = Image.new("RGB", (30, 30), "white")
    draw_shape(ImageDraw.Draw(image), shape, (3, 3, 26, 26), (200, 0, 0))
    return (np.asarray(image) == (200, 0, 0)).all(axis=2)


def test_each_shape_fills_its_own_part_of_the_box_and_nothing_outside_it():
    masks = {shape: _drawn(shape) for shape in DRAWN_SHAPES}
    for shape, mask in masks.items():
        assert mask.any() and not mask[:3].any() and not mask[27:].any() and not mask[:, :3].any(), shape
    assert masks["square"][3, 3] and not masks["circle"][3, 3] and not masks["cross"][3, 3]
    assert masks["triangle"][26, 4] and not masks["triangle"][4, 4] and masks["cross"][15, 4]
    assert len({mask.tobytes() for mask in masks.values()}) == len(DRAWN_SHAPES)
    with pytest.raises(ValueError, match="unknown shape 'star'"):
        _drawn("star")


def test_training_reads_the_cls_or_json_label_and_skips_a_garbage_label():
    image, caption, label = render_sample(3, image_size=32)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    sample = {"png": buffer.getvalue(), "txt": caption.encode()}
    transform = image_transform(32, train=False)
    assert decode_sample({**sample, "json": f'{{"label": {label}}}'.encode()}, transform, 0)["label"] == label
    assert decode_sample({**sample, "cls": b"5"}, transform, 0)["label"] == 5
    assert decode_sample(sample, transform, 0)["label"] == -1
    assert decode_sample({**sample, "cls": b"five"}, transform, 0) is None
