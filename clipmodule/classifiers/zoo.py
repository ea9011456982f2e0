"""Image classifiers under mmpretrain's names, and zero-shot classifiers built from a CLIP model.

The 14 ImageNet-1k classifiers of mmpretrain's CLIP page (seeds table) are CLIP's ViT-B/32 or ViT-B/16
image trunk (class token, `ln_pre`, 12 blocks, `ln_post`; no CLIP projection, exact GELU as in timm and
mmpretrain, from which the weights were converted) with a linear head on the class token, at 224, 384
or 448 pixels. The names differ only by where the trunk's weights came from.

Both kinds share one interface, so `inference_model` and `clipmodule test` treat them alike:
`model(images) -> logits [B, C]`, `model.extract_feat(images) -> (features [B, D],)` (a tuple, as
mmpretrain's), `model.classnames`, `model.image_size`.
"""

from __future__ import annotations

import functools
import os
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from clipmodule.api import local_weights
from clipmodule.checkpoints.classifier import load_classifier_weights
from clipmodule.checkpoints.io import preprocess_of
from clipmodule.checkpoints.preprocess import Preprocess
from clipmodule.errors import ClipModuleError
from clipmodule.eval.classifier import build_zeroshot_classifier
from clipmodule.eval.prompts import Prompts, name_list, read_classnames, read_templates
from clipmodule.models import CLIP
from clipmodule.models.config import VisionConfig
from clipmodule.models.vision import VisionTransformer
from clipmodule.tokenizer import tokenize

ZERO_SHOT_LOGIT_SCALE = 100.0


@dataclass(frozen=True)
class ClassifierSpec:
    """One named classifier: a CLIP ViT-B image trunk and a linear head over `num_classes`."""

    name: str
    patch_size: int
    image_size: int
    pretrain: str
    """Where the trunk's CLIP weights came from, as the name says (documentation: the shapes are equal)."""
    num_classes: int = 1000
    width: int = 768
    layers: int = 12

    def vision_config(self) -> VisionConfig:
        return VisionConfig(image_size=self.image_size, layers=self.layers, width=self.width,
                            patch_size=self.patch_size)


# The seeds' table, in its order: (name, patch size, image size, pretraining data).
_TABLE = [
    ("vit-base-p32_clip-laion2b-in12k-pre_3rdparty_in1k", 32, 224, "LAION-2B, ImageNet-12k"),
    ("vit-base-p32_clip-laion2b-pre_3rdparty_in1k", 32, 224, "LAION-2B"),
    ("vit-base-p32_clip-openai-pre_3rdparty_in1k", 32, 224, "OpenAI"),
    ("vit-base-p32_clip-laion2b-in12k-pre_3rdparty_in1k-384px", 32, 384, "LAION-2B, ImageNet-12k"),
    ("vit-base-p32_clip-openai-in12k-pre_3rdparty_in1k-384px", 32, 384, "OpenAI, ImageNet-12k"),
    ("vit-base-p16_clip-laion2b-in12k-pre_3rdparty_in1k", 16, 224, "LAION-2B, ImageNet-12k"),
    ("vit-base-p16_clip-laion2b-pre_3rdparty_in1k", 16, 224, "LAION-2B"),
    ("vit-base-p16_clip-openai-in12k-pre_3rdparty_in1k", 16, 224, "OpenAI, ImageNet-12k"),
    ("vit-base-p16_clip-openai-pre_3rdparty_in1k", 16, 224, "OpenAI"),
    ("vit-base-p32_clip-laion2b-in12k-pre_3rdparty_in1k-448px", 32, 448, "LAION-2B, ImageNet-12k"),
    ("vit-base-p16_clip-laion2b-in12k-pre_3rdparty_in1k-384px", 16, 384, "LAION-2B, ImageNet-12k"),
    ("vit-base-p16_clip-laion2b-pre_3rdparty_in1k-384px", 16, 384, "LAION-2B"),
    ("vit-base-p16_clip-openai-in12k-pre_3rdparty_in1k-384px", 16, 384, "OpenAI, ImageNet-12k"),
    ("vit-base-p16_clip-openai-pre_3rdparty_in1k-384px", 16, 384, "OpenAI"),
]
CLASSIFIER_SPECS: dict[str, ClassifierSpec] = {name: ClassifierSpec(name, p, s, pre) for name, p, s, pre in _TABLE}


def available_classifiers() -> list[str]:
    """The names `get_model` accepts."""
    return list(CLASSIFIER_SPECS)


def imagenet_classnames() -> list[str]:
    return read_classnames("imagenet")


