"""Read CLIP weights from OpenAI, open_clip and Hugging Face files into one (OpenAI) layout.

Our parameter names are OpenAI's, and open_clip's standard CLIP models use the same names, so those two
layouts differ only in how files are wrapped; HF's layout is translated by `checkpoints.hf`. Weights are read
with safetensors or `torch.load(weights_only=True)`: a file that would need to run pickled code is refused.
"""

from __future__ import annotations

import json
import pickle
import re
import zipfile
from pathlib import Path

import torch

from clipmodule.checkpoints.hf import hf_to_openai
from clipmodule.errors import ClipModuleError, one_line
from clipmodule.models import CLIPConfig

StateDict = dict[str, torch.Tensor]
# Non-parameter entries some releases carry (OpenAI's TorchScript files, HF's position ids).
_IGNORED_KEYS = re.compile(r"^(input_resolution|context_length|vocab_size|.*position_ids|.*attn_mask)$")


def read_checkpoint(path: str | Path) -> tuple[StateDict, dict]:
    """The state dict in OpenAI layout, plus what the file says about the config (may be empty)."""
    path = Path(path)
    if not path.exists():
        raise ClipModuleError(f"{path}: no such checkpoint file or folder")
    if path.is_dir():
        state_dict, info = _read_hf_folder(path)
    elif path.suffix == ".safetensors":
        state_dict, info = read_safetensors(path)
    else:
        state_dict, info = read_torch_file(path), {}
    state_dict = {_strip_prefix(key): value for key, value in state_dict.items() if not _IGNORED_KEYS.match(key)}
    if any(key.startswith(("text_model.", "vision_model.")) for key in state_dict):
        state_dict = hf_to_openai(state_dict)
    if "token_embedding.weight" not in state_dict or not any(key.startswith("visual.") for key in state_dict):
        raise ClipModuleError(f"{path}: not a CLIP checkpoint (no text token embedding or visual tower weights)")
    return state_dict, info


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
    info = {}
    if "clipmodule_config" in metadata:
        info["config"] = CLIPConfig.from_dict(json.loads(metadata["clipmodule_config"]))
    return state_dict, info


def read_torch_file(path: Path) -> StateDict:
    """The tensors of a TorchScript archive or a torch state dict (unwrapped), never unpickling code."""
    if _is_torchscript(path):
        # OpenAI's released .pt files are TorchScript archives: their weights load without unpickling Python.
        try:
            return dict(torch.jit.load(str(path), map_location="cpu").state_dict())
        except RuntimeError as error:
            raise ClipModuleError(f"{path}: broken TorchScript archive ({one_line(error)[:200]})") from None
    try:
        loaded = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ClipModuleError(
            f"{path}: refusing to unpickle it: it holds code or objects other than tensors ({one_line(error)[:200]})"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise ClipModuleError(f"{path}: truncated or not a checkpoint ({one_line(error)[:200]})") from None
    for wrapper in ("state_dict", "model", "module"):
        if isinstance(loaded, dict) and isinstance(loaded.get(wrapper), dict):
            loaded = loaded[wrapper]
    if not isinstance(loaded, dict) or not all(isinstance(value, torch.Tensor) for value in loaded.values()):
        raise ClipModuleError(f"{path}: does not hold a state dict of tensors")
    return loaded


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("constants.pkl") for name in archive.namelist())
    except zipfile.BadZipFile:
        return False


def _read_hf_folder(path: Path) -> tuple[StateDict, dict]:
    config_file = path / "config.json"
    if not config_file.exists():
        raise ClipModuleError(f"{path}: folder has no config.json (expected a Hugging Face save_pretrained folder)")
    try:
        hf_config = json.loads(config_file.read_text())
    except json.JSONDecodeError as error:
        raise ClipModuleError(f"{config_file}: malformed JSON ({error})") from None
    files = sorted(path.glob("*.safetensors")) or sorted(path.glob("pytorch_model*.bin"))
    if not files:
        raise ClipModuleError(f"{path}: no model.safetensors or pytorch_model.bin in the folder")
    state_dict: StateDict = {}
    for file in files:
        state_dict.update(read_safetensors(file)[0] if file.suffix == ".safetensors" else read_torch_file(file))
    return state_dict, {"hf_config": hf_config}
