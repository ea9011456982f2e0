"""Evaluation task kinds, one module each and registered once here: `zeroshot` (classification, and mAP on a
multi-label set), `retrieval` (recall@k both ways), `linear-probe` (the paper's protocol),
`association` (WinoGAViL's games, Jaccard index). A kind declares its data,
how it runs and DataComp's main metric (`kind.TaskKind`); suites, their tables and groups, the single commands and
the records go through `task_kind`. Registered here: zeroshot, retrieval, linear-probe, association (WinoGAViL),
segmentation (MaskCLIP), image_caption_selection (SugarCrepe, Winoground, ARO); a new kind joins `_KINDS`.

The evaluation functions themselves stay importable from here, as before the split.
"""

from __future__ import annotations

from clipmodule.errors import ClipModuleError
from clipmodule.eval.metrics import classification_metrics
from clipmodule.eval.options import LinearProbeOptions, LoaderOptions, TaskSpec
from clipmodule.eval.tasks import association as association_kind
from clipmodule.eval.tasks import caption_selection as caption_selection_kind
from clipmodule.eval.tasks import linear_probe as linear_probe_kind
from clipmodule.eval.tasks import retrieval as retrieval_kind
from clipmodule.eval.tasks import segmentation as segmentation_kind
from clipmodule.eval.tasks import zeroshot as zeroshot_kind
from clipmodule.eval.tasks.features import (
    FeatureCache,
    Progress,
    data_damage,
    extract_features,
    image_features,
    model_tokenizer,
    probe_encoder,
)
from clipmodule.eval.tasks.kind import TaskContext, TaskKind, TrackedSet, Tracker
from clipmodule.eval.tasks.linear_probe import fit_logistic_regression, linear_probe, sweep_c
from clipmodule.eval.tasks.retrieval import retrieval, retrieval_metrics
from clipmodule.eval.tasks.zeroshot import zeroshot_classification

_KINDS: dict[str, TaskKind] = {kind.name: kind for kind in (zeroshot_kind.KIND, retrieval_kind.KIND,
                                                            linear_probe_kind.KIND, association_kind.KIND,
                                                            segmentation_kind.KIND, caption_selection_kind.KIND)}


def register_task_kind(kind: TaskKind) -> None:
    """Add a task kind (a name already taken is refused)."""
    if kind.name in _KINDS:
        raise ClipModuleError(f"task kind {kind.name!r} is already registered")
    _KINDS[kind.name] = kind




def task_kinds() -> list[str]:
    return list(_KINDS)


def task_kind(name: str, where: str = "") -> TaskKind:
    """The registered kind `name`, or a one-line error naming the row and the known kinds."""
    if name not in _KINDS:
        prefix = f"{where}: " if where else ""
        raise ClipModuleError(f"{prefix}unknown task {name!r} (one of {', '.join(_KINDS)})")
    return _KINDS[name]


def kind_of(spec: TaskSpec) -> TaskKind:
    """The kind of a row, after checking the row names the data its kind reads."""
    kind = task_kind(spec.task, spec.label())
    kind.require_data(spec)
    return kind


__all__ = [
    "FeatureCache",
    "LinearProbeOptions",
    "LoaderOptions",
    "Progress",
    "TaskContext",
    "TaskKind",
    "TrackedSet",
    "Tracker",
    "classification_metrics",
    "data_damage",
    "extract_features",
    "fit_logistic_regression",
    "image_features",
    "kind_of",
    "linear_probe",
    "model_tokenizer",
    "probe_encoder",
    "register_task_kind",
    "retrieval",
    "retrieval_metrics",
    "sweep_c",
    "task_kind",
    "task_kinds",
    "zeroshot_classification",
]