class CLIPImageClassifier(nn.Module):
    """CLIP's ViT image trunk with a linear head on the class token's feature."""

    def __init__(self, spec: ClassifierSpec, classnames: list[str] | None = None):
        super().__init__()
        self.spec = spec
        self.image_size = spec.image_size
        self.preprocess = Preprocess(spec.image_size)  # OpenAI's: the fine-tunes of OpenAI's CLIP this zoo names
        self.classnames = name_list(classnames) if classnames is not None else imagenet_classnames()
        if len(self.classnames) != spec.num_classes:
            raise ClipModuleError(f"{spec.name}: {spec.num_classes} classes but {len(self.classnames)} class names")
        self.backbone = VisionTransformer(spec.vision_config(), output_dim=1, quick_gelu=False)
        self.backbone.proj = None  # the head reads the class token before CLIP's projection: no such weight
        self.head = nn.Linear(spec.width, spec.num_classes)
        self.backbone.init_weights()
        nn.init.normal_(self.head.weight, std=0.01)
        nn.init.zeros_(self.head.bias)

    def extract_feat(self, images: torch.Tensor) -> tuple[torch.Tensor]:
        """(class-token feature after the final LayerNorm [B, width],)"""
        return (self.backbone.forward_features(images)[:, 0],)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.extract_feat(images)[0])


class ZeroShotClassifier(nn.Module):
    """A CLIP model whose head is the class embeddings: logits = 100 · normalised image embedding · W."""

    def __init__(self, clip: CLIP, class_embeddings: torch.Tensor, classnames: list[str]):
        super().__init__()
        if class_embeddings.shape[1] != len(classnames):
            raise ClipModuleError(f"{class_embeddings.shape[1]} class embeddings but {len(classnames)} class names")
        self.clip = clip
        self.register_buffer("class_embeddings", class_embeddings.detach().clone())
        self.classnames = name_list(classnames)
        self.image_size = clip.config.vision.image_size
        self.preprocess = preprocess_of(clip)  # the wrapped CLIP's own (its checkpoint's mean/std, resize mode)

    def extract_feat(self, images: torch.Tensor) -> tuple[torch.Tensor]:
        """(L2-normalised image embedding [B, embed_dim],)"""
        return (self.clip.encode_image(images, normalize=True),)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return ZERO_SHOT_LOGIT_SCALE * self.extract_feat(images)[0] @ self.class_embeddings.to(images.dtype)


def build_zeroshot_model(
    clip: CLIP, classnames: list[str], templates: Prompts | str = "imagenet", tokenizer=None
) -> ZeroShotClassifier:
    """A zero-shot classifier over `classnames`: per class, the mean of the normalised embeddings of every
    template filled with its name (or of the class's own prompts, given a dict), re-normalised (the paper's
    prompt ensemble). A str `templates` names a template file or list (`read_templates`)."""
    classnames = name_list(classnames)
    where = templates if isinstance(templates, str) else "templates"
    if isinstance(templates, str):
        templates = read_templates(templates)
    tokenizer = tokenizer or functools.partial(tokenize, context_length=clip.context_length, truncate=True)
    with torch.no_grad():
        weights = build_zeroshot_classifier(clip, tokenizer, classnames, templates, where=where)
    return ZeroShotClassifier(clip, weights, classnames)


def get_model(
    name: str,
    pretrained: bool | str | os.PathLike = False,
    classnames: list[str] | None = None,
    device: str | torch.device = "cpu",
) -> CLIPImageClassifier:
    """mmpretrain's `get_model`: the named classifier in eval mode.

    `pretrained=False`: random weights. `pretrained=<path>`: weights from a checkpoint file in this
    project's classifier layout, timm's or mmpretrain's, or a CLIP checkpoint (its image tower; the head
    stays random). `pretrained=True`: the local copy `$CLIPMODULE_HOME/<name>.safetensors` (or `.pth`);
    nothing is downloaded. Checkpoints are never unpickled as code."""
    if name not in CLASSIFIER_SPECS:
        raise ClipModuleError(f"unknown classifier {name!r}; available: {', '.join(available_classifiers())}")
    model = CLIPImageClassifier(CLASSIFIER_SPECS[name], classnames)
    if pretrained is True:
        pretrained = local_weights(name, "`get_model(pretrained=True)` reads local files only: pass "
                                         "pretrained=<path to a checkpoint> or pretrained=False")
    if pretrained not in (False, None) and not load_classifier_weights(model, pretrained):
        warnings.warn(f"{pretrained}: a CLIP checkpoint has no classification head; the head of {name} is random",
                      stacklevel=2)
    return model.to(device).eval()


__all__ = [
    "CLASSIFIER_SPECS",
    "CLIPImageClassifier",
    "ClassifierSpec",
    "ZeroShotClassifier",
    "available_classifiers",
    "build_zeroshot_model",
    "get_model",
]
