"""DataComp's distribution-shift and fairness metrics (Gadre et al. 2023), computed from a zero-shot run's scores and
the per-image metadata its dataset carries (`BenchmarkDataset.metadata`: {field: one value per image}).

    iwildcam       macro_f1            F1 averaged over the classes present in the test labels (WILDS's `F1`
                                       with average="macro", labels=unique(y_true); DataComp's `F1-macro_all`)
                   macro_recall        the same average of recall (DataComp's `recall-macro_all`)
    camelyon17     worst_slide_top1    the lowest top-1 over the slides (WILDS's grouping; DataComp ranks by top-1)
    fmow           worst_region_top1   the lowest top-1 over the regions with images (DataComp's
                                       `acc_worst_region`), worst_year_top1 likewise over the years
    dollar_street  worst_income_top5   the lowest top-5 over the income groups `income_ds` (`acc_top5_wg`)
    geode          worst_region_top1   the lowest top-1 over the regions (`acc_wg`)

Each also reports its groups ({field: {group: {"top1"|"top5": value, "count": n}}}) under `groups`. Worst-group
values are over the groups that hold at least one image, as WILDS's `compute_group_wise` takes them. DataComp's
FMoW evaluator means to skip the "Other" region, but it names regions by number (its evaluator has no metadata
map), so the skip never applies and "Other" counts like any region; so it does here (mlfoundations/datacomp,
eval_utils/wilds_eval.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from clipmodule.errors import ClipModuleError


@dataclass(frozen=True)
class WorstGroup:
    """The lowest top-k accuracy over the groups of one metadata field."""

    name: str
    field: str
    k: int = 1


RECIPES: dict[str, tuple[WorstGroup, ...]] = {
    "wilds/camelyon17": (WorstGroup("worst_slide_top1", "slide"),),
    "wilds/fmow": (WorstGroup("worst_region_top1", "region"), WorstGroup("worst_year_top1", "year")),
    "dollar_street": (WorstGroup("worst_income_top5", "income_ds", k=5),),
    "geode": (WorstGroup("worst_region_top1", "region"),),
}
MACRO_F1_SETS = ("wilds/iwildcam",)

# The per-image metadata DataComp's webdataset copies store as `.npy` vectors, field by field (the order of each
# evaluator's `_metadata_fields` in mlfoundations/datacomp eval_utils/wilds_eval.py and fairness_eval.py).
NPY_FIELDS = {
    "wilds/iwildcam": ("location", "sequence", "year", "month", "day", "hour", "minute", "second", "y"),
    "wilds/camelyon17": ("hospital", "slide", "y"),
    "wilds/fmow": ("region", "year", "y"),
    "dollar_street": ("income_ds", "income_meta", "region"),
    "geode": ("region", "country"),
}


def topk_correct(scores: torch.Tensor, labels: torch.Tensor, k: int) -> np.ndarray:
    """[N] bool: the label is among the k best-scored classes (all classes when there are fewer than k)."""
    top = scores.float().topk(min(k, scores.shape[1]), dim=1).indices
    return (top == labels.long()[:, None]).any(dim=1).numpy()


def group_accuracy(correct: np.ndarray, groups: Sequence[Any]) -> dict[str, dict[str, float]]:
    """{group: {"accuracy": share correct, "count": images}} for every group holding an image, in sorted order."""
    values = np.asarray([str(group) for group in groups])
    if len(values) != len(correct):
        raise ClipModuleError(f"metadata lists {len(values)} images but the run scored {len(correct)}")
    out = {}
    for group in sorted(set(values.tolist())):
        mask = values == group
        out[group] = {"accuracy": float(np.mean(correct[mask])), "count": int(mask.sum())}
    return out


def macro_f1_recall(labels: np.ndarray, predictions: np.ndarray) -> tuple[float, float]:
    """(F1, recall) averaged over the classes present in `labels`: a class only ever predicted counts as a false
    positive of the others, not as a class of its own (WILDS's F1 and Recall with average="macro")."""
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    f1s, recalls = [], []
    for cls in np.unique(labels):
        true_positive = float(np.sum((predictions == cls) & (labels == cls)))
        predicted, actual = float(np.sum(predictions == cls)), float(np.sum(labels == cls))
        precision = true_positive / predicted if predicted else 0.0
        recall = true_positive / actual
        f1s.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
        recalls.append(recall)
    return float(np.mean(f1s)), float(np.mean(recalls))


def metadata_fields(dataset_key: str | None, metadata: dict[str, list]) -> dict[str, list]:
    """{field: values}: a copy's named fields as they are, DataComp's `.npy` vectors (key `npy`) split into its
    fields."""
    if "npy" not in metadata:
        return metadata
    fields = NPY_FIELDS.get(dataset_key or "")
    rows = metadata["npy"]
    if fields is None:
        raise ClipModuleError(f"{dataset_key}: per-image .npy metadata, but DataComp defines no fields for it")
    if any(len(row) < len(fields) for row in rows):
        raise ClipModuleError(f"{dataset_key}: a sample's .npy metadata has fewer than the {len(fields)} fields "
                              f"DataComp stores ({', '.join(fields)})")
    return {field: [int(row[index]) for row in rows] for index, field in enumerate(fields)}


def datacomp_metrics(dataset_key: str | None, scores: torch.Tensor, labels: torch.Tensor,
                     metadata: dict[str, list] | None) -> dict[str, Any]:
    """The metrics of the module docstring for `dataset_key` ({} for a dataset DataComp scores by top-1 alone)."""
    out: dict[str, Any] = {}
    if dataset_key in MACRO_F1_SETS:
        out["macro_f1"], out["macro_recall"] = macro_f1_recall(labels.numpy(), scores.argmax(dim=1).numpy())
    recipes = RECIPES.get(dataset_key or "", ())
    if not recipes:
        return out
    if not metadata:
        raise ClipModuleError(f"{dataset_key}: the copy carries no per-image metadata, so its worst-group metric "
                              "cannot be computed (read it from the release's metadata or DataComp's copy)")
    fields = metadata_fields(dataset_key, metadata)
    groups: dict[str, dict[str, dict[str, float]]] = {}
    for recipe in recipes:
        if recipe.field not in fields:
            raise ClipModuleError(f"{dataset_key}: the copy's metadata has no {recipe.field!r} field "
                                  f"(it has {', '.join(fields)})")
        correct = topk_correct(scores, labels, recipe.k)
        by_group = group_accuracy(correct, fields[recipe.field])
        out[recipe.name] = min(entry["accuracy"] for entry in by_group.values())
        groups[recipe.field] = {group: {f"top{recipe.k}": entry["accuracy"], "count": entry["count"]}
                                for group, entry in by_group.items()}
    out["groups"] = groups
    return out
