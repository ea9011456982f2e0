"""The public API under the names users know from OpenAI's `clip` package.

    model, preprocess = clipmodule.load("ViT-B/32")           # or a path to any supported checkpoint
    text = clipmodule.tokenize(["a diagram", "a dog", "a cat"])
    logits_per_image, logits_per_text = model(preprocess(image).unsqueeze(0), text)
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from clipmodule.checkpoints.io import load_checkpoint, preprocess_of
from clipmodule.errors import ClipModuleError
from clipmodule.models import CLIP, available_models, create_model
from clipmodule.models.config import ALIASES
from clipmodule.tokenizer import tokenize as _tokenize

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
_OPENAI_FILES.update({f"{name}-quickgelu": file for name, file in _OPENAI_FILES.items()})


def default_download_root() -> Path:
    """Where `load(name)` looks for weights: $CLIPMODULE_HOME, else OpenAI's cache folder ~/.cache/clip."""
    return Path(os.environ.get("CLIPMODULE_HOME", Path.home() / ".cache" / "clip"))


def local_weights(name: str, instead: str, download_root: str | os.PathLike | None = None) -> Path:
    """The local copy of a named model's weights: `<name>.safetensors`, `<name>.pth` or, for OpenAI's
    models, the file their `clip.load` caches, in `download_root` (default: `default_download_root()`).

    Weights are never fetched: without a copy, one line lists where it looked and what to do `instead`."""
    root = Path(download_root) if download_root is not None else default_download_root()
    canonical = ALIASES.get(name, name)
    candidates = [root / f"{canonical}.safetensors", root / f"{canonical}.pth"]
    if canonical in _OPENAI_FILES:
        candidates.append(root / _OPENAI_FILES[canonical])
    for candidate in candidates:
        if candidate.exists():
            return candidate
    raise ClipModuleError(f"no local weights for {name!r} (looked for {', '.join(map(str, candidates))}); {instead}")


def load(
    name_or_path: str | os.PathLike,
    device: str | torch.device = "cpu",
    download_root: str | os.PathLike | None = None,
    quick_gelu: bool | None = None,
    model: str | None = None,
) -> tuple[CLIP, Callable[[Any], torch.Tensor]]:
    """(model in eval mode on `device`, its preprocess transform) from a model name or a checkpoint path.

    A path may hold OpenAI (.pt TorchScript or state dict), open_clip (file or hub folder), Hugging Face
    (`save_pretrained` folder, hub cache `models--org--name`) or our .safetensors weights. The architecture is
    `model` (a registered name or a config .json) if given, else the config the files carry, else OpenAI's for
    OpenAI's releases; a bare state dict that is none of these is refused. The preprocess transform follows
    open_clip's `preprocess_cfg` where the folder has one. A name is looked up in `download_root` (see
    `default_download_root`), and a bare file found there is read as that name's architecture."""
    path = Path(name_or_path)
    fallback = None
    if not path.exists():
        name = str(name_or_path)
        if name not in available_models() and name not in ALIASES:
            raise ClipModuleError(
                f"{name}: neither an existing checkpoint path nor a model name ({', '.join(available_models())})"
            )
        instead = (f"`load` reads local files only: pass a checkpoint path, or use "
                   f"create_model({ALIASES.get(name, name)!r}) for a randomly initialised model")
        path = local_weights(name, instead, download_root)
        fallback = ALIASES.get(name, name)
    try:
        network = load_checkpoint(path, quick_gelu=quick_gelu, model=model)
    except ClipModuleError as error:
        # By name, a bare file is that name's architecture; files that say what they are win (OpenAI's .pt).
        if model is not None or fallback is None or "a bare state dict" not in str(error):
            raise
        network = load_checkpoint(path, quick_gelu=quick_gelu, model=fallback)
    network = network.to(device).eval()
    return network, preprocess_of(network).transform()


def tokenize(texts: str | list[str], context_length: int = 77, truncate: bool = False) -> torch.Tensor:
    """OpenAI's `clip.tokenize`: [N, context_length] token ids; too-long texts raise unless `truncate`."""
    return _tokenize(texts, context_length=context_length, truncate=truncate)


def get_tokenizer(model: CLIP, folder: str | os.PathLike | None = None) -> Callable[[str | list[str]], torch.Tensor]:
    """The tokenizer `model` reads, at its context length: OpenAI's BPE (`tokenize`), or for an "hf:" tokenizer
    (SigLIP's sentencepiece vocabulary) the `tokenizer.json` in `folder`, else beside the weights it was loaded from."""
    text = model.config.text
    if text.tokenizer == "openai_bpe":
        return functools.partial(tokenize, context_length=text.context_length)
    from clipmodule.hf_tokenizer import HFTokenizer

    folder = folder if folder is not None else getattr(model, "tokenizer_folder", None)
    if folder is None:
        raise ClipModuleError(f"this model reads the {text.tokenizer!r} tokenizer and no tokenizer.json came with its "
                              "weights: get_tokenizer(model, folder=<folder with tokenizer.json>)")
    return HFTokenizer(folder, text.context_length, clean=text.tokenizer_clean)


__all__ = ["available_models", "create_model", "default_download_root", "get_tokenizer", "load", "local_weights",
           "tokenize"]
