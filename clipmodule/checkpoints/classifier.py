"""Read and write the weights of `CLIPImageClassifier`s.

A checkpoint may be in one of four layouts, told apart by their keys:

    this project's   backbone.conv1.weight, backbone.transformer.resblocks.0.attn.in_proj_weight, head.weight
    timm's           patch_embed.proj.weight, blocks.0.attn.qkv.weight, norm_pre.*, norm.*, head.weight
    mmpretrain's     backbone.patch_embed.projection.weight, backbone.layers.0.ffn.layers.0.0.weight,
                     backbone.pre_norm.*, backbone.ln1.*, head.layers.head.weight  (timm's keys renamed)
    a CLIP model's   visual.* (its image tower: the trunk loads, the classifier's head keeps its init)

Files are read with `clipmodule.checkpoints.readers` (safetensors, torch.load(weights_only=True), or TorchScript
archives read without running them), so a file that would need to run pickled code is refused; integer or
non-finite weights are refused by `io.checked_weights`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from clipformats.files import atomic_path
from clipmodule.checkpoints.io import load_state_dict_checked
from clipmodule.checkpoints.readers import read_safetensors, read_torch_file
from clipmodule.errors import ClipModuleError

StateDict = dict[str, torch.Tensor]
_WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.")
# mmpretrain -> timm: the inverse of mmpretrain's tools/model_converters/clip_to_mmpretrain.py renaming.
_MMPRETRAIN_TO_TIMM = [
    (r"^head\.layers\.head\.", "head."),
    (r"^backbone\.patch_embed\.projection\.", "patch_embed.proj."),
    (r"^backbone\.pre_norm\.", "norm_pre."),
    (r"^backbone\.ln1\.", "norm."),
    (r"^backbone\.layers\.(\d+)\.ln1\.", r"blocks.\1.norm1."),
    (r"^backbone\.layers\.(\d+)\.ln2\.", r"blocks.\1.norm2."),
    (r"^backbone\.layers\.(\d+)\.ffn\.layers\.0\.0\.", r"blocks.\1.mlp.fc1."),
    (r"^backbone\.layers\.(\d+)\.ffn\.layers\.1\.", r"blocks.\1.mlp.fc2."),
    (r"^backbone\.layers\.", "blocks."),
    (r"^backbone\.", ""),
]
# timm -> this project (OpenAI's names under `backbone.`).
_TIMM_TO_OURS = [
    (r"^cls_token$", "backbone.class_embedding"),
    (r"^pos_embed$", "backbone.positional_embedding"),
    (r"^patch_embed\.proj\.weight$", "backbone.conv1.weight"),
    (r"^norm_pre\.", "backbone.ln_pre."),
    (r"^norm\.", "backbone.ln_post."),
    (r"^blocks\.(\d+)\.norm1\.", r"backbone.transformer.resblocks.\1.ln_1."),
    (r"^blocks\.(\d+)\.norm2\.", r"backbone.transformer.resblocks.\1.ln_2."),
    (r"^blocks\.(\d+)\.attn\.qkv\.(weight|bias)$", r"backbone.transformer.resblocks.\1.attn.in_proj_\2"),
    (r"^blocks\.(\d+)\.attn\.proj\.", r"backbone.transformer.resblocks.\1.attn.out_proj."),
    (r"^blocks\.(\d+)\.mlp\.fc1\.", r"backbone.transformer.resblocks.\1.mlp.c_fc."),
    (r"^blocks\.(\d+)\.mlp\.fc2\.", r"backbone.transformer.resblocks.\1.mlp.c_proj."),
]


def read_state_dict(path: str | Path) -> StateDict:
    """The tensors of a .safetensors or torch file (wrappers such as `state_dict` and `module.` removed)."""
    path = Path(path)
    if not path.is_file():
        raise ClipModuleError(f"{path}: no such checkpoint file")
    state_dict = read_safetensors(path)[0] if path.suffix == ".safetensors" else read_torch_file(path)
    out = {}
    for key, value in state_dict.items():
        for prefix in _WRAPPER_PREFIXES:
            key = key[len(prefix):] if key.startswith(prefix) else key
        out[key] = value
    return out


def _rename(state_dict: StateDict, rules: list[tuple[str, str]]) -> StateDict:
    out = {}
    for key, value in state_dict.items():
        for pattern, replacement in rules:
            new_key, count = re.subn(pattern, replacement, key)
            if count:
                key = new_key
                break
        out[key] = value
    return out


def detect_layout(state_dict: StateDict) -> str:
    """"clipmodule", "timm", "mmpretrain" or "clip", from the keys; anything else is an error."""
    if "backbone.conv1.weight" in state_dict:
        return "clipmodule"
    if "backbone.patch_embed.projection.weight" in state_dict:
        return "mmpretrain"
    if "patch_embed.proj.weight" in state_dict:
        return "timm"
    if "visual.conv1.weight" in state_dict:
        return "clip"
    return "unknown"


def to_classifier_layout(state_dict: StateDict, source: str) -> tuple[StateDict, bool]:
    """(state dict in this project's layout, whether it holds a head) from any supported layout."""
    layout = detect_layout(state_dict)
    if layout == "unknown":
        raise ClipModuleError(
            f"{source}: not a ViT classifier checkpoint (no backbone.conv1, patch_embed.proj, "
            "backbone.patch_embed.projection or visual.conv1 weights)"
        )
    if layout == "clip":
        trunk = {f"backbone.{key[len('visual.'):]}": value for key, value in state_dict.items()
                 if key.startswith("visual.") and key != "visual.proj"}
        return trunk, False
    if layout == "mmpretrain":
        state_dict = {key: value for key, value in state_dict.items() if not key.startswith("data_preprocessor.")}
        state_dict, layout = _rename(state_dict, _MMPRETRAIN_TO_TIMM), "timm"
    if layout == "timm":
        state_dict = _rename(state_dict, _TIMM_TO_OURS)
        for key in ("backbone.class_embedding", "backbone.positional_embedding"):
            if key in state_dict and state_dict[key].dim() == 3:  # timm keeps a leading batch axis of 1
                state_dict[key] = state_dict[key].reshape(state_dict[key].shape[-2:]).squeeze(0)
    return state_dict, "head.weight" in state_dict


def load_classifier_weights(model: torch.nn.Module, path: str | Path) -> bool:
    """Loads `path` into `model` (strict: every weight must fit, with a one-line error if not).

    Returns False when the file is a CLIP checkpoint, whose image tower fills only the trunk."""
    state_dict, has_head = to_classifier_layout(read_state_dict(path), str(path))
    if has_head:
        load_state_dict_checked(model, state_dict, str(path))
    else:
        trunk = {key[len("backbone."):]: value for key, value in state_dict.items()}
        load_state_dict_checked(model.backbone, trunk, str(path))
    return has_head


def save_classifier(model: torch.nn.Module, path: str | Path) -> Path:
    """Writes a classifier's weights as .safetensors (temp file + rename), its name in the metadata."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state_dict = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    metadata = {"clipmodule_classifier": json.dumps({"name": model.spec.name, "classes": len(model.classnames)})}
    with atomic_path(path) as tmp:
        save_file(state_dict, str(tmp), metadata=metadata)
    return path
