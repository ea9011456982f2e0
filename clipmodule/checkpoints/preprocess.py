"""The eval preprocessing a checkpoint was trained with (open_clip's `preprocess_cfg`), as a torchvision transform.

Released checkpoints differ here: OpenAI's and LAION's use OpenAI's mean/std, others ImageNet's or 0.5; SigLIP
squashes instead of cropping. A folder that says so gets the transform it says; everything else gets OpenAI's.
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import functional as TF

from clipmodule.errors import ClipModuleError
from clipmodule.transforms import OPENAI_MEAN, OPENAI_STD, ToRGB

_INTERPOLATIONS = {"bicubic": T.InterpolationMode.BICUBIC, "bilinear": T.InterpolationMode.BILINEAR}
RESIZE_MODES = ("shortest", "squash", "longest")


@dataclass(frozen=True)
class Preprocess:
    """Eval transform: `resize_mode` "shortest" (resize then center crop; OpenAI's), "squash" (resize to a square,
    ignoring the aspect ratio) or "longest" (fit the longest side, pad with `fill_color`)."""

    size: int
    mean: tuple[float, ...] = OPENAI_MEAN
    std: tuple[float, ...] = OPENAI_STD
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"
    fill_color: int = 0

    def checked(self, source: str) -> Preprocess:
        if self.interpolation not in _INTERPOLATIONS:
            raise ClipModuleError(f"{source}: interpolation {self.interpolation!r} is not one of bicubic, bilinear")
        if self.resize_mode not in RESIZE_MODES:
            raise ClipModuleError(f"{source}: resize_mode {self.resize_mode!r} is not one of {', '.join(RESIZE_MODES)}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ClipModuleError(f"{source}: mean and std need 3 values each, std positive")
        return self

    def transform(self) -> T.Compose:
        mode = _INTERPOLATIONS[self.interpolation]
        if self.resize_mode == "squash":
            resize = [T.Resize((self.size, self.size), interpolation=mode)]
        elif self.resize_mode == "longest":
            resize = [FitLongestAndPad(self.size, mode, self.fill_color)]
        else:
            resize = [T.Resize(self.size, interpolation=mode), T.CenterCrop(self.size)]
        return T.Compose([*resize, ToRGB(), T.ToTensor(), T.Normalize(self.mean, self.std)])

    def train_transform(self) -> T.Compose:
        """open_clip's default training augmentation (`preprocess_train`) with this normalisation: a random crop of
        90-100% of the image resized to `size`."""
        crop = T.RandomResizedCrop(self.size, scale=(0.9, 1.0), interpolation=_INTERPOLATIONS[self.interpolation])
        return T.Compose([crop, ToRGB(), T.ToTensor(), T.Normalize(self.mean, self.std)])


class FitLongestAndPad:
    """Resize so the longest side is `size` (aspect kept), then pad the short side evenly (extra pixel right/bottom)."""

    def __init__(self, size: int, interpolation: T.InterpolationMode, fill: int):
        self.size, self.interpolation, self.fill = size, interpolation, fill

    def __call__(self, image: Image.Image) -> Image.Image:
        width, height = image.size
        ratio = max(height / self.size, width / self.size)
        new_height, new_width = round(height / ratio), round(width / ratio)
        image = TF.resize(image, [new_height, new_width], self.interpolation)
        pad_w, pad_h = max(self.size - new_width, 0), max(self.size - new_height, 0)
        image = TF.pad(image, [pad_w // 2, pad_h // 2, (pad_w + 1) // 2, (pad_h + 1) // 2], fill=self.fill)
        return TF.center_crop(image, [self.size, self.size])

    def __repr__(self) -> str:
        return f"FitLongestAndPad(size={self.size}, fill={self.fill})"
