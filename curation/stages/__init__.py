"""The curation stages, declared once each (one module per stage) and kept here in build order.

`curation`'s subcommands, `curation build`'s sequence, the dataset YAML's keys (`dataset_config_type`) and the
data card's sections are all read from this registry, so a new stage is one module and one `register` call:

    from curation.stages import StageSpec, registry
    registry().register(StageSpec(name="caption_filter", ...), after="download")
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

from curation.config import DatasetBase
from curation.errors import CurationError
from curation.stages import (
    balance,
    decontaminate,
    dedup,
    download,
    embed,
    image_shape,
    in21k_text,
    index,
    language,
    match,
    queries,
    unsafe,
)
from curation.stages import filter as filter_stage
from curation.stages.spec import BuildStep, CardSection, StageSpec

__all__ = ["BuildStep", "CardSection", "StageRegistry", "StageSpec", "dataset_config_type", "registry"]


class StageRegistry:
    """The stages in build order (a stage `build` never runs, e.g. `index`, keeps its place for `--help`)."""

    def __init__(self, stages: list[StageSpec]) -> None:
        self._stages = list(stages)

    def __iter__(self) -> Iterator[StageSpec]:
        return iter(list(self._stages))

    def names(self) -> list[str]:
        return [stage.name for stage in self._stages]

    def get(self, name: str) -> StageSpec:
        for stage in self._stages:
            if stage.name == name:
                return stage
        raise CurationError(f"unknown stage {name!r} (known: {', '.join(self.names())})")

    def register(self, stage: StageSpec, after: str | None = None) -> None:
        """Add `stage` after the stage named `after` (default: last); a name already taken is refused."""
        if stage.name in self.names() or stage.name in ("card", "build"):
            raise CurationError(f"stage {stage.name!r} is already registered")
        where = len(self._stages) if after is None else self.names().index(self.get(after).name) + 1
        self._stages.insert(where, stage)

    def unregister(self, name: str) -> None:
        self._stages.remove(self.get(name))

    def built(self) -> list[StageSpec]:
        """The stages `build` can run, in order."""
        return [stage for stage in self._stages if stage.output is not None and stage.build is not None]

    def carded(self) -> list[StageSpec]:
        """The optional build stages with a section on the data card, in order."""
        return [stage for stage in self.built() if not stage.required and stage.card is not None]


_REGISTRY = StageRegistry([queries.STAGE, match.STAGE, balance.STAGE, download.STAGE, language.STAGE,
                           image_shape.STAGE, in21k_text.STAGE, embed.STAGE, unsafe.STAGE,
                           filter_stage.STAGE, dedup.STAGE, decontaminate.STAGE, index.STAGE])


def registry() -> StageRegistry:
    """The one registry of stages (plugins and tests `register` theirs here)."""
    return _REGISTRY


def _check_stages(config: Any) -> None:
    DatasetBase.__post_init__(config)
    for stage in registry().built():
        if getattr(config, stage.name, None) is None:
            continue
        for need in stage.needs:
            if getattr(config, need, None) is None:
                raise CurationError(f"{stage.name}: needs the {need} stage (give {need}: {{...}} in the YAML)")
        if stage.check is not None:
            stage.check(config)


def dataset_config_type() -> type:
    """The dataset YAML's dataclass: `DatasetBase`'s fields plus one per build stage with settings (required
    stages default to their defaults, the others to None: not run)."""
    fields = []
    for stage in registry().built():
        if stage.settings is None:
            continue
        if stage.required:
            fields.append((stage.name, stage.settings, dataclasses.field(default_factory=stage.settings)))
        else:
            fields.append((stage.name, stage.settings | None, dataclasses.field(default=None)))
    return dataclasses.make_dataclass("DatasetConfig", fields, bases=(DatasetBase,),
                                      namespace={"__post_init__": _check_stages})
