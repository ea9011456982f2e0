"""Shards in object storage: `s3://`, `gs://`, `https://` (any fsspec URL) read like local files.

The reader needs three things of a shard: its size, its tar headers (the index) and the byte range of a
sample. fsspec gives each as range requests, so nothing is downloaded whole. Indexes are cached on local
disk keyed by the URL and the object's ETag and size (`clipmodule.data.tar_index`), so a second run, epoch
or worker does not re-read the headers; sample data is never cached on disk. Credentials and endpoints
come from each backend's usual settings (S3: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
`AWS_ENDPOINT_URL`, `~/.aws`).

A missing object, a denied request or an unreachable endpoint is a `ClipModuleError` of one line naming
the URL.
"""

from __future__ import annotations

import glob
import json
import posixpath
from typing import Any, BinaryIO

from clipformats.webdataset import STATS_SUFFIX, expand_braces
from clipmodule.errors import ClipModuleError, one_line

BLOCK_SIZE = 1 << 20
"""Bytes per range request; fsspec keeps a few recent blocks of each open shard in memory."""


def is_remote(path: str) -> bool:
    """Whether `path` is a URL for fsspec (`file://` and plain paths are local)."""
    scheme, sep, _ = str(path).partition("://")
    return bool(sep) and scheme.lower() != "file" and scheme.isidentifier()


def remote_error(url: str, error: BaseException) -> ClipModuleError:
    """One line naming the URL and what went wrong."""
    if _denied(error):
        return ClipModuleError(f"{url}: access denied ({one_line(error)[:200]})")
    if isinstance(error, FileNotFoundError):
        return ClipModuleError(f"{url}: no such object")
    if isinstance(error, PermissionError):
        return ClipModuleError(f"{url}: access denied ({one_line(error)[:200]})")
    if isinstance(error, ImportError):
        return ClipModuleError(f"{url}: {one_line(error)[:200]}")
    return ClipModuleError(f"{url}: cannot read ({type(error).__name__}: {one_line(error)[:200]})")


def _denied(error: BaseException | None) -> bool:
    """An HTTP 401/403 anywhere in the chain: fsspec's HTTP filesystem reports it as FileNotFoundError."""
    for _ in range(4):
        if error is None:
            return False
        if getattr(error, "status", None) in (401, 403):
            return True
        error = error.__cause__ or error.__context__
    return False


def _filesystem(url: str):
    import fsspec  # the train extra; only remote shards need it

    try:
        fs, _ = fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as error:  # no backend for the scheme (gs:// without gcsfs), a bad URL
        raise remote_error(url, error) from None
    return fs


def _call(url: str, action, *args: Any):
    try:
        return action(*args)
    except ClipModuleError:
        raise
    except Exception as error:  # each backend raises its own types (botocore, aiohttp): all are about the URL
        raise remote_error(url, error) from None


def _full_url(fs, url: str, path: str) -> str:
    return path if "://" in path else fs.unstrip_protocol(path)


def expand_remote(pattern: str) -> list[str]:
    """The shards a remote pattern names, each checked to exist: `.tar` URLs (brace patterns expanded by the
    shard contract's rule), a glob (`s3://b/s/*.tar`) or a folder (its `.tar` objects, sorted)."""
    paths: list[str] = []
    missing: list[str] = []
    listings: dict[str, set[str] | None] = {}
    for url in expand_braces(pattern):
        fs = _filesystem(url)
        if glob.has_magic(url.partition("://")[2]):
            found = sorted(_full_url(fs, url, p) for p in _call(url, fs.glob, url) if p.endswith(".tar"))
            if not found:
                raise ClipModuleError(f"no shards match {url}")
            paths.extend(found)
        elif url.endswith(".tar"):
            (paths if _exists(fs, url, listings) else missing).append(url)
        else:
            listed = _call(url, fs.ls, url.rstrip("/"), False)
            if not listed:  # object stores have no empty folders; a cached listing may give [] for none
                raise ClipModuleError(f"{url}: no such object")
            found = sorted(_full_url(fs, url, p) for p in listed if str(p).endswith(".tar"))
            if not found:
                raise ClipModuleError(f"no .tar shards under {url}")
            paths.extend(found)
    if missing:
        total = len(missing) + len(paths)
        raise ClipModuleError(f"{len(missing)} of {total} shards are missing, the first: {missing[0]}")
    return paths


def _exists(fs, url: str, listings: dict[str, set[str] | None]) -> bool:
    """Whether an object exists: one listing of its folder serves every shard in it (thousands of shards
    need no request each); where a folder cannot be listed (a web server), one request per shard."""
    folder = url.rsplit("/", 1)[0]
    if folder not in listings:
        try:
            listings[folder] = {fs._strip_protocol(p) for p in fs.ls(folder, detail=False)}
        except Exception:  # not listable: ask per object below
            listings[folder] = None
    listed = listings[folder]
    if listed is not None and fs._strip_protocol(url) in listed:
        return True
    try:  # info, not exists: fsspec's HTTP `exists` is a GET, which starts sending the whole object
        _call(url, fs.info, url)
    except ClipModuleError as error:
        if str(error).endswith("no such object"):
            return False
        raise
    return True


class _RangeReads:
    """A remote shard's file, read by byte ranges past its first block. fsspec raises ValueError there when a web
    server ignores the Range header (200 and the whole file, not 206); that is said in one line, where the
    shard would otherwise pass for corrupt from its first megabyte on. A shard within the first block (the
    whole answer is kept) reads as it is."""

    def __init__(self, handle: BinaryIO, url: str):
        self.handle, self.url = handle, url

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.handle.seek(offset, whence)

    def read(self, size: int = -1) -> bytes:
        try:
            return self.handle.read(size)
        except ValueError as error:
            if "range" not in str(error).lower():
                raise
            raise ClipModuleError(f"{self.url}: the server ignores byte-range requests (it answers with the whole "
                                  "file); shards are read by range: serve them from a server that supports "
                                  "ranges, or copy them to local disk") from None

    def close(self) -> None:
        self.handle.close()


def open_remote(url: str) -> tuple[BinaryIO, int, str]:
    """(file, size, version) of a remote shard; the file reads by range, keeping recent blocks in memory.
    The version (and size) are asked of the store each time, never taken from a listing fsspec cached (s3fs
    keeps the one `expand_remote` made, and every loader worker inherits it): a shard replaced since, by one of
    the same size, would otherwise be read through the old one's cached index."""
    fs = _filesystem(url)
    fs.invalidate_cache(url)
    info = _call(url, fs.info, url)
    handle = _call(url, lambda: fs.open(url, "rb", block_size=BLOCK_SIZE, cache_type="blockcache"))
    handle = _RangeReads(handle, url)
    version = next((str(info[name]) for name in ("ETag", "etag", "LastModified", "Last-Modified", "mtime", "updated")
                    if info.get(name)), "")
    return handle, int(info["size"]), version


def read_remote_stats(url: str) -> int | None:
    """img2dataset's recorded sample count (`<name>_stats.json` "successes") beside a remote shard."""
    directory, name = posixpath.split(url)
    stats = f"{directory}/{name.split('.')[0]}{STATS_SUFFIX}"
    fs = _filesystem(stats)
    try:
        return int(json.loads(fs.cat_file(stats))["successes"])
    except Exception:  # no record (or an unreadable one): the caller indexes the tar instead
        return None
