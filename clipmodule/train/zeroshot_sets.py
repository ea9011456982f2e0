"""Zero-shot top-1/top-5 during validation on every set of `data.zeroshot_sets`, each under its own name.

The DataModule tags a set's batches `zeroshot/<name>` and gives each set's class names and templates
(`ShardDataModule.zeroshot_set_classes`); here each set gets its classifier (the paper's prompt ensemble,
`clipmodule.eval.zeroshot`, the same code as `clipmodule eval zeroshot`) and its torchmetrics accuracies,
which sum over ranks when computed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torchmetrics.classification import MulticlassAccuracy

from clipmodule.eval.datasets import read_templates
from clipmodule.eval.zeroshot import build_zeroshot_classifier, zeroshot_logits

TASK_PREFIX = "zeroshot/"


def _templates(given: list[str] | str | None, default: list[str]) -> Any:
    if given is None:
        return default
    return read_templates(given) if isinstance(given, str) else list(given)


class ZeroShotSets:
    """Classifiers and accuracies of the named sets for one validation epoch."""

    def __init__(self, model: torch.nn.Module, tokenizer: Callable, sets: dict[str, tuple[list[str], Any]],
                 default_templates: list[str], device: torch.device):
        self.classifiers: dict[str, torch.Tensor] = {}
        self.metrics: dict[str, dict[str, MulticlassAccuracy]] = {}
        for name, (classnames, templates) in sets.items():
            where = f"data.zeroshot_sets.{name}.templates"
            self.classifiers[name] = build_zeroshot_classifier(
                model, tokenizer, classnames, _templates(templates, default_templates), where=where)
            classes = len(classnames)
            self.metrics[name] = {f"top{k}": MulticlassAccuracy(classes, top_k=min(k, classes), average="micro")
                                  .to(device) for k in (1, 5)}

    def update(self, task: str, image_features: torch.Tensor, labels: torch.Tensor) -> None:
        name = task[len(TASK_PREFIX):]
        logits = zeroshot_logits(image_features, self.classifiers[name])
        for metric in self.metrics[name].values():
            metric.update(logits, labels)

    def results(self) -> dict[str, torch.Tensor]:
        """`val/zeroshot/<name>/top1|top5` of every set. Computed on every rank, even one that drew no image of
        a small set: computing gathers the counts of all ranks, and a rank that skipped it would hang the others."""
        out = {}
        for name, metrics in self.metrics.items():
            for kind, metric in metrics.items():
                out[f"val/zeroshot/{name}/{kind}"] = metric.compute()
                metric.reset()
        return out
