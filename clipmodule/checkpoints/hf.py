"""The Hugging Face `CLIPModel` layout: key renames, q/k/v split, and its config.json.

HF keeps q, k and v as three Linear layers and the projections as bias-free Linear layers (weight = our
matrix transposed); positions are an nn.Embedding. Only ViT image towers exist in HF's CLIPModel.
"""

from __future__ import annotations

import re

import torch

from clipmodule.checkpoints.preprocess import Preprocess
from clipmodule.errors import ClipModuleError
from clipmodule.models import CLIPConfig

StateDict = dict[str, torch.Tensor]

# (HF name pattern, our name pattern) for everything that is a plain rename; {i} is the layer index.
_BLOCK_RENAMES = [
    ("layer_norm1", "ln_1"),
    ("layer_norm2", "ln_2"),
    ("mlp.fc1", "mlp.c_fc"),
    ("mlp.fc2", "mlp.c_proj"),
    ("self_attn.out_proj", "attn.out_proj"),
]
_TOWERS = {"text_model.encoder.layers.": "transformer.resblocks.",
           "vision_model.encoder.layers.": "visual.transformer.resblocks."}
_PLAIN = {
    "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
    "text_model.final_layer_norm.weight": "ln_final.weight",
    "text_model.final_layer_norm.bias": "ln_final.bias",
    "vision_model.embeddings.class_embedding": "visual.class_embedding",
    "vision_model.embeddings.patch_embedding.weight": "visual.conv1.weight",
    "vision_model.pre_layrnorm.weight": "visual.ln_pre.weight",
    "vision_model.pre_layrnorm.bias": "visual.ln_pre.bias",
    "vision_model.post_layernorm.weight": "visual.ln_post.weight",
    "vision_model.post_layernorm.bias": "visual.ln_post.bias",
    "logit_scale": "logit_scale",
}
_POSITIONS = {
    "text_model.embeddings.position_embedding.weight": "positional_embedding",
    "vision_model.embeddings.position_embedding.weight": "visual.positional_embedding",
}
_PROJECTIONS = {"text_projection.weight": "text_projection", "visual_projection.weight": "visual.proj"}
_BLOCK_KEY = re.compile(r"^(text_model\.encoder\.layers\.|vision_model\.encoder\.layers\.)(\d+)\.(.+)$")


def hf_to_openai(state_dict: StateDict) -> StateDict:
    """HF `CLIPModel` state dict -> our (OpenAI) layout."""
    out: StateDict = {}
    qkv: dict[tuple[str, str, str], torch.Tensor] = {}
    for key, value in state_dict.items():
        if key in _PLAIN:
            out[_PLAIN[key]] = value
        elif key in _POSITIONS:
            out[_POSITIONS[key]] = value
        elif key in _PROJECTIONS:
            out[_PROJECTIONS[key]] = value.t()
        elif match := _BLOCK_KEY.match(key):
            tower, index, rest = match.groups()
            prefix = f"{_TOWERS[tower]}{index}."
            if rest.startswith(("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")):
                projection, kind = rest.split(".")[1:]
                qkv[(prefix, kind, projection[0])] = value
                continue
            for hf_name, our_name in _BLOCK_RENAMES:
                if rest.startswith(hf_name + "."):
                    out[prefix + our_name + rest[len(hf_name):]] = value
                    break
            else:
                raise ClipModuleError(f"unknown key in Hugging Face checkpoint: {key}")
        else:
            raise ClipModuleError(f"unknown key in Hugging Face checkpoint: {key}")
    for prefix, kind in sorted({(prefix, kind) for prefix, kind, _ in qkv}):
        name = "in_proj_weight" if kind == "weight" else "in_proj_bias"
        out[f"{prefix}attn.{name}"] = torch.cat([qkv[(prefix, kind, part)] for part in "qkv"])
    return out


