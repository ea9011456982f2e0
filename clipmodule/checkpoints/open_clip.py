"""open_clip's config files: `open_clip_config.json` ({"model_cfg", "preprocess_cfg"}) and its model configs.

A hub folder holds that file beside `open_clip_model.safetensors` or `open_clip_pytorch_model.bin`; the state
dict keys are ours (OpenAI's names). The `model_cfg` parser is the registry's (`clipmodule.models.open_clip_config`).
"""

from __future__ import annotations

from typing import Any

from clipmodule.checkpoints.preprocess import Preprocess
from clipmodule.errors import ClipModuleError
from clipmodule.models.open_clip_config import config_from_open_clip, config_to_open_clip, uses_custom_text

CONFIG_NAME = "open_clip_config.json"
WEIGHT_NAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def preprocess_from_open_clip(preprocess_cfg: dict[str, Any], image_size: int, source: str) -> Preprocess:
    """open_clip's `preprocess_cfg` (its defaults where a key is absent) as our `Preprocess`."""
    if not isinstance(preprocess_cfg, dict):
        raise ClipModuleError(f"{source}: preprocess_cfg is not a JSON object")
    default = Preprocess(image_size)
    size = preprocess_cfg.get("size", image_size)
    size = size[0] if isinstance(size, list | tuple) and len(set(size)) == 1 else size
    if not isinstance(size, int):
        raise ClipModuleError(f"{source}: preprocess_cfg size {size!r} is not a square size")
    return Preprocess(
        size=size,
        mean=tuple(float(v) for v in preprocess_cfg.get("mean", default.mean)),
        std=tuple(float(v) for v in preprocess_cfg.get("std", default.std)),
        interpolation=preprocess_cfg.get("interpolation", default.interpolation),
        resize_mode=preprocess_cfg.get("resize_mode", default.resize_mode),
        fill_color=int(preprocess_cfg.get("fill_color", default.fill_color)),
    ).checked(source)


def preprocess_to_open_clip(preprocess: Preprocess) -> dict[str, Any]:
    return {"size": preprocess.size, "mean": list(preprocess.mean), "std": list(preprocess.std),
            "interpolation": preprocess.interpolation, "resize_mode": preprocess.resize_mode,
            "fill_color": preprocess.fill_color}


__all__ = ["CONFIG_NAME", "WEIGHT_NAMES", "config_from_open_clip", "config_to_open_clip", "preprocess_from_open_clip",
           "preprocess_to_open_clip", "uses_custom_text"]
