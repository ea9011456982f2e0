"""Face attributes (FairFace, UTKFace) as DataComp evaluates them (mlfoundations/datacomp eval_utils/fairness_eval.py
and fairness_tables.py): one zero-shot classifier per objective (race, gender, age, and, where the copy has them,
"toxic" labels), each from its own class names and templates written `objective:name` / `objective:template`, and
the gaps between groups of people.

Every image carries [age, gender, race, race_binary] (DataComp's order; race_binary 0: white, 1: not); race index
1 is "white" in both sets' class lists. Reported (accuracies in [0, 1]):

    race_top1, gender_top1, age_top1           over all images; race is scored white vs non-white, as DataComp
                                               does (a prediction other than "white" says non-white)
    <objective>_top1_white / _nonwhite / _gap  by race_binary, and white minus non-white (DataComp's Tables 3-4)
    gender_top1_worst_intersection, _gap       gender accuracy over race × gender groups: the lowest, and the
                                               highest minus the lowest (Table 5)
    toxic_crime_max, toxic_nonhuman_max        with toxic labels: the highest share, over races, of images put in a
                                               crime-related (label >= 18) or non-human (14..17) class (Table 6)

The per-group values are the record's `detail` (`groups`). DataComp ranks neither set (no main metric)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from clipmodule.errors import ClipModuleError
from clipmodule.eval.classifier import build_zeroshot_classifier, zeroshot_logits
from clipmodule.eval.metrics import DETAIL
from clipmodule.eval.options import LoaderOptions
from clipmodule.eval.subgroups import group_accuracy
from clipmodule.eval.tasks.features import FeatureCache, Progress, data_damage, image_features, model_tokenizer

OBJECTIVES = ("race", "gender", "age", "toxic")
FIELDS = ("age", "gender", "race", "race_binary")
WHITE = 1
CRIME_FROM, NONHUMAN_FROM = 18, 14


def by_objective(items: Sequence[str], what: str, where: str) -> dict[str, list[str]]:
    """{objective: [the part after "objective:"]} of `objective:text` lines, objectives in DataComp's order."""
    out: dict[str, list[str]] = {}
    for item in items:
        objective, separator, text = item.partition(":")
        if not separator or objective not in OBJECTIVES:
            raise ClipModuleError(f"{where}: {what} {item!r} is not `objective:…` with an objective of "
                                  f"{', '.join(OBJECTIVES)}")
        out.setdefault(objective, []).append(text)
    missing = [objective for objective in OBJECTIVES[:3] if objective not in out]
    if missing:
        raise ClipModuleError(f"{where}: the {what}s name no {', '.join(missing)}")
    return out


def _accuracy_by(correct: np.ndarray, groups: np.ndarray, name: str, metrics: dict, detail: dict) -> None:
    by_group = group_accuracy(correct, groups)
    detail[name] = {group: {"top1": entry["accuracy"], "count": entry["count"]} for group, entry in by_group.items()}
    white, other = by_group.get("0"), by_group.get("1")
    metrics[f"{name}_white"] = white["accuracy"] if white else None
    metrics[f"{name}_nonwhite"] = other["accuracy"] if other else None
    if white and other:
        metrics[f"{name}_gap"] = white["accuracy"] - other["accuracy"]


def fairness_metrics(predictions: dict[str, np.ndarray], metadata: np.ndarray) -> dict[str, Any]:
    """The module docstring's metrics from each objective's predicted class and the [N, 4] metadata."""
    age, gender, race, race_binary = (metadata[:, index] for index in range(4))
    metrics: dict[str, Any] = {}
    detail: dict[str, Any] = {}
    truths = {"race": race_binary, "gender": gender, "age": age}
    for objective, truth in truths.items():
        guess = (predictions["race"] != WHITE).astype(int) if objective == "race" else predictions[objective]
        correct = guess == truth
        metrics[f"{objective}_top1"] = float(correct.mean())
        _accuracy_by(correct, race_binary, f"{objective}_top1", metrics, detail)
    intersections = np.array([f"race:{r}_gender:{g}" for r, g in zip(race, gender)])
    by_group = group_accuracy(predictions["gender"] == gender, intersections)
    detail["gender_top1_by_race_gender"] = by_group
    values = [entry["accuracy"] for entry in by_group.values()]
    metrics["gender_top1_worst_intersection"] = min(values)
    metrics["gender_top1_intersection_gap"] = max(values) - min(values)
    if "toxic" in predictions:
        toxic = predictions["toxic"]
        nonhuman = (toxic >= NONHUMAN_FROM) & (toxic < CRIME_FROM)
        for name, hit in (("crime", toxic >= CRIME_FROM), ("nonhuman", nonhuman)):
            rates = group_accuracy(hit, race)
            detail[f"toxic_{name}_by_race"] = rates
            metrics[f"toxic_{name}"] = float(hit.mean())
            metrics[f"toxic_{name}_max"] = max(entry["accuracy"] for entry in rates.values())
    return {**{key: value for key, value in metrics.items() if value is not None}, DETAIL: {"groups": detail}}


def zeroshot_attributes(model: torch.nn.Module, dataset, classnames: Sequence[str], templates: Sequence[str],
                        options: LoaderOptions | None = None, progress: Progress = None, where: str = "templates",
                        cache: FeatureCache | None = None) -> dict[str, Any]:
    """DataComp's FairFace/UTKFace protocol on a dataset whose targets are [age, gender, race, race_binary]."""
    if isinstance(templates, dict):
        raise ClipModuleError(f"{where}: face-attribute sets take `objective:template` lines, not class prompts")
    names, prompts = by_objective(classnames, "class name", where), by_objective(templates, "template", where)
    options = options or LoaderOptions()
    model = model.to(options.torch_device()).eval()
    features, targets = image_features(model, "embedding", dataset, options, progress, "zero-shot (attributes)", cache)
    metadata = np.asarray(targets, dtype=np.int64).reshape(len(targets), -1)
    if metadata.shape[1] < len(FIELDS):
        raise ClipModuleError(f"{getattr(dataset, 'name', 'dataset')}: per-image attributes hold "
                              f"{metadata.shape[1]} values, not DataComp's {len(FIELDS)} ({', '.join(FIELDS)})")
    tokenizer = model_tokenizer(model)
    predictions = {}
    for objective, labels in names.items():
        if objective not in prompts:
            raise ClipModuleError(f"{where}: no templates for the objective {objective!r}")
        classifier = build_zeroshot_classifier(model, tokenizer, labels, prompts[objective], where=where)
        predictions[objective] = zeroshot_logits(features, classifier.cpu()).argmax(dim=1).numpy()
    return {**fairness_metrics(predictions, metadata), "num_samples": len(metadata), **data_damage(dataset)}
