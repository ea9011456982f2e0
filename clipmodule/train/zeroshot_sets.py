"""Zero-shot top-1/top-5 during validation: the one zero-shot path of training.

Every set of `data.zeroshot_sets` is reported under its own name; the DataModule tags its batches
`zeroshot/<name>` and gives its class names and templates (`ShardDataModule.zeroshot_set_classes`). The older
`data.zeroshot_shards` (batches tagged `zeroshot`, class names in `model.zeroshot_classnames`) is the set named
`PLAIN`, reported as `val/zeroshot_top1|top5` as before. Each set gets its classifier (the paper's prompt ensemble,
`clipmodule.eval.zeroshot`, the same code as `clipmodule eval zeroshot`) and its torchmetrics accuracies, which sum
over ranks when computed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torchmetrics.classification import MulticlassAccuracy

from clipmodule.errors import ClipModuleError
from clipmodule.eval.prompts import read_templates
from clipmodule.eval.zeroshot import build_zeroshot_classifier, zeroshot_logits

TASK_PREFIX = "zeroshot/"
PLAIN_TASK = "zeroshot"
PLAIN = ""
"""The set of `data.zeroshot_shards` with `model.zeroshot_classnames`."""


def is_zeroshot(task: str) -> bool:
    """Whether a validation batch's tag names a zero-shot set (else it holds retrieval pairs)."""
    return task == PLAIN_TASK or task.startswith(TASK_PREFIX)


def set_name(task: str) -> str:
    return PLAIN if task == PLAIN_TASK else task[len(TASK_PREFIX):]


def metric_name(name: str, kind: str) -> str:
    return f"val/zeroshot_{kind}" if name == PLAIN else f"val/zeroshot/{name}/{kind}"


def _templates(given: list[str] | str | None, default: list[str]) -> Any:
    if given is None:
        return default
    return read_templates(given) if isinstance(given, str) else list(given)


class ZeroShotSets:
    """Classifiers and accuracies of the named sets for one validation epoch."""

    def __init__(self, model: torch.nn.Module, tokenizer: Callable, sets: dict[str, tuple[list[str], Any]],
                 default_templates: list[str], device: torch.device,
                 may_be_empty: frozenset[str] = frozenset()):
        self.may_be_empty = may_be_empty  # sets no rank may have drawn an image of: skipped when empty
        self.classifiers: dict[str, torch.Tensor] = {}
        self.metrics: dict[str, dict[str, MulticlassAccuracy]] = {}
        for name, (classnames, templates) in sets.items():
            where = f"data.zeroshot_sets.{name}.templates" if name != PLAIN else "model.zeroshot_templates"
            self.classifiers[name] = build_zeroshot_classifier(
                model, tokenizer, classnames, _templates(templates, default_templates), where=where)
            classes = len(classnames)
            self.metrics[name] = {f"top{k}": MulticlassAccuracy(classes, top_k=min(k, classes), average="micro")
                                  .to(device) for k in (1, 5)}

    def update(self, task: str, image_features: torch.Tensor, labels: torch.Tensor) -> None:
        name = set_name(task)
        if name not in self.classifiers:
            raise ClipModuleError("zero-shot validation shards need model.zeroshot_classnames" if name == PLAIN
                                  else f"validation batches of an unknown zero-shot set {name!r}")
        logits = zeroshot_logits(image_features, self.classifiers[name])
        for metric in self.metrics[name].values():
            metric.update(logits, labels)

    def results(self) -> dict[str, torch.Tensor]:
        """`val/zeroshot/<name>/top1|top5` of every set (`val/zeroshot_top1|top5` for `PLAIN`). Computed on every
        rank, even one that drew no image of a small set: computing gathers the counts of all ranks, and a rank that
        skipped it would hang the others."""
        out = {}
        for name, metrics in self.metrics.items():
            if name in self.may_be_empty and not metrics["top1"].update_count:
                continue  # model.zeroshot_classnames without zero-shot shards in this loop: nothing to say
            for kind, metric in metrics.items():
                out[metric_name(name, kind)] = metric.compute()
                metric.reset()
        return out
