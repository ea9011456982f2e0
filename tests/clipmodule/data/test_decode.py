"""The training augmentation: fixed by the sample's seed, drawn without torch's global RNG, open_clip's rule."""

from __future__ import annotations

import io
import random

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import functional as TF

from clipmodule.data.decode import decode_sample, sample_seed
from clipmodule.data.synthetic import render_sample
from clipmodule.transforms import OPENAI_MEAN, OPENAI_STD, TrainTransform, image_transform, normalize_batch


def _fields(number: int = 0, size: int = 64) -> dict[str, bytes]:
    image, caption, _ = render_sample(number, image_size=size)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return {"jpg": buffer.getvalue(), "txt": caption.encode()}


def test_the_same_seed_gives_the_same_pixels_and_leaves_torchs_global_rng_alone():
    transform = image_transform(32, train=True)
    seed = sample_seed(0, 1, 2, 3)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first = decode_sample(_fields(), transform, seed)["image"]
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(first, decode_sample(_fields(), transform, seed)["image"])
    assert first.dtype == torch.uint8 and first.shape == (3, 32, 32)
    others = {decode_sample(_fields(), transform, sample_seed(0, 1, 2, n))["image"].numpy().tobytes() for n in range(8)}
    assert len(others) > 1  # other samples (or epochs) get other crops


def test_sample_seeds_differ_for_every_field():
    seeds = {sample_seed(s, e, sh, n) for s in (0, 1) for e in (0, 1) for sh in (0, 1) for n in (0, 1)}
    assert len(seeds) == 16 and sample_seed(-1, 0, 0, 0) != sample_seed(0, 0, 0, 0)


def test_crops_cover_90_to_100_percent_with_ratios_in_range_and_fall_back_to_the_centre():
    transform = TrainTransform(32)
    rng = random.Random(0)
    for _ in range(300):
        left, top, right, bottom = transform.crop_box(64, 48, rng)
        width, height = right - left, bottom - top
        assert left >= 0 and top >= 0 and right <= 64 and bottom <= 48
        assert 0.85 <= width * height / (64 * 48) <= 1.0 and 3 / 4 - 0.05 <= width / height <= 4 / 3 + 0.05
    assert transform.crop_box(400, 10, rng) == (193, 0, 206, 10)  # no try fits: the widest centred 4:3 crop


def test_batch_normalisation_equals_torchvisions_per_image_transform():
    image = render_sample(5, image_size=32)[0]
    expected = T.Compose([T.ToTensor(), T.Normalize(OPENAI_MEAN, OPENAI_STD)])(image)
    pixels = torch.from_numpy(np.asarray(image).transpose(2, 0, 1).copy())
    assert torch.allclose(normalize_batch(pixels[None])[0], expected, atol=1e-5)


def test_any_torchvision_transform_still_gets_a_fixed_seed():
    transform = T.Compose([T.RandomResizedCrop(32, scale=(0.3, 1.0)), T.ToTensor()])
    image = Image.open(io.BytesIO(_fields()["jpg"]))
    assert image.size == (64, 64)
    a, b = (decode_sample(_fields(), transform, seed)["image"] for seed in (7, 7))
    assert torch.equal(a, b) and a.dtype == torch.float32


def test_the_crop_is_resized_as_torchvisions_pil_resized_crop_within_one_grey_level():
    """torchvision's RandomResizedCrop on a PIL image (open_clip's) crops, then resizes bicubic."""
    for source, size, number in ((64, 32, 1), (256, 224, 2), (300, 224, 3)):
        image = render_sample(number, image_size=source)[0].convert("RGB").crop((0, 0, source, source * 3 // 4))
        transform = TrainTransform(size)
        box = transform.crop_box(image.width, image.height, random.Random(number))
        left, top, right, bottom = box
        expected = TF.resized_crop(image, top, left, bottom - top, right - left, [size, size],
                                   T.InterpolationMode.BICUBIC)
        expected = np.asarray(expected).transpose(2, 0, 1)
        pixels = transform.augment(image, random.Random(number))
        assert pixels.dtype == torch.uint8 and pixels.shape == (3, size, size) and pixels.is_contiguous()
        assert np.abs(pixels.numpy().astype(int) - expected.astype(int)).max() <= 1
