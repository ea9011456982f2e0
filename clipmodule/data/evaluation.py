"""Evaluation data read during fit/validate/test: every sample once, in a fixed order, dealt round-robin over
ranks and workers (no shuffling): labelled or captioned webdataset shards, and ImageNet-style class folders
(`clipmodule.data.val_sets`)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from torch.utils.data import IterableDataset, get_worker_info

from clipmodule.data.decode import decode_sample
from clipmodule.data.shards import ShardCache
from clipmodule.data.tables import read_regular_file
from clipmodule.data.val_sets import folder_items

log = logging.getLogger(__name__)


def _worker() -> tuple[int, int]:
    info = get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)


class ShardEvalDataset(IterableDataset):
    """Every sample once, in shard order, dealt round-robin over ranks and workers (no shuffling)."""

    def __init__(self, paths: list[str], transform: Callable, rank: int = 0, world_size: int = 1):
        self.paths, self.transform, self.rank, self.world_size = paths, transform, rank, world_size

    def __iter__(self) -> Iterator[dict[str, Any]]:
        worker, workers = _worker()
        mine, total = self.rank * workers + worker, self.world_size * workers
        cache = ShardCache(self.paths, capacity=1)
        number = 0
        for shard, path in enumerate(self.paths):
            index = cache.index(shard)
            if index.error is not None:
                log.warning("corrupt evaluation shard %s (%s)", path, index.error)
            for sample in range(len(index.keys)):
                number += 1
                if (number - 1) % total != mine:
                    continue
                key, fields = cache.read(shard, sample)
                decoded = decode_sample(fields, self.transform, seed=None)
                if decoded is None:
                    log.warning("skipping corrupt evaluation sample %s/%s", Path(path).name, key)
                    continue
                yield {**decoded, "key": f"{Path(path).name}/{key}"}
        cache.close()


class FolderEvalDataset(IterableDataset):
    """Every image of a class-folder set once, dealt round-robin over ranks and workers (like the shards')."""

    def __init__(self, root: Path, classnames: list[str], transform: Callable, rank: int = 0, world_size: int = 1):
        self.root, self.transform, self.rank, self.world_size = root, transform, rank, world_size
        self.items = folder_items(root, classnames)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        worker, workers = _worker()
        mine, total = self.rank * workers + worker, self.world_size * workers
        for path, label in self.items[mine::total]:
            key = os.path.relpath(path, self.root)
            try:
                fields = {"jpg": read_regular_file(path), "cls": str(label).encode()}  # a FIFO must not block
            except OSError as error:
                log.warning("skipping unreadable evaluation image %s (%s)", key, error.strerror or error)
                continue
            decoded = decode_sample(fields, self.transform, seed=None)  # the format is read from the bytes
            if decoded is None:
                log.warning("skipping undecodable evaluation image %s", key)
                continue
            yield {**decoded, "key": key}
