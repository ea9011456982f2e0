"""Start a run from released or earlier weights (`model.init_from`): anything `clipmodule.load` reads (OpenAI .pt or
TorchScript, an open_clip file or hub folder, a Hugging Face folder, our .safetensors, a `clipmodule fit` checkpoint,
a model name with local weights), or open_clip's released weights by name and tag (`init_from: {name: ViT-B-32,
pretrained: laion2b_s34b_b79k}`, found in the local Hugging Face cache: `clipmodule.checkpoints.pretrained`).

The architecture is the file's, as `load` decides it (`init_architecture` is load's `model=` for files that do not
say theirs). A network configured beside it (`model.model`) must be that same architecture: only the training-time
options (patch dropout, the initial logit scale/bias values the file replaces) and the image size / context length
(the file's position embeddings are then resized as open_clip does, `clipmodule.models.resize`) may differ;
anything else is refused in one line rather than loading weights into a silently different model. `--ckpt_path`
still means resume: Lightning restores the checkpoint's weights after the module is built, so the resumed weights
win.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from torch import nn

from clipmodule.errors import ClipModuleError

# Options that do not change what the weights mean: training-time only, or replaced by the loaded values.
_TRAINING_ONLY = ("init_logit_scale", "vision.patch_dropout")
# Sizes the file's weights are resized to (`models.resize`) when model.model asks for others.
_RESIZABLE = ("vision.image_size", "vision.timm_input_size", "text.context_length")


def pretrained_source(init_from: dict[str, Any]) -> tuple[str, str]:
    """(name, tag) of an `init_from: {name, pretrained}` mapping; anything else there is one line."""
    if set(init_from) != {"name", "pretrained"} or not all(isinstance(v, str) for v in init_from.values()):
        raise ClipModuleError(f"model.init_from {init_from}: a mapping must be {{name: MODEL, pretrained: TAG}} "
                              "(open_clip's released weights), else give a path")
    return init_from["name"], init_from["pretrained"]


def source_path(init_from: str | dict[str, Any]) -> Path:
    """The file or folder `init_from` names: a path, a model name's local weights (as `clipmodule.load`), or a
    {name, pretrained} tag's file in the Hugging Face cache."""
    from clipmodule.api import local_weights

    if isinstance(init_from, dict):
        from clipmodule.checkpoints.pretrained import resolve

        return resolve(*pretrained_source(init_from))[0]
    path = Path(init_from)
    if path.exists():
        return path
    return local_weights(init_from, "model.init_from reads local files only: pass a checkpoint path")


def source_sha256(path: Path) -> str:
    """sha256 of a file; of a folder, over its files' relative paths and contents (hub caches: the snapshot)."""
    from clipformats.files import sha256_file
    from clipmodule.checkpoints.readers import hub_snapshot

    if path.is_file():
        return sha256_file(path)
    folder = hub_snapshot(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        digest.update(f"{file.relative_to(folder).as_posix()}\0{sha256_file(file)}\n".encode())
    return digest.hexdigest()


def _flat(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
    return out


def architecture_difference(from_file: Any, configured: Any) -> str | None:
    """How two `CLIPConfig`s differ in what the weights mean (one line, the first few fields), or None."""
    file_fields, own_fields = _flat(from_file.to_dict()), _flat(configured.to_dict())
    for flat in (file_fields, own_fields):
        for key in (*_TRAINING_ONLY, *_RESIZABLE):
            flat.pop(key, None)
        flat["init_logit_bias"] = "present" if flat["init_logit_bias"] is not None else "absent"
    differing = [key for key in file_fields if file_fields[key] != own_fields.get(key)]
    if not differing:
        return None
    shown = ", ".join(f"{key} {file_fields[key]!r} vs {own_fields.get(key)!r}" for key in differing[:3])
    more = f" and {len(differing) - 3} more" if len(differing) > 3 else ""
    return f"{shown}{more}"


def _at_configured_size(network: nn.Module, own: Any) -> nn.Module:
    """The loaded network at model.model's image size and context length (position embeddings resized)."""
    from clipmodule.models.resize import resize_model

    return resize_model(network, image_size=own.vision.image_size, context_length=own.text.context_length)


def start_from_weights(init_from: str | dict[str, Any], architecture: str | None = None,
                       configured: nn.Module | None = None) -> tuple[nn.Module, dict[str, str]]:
    """(the network holding `init_from`'s weights, in train mode; {"path", "sha256"} to record).

    With `configured` (the network the config built), that network receives the weights after its architecture is
    checked to be the file's; without it, the network is built from the file."""
    from clipmodule.api import load

    path = source_path(init_from)
    if isinstance(init_from, dict):
        name, tag = pretrained_source(init_from)
        if architecture is not None:
            raise ClipModuleError("model.init_architecture: not with init_from {name, pretrained} (the name is it)")
        network, _ = load(name, pretrained=tag)
    else:
        network, _ = load(init_from, model=architecture)
    if configured is not None:
        own = getattr(configured, "config", None)
        difference = architecture_difference(network.config, own) if own is not None else "not a CLIP network"
        if difference:
            raise ClipModuleError(
                f"model.init_from {init_from}: its architecture differs from model.model's ({difference}; file vs "
                "config): drop model.model (model: {model: null}) to take the file's, or configure the same one")
        network = _at_configured_size(network, own)
        configured.load_state_dict(network.state_dict(), strict=True)
        if hasattr(network, "preprocess_cfg"):
            configured.preprocess_cfg = network.preprocess_cfg
        configured.pretrained = getattr(network, "pretrained", None)  # a tag's release, for the record
        network = configured
    network.train()
    record = {"path": str(path.resolve()), "sha256": source_sha256(path),
              "architecture": architecture or "from the file"}
    if isinstance(init_from, dict):
        record.update(architecture=init_from["name"], pretrained=network.pretrained["tag"],
                      repo=network.pretrained["repo"], licence=network.pretrained["licence"])
    return network, record

