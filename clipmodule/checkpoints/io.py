"""Read and write CLIP checkpoints in OpenAI, open_clip and Hugging Face `CLIPModel` layouts.

Our parameter names are OpenAI's, and open_clip's standard CLIP models use the same names, so those two
layouts differ only in how files are wrapped. HF's layout renames everything and splits the packed q/k/v
projection; `hf_to_openai` / `openai_to_hf` translate. Weights are read with safetensors or
`torch.load(weights_only=True)`: a file that would need to run pickled code is refused.
"""

from __future__ import annotations

import json
import math
import pickle
import re
import zipfile
from pathlib import Path

import torch

from clipmodule.errors import ClipModuleError, one_line
from clipmodule.models import CLIP, CLIPConfig, TextConfig, VisionConfig
from clipmodule.checkpoints.hf import hf_config_dict, hf_to_openai, openai_to_hf

FORMATS = ("openai", "open_clip", "hf")
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
            state_dict = {key: handle.get_tensor(key) for key in handle.keys()}
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


def infer_config(state_dict: StateDict, info: dict | None = None, quick_gelu: bool | None = None) -> CLIPConfig:
    """The architecture, read off the weights' shapes (heads assumed 64 wide unless the file says otherwise)."""
    info = info or {}
    if "config" in info:
        config = info["config"]
        return config if quick_gelu is None else _replace(config, quick_gelu=quick_gelu)
    hf = info.get("hf_config", {})
    text_width = state_dict["ln_final.weight"].shape[0]
    text = TextConfig(
        context_length=state_dict["positional_embedding"].shape[0],
        vocab_size=state_dict["token_embedding.weight"].shape[0],
        width=text_width,
        layers=_count_blocks(state_dict, "transformer.resblocks."),
        head_width=text_width // hf.get("text_config", {}).get("num_attention_heads", text_width // 64),
        mlp_ratio=state_dict["transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / text_width,
    )
    if "visual.proj" in state_dict:
        vision = _infer_vit(state_dict, hf.get("vision_config", {}))
    else:
        vision = _infer_resnet(state_dict)
    if quick_gelu is None:
        quick_gelu = hf.get("text_config", {}).get("hidden_act", "quick_gelu") == "quick_gelu"
    logit_bias = float(state_dict["logit_bias"]) if "logit_bias" in state_dict else None
    return CLIPConfig(
        embed_dim=state_dict["text_projection"].shape[1],
        vision=vision,
        text=text,
        quick_gelu=quick_gelu,
        init_logit_bias=logit_bias,
    )


def _infer_vit(state_dict: StateDict, hf_vision: dict) -> VisionConfig:
    width, _, patch, _ = state_dict["visual.conv1.weight"].shape
    grid = math.isqrt(state_dict["visual.positional_embedding"].shape[0] - 1)
    return VisionConfig(
        image_size=grid * patch,
        layers=_count_blocks(state_dict, "visual.transformer.resblocks."),
        width=width,
        patch_size=patch,
        head_width=width // hf_vision.get("num_attention_heads", width // 64),
        mlp_ratio=state_dict["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / width,
    )


def _infer_resnet(state_dict: StateDict) -> VisionConfig:
    if "visual.layer1.0.conv1.weight" not in state_dict:
        raise ClipModuleError("checkpoint has neither a ViT (visual.proj) nor a ModifiedResNet (visual.layer1) tower")
    layers = tuple(_count_blocks(state_dict, f"visual.layer{index}.") for index in range(1, 5))
    spatial = math.isqrt(state_dict["visual.attnpool.positional_embedding"].shape[0] - 1)
    return VisionConfig(image_size=spatial * 32, layers=layers, width=state_dict["visual.layer1.0.conv1.weight"].shape[0])


def _count_blocks(state_dict: StateDict, prefix: str) -> int:
    return len({key[len(prefix):].split(".")[0] for key in state_dict if key.startswith(prefix)})


def _replace(config: CLIPConfig, **changes) -> CLIPConfig:
    import dataclasses

    return dataclasses.replace(config, **changes)


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
        _atomic_write(path / "config.json", lambda tmp: tmp.write_text(json.dumps(hf_config_dict(model.config), indent=2)))
        hf_state = openai_to_hf(state_dict, model.config)
        _atomic_write(path / "model.safetensors", lambda tmp: save_file(hf_state, str(tmp), metadata={"format": "pt"}))
    elif path.suffix == ".safetensors":
        _atomic_write(path, lambda tmp: save_file(state_dict, str(tmp), metadata=metadata))
    else:
        _atomic_write(path, lambda tmp: torch.save(state_dict, tmp))
    return path


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
