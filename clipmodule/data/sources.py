"""What `data.train_shards` names: one source of training pairs, or a weighted mixture of several.

    shards/                                 one source: webdataset shards (folder, brace pattern, glob, list)
    pairs.csv / pairs.tsv                   one source: a table of image path + caption (`clipmodule.data.tables`)
    photos/                                 one source: a folder of images with same-stem .txt captions
    a/{00000..00099}.tar::b/                open_clip's form: several sources; `data.upsampling_factors: 1::2`
                                            weighs each source's samples as open_clip weighs its shards
    [{shards: a/, weight: 0.7}, {shards: b.csv, weight: 0.3}]   the YAML form: each source's share of samples

A mixture draws each training sample's source at random with the sources' shares, with replacement: a source
that runs out starts its next pass (`clipmodule.data.mixing`).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

from clipmodule.data.shards import ShardStream, StreamPlan, count_samples, shard_paths
from clipmodule.data.tables import ImageTextTable, TableReader, is_table, open_table
from clipmodule.errors import ClipModuleError

MIXTURE_SEPARATOR = "::"  # open_clip's `--train-data a::b`


@dataclass
class TrainSourceConfig:
    """One source of a weighted mixture of training data (an item of the `data.train_shards` list).

    Args:
        shards: webdataset shards (folder, brace pattern, glob or list of those), a CSV/TSV file of image
            paths and captions, or a folder of images with same-stem .txt captions.
        weight: this source's share of the training samples (normalised over the sources). Leave it unset on
            every source to draw every sample with equal probability, whatever its source.
        name: names the source in sample keys and warnings; default `source<i>`.
        csv_image_key: this CSV's image-path column; default `data.csv_image_key`.
        csv_caption_key: this CSV's caption column; default `data.csv_caption_key`.
    """

    shards: str | list[str]
    weight: float | None = None
    name: str | None = None
    csv_image_key: str | None = None
    csv_caption_key: str | None = None


@dataclass
class TrainSource:
    """A resolved source: its shards, or its table of local images, and its weight before normalising."""

    name: str
    shards: list[str]
    table: ImageTextTable | None = None
    weight: float | None = None
    factor: float = 1.0
    """open_clip's upsampling factor: without a weight, the source's share is factor x its samples."""

    def __len__(self) -> int:
        """The shards the reader draws from: a table's rows each count as one."""
        return len(self.table) if self.table is not None else len(self.shards)

    def samples(self) -> int:
        return len(self.table) if self.table is not None else count_samples(self.shards)

    def describe(self) -> str:
        return self.table.source if self.table is not None else f"{len(self.shards)} shards (e.g. {self.shards[0]})"

    def stream(self, plan: StreamPlan, buffer_size: int) -> ShardStream:
        if self.table is None:
            return ShardStream(self.shards, plan, buffer_size)
        return ShardStream([self.table.source], plan, buffer_size, cache=TableReader(self.table))


def _factors(value: list[float] | str | None, count: int) -> list[float]:
    if value is None:
        return [1.0] * count
    try:
        factors = [float(item) for item in (value.split(MIXTURE_SEPARATOR) if isinstance(value, str) else value)]
    except ValueError:
        raise ClipModuleError(f"data.upsampling_factors must be numbers (e.g. 1::2), got {value!r}") from None
    if len(factors) != count:
        raise ClipModuleError(f"data.upsampling_factors gives {len(factors)} factors for {count} training sources "
                              f"(data.train_shards split at '{MIXTURE_SEPARATOR}')")
    return factors


def _check_weight(value: float, what: str) -> float:
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ClipModuleError(f"{what} must be a positive number, got {value!r}")
    return float(value)


def _check_spec(spec: Any, where: str) -> None:
    """Refuses a spec that names nothing: an empty path reads as the working folder (`Path("")` is "."), which
    would train on every image under it."""
    items = [spec] if isinstance(spec, (str, os.PathLike)) else spec if isinstance(spec, list) else None
    if items is None:
        raise ClipModuleError(f"{where}: shards must be a path, pattern or URL (or a list of them), got {spec!r}")
    if not items or any(not os.fspath(item).strip() for item in items if isinstance(item, (str, os.PathLike))):
        raise ClipModuleError(f"{where}: empty shard spec {spec!r}; name its shards, CSV or folder ('.' for the "
                              "working folder)")


