"""Image preprocessing: OpenAI's eval transform (torchvision) and open_clip's training augmentation.

The training augmentation takes its random numbers from a generator it is given (`TrainTransform.augment`),
so a data loader can fix each sample's augmentation by a seed without touching torch's global RNG
(`torch.manual_seed` per sample cost more than the augmentation: on a CUDA build it also records a stack
trace for lazy CUDA seeding). It returns uint8 pixels; `normalize_batch` makes the float model input for a
whole batch at once.
"""

from __future__ import annotations

import math
import random

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms as T

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
_MEAN_255 = torch.tensor(OPENAI_MEAN).view(1, 3, 1, 1) * 255
_INVERSE_STD_255 = 1 / (torch.tensor(OPENAI_STD).view(1, 3, 1, 1) * 255)


class ToRGB:
    """Palette, greyscale and RGBA images become 3-channel RGB (a class, so worker processes can pickle it)."""

    def __call__(self, image: Image.Image) -> Image.Image:
        return image if image.mode == "RGB" else image.convert("RGB")

    def __repr__(self) -> str:
        return "ToRGB()"


class TrainTransform:
    """open_clip's training augmentation: a random crop of 90-100% of the image area with aspect ratio
    3/4-4/3 (torchvision's RandomResizedCrop rule: ten tries, then the largest centred crop within the
    ratios), resized bicubic to `image_size` x `image_size`."""

    def __init__(self, image_size: int, scale: tuple[float, float] = (0.9, 1.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3)):
        self.image_size, self.scale, self.ratio = image_size, scale, ratio
        self._log_ratio = (math.log(ratio[0]), math.log(ratio[1]))

    def crop_box(self, width: int, height: int, rng: random.Random) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) of the crop, drawn from `rng`."""
        area = width * height
        for _ in range(10):
            target = area * rng.uniform(*self.scale)
            aspect = math.exp(rng.uniform(*self._log_ratio))
            w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
            if 0 < w <= width and 0 < h <= height:
                top, left = rng.randint(0, height - h), rng.randint(0, width - w)
                return left, top, left + w, top + h
        aspect = width / height
        if aspect < self.ratio[0]:
            w, h = width, round(width / self.ratio[0])
        elif aspect > self.ratio[1]:
            w, h = round(height * self.ratio[1]), height
        else:
            w, h = width, height
        left, top = (width - w) // 2, (height - h) // 2
        return left, top, left + w, top + h

    def augment(self, image: Image.Image, rng: random.Random) -> torch.Tensor:
        """uint8 [3, image_size, image_size]: the crop, resized bicubic with antialiasing by torch's uint8
        kernel on the channels-last pixels: within one grey level of torchvision's `resized_crop` on a PIL
        image (crop, then PIL's bicubic resize), at 2.5-3x its speed from 256 px sources."""
        image = image if image.mode == "RGB" else image.convert("RGB")
        left, top, right, bottom = self.crop_box(image.width, image.height, rng)
        crop = torch.from_numpy(np.array(image))[top:bottom, left:right].permute(2, 0, 1)[None]
        size = (self.image_size, self.image_size)
        return F.interpolate(crop, size=size, mode="bicubic", antialias=True)[0].contiguous()

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """Normalised float [3, image_size, image_size], the crop drawn from torch's global RNG (as torchvision
        transforms do), for use as an ordinary transform."""
        rng = random.Random(int(torch.randint(0, 2**62, (1,)).item()))
        return normalize_batch(self.augment(image, rng)[None])[0]

    def __repr__(self) -> str:
        return f"TrainTransform(image_size={self.image_size}, scale={self.scale}, ratio={self.ratio})"


def normalize_batch(images: torch.Tensor, mean: tuple[float, ...] | None = None,
                    std: tuple[float, ...] | None = None) -> torch.Tensor:
    """uint8 [N, 3, H, W] -> float, scaled to [0, 1] and normalised with OpenAI's mean and std (or the given ones)."""
    # in place on the fresh float copy: the out-of-place broadcast form ran ~50x slower here (torch 2.14, CPU)
    if mean is None and std is None:
        mean, inverse_std = _MEAN_255.to(images.device), _INVERSE_STD_255.to(images.device)
    else:
        mean = torch.tensor(mean or OPENAI_MEAN).view(1, 3, 1, 1).mul(255).to(images.device)
        inverse_std = torch.tensor(std or OPENAI_STD).view(1, 3, 1, 1).mul(255).reciprocal().to(images.device)
    return images.float().sub_(mean).mul_(inverse_std)


def image_transform(image_size: int, train: bool = False) -> T.Compose | TrainTransform:
    """PIL image -> normalised float tensor [3, image_size, image_size].

    Eval: resize the shortest side (bicubic) and center-crop, as OpenAI's `preprocess`.
    Train: `TrainTransform` (random resized crop covering 90-100% of the image, as open_clip's default)."""
    if train:
        return TrainTransform(image_size)
    resize = [T.Resize(image_size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(image_size)]
    return T.Compose([*resize, ToRGB(), T.ToTensor(), T.Normalize(OPENAI_MEAN, OPENAI_STD)])
