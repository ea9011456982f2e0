"""Writing files so that a reader never sees half of one: every output of both packages goes through here.

Stdlib only: `clipmodule` (checkpoints, eval records, reports) imports it as well as every curation stage."""

from __future__ import annotations

import contextlib
import glob
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


def remove_stale_temporaries(path: str | Path) -> list[Path]:
    """Remove the temporaries of `path` (`temp_name`) left by writers that were killed: those whose pid is no
    live process here. A live writer's temporary is left alone. Returns what was removed."""
    path = Path(path)
    removed = []
    for tmp in path.parent.glob(f".{glob.escape(path.name)}{TEMP_MARK}*") if path.parent.is_dir() else ():
        pid = tmp.name.rsplit(TEMP_MARK, 1)[1]
        if pid.isdigit() and not _alive(int(pid)) and tmp.is_file():
            tmp.unlink()
            removed.append(tmp)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


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


class UnreadableFile(ValueError):
    """A file that is missing or cannot be parsed; the message is one line naming the file."""


def read_yaml(path: str | Path) -> Any:
    """The YAML document in `path`, or `UnreadableFile` with the line and column of a syntax error."""
    import yaml  # the one non-stdlib import here, only when a config is read

    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UnreadableFile(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UnreadableFile(f"{path}: cannot read config ({getattr(error, 'strerror', None) or error})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise UnreadableFile(f"{path}: malformed YAML{at}: {problem}") from None
