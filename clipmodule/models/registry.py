"""The one registry of named model configs.

Names and semantics are open_clip's: its 144 `model_configs/*.json` (open_clip 3.3) ship as one data file,
`assets/open_clip_model_configs.json` (MIT, see `assets/LICENSE-open_clip.txt`), read through the one parser
(`open_clip_config`). A plain name (`ViT-B-32`, `ViT-H-14`) uses exact GELU, as the LAION/DataComp checkpoints; its
`-quickgelu` twin uses OpenAI's QuickGELU. OpenAI's own spellings (`ViT-B/32`, `ViT-L/14@336px`) mean OpenAI's
released models, i.e. the `-quickgelu` twins. Head widths other than 64 (ViT-H/g/bigG) cannot be read off a
checkpoint's weights, which is why `clipmodule.checkpoints.infer` refuses a bare state dict it cannot name. Small CPU
configs serve tests and the demo. A name whose architecture this project does not build (CoCa's captioning decoder)
is registered with its reason, and building it is refused in one line.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from pathlib import Path
from typing import Any

from clipmodule.errors import ClipModuleError
from clipmodule.models.config import CLIPConfig, TextConfig, VisionConfig
from clipmodule.models.open_clip_config import config_from_open_clip

OPEN_CLIP_CONFIGS_FILE = Path(__file__).resolve().parent.parent / "assets" / "open_clip_model_configs.json"
# Names of the released OpenAI/open_clip shapes that also get a `-quickgelu` twin where open_clip has none.
_QUICKGELU_TWINS = ("ViT-B-16-plus-240", "ViT-g-14")
# Small configs that train on a CPU in seconds (tests) or minutes (the demo); QuickGELU, as they always had.
_SMALL: dict[str, CLIPConfig] = {
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


def open_clip_model_configs() -> dict[str, dict[str, Any]]:
    """open_clip's model configs as shipped here: {name: model_cfg} (its JSON, unchanged)."""
    return json.loads(OPEN_CLIP_CONFIGS_FILE.read_text())


def _registry() -> tuple[dict[str, CLIPConfig], dict[str, str]]:
    configs: dict[str, CLIPConfig] = {}
    refused: dict[str, str] = {}
    for name, model_cfg in open_clip_model_configs().items():
        try:
            configs[name] = config_from_open_clip(model_cfg, name)
        except ClipModuleError as error:
            refused[name] = str(error)
    for name in _QUICKGELU_TWINS:
        configs.setdefault(f"{name}-quickgelu", dataclasses.replace(configs[name], quick_gelu=True))
    configs.update(_SMALL)
    return configs, refused


MODEL_CONFIGS, REFUSED_MODELS = _registry()
"""Every buildable name's config; open_clip's names that this project does not build, with the one-line reason."""

# OpenAI's released models, under the names its `clip.available_models()` gives them. The ResNets keep their
# plain names there, so only `load` of OpenAI's files (TorchScript, or its exact shapes) means QuickGELU for them.
OPENAI_MODELS = {"RN50": "RN50-quickgelu", "RN101": "RN101-quickgelu", "RN50x4": "RN50x4-quickgelu",
                 "RN50x16": "RN50x16-quickgelu", "RN50x64": "RN50x64-quickgelu", "ViT-B/32": "ViT-B-32-quickgelu",
                 "ViT-B/16": "ViT-B-16-quickgelu", "ViT-L/14": "ViT-L-14-quickgelu",
                 "ViT-L/14@336px": "ViT-L-14-336-quickgelu"}
# OpenAI's slash spellings keep meaning OpenAI's (QuickGELU) models.
ALIASES = {name: canonical for name, canonical in OPENAI_MODELS.items() if "/" in name}


def available_models() -> list[str]:
    """Every registered name (open_clip's whole zoo, our twins and small configs), sorted; `create_model` builds
    each except those in `REFUSED_MODELS`, which it refuses in one line."""
    return sorted({*MODEL_CONFIGS, *REFUSED_MODELS}, key=str.lower)


def did_you_mean(name: str) -> str:
    """" (did you mean A, B?)" with the registered names closest to `name`, or ""."""
    close = difflib.get_close_matches(name, [*available_models(), *ALIASES], n=3, cutoff=0.6)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def get_model_config(name: str, **overrides: Any) -> CLIPConfig:
    """The registered config for `name`, with top-level fields or `vision={...}`/`text={...}` replaced.

    Shortcuts: `image_size`, `patch_dropout` (vision) and `context_length` (text). Another image size for a timm
    tower is its trunk's input size too (`vision.timm_input_size`)."""
    canonical = ALIASES.get(name, name)
    if canonical in REFUSED_MODELS:
        raise ClipModuleError(f"model {name!r} is registered but not built here: {REFUSED_MODELS[canonical]}")
    if canonical not in MODEL_CONFIGS:
        raise ClipModuleError(f"unknown model name {name!r}{did_you_mean(name)}; `clipmodule models` lists all "
                              f"{len(available_models())}")
    return apply_overrides(MODEL_CONFIGS[canonical], **overrides)


def apply_overrides(config: CLIPConfig, **overrides: Any) -> CLIPConfig:
    vision = dict(overrides.pop("vision", None) or {})
    text = dict(overrides.pop("text", None) or {})
    for key in ("image_size", "patch_dropout"):
        if key in overrides:
            vision[key] = overrides.pop(key)
    if "context_length" in overrides:
        text["context_length"] = overrides.pop("context_length")
    if config.vision.timm_model_name and vision.get("image_size", config.vision.image_size) != config.vision.image_size:
        vision.setdefault("timm_input_size", vision["image_size"])  # timm builds its trunk at this size
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