def source_configs(train_shards: Any, upsampling_factors: list[float] | str | None = None,
                   ) -> tuple[list[TrainSourceConfig], list[float]]:
    """The sources `data.train_shards` names and their upsampling factors (1 unless given)."""
    if train_shards is None:
        raise ClipModuleError("data.train_shards is not set")
    if isinstance(train_shards, (str, os.PathLike)) and MIXTURE_SEPARATOR in str(train_shards):
        specs = str(train_shards).split(MIXTURE_SEPARATOR)
        factors = _factors(upsampling_factors, len(specs))
        return [TrainSourceConfig(spec, name=f"source{i}", weight=None) for i, spec in enumerate(specs)], factors
    if upsampling_factors is not None:
        raise ClipModuleError("data.upsampling_factors needs several sources in data.train_shards, as a::b")
    items = [train_shards] if isinstance(train_shards, (str, os.PathLike)) else list(train_shards)
    if not any(isinstance(item, (dict, TrainSourceConfig)) for item in items):
        return [TrainSourceConfig(train_shards, name="source0")], [1.0]
    configs = []
    for i, item in enumerate(items):
        if isinstance(item, (str, os.PathLike)):
            item = TrainSourceConfig(os.fspath(item))
        elif isinstance(item, dict):
            try:
                item = TrainSourceConfig(**item)
            except TypeError as error:
                raise ClipModuleError(f"data.train_shards[{i}]: {error}") from None
        configs.append(item if item.name else TrainSourceConfig(**{**vars(item), "name": f"source{i}"}))
    return configs, [1.0] * len(configs)


def open_sources(train_shards: Any, upsampling_factors: list[float] | str | None = None, *,
                 csv_image_key: str | None = None, csv_caption_key: str | None = None,
                 csv_separator: str | None = None) -> list[TrainSource]:
    """The training sources, opened: shard lists expanded, tables read. Refused with one line: an empty spec, a
    missing shard or CSV, a CSV without the named columns, a weight on some sources but not all, duplicate names."""
    configs, factors = source_configs(train_shards, upsampling_factors)
    weighted = [config.weight is not None for config in configs]
    if any(weighted) and not all(weighted):
        raise ClipModuleError("data.train_shards: give every source a weight, or none (shares by size)")
    names = [config.name for config in configs]
    if len(set(names)) != len(names):
        raise ClipModuleError(f"data.train_shards: source names repeat ({', '.join(names)})")
    for config in configs:  # all checked before any is opened: `a::` names no shards whether or not `a` exists
        _check_spec(config.shards, f"data.train_shards source {config.name!r}")
    sources = []
    for config, factor in zip(configs, factors):
        where = f"data.train_shards source {config.name!r}"
        weight = None if config.weight is None else _check_weight(config.weight, f"{where}: weight")
        spec = config.shards
        if is_table(spec):
            table = open_table(spec, config.csv_image_key or csv_image_key,
                               config.csv_caption_key or csv_caption_key, csv_separator)
            sources.append(TrainSource(config.name, [], table, weight, _check_weight(factor, "upsampling factor")))
        else:
            sources.append(TrainSource(config.name, shard_paths(spec), None, weight,
                                       _check_weight(factor, "upsampling factor")))
    return sources


def mixture_shares(sources: list[TrainSource], samples: list[int]) -> list[float]:
    """Each source's share of the training samples: its weight, or (no weights) its upsampling factor times its
    samples, normalised. open_clip draws shards with weights `factor`, so a source's samples come out in
    proportion to factor x samples; with all factors 1 every sample is equally likely."""
    raw = [s.weight if s.weight is not None else s.factor * n for s, n in zip(sources, samples)]
    total = sum(raw)
    if total <= 0:
        raise ClipModuleError("data.train_shards: every source is empty")
    return [value / total for value in raw]
