"""Reading webdataset samples and writing a subset of a shard, for the stages that drop samples (filter,
dedup, decontaminate).

Keys and image fields follow the shard contract (`clipformats.webdataset`). A subset is the kept
samples copied byte for byte and in order, written aside and renamed, so a reader (or a resumed run) never
sees half a shard.
"""

from __future__ import annotations

import io
import json
import tarfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from clipformats.files import atomic_path
from clipformats.webdataset import ShardSpecError, expand_shards, image_field, split_member_name
from curation.errors import CurationError

Members = list[tuple[tarfile.TarInfo, bytes]]


def tar_samples(path: Path) -> Iterator[tuple[str, Members]]:
    """(key, members) per webdataset sample, in file order (keys by the shard contract's member-name rule)."""
    key, members = None, []
    try:
        with tarfile.open(path, "r:*") as archive:
            for info in archive:
                data = archive.extractfile(info).read() if info.isfile() else b""
                member_key = split_member_name(info.name)[0]
                if members and member_key != key:
                    yield key, members
                    members = []
                key = member_key
                members.append((info, data))
    except (tarfile.TarError, EOFError, OSError, zlib.error) as error:
        raise CurationError(f"{path}: corrupt or truncated tar shard ({error})") from None
    if members:
        yield key, members


def sample_fields(members: Members) -> dict[str, bytes]:
    return {split_member_name(info.name)[1]: data for info, data in members if info.isfile()}


def sample_image(members: Members) -> bytes | None:
    """The encoded image of one sample (the shard contract's image field), None when it has none."""
    fields = sample_fields(members)
    name = image_field(fields)
    return fields[name] if name is not None else None


def sample_meta(members: Members) -> dict[str, Any]:
    """Caption (`txt`, else the json's `caption`) and image sides (img2dataset's json: `original_width`/
    `original_height`, else `width`/`height`) of one sample; missing values are None."""
    fields = sample_fields(members)
    try:
        meta = json.loads(fields["json"]) if "json" in fields else {}
    except (ValueError, UnicodeDecodeError):
        meta = {}
    meta = meta if isinstance(meta, dict) else {}
    caption = fields["txt"].decode("utf-8", errors="replace") if "txt" in fields else meta.get("caption")
    width = meta.get("original_width") or meta.get("width")
    height = meta.get("original_height") or meta.get("height")
    return {"caption": caption, "width": width, "height": height}


def shard_images(path: Path, wanted: set[str]) -> dict[str, bytes]:
    """The images of the samples `wanted` of one shard, by key (one pass over the shard)."""
    return {key: image for key, members in tar_samples(path)
            if key in wanted and (image := sample_image(members)) is not None}


def write_subset(source: Path, output: Path, keep: Callable[[str], bool]) -> int:
    """Copy the samples of `source` whose key `keep` accepts into `output`; returns how many were copied."""
    kept = 0
    with atomic_path(output) as tmp, tarfile.open(tmp, "w") as subset:
        for key, members in tar_samples(source):
            if keep(key):
                kept += 1
                for info, payload in members:
                    subset.addfile(info, io.BytesIO(payload) if info.isfile() else None)
    return kept


def input_shards(shards: list[str], what: str = "training shards") -> list[Path]:
    """The input tars (the shard contract's spec rule); outputs keep shard names, so names must differ."""
    try:
        found = [Path(p) for p in expand_shards(shards)]
    except ShardSpecError as error:
        raise CurationError(f"{what}: {error}") from None
    names = Counter(p.name for p in found)
    if (twice := [n for n, c in names.items() if c > 1]):
        raise CurationError(f"{twice[0]}: two {what} have this name (outputs keep shard names)")
    return found


def shard_stem(path: Path) -> str:
    """`shards/00000.tar` → `00000`: the name an embeddings folder files a shard's rows under."""
    return Path(path).name.split(".")[0]
