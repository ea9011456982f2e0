"""The architecture of a checkpoint, read off its weights' shapes and whatever config the file carries."""

from __future__ import annotations

import dataclasses
import math

from clipmodule.checkpoints.readers import StateDict
from clipmodule.errors import ClipModuleError
from clipmodule.models import CLIPConfig, TextConfig, VisionConfig


def infer_config(state_dict: StateDict, info: dict | None = None, quick_gelu: bool | None = None) -> CLIPConfig:
    """The architecture, read off the weights' shapes (heads assumed 64 wide unless the file says otherwise)."""
    info = info or {}
    if "config" in info:
        config = info["config"]
        return config if quick_gelu is None else dataclasses.replace(config, quick_gelu=quick_gelu)
    hf = info.get("hf_config", {})
    text_width = state_dict["ln_final.weight"].shape[0]
    text = TextConfig(
        context_length=state_dict["positional_embedding"].shape[0],
        vocab_size=state_dict["token_embedding.weight"].shape[0],
        width=text_width,
        layers=_count_blocks(state_dict, "transformer.resblocks."),
        head_width=text_width // hf.get("text_config", {}).get("num_attention_heads", text_width // 64),
        mlp_ratio=state_dict["transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / text_width,
    )
    if "visual.proj" in state_dict:
        vision = _infer_vit(state_dict, hf.get("vision_config", {}))
    else:
        vision = _infer_resnet(state_dict)
    if quick_gelu is None:
        quick_gelu = hf.get("text_config", {}).get("hidden_act", "quick_gelu") == "quick_gelu"
    logit_bias = float(state_dict["logit_bias"]) if "logit_bias" in state_dict else None
    return CLIPConfig(
        embed_dim=state_dict["text_projection"].shape[1],
        vision=vision,
        text=text,
        quick_gelu=quick_gelu,
        init_logit_bias=logit_bias,
    )


def _infer_vit(state_dict: StateDict, hf_vision: dict) -> VisionConfig:
    width, _, patch, _ = state_dict["visual.conv1.weight"].shape
    grid = math.isqrt(state_dict["visual.positional_embedding"].shape[0] - 1)
    return VisionConfig(
        image_size=grid * patch,
        layers=_count_blocks(state_dict, "visual.transformer.resblocks."),
        width=width,
        patch_size=patch,
        head_width=width // hf_vision.get("num_attention_heads", width // 64),
        mlp_ratio=state_dict["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / width,
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
