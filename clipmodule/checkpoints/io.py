"""Load a CLIP model from any checkpoint `readers` understands, and write one in OpenAI, open_clip or HF layout."""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import torch

from clipformats.files import TEMP_MARK, atomic_path, remove_stale_temporaries, temp_name, write_text
from clipmodule.checkpoints import open_clip
from clipmodule.checkpoints.hf import hf_config_dict, hf_preprocessor_dict, openai_to_hf
from clipmodule.checkpoints.infer import resolve_config
from clipmodule.checkpoints.preprocess import Preprocess
from clipmodule.checkpoints.readers import StateDict, read_checkpoint
from clipmodule.errors import ClipModuleError, one_line
from clipmodule.models import CLIP, CLIPConfig
from clipmodule.models.clip import SCALARS
from clipmodule.models.lora import has_adapters, merge_lora_state_dict
from clipmodule.models.registry import MODEL_CONFIGS

FORMATS = ("openai", "open_clip", "hf")
_FILE_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")


def checked_weights(state_dict: StateDict, expected: dict[str, torch.Tensor], source: str) -> StateDict:
    """The weights as the model's dtypes; integer (quantized) or non-finite weights are refused by name.

    A float model's weight stored as int8 is not a float weight: casting it would load a silently wrong model."""
    out = {}
    for key, value in state_dict.items():
        want = expected.get(key)
        if want is not None and want.is_floating_point():
            if not value.is_floating_point():
                raise ClipModuleError(f"{source}: weight {key} is stored as {str(value.dtype).removeprefix('torch.')}"
                                      ", not floating point (a quantized checkpoint?); refusing to cast it")
            if not torch.isfinite(value).all():
                raise ClipModuleError(f"{source}: weight {key} holds NaN or infinite values")
            value = value.to(want.dtype)
        out[key] = value
    return out


def mismatch_summary(state_dict: StateDict, expected: StateDict) -> str | None:
    """How `state_dict` does not fit a model whose own state dict is `expected` (one line), or None."""
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    # a 1-element logit scale/bias (a traced model of ours, open_clip's nonscalar_logit_scale) is the 0-d one
    mismatched = [key for key in expected if key in state_dict and expected[key].shape != state_dict[key].shape
                  and not (key in SCALARS and state_dict[key].numel() == 1)]
    parts = []
    if mismatched:
        key = mismatched[0]
        parts.append(f"{len(mismatched)} shape mismatches (e.g. {key}: checkpoint "
                     f"{tuple(state_dict[key].shape)} vs model {tuple(expected[key].shape)})")
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    return "; ".join(parts) or None


def load_state_dict_checked(model: torch.nn.Module, state_dict: StateDict, source: str) -> None:
    """`model.load_state_dict(strict=True)`, with a one-line error saying how the weights do not fit."""
    expected = model.state_dict()
    problem = mismatch_summary(state_dict, expected)
    if problem:
        raise ClipModuleError(f"{source}: weights do not fit this architecture: {problem}")
    model.load_state_dict(checked_weights(state_dict, expected, source), strict=True)


def load_checkpoint(path: str | Path, quick_gelu: bool | None = None, expected: CLIPConfig | None = None,
                    model: str | None = None, merge_lora: bool = False) -> CLIP:
    """A CLIP model built from whatever checkpoint `path` holds, its eval preprocessing as `model.preprocess_cfg`.

    The architecture is the registered name or config file `model`, else `expected`, else the file's own config,
    else OpenAI's for OpenAI's releases; anything else is refused (see `checkpoints.infer`). LoRA adapters (a fit
    with `model.lora`) are folded into the weights with `merge_lora`, else refused."""
    state_dict, info = read_checkpoint(path)
    if has_adapters(state_dict):
        if not merge_lora:
            raise ClipModuleError(f"{path}: holds LoRA adapters; fold them into plain weights first: "
                                  f"clipmodule convert --merge_lora {path} <destination>")
        state_dict = merge_lora_state_dict(state_dict, str(path))
    config = expected if expected is not None and model is None else resolve_config(
        state_dict, info, str(path), model=model, quick_gelu=quick_gelu)
    network = CLIP(config)
    load_state_dict_checked(network, state_dict, str(path))
    folder = Path(info["source"]).parent if "source" in info else Path(path).parent
    network.tokenizer_folder = folder if (folder / "tokenizer.json").is_file() else None
    network.preprocess_cfg = open_clip.preprocess_from_open_clip(
        info.get("preprocess_cfg", {}), config.vision.image_size, info.get("source", str(path)))
    return network


