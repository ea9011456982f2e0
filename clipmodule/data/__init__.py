"""Training data: the resumable webdataset shard reader, the Lightning DataModule, synthetic shards.

`clipmodule.data.ShardDataModule` (the name experiment YAMLs use) is resolved on first use, so importing
`clipmodule.data.shards` alone does not load Lightning."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {"ShardDataModule": "clipmodule.data.datamodule"}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'clipmodule.data' has no attribute {name!r}")


__all__ = list(_EXPORTS)
