"""Validation during `fit`, through the task-kind registry: the one path of every tracked set.

Each validation loader tags its batches with the kind that tracks them and the set's name: `retrieval`
(`data.val_shards`), `zeroshot` (`data.zeroshot_shards` with `model.zeroshot_classnames`), `<kind>/<name>` for each
of `data.zeroshot_sets` (its `task:`, zero-shot by default). The kind's `tracker` (`clipmodule.eval.tasks`) turns
them into metrics: zero-shot classification is the same classifier as `clipmodule eval zeroshot`, retrieval the same
recall as `clipmodule eval retrieval`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from clipmodule.data.datamodule import SETS_READ_WHOLE
from clipmodule.errors import ClipModuleError
from clipmodule.eval.tasks import TrackedSet, Tracker, task_kind

RETRIEVAL = "retrieval"
ZEROSHOT = "zeroshot"


def split_tag(tag: str) -> tuple[str, str]:
    """(kind, set name) of a batch's tag; an untagged batch holds retrieval pairs."""
    kind, _, name = (tag or RETRIEVAL).partition("/")
    return kind, name


def tracker_of(kind_name: str, tracked: TrackedSet) -> Tracker:
    kind = task_kind(kind_name, tracked.where)
    if kind.tracker is None:
        raise ClipModuleError(f"{tracked.where}: task {kind_name!r} cannot be tracked during fit")
    return kind.tracker(tracked)


class ValidationTrackers:
    """The trackers of one validation epoch, by batch tag."""

    def __init__(self, trackers: dict[str, Tracker]):
        self.trackers = trackers

    def update(self, batch: dict[str, Any]) -> None:
        tag = batch.get("task") or RETRIEVAL
        if tag == SETS_READ_WHOLE:
            return
        if tag not in self.trackers:
            kind, name = split_tag(tag)
            raise ClipModuleError("zero-shot validation shards need model.zeroshot_classnames" if tag == ZEROSHOT
                                  else f"validation batches of an unknown {kind} set {name!r}")
        self.trackers[tag].update(batch)

    def results(self) -> dict[str, torch.Tensor]:
        """Every tracker's metrics (each computed on every rank: a rank that skipped the gather would hang the
        others), then each kind's summary over its sets."""
        out = {name: value for tracker in self.trackers.values() for name, value in tracker.results().items()}
        summaries = {type(tracker).summary for tracker in self.trackers.values() if hasattr(tracker, "summary")}
        for summary in summaries:
            out.update(summary(out))
        return out


def build_trackers(model: torch.nn.Module, data: Any, tokenizer: Callable | None, device: torch.device,
                   plain_set: tuple[list[str], list[str]]) -> ValidationTrackers:
    """Trackers for the retrieval pairs, the unnamed zero-shot set (`plain_set`: the model's class names and
    templates, empty without class names) and every named set the DataModule declares (`validation_sets()`)."""
    classnames, templates = plain_set

    def tracked(name: str, where: str, **fields: Any) -> TrackedSet:
        return TrackedSet(name, model, tokenizer, device, default_templates=templates, where=where, **fields)

    trackers = {RETRIEVAL: tracker_of(RETRIEVAL, tracked("", "data.val_shards"))}
    if classnames:
        # computed on every rank when the data has zero-shot shards; without them no rank draws one, and every
        # rank skips it alike
        shards = getattr(data, "zeroshot_shards", None) if data is not None else None
        trackers[ZEROSHOT] = tracker_of(ZEROSHOT, tracked("", "model.zeroshot_templates", classnames=classnames,
                                                          templates=templates, may_be_empty=not shards))
    for opened in (data.validation_sets() if hasattr(data, "validation_sets") else []):
        trackers[f"{opened.task}/{opened.name}"] = tracker_of(opened.task, tracked(
            opened.name, f"data.zeroshot_sets.{opened.name}", classnames=opened.classnames,
            templates=opened.templates, source=opened.source))
    return ValidationTrackers(trackers)


def check_sets(data: Any) -> None:
    """Each named set's task is a registered kind with a tracker (checked when `fit` starts, not after an epoch)."""
    for opened in (data.validation_sets() if hasattr(data, "validation_sets") else []):
        where = f"data.zeroshot_sets.{opened.name}"
        if task_kind(opened.task, where).tracker is None:
            raise ClipModuleError(f"{where}: task {opened.task!r} cannot be tracked during fit")
