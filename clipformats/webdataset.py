"""THE shard contract: what `curation download`/`decontaminate` write and `clipmodule` (fit, eval) reads.

One definition of each rule, so the same shards pass every reader or fail every reader:

* a tar member `dir/000123.jpg` belongs to sample key `dir/000123`, field `jpg` (webdataset's rule: the key
  runs to the first dot of the file name, the field is the rest, lower-cased);
* a sample's image is its first field among `IMAGE_EXTENSIONS`, in that order;
* a sample's label is its `cls` field, else the `label` of its json field;
* a shard spec names tars as a folder (its non-hidden `*.tar`), a brace pattern (`shards/{00000..00099}.tar`),
  a glob, one file, or a list of those; every named shard must exist;
* a data card's `content_hash` is the sha256 of the sorted "name sha256" lines of its shards.

Stdlib only (no webdataset, braceexpand, pyarrow or torch): both packages import it from their core.
"""

from __future__ import annotations

import glob
import hashlib
import itertools
import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from clipformats.files import sha256_file

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")
"""Image fields, in the order a sample's image is chosen (PIL decodes all of them)."""
LABEL_FIELD = "cls"
STATS_SUFFIX = "_stats.json"
"""img2dataset's per-shard stats file: `00000.tar` → `00000_stats.json` ("successes": its samples)."""


class ShardSpecError(ValueError):
    """A shard spec that names no shard, or names one that does not exist; the message is one line."""


def split_member_name(name: str) -> tuple[str, str]:
    """(key, field) of a tar member: the key runs to the first dot of the file name, the field is the rest."""
    directory, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    return (f"{directory}/{stem}" if directory else stem), (ext.lower() if dot else "")


def image_field(fields: Iterable[str]) -> str | None:
    """The field holding a sample's image, or None when it has none."""
    present = set(fields)
    return next((name for name in IMAGE_EXTENSIONS if name in present), None)


def sample_label(fields: Mapping[str, bytes]) -> int | None:
    """A sample's class index: its `cls` field, else its json's `label`; None when it has neither.
    A label that is there but is not an integer is a ValueError (a json that is not an object has no label)."""
    if LABEL_FIELD in fields:
        return _integer(bytes(fields[LABEL_FIELD]).decode("utf-8", errors="replace").strip(), "class label")
    if "json" not in fields:
        return None
    try:
        meta = json.loads(fields["json"])
    except (ValueError, UnicodeDecodeError):
        return None
    label = meta.get("label") if isinstance(meta, dict) else None
    return None if label is None else _integer(label, "json label")


def _integer(value: Any, what: str) -> int:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value.strip()):
        return int(value)
    raise ValueError(f"{what} {str(value)[:40]!r} is not an integer")


# ---- which tars a spec names ----------------------------------------------------------------------------

_INT_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)(?:\.\.-?(\d+))?$")
_CHAR_RANGE = re.compile(r"^([A-Za-z])\.\.([A-Za-z])(?:\.\.-?(\d+))?$")


def expand_braces(pattern: str) -> list[str]:
    """Bash-style brace expansion (what webdataset specs use): `{00000..00099}` (zero-padded to the widest
    end, optional `..step`), `{a..e}`, `{train,val}`, nested; a brace with neither `..` nor `,` stays literal."""
    start = _top_level_brace(pattern)
    if start is None:
        return [pattern]
    end = _closing_brace(pattern, start)
    head, body, tail = pattern[:start], pattern[start + 1 : end], pattern[end + 1 :]
    choices = _brace_choices(body)
    if choices is None:
        inner = [f"{{{text}}}" for text in expand_braces(body)]
        return [head + a + b for a, b in itertools.product(inner, expand_braces(tail))]
    return [head + a + b for a, b in itertools.product(choices, expand_braces(tail))]


def _top_level_brace(pattern: str) -> int | None:
    position = pattern.find("{")
    if position < 0:
        if "}" in pattern:
            raise ShardSpecError(f"unbalanced braces in shard spec {pattern!r}")
        return None
    return position


def _closing_brace(pattern: str, start: int) -> int:
    depth = 0
    for position in range(start, len(pattern)):
        depth += {"{": 1, "}": -1}.get(pattern[position], 0)
        if depth == 0:
            return position
    raise ShardSpecError(f"unbalanced braces in shard spec {pattern!r}")


