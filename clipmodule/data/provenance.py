"""What a resumed fit must find unchanged: the training data and the loader settings that place each sample.

A checkpoint stores loader *positions* (`ShardStream.state_dict`: shard and sample numbers, a shuffle buffer of
references, a generator state). They name the same samples only over the same shards, dealt to as many workers,
with the same seed, shuffle buffer, batch size and epoch length. `training_record` describes all of that as plain
data (the datamodule writes it into every checkpoint) and `record_change` names the first difference between the
checkpoint's record and the resumed run's, in one line:

- a shard: its file name, size and version (a local file's mtime in ns, an object's ETag or Last-Modified), so a
  shard replaced under the same name, a shorter one or another folder's is seen; a folder moved with its files'
  times kept (`cp -p`, `rsync -a`, `mv`) is the same data. A shard's sample count follows from its bytes, and the
  sample count of the whole set decides the epoch length, which is compared.
- a CSV or a folder of image + .txt pairs: its rows (image paths and CSV captions), hashed. The image files the
  rows name are not checked (a million `stat` calls); nor are the .txt captions of a folder.
- settings: `data.seed`, `batch_size`, `num_workers`, `shuffle_buffer`, `resample`, `samples_per_epoch`, each
  source's share and the batches per rank of an epoch (which follow from them and the samples the sources hold).

The worker count cannot change: each worker reads its own slice of the shard permutation through its own buffer,
and N workers' positions do not say which samples M workers would still have to read.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import posixpath
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from clipmodule.data import remote
from clipmodule.data.sources import TrainSource
from clipmodule.errors import ClipModuleError

SETTING_ORDER = ("num_workers", "seed", "batch_size", "shuffle_buffer", "resample", "samples_per_epoch")
WHY_WORKERS = " (each worker's position lies in its own slice of the shards and cannot be dealt to other workers)"
MTIME = "mtime_ns="  # a local file's version, as the shard-index cache keys it
REMOTE_THREADS = 8  # an object's size and ETag is one request; many shards are asked for in parallel


def shard_identity(path: str) -> list[Any]:
    """[path, size in bytes, version]: a local file's mtime in ns, or an object's ETag (else Last-Modified)."""
    if remote.is_remote(path):
        handle, size, version = remote.open_remote(path)  # its size and version only: no data is read
        handle.close()
        return [path, size, version]
    try:
        stat = os.stat(path)
    except OSError as error:
        raise ClipModuleError(f"{path}: {error.strerror}") from None
    return [os.path.abspath(path), stat.st_size, f"{MTIME}{stat.st_mtime_ns}"]


def _version_text(version: str) -> str:
    """A local file's version as a time a reader can compare (UTC, to the ns); an ETag as it is."""
    if not version.startswith(MTIME):
        return version
    seconds, nanoseconds = divmod(int(version[len(MTIME):]), 10**9)
    return f"modified {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(seconds))}.{nanoseconds:09d} UTC"


def _digest_strings(digest: Any, column: Any) -> None:
    """Adds an Arrow string column's values (not its memory layout) to `digest`."""
    import numpy as np
    import pyarrow as pa

    _, offset_buffer, data = column.buffers()
    width = np.int64 if pa.types.is_large_string(column.type) else np.int32
    offsets = np.frombuffer(offset_buffer, dtype=width)[column.offset : column.offset + len(column) + 1]
    digest.update(len(column).to_bytes(8, "little"))
    digest.update((offsets - offsets[0]).astype("<i8").tobytes())
    if data is not None:
        digest.update(memoryview(data)[int(offsets[0]) : int(offsets[-1])])


def source_record(source: TrainSource, share: float) -> dict[str, Any]:
    """One source's identity: its shards' identities, or its table's rows (count and sha256), and its share."""
    record: dict[str, Any] = {"name": source.name, "share": share}
    if source.table is None:
        remote_shards = any(remote.is_remote(path) for path in source.shards)
        with ThreadPoolExecutor(REMOTE_THREADS if remote_shards else 1) as pool:
            record["shards"] = list(pool.map(shard_identity, source.shards))
        return record
    digest = hashlib.sha256()
    for column in (source.table.images, source.table.captions):
        if column is not None:
            _digest_strings(digest, column)
    record["table"] = {"source": source.table.source, "rows": len(source.table), "sha256": digest.hexdigest()}
    return record


def training_record(sources: list[TrainSource], shares: list[float], settings: dict[str, Any]) -> dict[str, Any]:
    """The data and loader settings that decide which sample a loader position means (plain data)."""
    return {"settings": dict(settings), "sources": [source_record(s, share) for s, share in zip(sources, shares)]}


