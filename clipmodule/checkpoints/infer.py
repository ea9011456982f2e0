"""The architecture of a checkpoint: from the config it carries, the name the user gives, or, only where that is
unambiguous, its weights' shapes.

Shapes give depths, widths, patch and image size, but not how a width splits into attention heads (ViT-H's 1280
is 16 heads of 80, not 20 of 64) nor the activation (open_clip's plain models use GELU, OpenAI's QuickGELU).
So a bare state dict is accepted only when its shapes are exactly one of OpenAI's released models (OpenAI's
architecture: QuickGELU, 64-wide heads), as is a TorchScript archive (only OpenAI released those); anything else
is refused with the registered names that fit. Order: `model=` > the file's own config > OpenAI's shapes.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

from clipmodule.checkpoints.open_clip import config_from_open_clip
from clipmodule.checkpoints.readers import StateDict
from clipmodule.errors import ClipModuleError
from clipmodule.models import MODEL_CONFIGS, CLIPConfig, TextConfig, VisionConfig, get_model_config
from clipmodule.models.registry import ALIASES, OPENAI_MODELS


def resolve_config(state_dict: StateDict, info: dict, source: str, model: str | None = None,
                   quick_gelu: bool | None = None) -> CLIPConfig:
    """The config to build for these weights (see the module docstring for the order); `quick_gelu` overrides."""
    try:
        config = _resolve(state_dict, info, source, model, quick_gelu)
    except KeyError as error:
        raise ClipModuleError(f"{source}: incomplete CLIP checkpoint (no {error.args[0]})") from None
    return config if quick_gelu is None else dataclasses.replace(config, quick_gelu=quick_gelu)


def _resolve(state_dict: StateDict, info: dict, source: str, model: str | None, quick_gelu: bool | None) -> CLIPConfig:
    if model is not None:
        config = config_for(model)
    elif "config" in info:
        config = info["config"]
    elif "open_clip_config" in info:
        config = config_from_open_clip(info["open_clip_config"], info.get("source", source))
    elif "hf_config" in info:
        config = _from_hf(state_dict, info["hf_config"], info.get("source", source))
    else:
        config = _from_shapes(state_dict, source, info.get("torchscript", False), quick_gelu)
    return config


def config_for(model: str) -> CLIPConfig:
    """A registered name (or OpenAI spelling), or a JSON file: open_clip_config.json, an open_clip model config
    (`model_configs/*.json`) or our `CLIPConfig.to_dict()`."""
    if model in MODEL_CONFIGS or model in ALIASES:
        return get_model_config(model)
    path = Path(model)
    if path.suffix != ".json" or not path.is_file():
        return get_model_config(model)  # the one-line "unknown model name" error with the list
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ClipModuleError(f"{path}: malformed JSON ({error})") from None
    if isinstance(data, dict) and "model_cfg" in data:
        return config_from_open_clip(data["model_cfg"], str(path))
    if isinstance(data, dict) and "vision_cfg" in data:
        return config_from_open_clip(data, str(path))
    if isinstance(data, dict) and "vision" in data:
        try:
            return CLIPConfig.from_dict(data)
        except TypeError as error:
            raise ClipModuleError(f"{path}: not a clipmodule config ({error})") from None
    raise ClipModuleError(f"{path}: neither an open_clip config (model_cfg / vision_cfg) nor a clipmodule config")


def _from_shapes(state_dict: StateDict, source: str, torchscript: bool, quick_gelu: bool | None) -> CLIPConfig:
    if "text_projection.weight" in state_dict or any(key.startswith(("visual.trunk.", "text.transformer."))
                                                     for key in state_dict):
        raise ClipModuleError(f"{source}: a bare state dict of a timm, SigLIP or Hugging Face text tower model does "
                              "not say its tower models, pooling or text options; pass model=NAME / --model NAME "
                              "(e.g. ViT-B-16-SigLIP) or its open_clip_config.json")
    shapes = infer_shapes(state_dict)
    if torchscript:
        return shapes  # OpenAI's build: heads 64 wide, QuickGELU (what `infer_shapes` assumes)
    key = _shape_key(shapes)
    for name in OPENAI_MODELS.values():
        if _shape_key(MODEL_CONFIGS[name]) == key:
            return MODEL_CONFIGS[name]
    fits = [name for name, config in MODEL_CONFIGS.items()
            if config.vision.timm_model_name is None and config.text.hf_model_name is None
            and _shape_key(config) == key]
    if quick_gelu is not None:
        chosen = [name for name in fits if MODEL_CONFIGS[name].quick_gelu == quick_gelu]
        if len(chosen) == 1:
            return MODEL_CONFIGS[chosen[0]]
    hint = f" (its shapes fit {', '.join(fits)})" if fits else ""
    raise ClipModuleError(
        f"{source}: a bare state dict does not say its attention head width or its activation (GELU or QuickGELU), "
        f"and its shapes are not one of OpenAI's released models{hint}; say which architecture it is: "
        f"load(..., model=NAME) / --model NAME, or a config file (open_clip_config.json beside it, model=CONFIG.json)"
    )


def _shape_key(config: CLIPConfig) -> tuple:
    """What the weights' shapes determine: everything but head widths, activation and init-only values."""
    vision, text = config.vision, config.text
    return (config.embed_dim, config.init_logit_bias is not None, vision.image_size, vision.layers, vision.width,
            None if vision.is_resnet else vision.patch_size, int(vision.width * vision.mlp_ratio),
            vision.ls_init_value is not None, text.context_length, text.vocab_size, text.width, text.layers,
            int(text.width * text.mlp_ratio), text.ls_init_value is not None, vision.ln_pre, text.proj_type)


