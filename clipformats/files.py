"""Writing files so that a reader never sees half of one: every output of both packages goes through here.

Stdlib only: `clipmodule` (checkpoints, eval records, reports) imports it as well as every curation stage."""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import json
import os
from collections.abc import Hashable, Iterator
from pathlib import Path
from typing import Any

TEMP_MARK = ".tmp-"
FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def disk_full(error: BaseException) -> bool:
    """Whether an error is a full disk or quota (pyarrow's carry the errno in their message only)."""
    if not isinstance(error, OSError):
        return False
    text = str(error)
    return error.errno in FULL_ERRNOS or "No space left on device" in text or "Disk quota exceeded" in text


class DiskFull(OSError):
    """No space left while writing `path` (an OSError, so every `except OSError` still sees it); its message is
    one line naming the file. What `atomic_path` was writing is removed, earlier files are untouched."""

    def __init__(self, path: str | Path):
        super().__init__(errno.ENOSPC, "No space left on device", str(path))

    def __str__(self) -> str:
        return f"{self.filename}: no space left on device (nothing of it was written; free space and run again)"


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
    """Yield a temporary name next to `path`; rename it onto `path` only if the block succeeds. A full disk
    becomes `DiskFull` naming `path`."""
    path = Path(path)
    tmp = temp_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as error:
        if disk_full(error) and not isinstance(error, DiskFull):
            raise DiskFull(path) from None
        raise
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


class DuplicateKey(ValueError):
    """A mapping that names a key twice (PyYAML keeps the last silently)."""


def _unique_keys_loader(yaml: Any) -> type:
    """PyYAML's SafeLoader, refusing a key given twice in one mapping (a merge key `<<` may repeat)."""

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                if not isinstance(key, Hashable):
                    continue  # a complex key: SafeLoader refuses it itself
                if key in seen:
                    raise DuplicateKey(f"duplicate key {key!r} at line {line} (first at line {seen[key]})")
                seen[key] = line
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader


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
        return yaml.load(text, Loader=_unique_keys_loader(yaml))  # noqa: S506 - a SafeLoader subclass
    except DuplicateKey as error:
        raise UnreadableFile(f"{path}: {error}") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise UnreadableFile(f"{path}: malformed YAML{at}: {problem}") from None
