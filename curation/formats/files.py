"""Writing files so that a reader never sees half of one: every output of both packages goes through here.

Stdlib only: `clipmodule` (checkpoints, eval records, reports) imports it as well as every curation stage."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TEMP_MARK = ".tmp-"


def temp_name(path: Path) -> Path:
    """The hidden name a write goes to before it is renamed onto `path` (pid-tagged: two writers never share it)."""
    return path.with_name(f".{path.name}{TEMP_MARK}{os.getpid()}")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary name next to `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    tmp = temp_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path: str | Path, text: str) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def write_json(path: str | Path, data: Any) -> Path:
    return write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()
