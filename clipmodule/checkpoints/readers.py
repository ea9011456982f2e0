"""Read CLIP weights from OpenAI, open_clip and Hugging Face files into one (OpenAI) layout.

Our parameter names are OpenAI's, and open_clip's standard CLIP models use the same names, so those two
layouts differ only in how files are wrapped; HF's layout is translated by `checkpoints.hf`. Weights are read
with safetensors, `torch.load(weights_only=True)` or, for TorchScript archives, `checkpoints.torchscript`'s
restricted reader: a file that would need to run pickled code is refused, and nothing in an archive runs.
"""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import torch

from clipformats.model_files import snapshot
from clipmodule.checkpoints import open_clip
from clipmodule.checkpoints.hf import hf_to_openai
from clipmodule.checkpoints.safe_torch import load_failure_reason, torch_file_problem
from clipmodule.checkpoints.torchscript import is_torchscript, read_torchscript
from clipmodule.errors import ClipModuleError, one_line
from clipmodule.models import CLIPConfig

StateDict = dict[str, torch.Tensor]
# Non-parameter entries some releases carry (OpenAI's TorchScript files, HF's position ids).
_IGNORED_KEYS = re.compile(r"^(input_resolution|context_length|vocab_size|.*position_ids|.*attn_mask)$")


def read_checkpoint(path: str | Path) -> tuple[StateDict, dict]:
    """The state dict in OpenAI layout, plus what the files say about the model (may be empty).

    `info` keys: "config" (our own safetensors), "open_clip_config" (open_clip's model_cfg), "preprocess",
    "hf_config" (transformers' config.json), "torchscript" (an OpenAI release archive), "source"."""
    path = Path(path)
    if not path.exists():
        raise ClipModuleError(f"{path}: no such checkpoint file or folder")
    if path.is_dir():
        state_dict, info = _read_folder(hub_snapshot(path))
    else:
        state_dict, info = _read_file(path)
        beside = path.parent / open_clip.CONFIG_NAME
        if path.name in open_clip.WEIGHT_NAMES and beside.is_file():  # a file picked out of a hub folder
            info.update(_open_clip_info(beside))
    state_dict = {_strip_prefix(key): value for key, value in state_dict.items() if not _IGNORED_KEYS.match(key)}
    if any(key.startswith(("text_model.", "vision_model.")) for key in state_dict):
        state_dict = hf_to_openai(state_dict)
    if "text.token_embedding.weight" in state_dict:  # open_clip's CustomTextCLIP (SigLIP): text under `text.`
        state_dict = {key.removeprefix("text."): value for key, value in state_dict.items()}
    has_text = "token_embedding.weight" in state_dict or any(key.startswith("text.transformer.") for key in state_dict)
    if not has_text or not any(key.startswith("visual.") for key in state_dict):
        raise ClipModuleError(f"{path}: not a CLIP checkpoint (no text token embedding or visual tower weights)")
    return state_dict, info


def _read_file(path: Path) -> tuple[StateDict, dict]:
    if path.suffix == ".safetensors":
        return read_safetensors(path)
    return _read_torch(path)


def hub_snapshot(path: Path) -> Path:
    """The snapshot folder of a Hugging Face hub cache entry (`models--org--name`), else `path` itself."""
    root = snapshot(path)
    if root == path and (path / "snapshots").is_dir():
        revisions = sum(child.is_dir() for child in (path / "snapshots").iterdir())
        raise ClipModuleError(f"{path}: hub cache holds {revisions} snapshots and no refs/main; "
                              "pass one snapshots/<revision> folder")
    return root


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ClipModuleError(f"{path}: malformed JSON ({one_line(error)[:120]})") from None
    if not isinstance(data, dict):
        raise ClipModuleError(f"{path}: expected a JSON object")
    return data


def _open_clip_info(config_file: Path) -> dict:
    data = _read_json(config_file)
    if "model_cfg" not in data:
        raise ClipModuleError(f"{config_file}: no model_cfg (not an open_clip hub config)")
    return {"open_clip_config": data["model_cfg"], "preprocess_cfg": data.get("preprocess_cfg") or {},
            "source": str(config_file)}


