"""Load a CLIP model from any checkpoint `readers` understands, and write one in OpenAI, open_clip or HF layout."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from clipmodule.checkpoints.hf import hf_config_dict, openai_to_hf
from clipmodule.checkpoints.infer import infer_config
from clipmodule.checkpoints.readers import StateDict, read_checkpoint
from clipmodule.errors import ClipModuleError
from clipmodule.models import CLIP, CLIPConfig
from curation.formats.files import atomic_path, write_text

FORMATS = ("openai", "open_clip", "hf")


def load_state_dict_checked(model: CLIP, state_dict: StateDict, source: str) -> None:
    """`model.load_state_dict(strict=True)`, with a one-line error saying how the weights do not fit."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mismatched = [key for key in expected if key in state_dict and expected[key].shape != state_dict[key].shape]
    if missing or unexpected or mismatched:
        parts = []
        if mismatched:
            key = mismatched[0]
            parts.append(f"{len(mismatched)} shape mismatches (e.g. {key}: checkpoint "
                         f"{tuple(state_dict[key].shape)} vs model {tuple(expected[key].shape)})")
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        raise ClipModuleError(f"{source}: weights do not fit this architecture: {'; '.join(parts)}")
    model.load_state_dict(state_dict, strict=True)


def load_checkpoint(path: str | Path, quick_gelu: bool | None = None, expected: CLIPConfig | None = None) -> CLIP:
    """A CLIP model built from whatever checkpoint `path` holds (architecture inferred from the weights).

    With `expected`, the model is built from that config instead and the weights must fit it."""
    state_dict, info = read_checkpoint(path)
    config = expected if expected is not None else infer_config(state_dict, info, quick_gelu)
    model = CLIP(config)
    load_state_dict_checked(model, {k: v.float() for k, v in state_dict.items()}, str(path))
    return model


def save_checkpoint(model: CLIP, path: str | Path, format: str = "openai") -> Path:
    """Write `model` as `format`: "openai"/"open_clip" (a .safetensors or torch .pt/.bin state dict) or
    "hf" (a folder with config.json + model.safetensors that `CLIPModel.from_pretrained` reads)."""
    from safetensors.torch import save_file

    if format not in FORMATS:
        raise ClipModuleError(f"unknown checkpoint format {format!r}; choose one of {', '.join(FORMATS)}")
    path = Path(path)
    state_dict = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    metadata = {"clipmodule_config": json.dumps(model.config.to_dict()), "format": format}
    if format == "hf":
        if model.config.vision.is_resnet:
            raise ClipModuleError("Hugging Face CLIPModel has no ModifiedResNet tower; export RN models as openai")
        path.mkdir(parents=True, exist_ok=True)
        write_text(path / "config.json", json.dumps(hf_config_dict(model.config), indent=2))
        with atomic_path(path / "model.safetensors") as tmp:
            save_file(openai_to_hf(state_dict, model.config), str(tmp), metadata={"format": "pt"})
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        if path.suffix == ".safetensors":
            save_file(state_dict, str(tmp), metadata=metadata)
        else:
            torch.save(state_dict, tmp)
    return path
