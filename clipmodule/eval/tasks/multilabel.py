"""Multi-label zero-shot classification (VOC2007 as CLIP_benchmark scores it): mean average precision.

Each class's average precision ranks every image by its zero-shot score for that class (torchmetrics'
`MultilabelAveragePrecision`, the step-wise definition scikit-learn's `average_precision_score` uses); the
mean is over the classes that have at least one positive image (a class without positives has no AP).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

from clipmodule.eval.classifier import build_zeroshot_classifier, zeroshot_logits
from clipmodule.eval.metrics import DETAIL
from clipmodule.eval.options import LoaderOptions
from clipmodule.eval.prompts import Prompts
from clipmodule.eval.tasks.features import Progress, data_damage, extract_features, model_tokenizer


def average_precision_per_class(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """[C] average precision of each class (NaN where the class has no positive) from scores and 0/1 targets
    of shape [N, C]."""
    from torchmetrics.functional.classification import multilabel_average_precision

    # torchmetrics reads scores outside [0, 1] as logits and applies a sigmoid, which saturates zero-shot
    # logits (100 x cosine, ~20) into ties at 1.0 in float32; a per-class min-max map in float64 keeps the
    # order, which is all average precision depends on.
    scores, targets = scores.double(), targets.long()
    low, high = scores.min(dim=0).values, scores.max(dim=0).values
    scores = (scores - low) / (high - low).clamp_min(torch.finfo(torch.float64).tiny)
    present = targets.sum(dim=0) > 0  # only these are scored: a class without positives has no AP
    per_class = torch.full((scores.shape[1],), float("nan"), dtype=torch.float64)
    if present.any():
        per_class[present] = multilabel_average_precision(scores[:, present], targets[:, present],
                                                          num_labels=int(present.sum()), average="none",
                                                          thresholds=None).double()
    return per_class


def mean_average_precision(scores: torch.Tensor, targets: torch.Tensor) -> float:
    """The mean of `average_precision_per_class` over the classes with a positive."""
    per_class = average_precision_per_class(scores, targets)
    return float(per_class[~per_class.isnan()].mean())


def zeroshot_multilabel(model: torch.nn.Module, dataset: Dataset, classnames: Sequence[str], templates: Prompts,
                        options: LoaderOptions | None = None, progress: Progress = None,
                        where: str = "templates", detail: bool = False) -> dict[str, Any]:
    """{mean_average_precision, num_samples} of the prompt-ensemble zero-shot scores on a dataset whose items
    are (image, 0/1 tensor over the classes); with `detail`, each class's AP under `metrics.DETAIL`."""
    options = options or LoaderOptions()
    model = model.to(options.torch_device()).eval()
    classifier = build_zeroshot_classifier(model, model_tokenizer(model), classnames, templates, where=where)
    features, targets = extract_features(functools.partial(model.encode_image, normalize=True), dataset, options,
                                         progress, "zero-shot (multi-label)")
    logits = zeroshot_logits(features, classifier.cpu())
    per_class = average_precision_per_class(logits, torch.tensor(targets))
    value = float(per_class[~per_class.isnan()].mean())  # `mean_average_precision`, from the same detail
    metrics = {"mean_average_precision": value, "num_samples": len(targets), **data_damage(dataset)}
    if detail:  # NaN: a class without positives has no AP
        values = [None if ap != ap else float(ap) for ap in per_class.tolist()]
        metrics[DETAIL] = {"per_class_average_precision": values}
    return metrics
