"""Typed model configs and the one registry of named configs.

The named configs are the paper's model zoo (Radford et al. 2021, Table 19/20) plus small CPU configs for
tests and the demo. Every attention head is 64 wide, as in the paper, so a checkpoint's shapes determine
its config (see `clipmodule.checkpoints.infer.infer_config`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from clipmodule.errors import ClipModuleError


@dataclass(frozen=True)
class VisionConfig:
    """Image tower. `layers` as an int builds a ViT of that depth; as a 4-tuple, a ModifiedResNet."""

    image_size: int = 224
    layers: int | tuple[int, int, int, int] = 12
    width: int = 768
    patch_size: int = 32
    head_width: int = 64
    mlp_ratio: float = 4.0
    patch_dropout: float = 0.0
    """FLIP: fraction of patch tokens dropped at random during training (ViT only)."""

    @property
    def is_resnet(self) -> bool:
        return not isinstance(self.layers, int)


@dataclass(frozen=True)
class TextConfig:
    """Causal text transformer over OpenAI's BPE; the feature is taken at the end-of-text token."""

    context_length: int = 77
    vocab_size: int = 49408
    width: int = 512
    layers: int = 12
    head_width: int = 64
    mlp_ratio: float = 4.0


@dataclass(frozen=True)
class CLIPConfig:
    """A two-tower CLIP model: both towers project into a shared `embed_dim` space."""

    embed_dim: int = 512
    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    quick_gelu: bool = True
    """OpenAI's models use x * sigmoid(1.702 x); open_clip's non-`-quickgelu` names use exact GELU."""
    init_logit_scale: float = math.log(1 / 0.07)
    init_logit_bias: float | None = None
    """Set (e.g. -10.0) to add the learnable bias that the SigLIP loss needs."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CLIPConfig:
        data = dict(data)
        vision = dict(data.pop("vision", {}))
        if isinstance(vision.get("layers"), list):
            vision["layers"] = tuple(vision["layers"])
        text = dict(data.pop("text", {}))
        return cls(vision=VisionConfig(**vision), text=TextConfig(**text), **data)


def _rn(embed_dim: int, layers: tuple[int, int, int, int], width: int, image_size: int, text_width: int) -> CLIPConfig:
    return CLIPConfig(
        embed_dim=embed_dim,
        vision=VisionConfig(image_size=image_size, layers=layers, width=width),
        text=TextConfig(width=text_width),
    )


def _vit(embed_dim: int, layers: int, width: int, patch: int, image_size: int, text_width: int) -> CLIPConfig:
    return CLIPConfig(
        embed_dim=embed_dim,
        vision=VisionConfig(image_size=image_size, layers=layers, width=width, patch_size=patch),
        text=TextConfig(width=text_width),
    )


MODEL_CONFIGS: dict[str, CLIPConfig] = {
    "RN50": _rn(1024, (3, 4, 6, 3), 64, 224, 512),
    "RN101": _rn(512, (3, 4, 23, 3), 64, 224, 512),
    "RN50x4": _rn(640, (4, 6, 10, 6), 80, 288, 640),
    "RN50x16": _rn(768, (6, 8, 18, 8), 96, 384, 768),
    "RN50x64": _rn(1024, (3, 15, 36, 10), 128, 448, 1024),
    "ViT-B-32": _vit(512, 12, 768, 32, 224, 512),
    "ViT-B-16": _vit(512, 12, 768, 16, 224, 512),
    "ViT-L-14": _vit(768, 24, 1024, 14, 224, 768),
    "ViT-L-14-336": _vit(768, 24, 1024, 14, 336, 768),
    # Small configs that train on a CPU in seconds (tests) or minutes (the demo).
    "tiny-vit": CLIPConfig(
        embed_dim=64,
        vision=VisionConfig(image_size=32, layers=2, width=128, patch_size=8),
        text=TextConfig(width=128, layers=2),
    ),
    "tiny-rn": CLIPConfig(
        embed_dim=64,
        vision=VisionConfig(image_size=64, layers=(1, 1, 1, 1), width=16),
        text=TextConfig(width=128, layers=2),
    ),
    "small-vit": CLIPConfig(
        embed_dim=128,
        vision=VisionConfig(image_size=64, layers=4, width=256, patch_size=8),
        text=TextConfig(width=256, layers=4),
    ),
}

# The OpenAI `clip` package spells names with slashes and '@'; accept those too.
ALIASES = {"ViT-B/32": "ViT-B-32", "ViT-B/16": "ViT-B-16", "ViT-L/14": "ViT-L-14", "ViT-L/14@336px": "ViT-L-14-336"}


def available_models() -> list[str]:
    """Names accepted by `create_model` and `load`."""
    return list(MODEL_CONFIGS)


def get_model_config(name: str, **overrides: Any) -> CLIPConfig:
    """The registered config for `name`, with top-level fields or `vision={...}`/`text={...}` replaced.

    Shortcuts: `image_size`, `patch_dropout` (vision) and `context_length` (text)."""
    canonical = ALIASES.get(name, name)
    if canonical not in MODEL_CONFIGS:
        raise ClipModuleError(f"unknown model name {name!r}; available: {', '.join(available_models())}")
    return apply_overrides(MODEL_CONFIGS[canonical], **overrides)


def apply_overrides(config: CLIPConfig, **overrides: Any) -> CLIPConfig:
    vision = dict(overrides.pop("vision", None) or {})
    text = dict(overrides.pop("text", None) or {})
    for key in ("image_size", "patch_dropout"):
        if key in overrides:
            vision[key] = overrides.pop(key)
    if "context_length" in overrides:
        text["context_length"] = overrides.pop("context_length")
    try:
        if isinstance(vision.get("layers"), list):
            vision["layers"] = tuple(vision["layers"])
        return dataclasses.replace(
            config,
            vision=dataclasses.replace(config.vision, **vision),
            text=dataclasses.replace(config.text, **text),
            **overrides,
        )
    except TypeError as error:
        raise ClipModuleError(f"bad model override: {error}") from None
