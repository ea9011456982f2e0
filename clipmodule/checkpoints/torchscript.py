"""The tensors of a TorchScript archive (OpenAI's released `.pt` files), read without running anything in it.

`torch.jit.load` would compile the archive's `code/` and run its `__setstate__` methods: code from the file.
Here only `data.pkl` is read, by an unpickler that knows a handful of names (tensor rebuilding, storage types,
OrderedDict). Every `__torch__.*` object becomes a plain record of its attributes, so no method of the
archive is ever called; anything else the pickle asks for is refused. Storages are read from `data/<key>`.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from clipmodule.errors import ClipModuleError, one_line

StateDict = dict[str, torch.Tensor]
_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "HalfStorage": torch.float16, "BFloat16Storage": torch.bfloat16,
    "DoubleStorage": torch.float64, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}


class _ScriptObject:
    """Stands in for a `__torch__.*` class: BUILD hands it the pickled attributes, nothing else happens."""

    attributes: dict[str, Any] = {}  # replaced, never mutated: an object the pickle never BUILDs has none

    def __setstate__(self, state: Any) -> None:
        self.attributes = state if isinstance(state, dict) else {}


def _rebuild_tensor(storage: torch.Tensor, offset: int, size: tuple, stride: tuple, *_: Any) -> torch.Tensor:
    return storage.as_strided(tuple(size), tuple(stride), offset)


def _rebuild_parameter(data: torch.Tensor, *_: Any) -> torch.Tensor:
    return data


class _ArchiveUnpickler(pickle.Unpickler):
    _ALLOWED = {
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("collections", "OrderedDict"): OrderedDict,
    }

    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str):
        super().__init__(io.BytesIO(data))
        self.archive, self.prefix, self.storages = archive, prefix, {}

    def find_class(self, module: str, name: str) -> Any:
        if module == "__torch__" or module.startswith("__torch__."):
            return _ScriptObject
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        if (module, name) in self._ALLOWED:
            return self._ALLOWED[(module, name)]
        raise pickle.UnpicklingError(f"the archive asks for {module}.{name}, which a weights file never needs")

    def persistent_load(self, pid: Any) -> torch.Tensor:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], torch.dtype)):
            raise pickle.UnpicklingError(f"unexpected persistent record {str(pid)[:80]}")
        _, dtype, key, _, numel = pid
        if key not in self.storages:
            raw = bytearray(self.archive.read(f"{self.prefix}data/{key}"))
            flat = torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)
            if flat.numel() < numel:
                raise pickle.UnpicklingError(f"storage {key} holds {flat.numel()} of {numel} elements")
            self.storages[key] = flat
        return self.storages[key]


def is_torchscript(path: Path) -> bool:
    """A zip with a `constants.pkl`: how `torch.jit.save` writes (and plain `torch.save` never does)."""
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("constants.pkl") for name in archive.namelist())
    except zipfile.BadZipFile:
        return False


def read_torchscript(path: Path) -> StateDict:
    """Every tensor attribute of the archive's module tree, named as `state_dict()` would name it."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            data = [name for name in names if name.endswith("data.pkl") and name.count("/") == 1]
            if not data:
                raise ClipModuleError(f"{path}: TorchScript archive without a data.pkl")
            prefix = data[0][: -len("data.pkl")]
            if f"{prefix}byteorder" in names and archive.read(f"{prefix}byteorder").strip() != b"little":
                raise ClipModuleError(f"{path}: big-endian TorchScript archive; re-save it on a little-endian machine")
            root = _ArchiveUnpickler(archive.read(data[0]), archive, prefix).load()
    except (pickle.UnpicklingError, zipfile.BadZipFile, KeyError, EOFError, ValueError, RuntimeError, TypeError,
            AttributeError, IndexError) as error:
        raise ClipModuleError(f"{path}: refusing this TorchScript archive ({one_line(error)[:200]})") from None
    if not isinstance(root, _ScriptObject):
        raise ClipModuleError(f"{path}: TorchScript archive does not hold a module")
    state_dict: StateDict = {}
    _collect(root, "", state_dict, depth=0)
    return state_dict


def _collect(node: _ScriptObject, prefix: str, out: StateDict, depth: int) -> None:
    if depth > 64:  # a module tree is shallow; a cycle or a crafted chain is not a model
        raise ClipModuleError("TorchScript archive nests modules more than 64 deep")
    for name, value in node.attributes.items():
        if isinstance(value, torch.Tensor):
            out[f"{prefix}{name}"] = value
        elif isinstance(value, _ScriptObject):
            _collect(value, f"{prefix}{name}.", out, depth + 1)