def preprocess_of(model: CLIP) -> Preprocess:
    """The model's eval preprocessing: what its checkpoint said, else OpenAI's at its image size."""
    return getattr(model, "preprocess_cfg", None) or Preprocess(model.config.vision.image_size)


def save_checkpoint(model: CLIP, path: str | Path, format: str = "openai") -> Path:
    """Write `model` as `format`: "openai"/"open_clip" (a .safetensors or torch .pt/.bin state dict; for open_clip
    a path without one of those suffixes is a hub folder: open_clip_config.json + open_clip_model.safetensors) or
    "hf" (a folder with config.json + model.safetensors that `CLIPModel.from_pretrained` reads).

    An exact-GELU model is refused as an "openai" torch file: that layout cannot say GELU, and OpenAI's `clip`
    code builds what it reads with QuickGELU. Our .safetensors files record the config (activation included).

    The write is atomic (a file or folder is whole or not there); a failed one (disk full) is one line naming the
    path, and what killed writes of the same path left behind is cleared first."""
    from safetensors import SafetensorError

    if format not in FORMATS:
        raise ClipModuleError(f"unknown checkpoint format {format!r}; choose one of {', '.join(FORMATS)}")
    path = Path(path)
    if format == "openai" and path.suffix != ".safetensors" and not model.config.quick_gelu:
        raise ClipModuleError(f"{path}: {_gelu_refusal(model.config)}")
    if path.suffix != ".safetensors" and (format == "openai" or path.suffix in _FILE_SUFFIXES):  # a torch file
        _check_openai_preprocess(preprocess_of(model), path)
    _clear_stale_writes(path)
    try:
        return _save(model, path, format)
    except (OSError, RuntimeError, SafetensorError) as error:  # disk full, no permission, torch.save's writer
        reason = os.strerror(error.errno) if isinstance(error, OSError) and error.errno else one_line(error)[:200]
        raise ClipModuleError(f"{path}: cannot write the checkpoint ({reason}); nothing partial is left and an "
                              "earlier file there is intact") from None


def _save(model: CLIP, path: Path, format: str) -> Path:
    from safetensors.torch import save_file

    state_dict = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    preprocess = open_clip.preprocess_to_open_clip(preprocess_of(model))
    if format == "hf":
        if model.config.vision.is_resnet:
            raise ClipModuleError("Hugging Face CLIPModel has no ModifiedResNet tower; export RN models as openai")
        if model.config.vision.ls_init_value is not None or model.config.text.ls_init_value is not None:
            raise ClipModuleError("Hugging Face CLIPModel has no LayerScale (ls_init_value); export as open_clip")
        text = model.config.text
        if model.config.vision.timm_model_name or text.hf_model_name or not text.causal or text.pool != "argmax" \
                or text.proj_bias:
            raise ClipModuleError("Hugging Face CLIPModel has no timm tower or SigLIP text tower; export as open_clip")
        processor = hf_preprocessor_dict(preprocess_of(model), str(path))
        return _write_folder(path, {
            "config.json": lambda file: write_text(file, json.dumps(hf_config_dict(model.config), indent=2)),
            "preprocessor_config.json": lambda file: write_text(file, json.dumps(processor, indent=2)),
            "model.safetensors": lambda file: save_file(openai_to_hf(state_dict, model.config), str(file),
                                                        metadata={"format": "pt"}),
        })
    if format == "open_clip" and open_clip.uses_custom_text(model.config):  # CustomTextCLIP: text under `text.`
        state_dict = {key if key.startswith(("visual.", "logit_", "text.")) else f"text.{key}": value
                      for key, value in state_dict.items()}
    if format == "open_clip" and path.suffix not in _FILE_SUFFIXES:
        hub_config = {"model_cfg": open_clip.config_to_open_clip(model.config), "preprocess_cfg": preprocess}
        return _write_folder(path, {
            open_clip.CONFIG_NAME: lambda file: write_text(file, json.dumps(hub_config, indent=2)),
            open_clip.WEIGHT_NAMES[0]: lambda file: save_file(state_dict, str(file), metadata={"format": "pt"}),
        })
    metadata = {"clipmodule_config": json.dumps(model.config.to_dict()), "format": format,
                "clipmodule_preprocess": json.dumps(preprocess)}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        if path.suffix == ".safetensors":
            save_file(state_dict, str(tmp), metadata=metadata)
        else:
            torch.save(state_dict, tmp)
    return path


