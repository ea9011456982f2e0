"""The index of one webdataset tar: where each sample's fields lie, read from the tar headers alone.

`tarfile` builds a TarInfo per member (and parses a pax header per member: webdataset's TarWriter writes
float mtimes, which need one), about 0.25 ms a member; a shard of 10,000 samples took seconds to open. The
headers are fixed 512-byte blocks, so they are parsed here directly: one `seek` + `read(512)` per header, the
data never read. That also works on a remote file (fsspec), where the reads are range requests.

Formats read: ustar/POSIX (name + prefix, octal or base-256 sizes), pax per-member headers (`path`,
`size`) and GNU long names; a global pax header, links and directories are skipped. A bad checksum, a
member running past the end of the file or an unreadable header ends the index with `error` set; the
samples before the damage are kept (a truncated download still gives what it holds).

A whole tar ends with two 512-byte zero blocks (POSIX), and every writer in this pipeline writes them:
Python's `tarfile` (webdataset's `TarWriter`, so img2dataset's shards), GNU tar and bsdtar, which then pad
the file to a 10,240-byte record. A file that ends before those two blocks is truncated, wherever the cut
falls (in a header, in a member's data or in the padding after it): `error` says so. What follows the two
blocks (the record padding, whole or cut, or anything else) is not read: tarfile and webdataset stop there too.

Indexes are cached as JSON in `$CLIPMODULE_CACHE/shard-index` (default `~/.cache/clipmodule/shard-index`),
keyed by the shard's path or URL, size and version (mtime, or a remote object's ETag): every DataLoader
worker starts fresh each epoch, and a shard is indexed once, not once per epoch and worker.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from clipformats.files import write_text
from clipformats.webdataset import split_member_name
from clipmodule.errors import ClipModuleError

BLOCK = 512
ZERO_BLOCK = bytes(BLOCK)
_REGULAR = (b"0", b"\0", b"7")


@dataclass
class ShardIndex:
    """The samples of one tar file, in file order: key, {field: (data offset, size)} and the byte span
    [start, end) that holds all of a sample's fields (read in one request)."""

    path: str
    keys: list[str] = field(default_factory=list)
    members: list[dict[str, tuple[int, int]]] = field(default_factory=list)
    spans: list[tuple[int, int]] = field(default_factory=list)
    error: str | None = None
    """Why reading stopped early (a corrupt or truncated shard); the samples before the damage are kept."""

    def to_json(self) -> dict:
        return {"keys": self.keys, "members": [{k: list(v) for k, v in m.items()} for m in self.members],
                "spans": [list(s) for s in self.spans], "error": self.error}

    @classmethod
    def from_json(cls, path: str, data: dict) -> ShardIndex:
        members = [{k: (int(v[0]), int(v[1])) for k, v in m.items()} for m in data["members"]]
        return cls(path, list(data["keys"]), members, [(int(a), int(b)) for a, b in data["spans"]], data["error"])


class TarHeaderError(ValueError):
    """A header block that is not a tar header (bad checksum, bad number)."""


def read_index(path: str, handle: BinaryIO, size: int) -> ShardIndex:
    """Index the tar in `handle` (`size` bytes), reading only its header blocks, up to the end-of-archive blocks."""
    index = ShardIndex(path)
    reader = _ChunkReader(handle, size)
    position = 0
    long_name: str | None = None
    pax: dict[str, str] = {}
    try:
        while True:
            header = reader.read(position, BLOCK)
            if len(header) < BLOCK or header == ZERO_BLOCK:
                index.error = _end_error(reader, position, size, index)
                break
            name, kind, length = _parse_header(header)
            start = position + BLOCK
            if start + length > size:
                index.error = f"truncated at member {long_name or pax.get('path') or name}"
                break
            if kind in (b"x", b"L"):
                payload = reader.read(start, length)
                if kind == b"x":
                    pax = _parse_pax(payload)
                else:
                    long_name = payload.rstrip(b"\0").decode("utf-8", "surrogateescape")
            elif kind in _REGULAR:
                member_name = pax.get("path") or long_name or name
                member_size = int(pax["size"]) if "size" in pax else length
                if start + member_size > size:
                    index.error = f"truncated at member {member_name}"
                    break
                _add_member(index, member_name, start, member_size)
                length = member_size
                long_name, pax = None, {}
            else:  # directory, link, global pax header: nothing to read
                long_name, pax = None, {}
            position = start + (length + BLOCK - 1) // BLOCK * BLOCK
    except (TarHeaderError, ValueError, UnicodeDecodeError) as error:  # damage: kept, and cached with the index
        index.error = f"{type(error).__name__}: {error}"
    return index


