"""mmpretrain's `inference_model`: predict the class of one image, or of a list of images.

    from clipmodule import inference_model
    result = inference_model("vit-base-p32_clip-openai-pre_3rdparty_in1k", "bird.jpg", pretrained="weights.pth")
    result["pred_class"], result["pred_score"]

The model is a classifier name (`get_model`), a classifier (`CLIPImageClassifier`, `ZeroShotClassifier`), or
a CLIP model together with `classnames` (a zero-shot classifier is built with the prompt templates).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from clipmodule.classifiers.zoo import build_zeroshot_model, get_model
from clipmodule.errors import ClipModuleError
from clipmodule.eval.prompts import name_list
from clipmodule.eval.readers import load_image
from clipmodule.models import CLIP
from clipmodule.transforms import image_transform

ImageInput = str | os.PathLike | np.ndarray | Image.Image


def _to_pil(image: ImageInput) -> Image.Image:
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3):
            raise ClipModuleError(f"image array must be uint8 HxW or HxWxC (RGB), got {image.dtype} {image.shape}")
        return load_image(Image.fromarray(image))
    if isinstance(image, (str, os.PathLike)):
        return load_image(Path(image))
    if isinstance(image, Image.Image):
        return load_image(image)
    raise ClipModuleError(f"cannot read an image from a {type(image).__name__}")


def _as_classifier(model: Any, classnames: Sequence[str] | None, templates: str | Sequence[str],
                   pretrained: bool | str | os.PathLike, device: str | torch.device) -> torch.nn.Module:
    names = None if classnames is None else name_list(classnames)
    if isinstance(model, str):
        return get_model(model, pretrained=pretrained, classnames=names or None, device=device)
    if isinstance(model, CLIP):
        if not names:
            raise ClipModuleError("a CLIP model classifies zero-shot: pass classnames=[...]")
        return build_zeroshot_model(model.to(device).eval(), names, templates)
    if not (hasattr(model, "extract_feat") and hasattr(model, "classnames")):
        raise ClipModuleError(f"{type(model).__name__} is not a classifier (no extract_feat/classnames)")
    return model


def classifier_transform(classifier: Any) -> Any:
    """The classifier's eval transform: its `preprocess` (a zero-shot classifier's is its CLIP's: the checkpoint's
    mean/std and resize mode), else OpenAI's at its `image_size` (resize the short side, centre-crop)."""
    preprocess = getattr(classifier, "preprocess", None)
    return preprocess.transform() if preprocess is not None else image_transform(classifier.image_size)


@torch.no_grad()
def inference_model(
    model: Any,
    images: ImageInput | list[ImageInput],
    classnames: Sequence[str] | None = None,
    templates: str | Sequence[str] = "imagenet",
    pretrained: bool | str | os.PathLike = True,
    device: str | torch.device | None = None,
) -> dict[str, Any] | list[dict[str, Any]]:
    """{pred_label, pred_score, pred_class, pred_scores} for an image (a list of them for a list).

    Images are paths, RGB uint8 arrays (H×W×3, as skimage and PIL give them) or PIL images; they are
    preprocessed as the classifier's CLIP was trained (`classifier_transform`).
    `pretrained` matters only for a name (see `get_model`); as in mmpretrain it defaults to True, which
    reads a local copy and never downloads."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    classifier = _as_classifier(model, classnames, templates, pretrained, device).eval()
    parameter = next(classifier.parameters())
    single = not isinstance(images, list)
    preprocess = classifier_transform(classifier)
    batch = torch.stack([preprocess(_to_pil(image)) for image in ([images] if single else images)])
    probabilities = classifier(batch.to(parameter.device, parameter.dtype)).float().softmax(dim=-1).cpu()
    results = []
    for row in probabilities:
        label = int(row.argmax())
        results.append({"pred_label": label, "pred_score": float(row[label]),
                        "pred_class": classifier.classnames[label], "pred_scores": row.numpy()})
    return results[0] if single else results