def _check_openai_preprocess(preprocess: Preprocess, path: Path) -> None:
    """A torch file (OpenAI's or open_clip's .pt/.pth/.bin) is a bare state dict: its readers assume OpenAI's mean/std
    and resize-and-crop."""
    openai = Preprocess(preprocess.size)
    mine, theirs = ((p.mean, p.std, p.resize_mode, p.interpolation) for p in (preprocess, openai))
    if mine != theirs:
        raise ClipModuleError(
            f"{path}: this model was trained with mean {list(preprocess.mean)}, std {list(preprocess.std)}, resize "
            f"{preprocess.resize_mode!r}, interpolation {preprocess.interpolation!r}, which a torch state-dict file "
            "cannot record (its readers assume OpenAI's); write a .safetensors file or an open_clip hub folder "
            "(--to open_clip with no file suffix): both record it")


def _gelu_refusal(config: CLIPConfig) -> str:
    """Why an exact-GELU model is not written as an OpenAI torch file, and what to write instead."""
    twin = dataclasses.replace(config, quick_gelu=True)
    names = [name for name, registered in MODEL_CONFIGS.items() if registered == twin]
    names = [name for name in names if name.endswith("-quickgelu")] or names
    model = next((name for name, registered in MODEL_CONFIGS.items() if registered == config), "this model")
    kind = "-quickgelu" if names and names[0].endswith("-quickgelu") else "QuickGELU"
    twin = f"its {kind} twin {names[0]}" if names else "a quick_gelu: true model"
    hf = "" if config.vision.is_resnet else ", --to hf / format='hf'"
    return (f"{model} uses exact GELU, which OpenAI's layout cannot say (OpenAI's clip code builds every model "
            "with QuickGELU: its features would differ); write a .safetensors file (it records the activation), "
            f"--to open_clip / format='open_clip' as a hub folder{hf}; only {twin}, trained as such, is "
            "OpenAI's architecture")


def _clear_stale_writes(path: Path) -> None:
    """What killed writes of `path` left (their pid is no live process): hidden temporary files and staging folders
    are removed, and a folder moved aside while its replacement was swapped in is put back if nothing replaced it."""
    remove_stale_temporaries(path)
    if not path.parent.is_dir():
        return
    for mark in (".old-", TEMP_MARK):  # put a moved-aside folder back before staging folders go
        for entry in sorted(path.parent.glob(f".{glob.escape(path.name)}{mark}*")):
            if entry.is_dir() and _writer_is_dead(entry.name.rsplit(mark, 1)[1]):
                if mark == ".old-" and not path.exists():
                    entry.replace(path)
                else:
                    shutil.rmtree(entry, ignore_errors=True)


def _writer_is_dead(pid: str) -> bool:
    if not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's live process
        return False
    return False


def _write_folder(path: Path, writers: dict[str, Callable[[Path], object]]) -> Path:
    """Write every file into a hidden sibling folder, then swap it in: a killed write leaves the old folder whole."""
    if path.exists() and not path.is_dir():
        raise ClipModuleError(f"{path}: exists and is not a folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    staging, old = temp_name(path), path.with_name(f".{path.name}.old-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        for child in path.iterdir() if path.is_dir() else ():
            if child.name not in writers:  # the user's other files (tokenizer, README) stay in the folder
                copy = shutil.copytree if child.is_dir() else shutil.copy2
                copy(child, staging / child.name)
        for name, write in writers.items():
            write(staging / name)
        if path.exists():
            path.replace(old)
        staging.replace(path)
    finally:
        if old.exists() and not path.exists():  # failed between the two renames: the old folder goes back
            old.replace(path)
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return path