def _end_error(reader: _ChunkReader, position: int, size: int, index: ShardIndex) -> str | None:
    """None when the archive ends properly at `position` (two zero blocks), else why not. A file cut before
    them lost whatever followed (a header, a member, or only the end marker) and cannot tell which."""
    if size == 0:
        return "empty file"
    tail = reader.read(position, 2 * BLOCK)
    if tail == 2 * ZERO_BLOCK:
        return None
    if len(tail) == 2 * BLOCK:  # the first block is zero (the caller stopped there), the second is not
        return f"a lone zero block at byte {position}, not the tar's end (two zero blocks)"
    after = f" in or after sample {index.keys[-1]}" if index.keys else ""
    return f"truncated at byte {size}{after}: the file ends before the tar's two end-of-archive blocks"


class _ChunkReader:
    """Reads at offsets from chunks of the file: headers of small members share a chunk, so most header
    reads cost no call into the file (a system call locally, a range request remotely). Nothing past `size`
    (the size the index is for) is read."""

    def __init__(self, handle: BinaryIO, size: int, chunk: int = 1 << 16):
        self.handle, self.size, self.chunk = handle, size, chunk
        self.start, self.data = 0, b""

    def read(self, offset: int, size: int) -> bytes:
        if not (self.start <= offset and offset + size <= self.start + len(self.data)):
            self.handle.seek(offset)
            self.start, self.data = offset, self.handle.read(max(0, min(max(size, self.chunk), self.size - offset)))
        return self.data[offset - self.start : offset - self.start + size]


def _add_member(index: ShardIndex, name: str, offset: int, size: int) -> None:
    key, ext = split_member_name(name)
    if not index.keys or index.keys[-1] != key:
        index.keys.append(key)
        index.members.append({})
        index.spans.append((offset, offset + size))
    index.members[-1][ext] = (offset, size)
    index.spans[-1] = (index.spans[-1][0], offset + size)


def _parse_header(header: bytes) -> tuple[str, bytes, int]:
    """(name, type flag, size) of one header block; TarHeaderError when it is not one."""
    try:
        stored = _number(header[148:156])
    except TarHeaderError:
        stored = -1
    computed = sum(header) - sum(header[148:156]) + 8 * 32  # the checksum field counts as 8 spaces
    if stored != computed:
        raise TarHeaderError("bad checksum: not a tar header")
    name = header[0:100].split(b"\0", 1)[0]
    if header[257:262] == b"ustar":
        prefix = header[345:500].split(b"\0", 1)[0]
        if prefix:
            name = prefix + b"/" + name
    return name.decode("utf-8", "surrogateescape"), header[156:157], _number(header[124:136])


def _number(field_bytes: bytes) -> int:
    """A tar number field: octal ASCII, or base-256 (GNU) when the top bit of the first byte is set."""
    if field_bytes[0] & 0x80:
        value = int.from_bytes(field_bytes[1:], "big")
        return -value if field_bytes[0] & 0x40 else value
    text = field_bytes.replace(b"\0", b" ").strip()
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise TarHeaderError(f"bad number field {field_bytes!r}") from None


def _parse_pax(payload: bytes) -> dict[str, str]:
    """The records of a pax header: "<length> <key>=<value>\\n", the length counting the whole record."""
    records: dict[str, str] = {}
    position = 0
    while position < len(payload) and payload[position : position + 1] not in (b"\0", b""):
        space = payload.index(b" ", position)
        length = int(payload[position:space])
        if length <= 0:
            raise TarHeaderError("bad pax record length")
        key, _, value = payload[space + 1 : position + length - 1].partition(b"=")
        records[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        position += length
    return records


CACHE_FORMAT = 2
"""Part of every cache key: 2 since truncation before the end-of-archive blocks is reported (entries of
format 1 called such shards whole)."""


def cached_index(path: str, identity: str, handle: BinaryIO, size: int, version: str) -> ShardIndex:
    """The index of a shard from the cache when its identity (absolute path or URL), size and version match,
    else read and cached. A read that failed (a network error) is reported in `error` and not cached; without
    a version (a web server that sends no ETag or Last-Modified) nothing is cached: a change would go unseen."""
    cache_file = index_cache_path(identity, size, version) if version else None
    try:
        if cache_file is not None:
            return ShardIndex.from_json(path, json.loads(cache_file.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        pass  # not cached yet, or a damaged entry: index again
    try:
        index = read_index(path, handle, size)
    except ClipModuleError:  # not the shard's damage: the whole run's (a server that cannot serve ranges)
        raise
    except Exception as error:  # local OSError, or whatever a remote backend raises
        return ShardIndex(path, error=f"{type(error).__name__}: {error}")
    if cache_file is not None:
        _store(cache_file, index.to_json())
    return index


def index_cache_path(path: str, size: int, version: str) -> Path:
    root = Path(os.environ.get("CLIPMODULE_CACHE") or Path.home() / ".cache" / "clipmodule") / "shard-index"
    digest = hashlib.sha256(f"{CACHE_FORMAT}\n{path}\n{size}\n{version}".encode()).hexdigest()[:32]
    return root / f"{digest}.json"


def _store(path: Path, data: dict) -> None:
    """Written to a temporary file and renamed, so concurrent workers never read half an index."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path, json.dumps(data))
    except OSError:  # a read-only home: the index is rebuilt next time, nothing else is lost
        pass