def _shown(value: Any) -> str:
    return json.dumps(value)


def _setting_change(saved: dict[str, Any], current: dict[str, Any]) -> str | None:
    for name in SETTING_ORDER:
        if name in saved and saved[name] != current.get(name):
            why = WHY_WORKERS if name == "num_workers" else ""
            return (f"data.{name} is {_shown(current.get(name))}, the checkpoint's fit ran with {_shown(saved[name])}"
                    f"{why}: resume with --data.{name} {_shown(saved[name])}")
    return None


def _shard_change(name: str, saved: list[list[Any]], current: list[list[Any]]) -> str | None:
    if len(saved) != len(current):
        return (f"training source {name!r} has {len(current)} shards (e.g. {current[0][0]}), the checkpoint's had "
                f"{len(saved)} (e.g. {saved[0][0]})")
    differing = [(then, now) for then, now in zip(saved, current)
                 if (posixpath.basename(then[0]), *then[1:]) != (posixpath.basename(now[0]), *now[1:])]
    if not differing:
        return None
    (then_path, then_size, then_version), (path, size, version) = differing[0]
    if posixpath.basename(then_path) != posixpath.basename(path):
        what = f"{path} stands where the checkpoint had {then_path}"
    elif then_size != size:
        what = f"{path} is {size} bytes, the checkpoint's {then_path} was {then_size}"
    elif then_path == path:
        what = f"{path} was replaced or modified since the checkpoint ({_version_text(then_version)} then, " \
               f"{_version_text(version)} now)"
    else:
        what = f"{path} is another file than the checkpoint's {then_path} ({_version_text(version)}, the " \
               f"checkpoint's {_version_text(then_version)})"
    return what if len(differing) == 1 else \
        f"{len(differing)} of {len(current)} training shards differ, the first: {what}"


def _table_change(saved: dict[str, Any], current: dict[str, Any]) -> str | None:
    if saved["rows"] != current["rows"]:
        return f"{current['source']} has {current['rows']} rows, the checkpoint's {saved['source']} had {saved['rows']}"
    if saved["sha256"] != current["sha256"]:
        return f"the rows of {current['source']} (image paths, captions) differ from the checkpoint's {saved['source']}"
    return None


def _source_change(saved: list[dict[str, Any]], current: list[dict[str, Any]]) -> str | None:
    names = ([s["name"] for s in saved], [s["name"] for s in current])
    if names[0] != names[1]:
        return f"data.train_shards names the sources {', '.join(names[1])}, the checkpoint's {', '.join(names[0])}"
    for then, now in zip(saved, current):
        if ("table" in then) != ("table" in now):
            kinds = ["a table" if "table" in record else "shards" for record in (now, then)]
            return f"training source {now['name']!r} is {kinds[0]}, the checkpoint's was {kinds[1]}"
        change = _table_change(then["table"], now["table"]) if "table" in now else \
            _shard_change(now["name"], then["shards"], now["shards"])
        if change:
            return change
    for then, now in zip(saved, current):
        if not math.isclose(then["share"], now["share"], rel_tol=1e-9):
            return (f"training source {now['name']!r} has a share of {now['share']:.4g}, the checkpoint's fit drew "
                    f"{then['share']:.4g} (data.train_shards weights or data.upsampling_factors)")
    return None


def record_change(saved: dict[str, Any], current: dict[str, Any]) -> str | None:
    """The first difference between the checkpoint's record and this run's, as the end of a sentence; None if none.

    Settings come first (their message says how to resume), then the data, then the epoch length that follows
    from both."""
    change = _setting_change(saved["settings"], current["settings"])
    if change:
        return change
    change = _source_change(saved["sources"], current["sources"])
    if change:
        return f"{change}; resume on the data the checkpoint was written with, or start a new fit from its " \
               "weights (model.init_from)"
    then, now = saved["settings"].get("batches_per_rank"), current["settings"].get("batches_per_rank")
    if then is not None and then != now:
        return f"an epoch is {now} batches per rank, the checkpoint's fit had {then}"
    return None


def check_resume(saved: dict[str, Any] | None, current: dict[str, Any], checkpoint: str) -> None:
    """Refuses, in one line, a resume whose data or loader settings differ from the checkpoint's."""
    if saved is None:
        return
    change = record_change(saved, current)
    if change:
        raise ClipModuleError(f"cannot resume from {checkpoint}: {change}")
