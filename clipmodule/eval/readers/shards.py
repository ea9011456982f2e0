"""Evaluation images from webdataset shards, read in order, with damaged shards skipped and counted (a shard spec
opens through `shard_classification` / `shard_retrieval`).

A shard is indexed first (tar headers only, `clipmodule.data.shards.index_shard`, the reader training
uses), then each sample's fields are read by offset. A truncated or corrupt shard gives the samples before
the damage, as in training; its incomplete last sample is skipped. Both are counted (`damage()`) and the
evaluations report the counts with their metrics, so a smaller test set never passes unnoticed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import IterableDataset, get_worker_info

from clipformats.webdataset import (
    IMAGE_EXTENSIONS,
    LABEL_FIELD,
    ShardSpecError,
    expand_shards,
    image_field,
    sample_label,
)
from clipmodule.data.shards import ShardIndex, index_shard
from clipmodule.errors import ClipModuleError
from clipmodule.eval.readers.images import Transform, load_image

log = logging.getLogger(__name__)


@dataclass
class ShardSpec:
    """Webdataset shards read in order (no shuffling: evaluation is deterministic)."""

    urls: list[str]
    """Local shard paths after brace expansion."""
    field: str
    """`cls` for classification (the shard contract's label: `cls`, else the json's `label`), `txt` for
    retrieval (one caption per line)."""


class ShardImages(IterableDataset):
    """Samples of webdataset shards: (image tensor, label) for `cls`, (image tensor, captions) for `txt`.
    The image field and the label follow `clipformats.webdataset`, as training's reader does.
    DataLoader workers read every num_workers-th shard."""

    def __init__(self, spec: ShardSpec, transform: Transform, name: str, classnames: list[str] | None = None):
        self.spec, self.transform, self.name, self.classnames = spec, transform, name, classnames
        self._indexes: list[ShardIndex] | None = None

    @property
    def num_shards(self) -> int:
        return len(self.spec.urls)

    def indexes(self) -> list[ShardIndex]:
        """The shards' indexes, read once; `make_loader` reads them before workers start, so the warnings
        and counts happen once, in the main process."""
        if self._indexes is None:
            self._indexes = [index_shard(url) for url in self.spec.urls]
            for index in self._indexes:
                if index.error is not None:
                    log.warning("corrupt evaluation shard %s (%s): using the %d samples before the damage",
                                index.path, index.error, len(self._usable(index)))
        return self._indexes

    def damage(self) -> dict[str, int]:
        """{corrupt_shards: shards read only up to their damage, skipped_samples: incomplete samples there}."""
        damaged = [index for index in self.indexes() if index.error is not None]
        skipped = sum(len(index.keys) - len(self._usable(index)) for index in damaged)
        return {"corrupt_shards": len(damaged), "skipped_samples": skipped}

    def _usable(self, index: ShardIndex) -> list[int]:
        """Sample numbers to read: all of an intact shard (a bad sample there is an error naming it); in a
        damaged one, only samples with their image and their label or caption field."""
        if index.error is None:
            return list(range(len(index.keys)))
        wanted = ("txt",) if self.spec.field == "txt" else (LABEL_FIELD, "json")
        return [number for number, fields in enumerate(index.members)
                if image_field(fields) is not None and any(name in fields for name in wanted)]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, Any]]:
        worker = get_worker_info()
        indexes = self.indexes()
        mine = indexes if worker is None else indexes[worker.id :: worker.num_workers]
        for index in mine:
            try:
                handle = open(index.path, "rb")  # noqa: SIM115 - closed below, after the generator's last sample
            except OSError as error:
                raise ClipModuleError(f"{index.path}: cannot open shard ({error.strerror})") from None
            with handle:
                for number in self._usable(index):
                    fields = {}
                    for name, (offset, size) in index.members[number].items():
                        handle.seek(offset)
                        fields[name] = handle.read(size)
                    yield self._decode({"__url__": index.path, "__key__": index.keys[number], **fields})

    def _decode(self, sample: dict[str, Any]) -> tuple[torch.Tensor, Any]:
        where = f"{sample.get('__url__')}:{sample.get('__key__')}"
        image_key = image_field(sample)
        if self.spec.field == "txt":
            if image_key is None or "txt" not in sample:
                raise ClipModuleError(f"{where}: sample lacks an image ({'|'.join(IMAGE_EXTENSIONS)}) or 'txt'")
            try:
                text = sample["txt"].decode("utf-8")
            except UnicodeDecodeError as error:
                raise ClipModuleError(f"{where}: caption is not UTF-8 ({error.reason} at byte {error.start})") from None
            return self._image(sample[image_key], where), [line.strip() for line in text.splitlines() if line.strip()]
        try:
            label = sample_label(sample)
        except ValueError as error:
            raise ClipModuleError(f"{where}: {error}") from None
        if image_key is None or label is None:
            raise ClipModuleError(
                f"{where}: sample lacks an image ({'|'.join(IMAGE_EXTENSIONS)}) or a label ('cls' or json 'label')")
        if not 0 <= label < len(self.classnames or []):
            raise ClipModuleError(f"{where}: class {str(label)!r} is not an index into the "
                                  f"{len(self.classnames or [])} class names")
        return self._image(sample[image_key], where), label

    def _image(self, data: bytes, where: str) -> torch.Tensor:
        return self.transform(load_image(data, name=where))


def _shard_spec(spec: str, field: str) -> ShardSpec:
    try:
        return ShardSpec(urls=expand_shards(spec), field=field)
    except ShardSpecError as error:
        raise ClipModuleError(f"{spec}: {error}") from None


def shard_classification(spec: str, transform: Transform, classnames: list[str] | None) -> ShardImages:
    if classnames is None:
        raise ClipModuleError(f"{spec}: shards carry class indices; give the class names (--classnames)")
    return ShardImages(_shard_spec(spec, "cls"), transform, spec, classnames)


def shard_retrieval(spec: str, transform: Transform) -> ShardImages:
    return ShardImages(_shard_spec(spec, "txt"), transform, spec)
