"""Images of the evaluation data: `load_image` (a path, encoded bytes or a PIL image, as RGB; unreadable input
names itself) and the lazy sources a dataset item may hold instead of a path (a row of an array or an HDF5
file, a slice of a tar shard, a crop), each decoded only when read.
"""

from __future__ import annotations

import functools
import io
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from clipmodule.data.tables import read_regular_file
from clipmodule.errors import ClipModuleError

Transform = Callable[[Image.Image], torch.Tensor]


def reason(error: BaseException) -> str:
    """An exception's first line, short, for a one-line message (the type when it says nothing)."""
    text = str(error).strip()
    return text.splitlines()[0][:160] if text else type(error).__name__


def load_image(source: str | Path | bytes | Image.Image, name: str | None = None) -> Image.Image:
    """An RGB PIL image from a path, encoded bytes or a PIL image; unreadable input names itself."""
    if isinstance(source, Image.Image):
        return source if source.mode == "RGB" else source.convert("RGB")
    try:
        data = read_regular_file(source) if isinstance(source, (str, Path)) else source  # a FIFO would block
        with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as image:
            return image.convert("RGB")
    except FileNotFoundError:
        raise ClipModuleError(f"{name or source}: no such image file") from None
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise ClipModuleError(f"{name or source}: unreadable image ({reason(error)})") from None


@dataclass(frozen=True)
class ArrayImage:
    """Row `index` of an in-memory uint8 array of images (HWC or HW); the array is shared by all rows."""

    array: np.ndarray = field(repr=False)
    index: int

    def read(self) -> Image.Image:
        return Image.fromarray(np.ascontiguousarray(self.array[self.index])).convert("RGB")


@functools.lru_cache(maxsize=8)
def _h5_file(path: str, pid: int):  # one handle per file and process: h5py handles do not survive fork
    import h5py

    return h5py.File(path, "r")


@dataclass(frozen=True)
class H5Image:
    """Row `index` of an HDF5 dataset (PatchCamelyon's `x`), read on demand."""

    path: str
    key: str
    index: int

    def read(self) -> Image.Image:
        try:
            row = _h5_file(self.path, os.getpid())[self.key][self.index]
        except (OSError, KeyError, ValueError, TypeError) as error:  # a damaged chunk surfaces only when read
            raise ClipModuleError(f"{self.path}: row {self.index} of {self.key!r} is unreadable "
                                  f"({reason(error)})") from None
        return Image.fromarray(row).convert("RGB")


@dataclass(frozen=True)
class FileSlice:
    """`size` bytes at `offset` of a file: one image inside an uncompressed tar shard."""

    path: str
    offset: int
    size: int

    def read(self) -> Image.Image:
        with open(self.path, "rb") as handle:
            handle.seek(self.offset)
            return load_image(handle.read(self.size), name=f"{self.path}@{self.offset}")


@dataclass(frozen=True)
class CropImage:
    """A box (left, top, right, bottom) of an image file: VOC2007's per-object classification crops."""

    path: Path
    box: tuple[int, int, int, int]

    def read(self) -> Image.Image:
        return load_image(self.path).crop(self.box)


def read_image(source: Any) -> Image.Image:
    return source.read() if hasattr(source, "read") else load_image(source)