def _brace_choices(body: str) -> list[str] | None:
    """The alternatives a brace body stands for, or None when it is not a range or a list."""
    if found := _INT_RANGE.match(body):
        first, last, step = found.groups()
        padded = any(s.lstrip("-").startswith("0") and s.lstrip("-") != "0" for s in (first, last))
        width = max(len(first), len(last)) if padded else 0
        return [f"{n:0{width}d}" for n in _steps(int(first), int(last), step)]
    if found := _CHAR_RANGE.match(body):
        first, last, step = found.groups()
        return [chr(n) for n in _steps(ord(first), ord(last), step)]
    parts, depth, begin = [], 0, 0
    for position, char in enumerate(body):
        depth += {"{": 1, "}": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(body[begin:position])
            begin = position + 1
    if not parts:
        return None
    parts.append(body[begin:])
    return [text for part in parts for text in expand_braces(part)]


def _steps(first: int, last: int, step: str | None) -> range:
    size = (int(step) or 1) if step else 1
    return range(first, last + 1, size) if first <= last else range(first, last - 1, -size)


def expand_shards(spec: str | os.PathLike | Iterable[str | os.PathLike]) -> list[str]:
    """Shard paths, in order, from a folder (its non-hidden *.tar, sorted), a brace pattern, a glob, a file,
    or a list of those. `ShardSpecError` when a folder or glob names no tar or a named shard is missing."""
    patterns = [spec] if isinstance(spec, (str, os.PathLike)) else list(spec)
    paths: list[str] = []
    missing: list[str] = []
    for pattern in patterns:
        for item in expand_braces(os.fspath(pattern)):
            if os.path.isdir(item):
                found = sorted(glob.glob(os.path.join(glob.escape(item), "*.tar")))  # glob's * skips hidden files
                if not found:
                    raise ShardSpecError(f"no .tar shards in directory {item}")
                paths.extend(found)
            elif glob.has_magic(item):
                found = sorted(glob.glob(item))
                if not found:
                    raise ShardSpecError(f"no shards match {item}")
                paths.extend(found)
            elif os.path.isfile(item):
                paths.append(item)
            else:
                missing.append(item)
    if missing:
        total = len(missing) + len(paths)
        raise ShardSpecError(f"{len(missing)} of {total} shards are missing, the first: {missing[0]}")
    if not paths:
        raise ShardSpecError(f"no shards given ({spec!r})")
    return paths


def is_shard_spec(spec: str) -> bool:
    """Whether a dataset spec names webdataset tars (a `.tar` path, pattern or glob, or a folder of tars)
    rather than something else (an image folder, a csv)."""
    text = os.fspath(spec)
    if text.endswith(".tar") or (".tar" in text and ("{" in text or glob.has_magic(text))):
        return True
    return os.path.isdir(text) and bool(glob.glob(os.path.join(glob.escape(text), "*.tar")))


# ---- what a data card records about its shards ----------------------------------------------------------

def recorded_samples(path: str | Path) -> int | None:
    """The samples img2dataset recorded for a shard (`<name>_stats.json` "successes"), None without a record."""
    path = Path(path)
    stats = path.with_name(path.name.split(".")[0] + STATS_SUFFIX)
    try:
        return int(json.loads(stats.read_text(encoding="utf-8"))["successes"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def shard_records(paths: Iterable[str | Path], samples: Mapping[str, int] | None = None) -> list[dict[str, Any]]:
    """{"name", "samples", "bytes", "sha256"} per shard, as a data card lists them. `samples` (by shard name)
    overrides the count img2dataset recorded beside each shard (0 when there is no record)."""
    records = []
    for path in map(Path, paths):
        count = samples.get(path.name, 0) if samples is not None else (recorded_samples(path) or 0)
        records.append({"name": path.name, "samples": count, "bytes": path.stat().st_size,
                        "sha256": sha256_file(path)})
    return records


def content_hash(records: Iterable[Mapping[str, Any]]) -> str:
    """The data card's `content_hash`: sha256 of the "name sha256" lines of its shards, sorted by name."""
    lines = "".join(f"{r['name']} {r['sha256']}\n" for r in sorted(records, key=lambda r: r["name"]))
    return hashlib.sha256(lines.encode()).hexdigest()
