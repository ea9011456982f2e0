"""The public API under the names users know from OpenAI's `clip` package.

    model, preprocess = clipmodule.load("ViT-B/32")           # or a path to any supported checkpoint
    text = clipmodule.tokenize(["a diagram", "a dog", "a cat"])
    logits_per_image, logits_per_text = model(preprocess(image).unsqueeze(0), text)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import torch

from clipmodule.checkpoints.io import load_checkpoint
from clipmodule.errors import ClipModuleError
from clipmodule.models import CLIP, available_models, create_model
from clipmodule.models.config import _ALIASES
from clipmodule.transforms import image_transform

# File names of OpenAI's released weights, as their `clip.load` caches them in ~/.cache/clip.
_OPENAI_FILES = {
    "RN50": "RN50.pt",
    "RN101": "RN101.pt",
    "RN50x4": "RN50x4.pt",
    "RN50x16": "RN50x16.pt",
    "RN50x64": "RN50x64.pt",
    "ViT-B-32": "ViT-B-32.pt",
    "ViT-B-16": "ViT-B-16.pt",
    "ViT-L-14": "ViT-L-14.pt",
    "ViT-L-14-336": "ViT-L-14-336px.pt",
}


def default_download_root() -> Path:
    """Where `load(name)` looks for weights: $CLIPMODULE_HOME, else OpenAI's cache folder ~/.cache/clip."""
    return Path(os.environ.get("CLIPMODULE_HOME", Path.home() / ".cache" / "clip"))


def _local_weights(name: str, download_root: Path) -> Path:
    canonical = _ALIASES.get(name, name)
    candidates = [download_root / f"{canonical}.safetensors"]
    if canonical in _OPENAI_FILES:
        candidates.append(download_root / _OPENAI_FILES[canonical])
    for candidate in candidates:
        if candidate.exists():
            return candidate
    raise ClipModuleError(
        f"no local weights for {name!r} (looked for {', '.join(str(c) for c in candidates)}); nothing can be "
        f"downloaded here: pass a checkpoint path, or use create_model({canonical!r}) for a randomly initialised model"
    )


def load(
    name_or_path: str | os.PathLike,
    device: str | torch.device = "cpu",
    download_root: str | os.PathLike | None = None,
    quick_gelu: bool | None = None,
) -> tuple[CLIP, Callable[[Any], torch.Tensor]]:
    """(model in eval mode on `device`, its preprocess transform) from a model name or a checkpoint path.

    A path may hold OpenAI (.pt TorchScript or state dict), open_clip, or Hugging Face (`save_pretrained`
    folder or .safetensors) weights; the architecture is inferred from them. A name is looked up in
    `download_root` (see `default_download_root`)."""
    path = Path(name_or_path)
    if not path.exists():
        name = str(name_or_path)
        if name not in available_models() and name not in _ALIASES:
            raise ClipModuleError(
                f"{name}: neither an existing checkpoint path nor a model name ({', '.join(available_models())})"
            )
        root = Path(download_root) if download_root is not None else default_download_root()
        path = _local_weights(name, root)
    model = load_checkpoint(path, quick_gelu=quick_gelu).to(device).eval()
    return model, image_transform(model.config.vision.image_size, train=False)


def tokenize(texts: str | list[str], context_length: int = 77, truncate: bool = False) -> torch.Tensor:
    """OpenAI's `clip.tokenize`: [N, context_length] token ids; too-long texts raise unless `truncate`."""
    from clipmodule.tokenizer import tokenize as _tokenize

    return _tokenize(texts, context_length=context_length, truncate=truncate)


__all__ = ["available_models", "create_model", "default_download_root", "load", "tokenize"]