def _read_folder(path: Path) -> tuple[StateDict, dict]:
    if (path / open_clip.CONFIG_NAME).is_file():
        weights = [path / name for name in open_clip.WEIGHT_NAMES if (path / name).is_file()]
        if not weights:
            raise ClipModuleError(f"{path}: open_clip folder without {' or '.join(open_clip.WEIGHT_NAMES)}")
        state_dict, info = _read_file(weights[0])
        info.update(_open_clip_info(path / open_clip.CONFIG_NAME))
        return state_dict, info
    config_file = path / "config.json"
    if not config_file.exists():
        raise ClipModuleError(f"{path}: folder has neither {open_clip.CONFIG_NAME} (open_clip) nor config.json "
                              "(Hugging Face save_pretrained)")
    hf_config = _read_json(config_file)
    files = sorted(path.glob("model*.safetensors")) or sorted(path.glob("pytorch_model*.bin"))
    if not files:
        raise ClipModuleError(f"{path}: no model.safetensors or pytorch_model.bin in the folder")
    state_dict: StateDict = {}
    for file in files:
        state_dict.update(_read_file(file)[0])
    info = {"hf_config": hf_config, "source": str(config_file)}
    if (path / "preprocessor_config.json").is_file():
        info["preprocess_cfg"] = _hf_preprocess(_read_json(path / "preprocessor_config.json"))
    return state_dict, info


def _hf_preprocess(processor: dict) -> dict:
    """transformers' CLIPImageProcessor settings as open_clip's preprocess_cfg (resize shortest side, crop)."""
    cfg: dict = {}
    if "image_mean" in processor and "image_std" in processor:
        cfg["mean"], cfg["std"] = processor["image_mean"], processor["image_std"]
    crop = processor.get("crop_size")
    crop = crop.get("height") if isinstance(crop, dict) else crop
    if isinstance(crop, int):
        cfg["size"] = crop
    resample = {2: "bilinear", 3: "bicubic"}.get(processor.get("resample"))
    if resample:
        cfg["interpolation"] = resample
    size = processor.get("size")
    if processor.get("do_center_crop") is False and isinstance(size, dict) and "height" in size:
        cfg["size"], cfg["resize_mode"] = size["height"], "squash"  # resized to the square, no crop
    return cfg


def _strip_prefix(key: str) -> str:
    for prefix in ("module.", "_orig_mod.", "model."):
        if key.startswith(prefix):
            key = key[len(prefix):]
    return key


def read_safetensors(path: Path) -> tuple[StateDict, dict]:
    """(tensors of a .safetensors file as stored, {"config": CLIPConfig} when this project wrote it)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            state_dict = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError, ValueError) as error:
        raise ClipModuleError(f"{path}: unreadable safetensors file ({one_line(error)[:200]})") from None
    info: dict = {}
    try:
        if "clipmodule_config" in metadata:
            info["config"] = CLIPConfig.from_dict(json.loads(metadata["clipmodule_config"]))
        if "clipmodule_preprocess" in metadata:
            info["preprocess_cfg"] = json.loads(metadata["clipmodule_preprocess"])
    except (json.JSONDecodeError, TypeError, ValueError) as error:
        raise ClipModuleError(f"{path}: malformed clipmodule metadata ({one_line(error)[:120]})") from None
    return state_dict, info


def read_torch_file(path: Path) -> StateDict:
    """The tensors of a TorchScript archive or a torch state dict (unwrapped), never unpickling code."""
    return _read_torch(path)[0]


def _read_torch(path: Path) -> tuple[StateDict, dict]:
    if is_torchscript(path):
        return read_torchscript(path), {"torchscript": True}
    problem = torch_file_problem(path)
    if problem:
        raise ClipModuleError(f"{path}: {problem}")
    try:
        loaded = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ClipModuleError(f"{path}: refusing to unpickle it: {load_failure_reason(error)}") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError) as error:
        raise ClipModuleError(f"{path}: truncated or not a checkpoint ({load_failure_reason(error)})") from None
    info = {}
    network = loaded.get("hyper_parameters", {}).get("network") if isinstance(loaded, dict) else None
    if isinstance(network, dict):  # a `clipmodule fit` checkpoint (Lightning) records the network's config
        try:
            info["config"] = CLIPConfig.from_dict(network)
        except (TypeError, ValueError) as error:
            raise ClipModuleError(f"{path}: malformed hyper_parameters.network ({one_line(error)[:120]})") from None
        preprocess = loaded["hyper_parameters"].get("preprocess")
        if preprocess is not None:  # the release's eval preprocessing a run started from (`model.init_from`)
            info["preprocess_cfg"] = preprocess
    for wrapper in ("state_dict", "model", "module"):
        if isinstance(loaded, dict) and isinstance(loaded.get(wrapper), dict):
            loaded = loaded[wrapper]
    if not isinstance(loaded, dict) or not all(isinstance(value, torch.Tensor) for value in loaded.values()):
        raise ClipModuleError(f"{path}: does not hold a state dict of tensors")
    return loaded, info
