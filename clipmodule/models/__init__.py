"""The model zoo: one registry of named configs (`registry.MODEL_CONFIGS`) and the modules they build."""

from __future__ import annotations

from typing import Any

from torch import nn

from clipmodule.models.clip import CLIP
from clipmodule.models.config import CLIPConfig, TextConfig, VisionConfig
from clipmodule.models.registry import MODEL_CONFIGS, REFUSED_MODELS, available_models, get_model_config


def create_model(name: str, **overrides: Any) -> CLIP:
    """A randomly initialised CLIP model from a registered name, e.g. `create_model("ViT-B-32")`."""
    return CLIP(get_model_config(name, **overrides))


def count_parameters(model: nn.Module) -> int:
    """Every parameter's elements, trainable or not (the number the paper's and open_clip's tables give)."""
    return sum(parameter.numel() for parameter in model.parameters())


__all__ = [
    "CLIP",
    "CLIPConfig",
    "MODEL_CONFIGS",
    "REFUSED_MODELS",
    "TextConfig",
    "VisionConfig",
    "available_models",
    "count_parameters",
    "create_model",
    "get_model_config",
]