def infer_shapes(state_dict: StateDict) -> CLIPConfig:
    """The config the shapes give under OpenAI's assumptions (64-wide heads, QuickGELU)."""
    text_width = state_dict["ln_final.weight"].shape[0]
    text = TextConfig(
        context_length=state_dict["positional_embedding"].shape[0],
        vocab_size=state_dict["token_embedding.weight"].shape[0],
        width=text_width,
        layers=_count_blocks(state_dict, "transformer.resblocks."),
        mlp_ratio=_mlp_ratio(state_dict, "transformer.resblocks.0.", text_width),
        ls_init_value=_layer_scale(state_dict, "transformer.resblocks.0."),
    )
    vision = _infer_vit(state_dict) if "visual.proj" in state_dict else _infer_resnet(state_dict)
    logit_bias = float(state_dict["logit_bias"]) if "logit_bias" in state_dict else None
    return CLIPConfig(embed_dim=state_dict["text_projection"].shape[1], vision=vision, text=text,
                      quick_gelu=True, init_logit_bias=logit_bias)


def _from_hf(state_dict: StateDict, hf: dict, source: str) -> CLIPConfig:
    """transformers' CLIPConfig: absent values are its defaults (8 text heads, 12 vision heads, quick_gelu)."""
    if hf.get("model_type", "clip") != "clip":
        raise ClipModuleError(f"{source}: model_type {hf.get('model_type')!r} is not supported (only 'clip')")
    text_hf, vision_hf = hf.get("text_config") or {}, hf.get("vision_config") or {}
    activations = {text_hf.get("hidden_act", "quick_gelu"), vision_hf.get("hidden_act", "quick_gelu")}
    if not activations <= {"quick_gelu", "gelu"} or len(activations) != 1:
        raise ClipModuleError(f"{source}: hidden_act {sorted(activations)} is not one of quick_gelu or gelu for both")
    shapes = infer_shapes(state_dict)
    text_heads, vision_heads = text_hf.get("num_attention_heads", 8), vision_hf.get("num_attention_heads", 12)
    if shapes.text.width % text_heads or shapes.vision.width % vision_heads:
        raise ClipModuleError(f"{source}: num_attention_heads does not divide the widths in the weights")
    return dataclasses.replace(
        shapes,
        quick_gelu=activations == {"quick_gelu"},
        text=dataclasses.replace(shapes.text, head_width=shapes.text.width // text_heads),
        vision=dataclasses.replace(shapes.vision, head_width=shapes.vision.width // vision_heads),
    )


def _mlp_ratio(state_dict: StateDict, block: str, width: int) -> float:
    hidden = state_dict[f"{block}mlp.c_fc.weight"].shape[0]
    ratio = hidden / width
    return ratio if int(width * ratio) == hidden else (hidden + 0.5) / width  # int() must give `hidden` back


def _layer_scale(state_dict: StateDict, block: str) -> float | None:
    gamma = state_dict.get(f"{block}ls_1.gamma")
    return None if gamma is None else 1e-5  # an init value only: the loaded gamma replaces it


def _infer_vit(state_dict: StateDict) -> VisionConfig:
    width, _, patch, _ = state_dict["visual.conv1.weight"].shape
    grid = math.isqrt(state_dict["visual.positional_embedding"].shape[0] - 1)
    return VisionConfig(
        image_size=grid * patch,
        layers=_count_blocks(state_dict, "visual.transformer.resblocks."),
        width=width,
        patch_size=patch,
        mlp_ratio=_mlp_ratio(state_dict, "visual.transformer.resblocks.0.", width),
        ls_init_value=_layer_scale(state_dict, "visual.transformer.resblocks.0."),
    )


def _infer_resnet(state_dict: StateDict) -> VisionConfig:
    if "visual.layer1.0.conv1.weight" not in state_dict:
        raise ClipModuleError("checkpoint has neither a ViT (visual.proj) nor a ModifiedResNet (visual.layer1) tower")
    layers = tuple(_count_blocks(state_dict, f"visual.layer{index}.") for index in range(1, 5))
    spatial = math.isqrt(state_dict["visual.attnpool.positional_embedding"].shape[0] - 1)
    width = state_dict["visual.layer1.0.conv1.weight"].shape[0]
    return VisionConfig(image_size=spatial * 32, layers=layers, width=width)


def _count_blocks(state_dict: StateDict, prefix: str) -> int:
    return len({key[len(prefix):].split(".")[0] for key in state_dict if key.startswith(prefix)})
