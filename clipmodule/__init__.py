"""CLIP-style contrastive image-text pretraining: models, training, evaluation, comparison.

The names OpenAI's `clip` package made familiar are here: `load`, `tokenize`, `available_models`, plus
`create_model` for a randomly initialised model of any registered architecture. Submodules are imported
on first use, so `import clipmodule` (and the CLI's --help) stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "load": "clipmodule.api",
    "create_model_and_transforms": "clipmodule.api",
    "tokenize": "clipmodule.api",
    "get_tokenizer": "clipmodule.api",
    "tokenizer_spec": "clipmodule.api",
    "TokenizerSpec": "clipmodule.api",
    "default_download_root": "clipmodule.api",
    "available_models": "clipmodule.models",
    "create_model": "clipmodule.models",
    "CLIP": "clipmodule.models",
    "save_checkpoint": "clipmodule.checkpoints.io",
    "load_checkpoint": "clipmodule.checkpoints.io",
    "image_transform": "clipmodule.transforms",
    "ClipModuleError": "clipmodule.errors",
    "get_model": "clipmodule.classifiers.zoo",
    "inference_model": "clipmodule.classifiers.inference",
    "segment": "clipmodule.dense.segment",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'clipmodule' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_EXPORTS))


__all__ = list(_EXPORTS)
