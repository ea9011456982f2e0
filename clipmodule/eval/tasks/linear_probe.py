"""Linear probe: frozen features, scikit-learn's L-BFGS logistic regression; the inverse regularisation C is chosen
on a validation split by the paper's sweep (10^-6..10^6, coarse-to-fine down to 8 steps per decade), then refit on
train+validation and scored on the test set. The task kind `linear-probe`; a row with `fewshot_k` runs
CLIP_benchmark's few-shot probe instead (`fewshot`)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from clipmodule.errors import ClipModuleError
from clipmodule.eval.metrics import DETAIL, classification_metrics, per_class_results
from clipmodule.eval.options import LinearProbeOptions, LoaderOptions, TaskSpec
from clipmodule.eval.prompts import read_classnames
from clipmodule.eval.readers import open_classification
from clipmodule.eval.tasks.features import FeatureCache, Progress, data_damage, image_features
from clipmodule.eval.tasks.kind import TaskContext, TaskKind


def sweep_c(score: Callable[[float], float], options: LinearProbeOptions) -> tuple[float, dict[float, float]]:
    """Best C by the paper's coarse-to-fine search over log10(C); ties keep the earlier best."""
    low, high = options.log10_c_range
    scores: dict[float, float] = {}

    def at(exponent: float) -> float:
        exponent = round(exponent, 6)
        if exponent not in scores:
            scores[exponent] = score(10.0**exponent)
        return scores[exponent]

    grid = np.arange(low, high + options.coarse_step / 2, options.coarse_step)
    best = round(float(max(grid, key=at)), 6)
    step = options.coarse_step
    while step > 1.0 / options.steps_per_decade:
        step /= 2
        candidates = [best] + [e for e in (best - step, best + step) if low <= e <= high]
        best = round(max(candidates, key=at), 6)
    return 10.0**best, {10.0**exponent: value for exponent, value in sorted(scores.items())}


def fit_logistic_regression(features: np.ndarray, labels: np.ndarray, c: float, max_iter: int,
                            threads: int | None = None):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    with warnings.catch_warnings(), threadpool_limits(threads):
        warnings.simplefilter("ignore", ConvergenceWarning)  # weak regularisation may stop at max_iter, as in the paper
        return LogisticRegression(C=c, solver="lbfgs", max_iter=max_iter).fit(features, labels)


def linear_probe(model: torch.nn.Module, train: Dataset, test: Dataset, num_classes: int,
                 options: LinearProbeOptions | None = None, loader: LoaderOptions | None = None,
                 progress: Progress = None, cache: FeatureCache | None = None, detail: bool = False) -> dict[str, Any]:
    """Linear-probe top-1/top-5/mean per-class recall on `test`, with C chosen on a split of `train` (features
    reused from `cache` as in `zeroshot_classification`)."""
    from sklearn.model_selection import train_test_split

    options, loader = options or LinearProbeOptions(), loader or LoaderOptions()
    model = model.to(loader.torch_device()).eval()
    train_x, train_y = image_features(model, options.features, train, loader, progress, "probe train", cache)
    test_x, test_y = image_features(model, options.features, test, loader, progress, "probe test", cache)
    x, y = train_x.numpy(), np.asarray(train_y)
    if len(np.unique(y)) < 2:
        raise ClipModuleError(f"{getattr(train, 'name', 'train')}: a linear probe needs at least two classes")
    try:  # stratified when every class can give the validation split an image
        fit_x, val_x, fit_y, val_y = train_test_split(x, y, test_size=options.val_fraction,
                                                      random_state=options.seed, stratify=y)
    except ValueError:
        fit_x, val_x, fit_y, val_y = train_test_split(x, y, test_size=options.val_fraction, random_state=options.seed)
    def val_accuracy(c: float) -> float:
        return fit_logistic_regression(fit_x, fit_y, c, options.max_iter, options.threads).score(val_x, val_y)

    best_c, history = sweep_c(val_accuracy, options)
    final = fit_logistic_regression(x, y, best_c, options.max_iter, options.threads)
    scores = torch.zeros(len(test_y), num_classes)  # classes absent from the training split get probability 0
    probabilities = torch.as_tensor(final.predict_proba(test_x.numpy()), dtype=torch.float32)
    scores[:, torch.as_tensor(final.classes_)] = probabilities
    metrics = classification_metrics(scores, torch.tensor(test_y), num_classes)
    metrics = {**metrics, "best_C": best_c, "val_accuracy": history[best_c], "num_train": int(len(y)),
               **data_damage(train, test), "sweep": {f"{c:.6g}": value for c, value in history.items()}}
    if detail:
        metrics[DETAIL] = per_class_results(scores, torch.tensor(test_y), num_classes)
    return metrics


def _open(spec: TaskSpec, preprocess: Callable) -> tuple:
    classnames = read_classnames(spec.classnames) if spec.classnames else None
    train = open_classification(spec.train, preprocess, classnames, root=spec.root, split="train")
    return train, open_classification(spec.test, preprocess, list(train.classnames), root=spec.root, split=spec.split)


def _preflight(spec: TaskSpec) -> None:
    if spec.fewshot_k is not None and spec.fewshot_k < 1:
        raise ClipModuleError(f"{spec.label()}: fewshot_k must be at least 1, not {spec.fewshot_k}")
    if spec.classnames:
        read_classnames(spec.classnames)


def _run(model, spec: TaskSpec, data: tuple, context: TaskContext) -> dict[str, Any]:
    train, test = data
    if spec.fewshot_k is not None:  # CLIP_benchmark's k-shot protocol
        from clipmodule.eval.tasks.fewshot import fewshot_probe

        return fewshot_probe(model, train, test, len(train.classnames), spec.fewshot_k, context.probe,
                             context.loader, context.progress, cache=context.cache)
    return linear_probe(model, train, test, len(train.classnames), context.probe, context.loader, context.progress,
                        cache=context.cache, detail=True)


KIND = TaskKind(name="linear-probe", data_keys=("train", "test"), open=_open, run=_run, preflight=_preflight,
                run_settings=lambda config: asdict(config.probe))
