"""`torch.load` of a file this project did not necessarily write: tensors and plain containers only, and a one-line
reason when the file is not that.

PyTorch's own refusals are paragraphs that invite `weights_only=False` (which would run the file's code), or, with
`mmap=True`, a remark about `_use_new_zipfile_serialization` for any file that is not a zip archive: a 0-byte file
or a plain pickle. Here the file's first bytes say what it is before anything is unpickled, and a refusal names
the file and what it holds.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch

from clipmodule.errors import ClipModuleError, one_line

_ZIP_MAGIC = b"PK\x03\x04"
# torch.save's format before PyTorch 1.6: a pickle (protocol 2) of its magic number first.
_LEGACY_MAGIC = b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")


def torch_file_problem(path: str | Path, need_zip: bool = False) -> str | None:
    """Why `path` is not a file `torch.load` may read (None if it may): missing, empty, a plain pickle, not
    written by `torch.save`; with `need_zip` (memory-mapped loading, Lightning checkpoints) also the pre-1.6 format."""
    path = Path(path)
    if not path.exists():
        return "no such file"
    if not path.is_file():
        return "not a regular file"
    with open(path, "rb") as handle:
        head = handle.read(len(_LEGACY_MAGIC))
    if not head:
        return "an empty file (0 bytes), not a weights file"
    if head.startswith(_ZIP_MAGIC):
        return None
    if head == _LEGACY_MAGIC:
        return "a torch.save file of the format before PyTorch 1.6, which cannot be memory-mapped; re-save it " \
               "with a current torch.save" if need_zip else None
    if head[:1] == b"\x80":  # pickle's PROTO opcode
        return "a plain Python pickle, not a weights file written by torch.save; refused unread (unpickling it " \
               "could run code from the file)"
    return "not a weights file written by torch.save (neither its zip archive nor its pre-1.6 format)"


def load_failure_reason(error: BaseException) -> str:
    """Why `torch.load(weights_only=True)` failed, in one line. PyTorch's refusal of a pickled object is a paragraph
    inviting `weights_only=False`, which would run the file's code: the reason is the global it names."""
    text = str(error)
    if isinstance(error, pickle.UnpicklingError) or "Weights only load failed" in text:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        what = f" ({found.group(1)})" if found else ""
        return f"it holds a pickled Python object{what}, not only tensors; loading it would run code from the file"
    if isinstance(error, EOFError) or "failed finding central directory" in text:
        return "truncated (the file ends early)"
    return one_line(error)[:300]


def load_torch_file(path: str | Path, what: str, **options: Any) -> Any:
    """`torch.load(path, weights_only=True, **options)`; a file that is not a torch.save file of tensors is one
    `ClipModuleError` line, "<what> <path>: <reason>"."""
    problem = torch_file_problem(path, need_zip=bool(options.get("mmap")))
    if problem:
        raise ClipModuleError(f"{what} {path}: {problem}")
    try:
        return torch.load(str(path), weights_only=True, **options)
    except Exception as error:  # torch raises many types for a damaged or foreign file
        raise ClipModuleError(f"{what} {path}: {load_failure_reason(error)}") from None