def openai_to_hf(state_dict: StateDict, config: CLIPConfig) -> StateDict:
    """Our (OpenAI) layout -> HF `CLIPModel` state dict (ViT towers only)."""
    reverse_plain = {ours: theirs for theirs, ours in _PLAIN.items()}
    reverse_positions = {ours: theirs for theirs, ours in _POSITIONS.items()}
    reverse_projections = {ours: theirs for theirs, ours in _PROJECTIONS.items()}
    reverse_towers = {ours: theirs for theirs, ours in _TOWERS.items()}
    out: StateDict = {}
    for key, value in state_dict.items():
        if key in reverse_plain:
            out[reverse_plain[key]] = value
        elif key in reverse_positions:
            out[reverse_positions[key]] = value
        elif key in reverse_projections:
            out[reverse_projections[key]] = value.t().contiguous()
        elif key == "logit_bias":
            raise ClipModuleError("Hugging Face CLIPModel has no logit_bias (a SigLIP-loss model); export it as openai")
        else:
            tower = "visual.transformer.resblocks." if key.startswith("visual.") else "transformer.resblocks."
            index, rest = key[len(tower):].split(".", 1)
            prefix = f"{reverse_towers[tower]}{index}."
            if rest.startswith("attn.in_proj_"):
                kind = "weight" if rest.endswith("weight") else "bias"
                for part, chunk in zip("qkv", value.chunk(3)):
                    out[f"{prefix}self_attn.{part}_proj.{kind}"] = chunk.contiguous()
                continue
            for hf_name, our_name in _BLOCK_RENAMES:
                if rest.startswith(our_name + "."):
                    out[prefix + hf_name + rest[len(our_name):]] = value
                    break
    return out


def hf_config_dict(config: CLIPConfig) -> dict:
    """config.json for `transformers.CLIPModel.from_pretrained` describing the same architecture."""
    activation = "quick_gelu" if config.quick_gelu else "gelu"
    text, vision = config.text, config.vision
    return {
        "architectures": ["CLIPModel"],
        "model_type": "clip",
        "projection_dim": config.embed_dim,
        "logit_scale_init_value": config.init_logit_scale,
        "text_config": {
            "model_type": "clip_text_model",
            "hidden_size": text.width,
            "intermediate_size": int(text.width * text.mlp_ratio),
            "num_attention_heads": text.width // text.head_width,
            "num_hidden_layers": text.layers,
            "max_position_embeddings": text.context_length,
            "vocab_size": text.vocab_size,
            "hidden_act": activation,
            "layer_norm_eps": 1e-5,
            "bos_token_id": 49406,
            "eos_token_id": 49407,
            "pad_token_id": 1,
            "projection_dim": config.embed_dim,
        },
        "vision_config": {
            "model_type": "clip_vision_model",
            "hidden_size": vision.width,
            "intermediate_size": int(vision.width * vision.mlp_ratio),
            "num_attention_heads": vision.width // vision.head_width,
            "num_hidden_layers": vision.layers,
            "image_size": vision.image_size,
            "patch_size": vision.patch_size,
            "num_channels": 3,
            "hidden_act": activation,
            "layer_norm_eps": 1e-5,
            "projection_dim": config.embed_dim,
        },
    }


def hf_preprocessor_dict(preprocess: Preprocess, source: str) -> dict:
    """`preprocessor_config.json` for `CLIPImageProcessor.from_pretrained`: resize the shortest side and centre-crop
    (OpenAI's), or resize to the square without a crop (squash). open_clip's "longest" (fit and pad) has no
    CLIPImageProcessor form: refused, pointing to open_clip's layout."""
    resample = {"bilinear": 2, "bicubic": 3}[preprocess.interpolation]
    if preprocess.resize_mode == "longest":
        raise ClipModuleError(f"{source}: its preprocessing fits the longest side and pads, which transformers' "
                              "CLIPImageProcessor cannot say; export as open_clip (its preprocess_cfg records it)")
    squash = preprocess.resize_mode == "squash"
    size = {"height": preprocess.size, "width": preprocess.size} if squash else {"shortest_edge": preprocess.size}
    return {"image_processor_type": "CLIPImageProcessor", "do_resize": True, "size": size, "resample": resample,
            "do_center_crop": not squash, "crop_size": {"height": preprocess.size, "width": preprocess.size},
            "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": list(preprocess.mean),
            "image_std": list(preprocess.std), "do_convert_rgb": True}
