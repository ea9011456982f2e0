"""Image preprocessing with torchvision: OpenAI's eval transform and a light training augmentation."""

from __future__ import annotations

from PIL import Image
from torchvision import transforms as T

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


class ToRGB:
    """Palette, greyscale and RGBA images become 3-channel RGB (a class, so worker processes can pickle it)."""

    def __call__(self, image: Image.Image) -> Image.Image:
        return image if image.mode == "RGB" else image.convert("RGB")

    def __repr__(self) -> str:
        return "ToRGB()"


def image_transform(image_size: int, train: bool = False) -> T.Compose:
    """PIL image -> normalised float tensor [3, image_size, image_size].

    Eval: resize the shortest side (bicubic) and center-crop, as OpenAI's `preprocess`.
    Train: random resized crop covering 90-100% of the image, as open_clip's default."""
    if train:
        resize = [T.RandomResizedCrop(image_size, scale=(0.9, 1.0), interpolation=T.InterpolationMode.BICUBIC)]
    else:
        resize = [T.Resize(image_size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(image_size)]
    return T.Compose([*resize, ToRGB(), T.ToTensor(), T.Normalize(OPENAI_MEAN, OPENAI_STD)])
