"""What a task kind declares, once: the data a row names, how it is opened, how the task runs, and the metric
DataComp ranks it by. `clipmodule.eval.tasks` keeps one registry of them; the suite, its table, DataComp's groups,
the single commands and the records all ask the kind, never compare its name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from clipmodule.errors import ClipModuleError
from clipmodule.eval.options import LinearProbeOptions, LoaderOptions, SuiteConfig, TaskSpec
from clipmodule.eval.prompts import read_templates

BY_DATASET = "by dataset"
"""A kind's `group` when its rows join DataComp's group of their dataset (ImageNet, its shifts, VTAB)."""


@dataclass
class TaskContext:
    """What a run needs beside the model and its data."""

    loader: LoaderOptions = field(default_factory=LoaderOptions)
    probe: LinearProbeOptions = field(default_factory=LinearProbeOptions)
    progress: Any = None
    """A rich Progress, or None."""
    cache: Any = None
    """The suite's `FeatureCache` (image features shared between rows), or None."""


def _no_check(spec: TaskSpec, data: tuple | None = None) -> None:
    return None


def _no_metric(metrics: dict[str, Any], dataset: str | None) -> tuple[str, float] | None:
    return None


def _no_settings(config: SuiteConfig) -> dict[str, Any]:
    return {}


def _no_prompts(spec: TaskSpec, data: tuple) -> dict[str, Any] | None:
    return None


@dataclass
class TrackedSet:
    """A validation set `fit` tracks (`clipmodule.train.validation`), as its kind's tracker gets it."""

    name: str
    """Its name in the metric names; "" for the unnamed sets (`data.val_shards`, `data.zeroshot_shards`)."""
    model: Any
    tokenizer: Callable | None
    device: Any
    classnames: list[str] = field(default_factory=list)
    templates: Any = None
    """As given in the YAML (a list, a file, a shipped name); None: `default_templates`."""
    default_templates: list[str] = field(default_factory=list)
    where: str = ""
    """The YAML key errors name."""
    may_be_empty: bool = False
    """True when no rank may draw a batch of it: its results are then skipped, not computed."""
    source: tuple[str, str | None] | None = None
    """(dataset spec, root) of a set no loader reads: the tracker reads it whole in `results` (segmentation)."""

    def prompts(self) -> list[str]:
        """The templates as given (a list, or a file / shipped name read by `read_templates`), else the default."""
        if self.templates is None:
            return list(self.default_templates)
        return read_templates(self.templates) if isinstance(self.templates, str) else list(self.templates)


class Tracker(Protocol):
    """What `fit` asks of a kind's tracker during validation (metrics that sum over ranks when computed)."""

    def update(self, batch: dict[str, Any]) -> None: ...

    def results(self) -> dict[str, Any]:
        """Metric name -> value; computed on every rank (the gather needs them all), then reset."""
        ...

    # optional: `summary(results of every set) -> more metrics`, a static method of the tracker's class, for
    # values over all the sets of its kind (segmentation's `val/seg_mIoU`)


@dataclass(frozen=True)
class TaskKind:
    """One kind of evaluation task (a suite row's `task:`)."""

    name: str
    """The row's `task:` value."""
    data_keys: tuple[str, ...]
    """The spec's fields that name its data: (`dataset`,) or a probe's (`train`, `test`)."""
    open: Callable[[TaskSpec, Callable], tuple]
    """The row's datasets, opened (a missing copy fails here, before any model work)."""
    run: Callable[[Any, TaskSpec, tuple, TaskContext], dict[str, Any]]
    """run(model, spec, data, context) -> metrics."""
    preflight: Callable[[TaskSpec], None] = _no_check
    """Checks that need no model or images (class-name and template files)."""
    check_data: Callable[[TaskSpec, tuple], None] = _no_check
    """Checks of the opened data before any model work (e.g. class names that do not fit the copy)."""
    main_metric: Callable[[dict[str, Any], str | None], tuple[str, float] | None] = _no_metric
    """(name, value) DataComp ranks the row by, from its metrics and its benchmark dataset (None: no rank)."""
    group: str | None = None
    """DataComp's grouping: `BY_DATASET` (the dataset's group: ImageNet, its shifts, VTAB), a group's own name
    (every row of the kind joins it, e.g. `Retrieval`), or None (no group: a linear probe is not zero-shot)."""
    run_settings: Callable[[SuiteConfig], dict[str, Any]] = _no_settings
    """Suite settings outside the row that change its result (part of its resume key; the probe's protocol)."""
    prompts: Callable[[TaskSpec, tuple], dict[str, Any] | None] = _no_prompts
    """The class names and templates a run of the row on its opened data prompts with (`prompt_record`, as its
    record states them under `prompts`), resolved from files and shipped data alike: its resume key; None: none."""
    tracker: Callable[[TrackedSet], Tracker] | None = None
    """How `fit` tracks a validation set of this kind (the loader tags its batches `<kind>` or `<kind>/<name>`);
    None: the kind is not tracked during training."""

    def require_data(self, spec: TaskSpec) -> None:
        missing = [key for key in self.data_keys if not getattr(spec, key)]
        if missing:
            raise ClipModuleError(f"{spec.label()}: a {self.name} task needs {' and '.join(missing)}")

    def data_names(self, spec: TaskSpec) -> tuple[str, ...]:
        """The spec strings of its data, in the order `open` returns the datasets."""
        return tuple(getattr(spec, key) for key in self.data_keys)
