"""The public API under the names users know from OpenAI's `clip` package.

    model, preprocess = clipmodule.load("ViT-B/32")           # or a path to any supported checkpoint
    text = clipmodule.tokenize(["a diagram", "a dog", "a cat"])
    logits_per_image, logits_per_text = model(preprocess(image).unsqueeze(0), text)
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from clipmodule.checkpoints.io import load_checkpoint, preprocess_of
from clipmodule.errors import ClipModuleError
from clipmodule.models import CLIP, available_models, create_model
from clipmodule.models.registry import ALIASES, did_you_mean
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
    image_size: int | None = None,
    context_length: int | None = None,
    pretrained: str | None = None,
) -> tuple[CLIP, Callable[[Any], torch.Tensor]]:
    """(model in eval mode on `device`, its preprocess transform) from a model name or a checkpoint path.

    A path may hold OpenAI (.pt TorchScript or state dict), open_clip (file or hub folder), Hugging Face
    (`save_pretrained` folder, hub cache `models--org--name`) or our .safetensors weights. The architecture is
    `model` (a registered name or a config .json) if given, else the config the files carry, else OpenAI's for
    OpenAI's releases; a bare state dict that is none of these is refused. The preprocess transform follows
    open_clip's `preprocess_cfg` where the folder has one. A name is looked up in `download_root` (see
    `default_download_root`), and a bare file found there is read as that name's architecture.

    `pretrained` is one of open_clip's tags for the name (`load("ViT-B-32", pretrained="laion2b_s34b_b79k")`),
    found in the local Hugging Face cache (`checkpoints.pretrained`; never downloaded), with the tag's own
    preprocessing and activation. `image_size` / `context_length` give the model at another resolution / text
    context (position embeddings interpolated as open_clip's `resize_pos_embed`, `models.resize`); the preprocess
    follows the new size."""
    if pretrained is not None:
        if model is not None:
            raise ClipModuleError(f"load({str(name_or_path)!r}, pretrained={pretrained!r}): the name is the "
                                  f"architecture, model={model!r} cannot also be given")
        network = load_pretrained(str(name_or_path), pretrained, quick_gelu)
    else:
        network = _load_files(name_or_path, download_root, quick_gelu, model)
    if image_size is not None or context_length is not None:
        from clipmodule.models.resize import resize_model

        network = resize_model(network, image_size=image_size, context_length=context_length)
    network = network.to(device).eval()
    return network, preprocess_of(network).transform()


def _load_files(name_or_path: str | os.PathLike, download_root: str | os.PathLike | None,
                quick_gelu: bool | None, model: str | None) -> CLIP:
    """`load`'s network from a checkpoint path, or a model name's local weights."""
    path = Path(name_or_path)
    fallback = None
    if not path.exists():
        name = str(name_or_path)
        if name not in available_models() and name not in ALIASES:
            raise ClipModuleError(f"{name}: neither an existing checkpoint path nor a model name{did_you_mean(name)} "
                                  "(`clipmodule models` lists them)")
        instead = (f"`load` reads local files only: pass a checkpoint path, or use "
                   f"create_model({ALIASES.get(name, name)!r}) for a randomly initialised model")
        path = local_weights(name, instead, download_root)
        fallback = ALIASES.get(name, name)
    try:
        return load_checkpoint(path, quick_gelu=quick_gelu, model=model)
    except ClipModuleError as error:
        # By name, a bare file is that name's architecture; files that say what they are win (OpenAI's .pt).
        if model is not None or fallback is None or "a bare state dict" not in str(error):
            raise
        return load_checkpoint(path, quick_gelu=quick_gelu, model=fallback)


def load_pretrained(name: str, tag: str, quick_gelu: bool | None = None) -> CLIP:
    """open_clip's `name` with the weights released as `tag`, from the local Hugging Face cache (train mode)."""
    from clipmodule.checkpoints.pretrained import resolve

    canonical = ALIASES.get(name, name)
    if canonical not in available_models():
        raise ClipModuleError(f"unknown model name {name!r} (`clipmodule models` lists them)")
    path, row = resolve(canonical, tag)
    gelu = quick_gelu if quick_gelu is not None else row.quick_gelu or None  # the tag's activation wins the name's
    network = load_checkpoint(path, quick_gelu=gelu, model=canonical)
    network.preprocess_cfg = row.preprocess(network.config.vision.image_size)
    network.pretrained = {"name": canonical, "tag": row.tag, "repo": row.repo, "licence": row.licence}
    return network


def create_model_and_transforms(name: str, pretrained: str | None = None, device: str | torch.device = "cpu",
                                **overrides: Any) -> tuple[CLIP, Callable[[Any], Any], Callable[[Any], torch.Tensor]]:
    """open_clip's entry point: (model, train transform, eval transform), both normalised as the weights were trained.
    With `pretrained`, the tag's weights from the local Hugging Face cache (see `load`; the model in eval mode);
    without, a randomly initialised model of the registered name (`overrides` as `create_model`'s)."""
    if pretrained is not None:
        if overrides:
            raise ClipModuleError(f"create_model_and_transforms({name!r}, pretrained=...) takes no architecture "
                                  f"overrides ({', '.join(overrides)}): the weights fix the architecture")
        network, preprocess = load(name, device=device, pretrained=pretrained)
    else:
        network = create_model(ALIASES.get(name, name), **overrides).to(device)
        preprocess = preprocess_of(network).transform()
    return network, preprocess_of(network).train_transform(), preprocess


def tokenize(texts: str | list[str], context_length: int = 77, truncate: bool = False) -> torch.Tensor:
    """OpenAI's `clip.tokenize`: [N, context_length] token ids; too-long texts raise unless `truncate`."""
    return _tokenize(texts, context_length=context_length, truncate=truncate)


@dataclasses.dataclass(frozen=True)
class TokenizerSpec:
    """Which tokenizer a model reads, as plain data: it travels into loader workers (which build it there, on first
    use: the Rust tokenizer's threads do not survive fork) and into configs.

    Args:
        kind: "openai_bpe", or "hf:<repo>" for a `tokenizer.json` (SigLIP's sentencepiece vocabulary, XLM-R, ...).
        context_length: tokens per text; longer texts are truncated keeping the end-of-text token.
        folder: the folder holding the "hf:" kind's `tokenizer.json`.
        clean: text cleaning before an "hf:" tokenizer (open_clip's `tokenizer_kwargs.clean`).
        strip_sep: the separator token replaced by 0 (open_clip's `strip_sep_token`: CLIPA's BERT vocabulary).
    """

    kind: str = "openai_bpe"
    context_length: int = 77
    folder: str | None = None
    clean: str = "whitespace"
    strip_sep: bool = False

    def with_folder(self, folder: str | os.PathLike | None) -> TokenizerSpec:
        """This spec with `folder` where it has none (an explicit folder fills a gap, it never replaces one)."""
        return self if self.folder is not None or folder is None else dataclasses.replace(self, folder=str(folder))

    def build(self, truncate: bool = True) -> Callable[[str | list[str]], torch.Tensor]:
        """`tokenizer(texts)` -> [N, context_length] token ids."""
        if self.kind == "openai_bpe":
            return functools.partial(_tokenize, context_length=self.context_length, truncate=truncate)
        if self.folder is None:
            raise ClipModuleError(f"this model reads the {self.kind!r} tokenizer and no tokenizer.json came with its "
                                  "weights: name a folder holding it (get_tokenizer(model, folder=...), fit's "
                                  "data.tokenizer_folder, eval's --tokenizer_folder)")
        from clipmodule.hf_tokenizer import HFTokenizer

        return HFTokenizer(self.folder, self.context_length, clean=self.clean, strip_sep=self.strip_sep)


def tokenizer_spec(model: CLIP, folder: str | os.PathLike | None = None) -> TokenizerSpec:
    """The tokenizer `model` reads: its config's kind and context length, the `tokenizer.json` folder that came with
    its weights (else `folder`, else the "hf:" name itself where it is a local folder path holding one: absolute or
    starting with ./ ../ or ~, stored resolved, so that a stray folder in the working directory never shadows a repo
    name; else the repo's snapshot in the local Hugging Face cache, e.g. google/mt5-base for MetaCLIP 2)."""
    text = model.config.text
    own = getattr(model, "tokenizer_folder", None)
    if own is None and folder is None and text.tokenizer.startswith("hf:"):
        from clipmodule.checkpoints.pretrained import cached_snapshot

        name = text.tokenizer[len("hf:"):]
        is_path = Path(name).is_absolute() or name.startswith(("./", "../", "~"))
        snapshot = Path(name).expanduser().resolve() if is_path else cached_snapshot(name)
        own = snapshot if snapshot is not None and (snapshot / "tokenizer.json").is_file() else None
    own = str(own) if own is not None else None
    spec = TokenizerSpec(text.tokenizer, text.context_length, own, text.tokenizer_clean, text.tokenizer_strip_sep)
    return spec.with_folder(folder) if text.tokenizer != "openai_bpe" else spec


def get_tokenizer(model: CLIP, folder: str | os.PathLike | None = None) -> Callable[[str | list[str]], torch.Tensor]:
    """The tokenizer `model` reads, at its context length: OpenAI's BPE (`tokenize`: too long a text is an error,
    as in OpenAI's `clip`), or for an "hf:" tokenizer (SigLIP's sentencepiece vocabulary) the `tokenizer.json` that
    came with its weights, else the one in `folder`."""
    spec = tokenizer_spec(model)
    if folder is not None and spec.kind != "openai_bpe":
        spec = dataclasses.replace(spec, folder=str(folder))
    return spec.build(truncate=False)


__all__ = ["TokenizerSpec", "available_models", "create_model", "create_model_and_transforms", "default_download_root",
           "get_tokenizer", "load", "load_pretrained", "local_weights", "tokenize", "tokenizer_spec"]
