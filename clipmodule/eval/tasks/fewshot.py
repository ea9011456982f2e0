"""Few-shot linear probe, CLIP_benchmark's protocol (`--fewshot_k`, clip_benchmark/metrics/linear_probe.py): the
model's image embeddings, L2-normalised; k training images per class, the first k of each class in a random
permutation of the training set (`torch.randperm` seeded with the seed); a linear layer trained with AdamW
(lr 0.1, 10 epochs, batches of 64 shuffled, a cosine schedule without warm-up) on softmax cross-entropy, which
is multinomial logistic regression; weight decay 0, or, with a validation share, chosen from 97 values
10^-6..10^2 by CLIP_benchmark's coarse-to-fine peak search and the final layer trained on the k-shot set alone.

The paper's full-data probe (`linear_probe`, scikit-learn's L-BFGS) is kept: a row without `fewshot_k` runs it.
All randomness is seeded and drawn inside a forked RNG: the global torch RNG is left as it was.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from clipmodule.errors import ClipModuleError
from clipmodule.eval.metrics import classification_metrics
from clipmodule.eval.options import LinearProbeOptions, LoaderOptions
from clipmodule.eval.tasks.features import FeatureCache, Progress, data_damage, image_features

WEIGHT_DECAYS = np.logspace(-6, 2, num=97).tolist()
FIRST_GRID = [index for index, value in enumerate(WEIGHT_DECAYS) if value in np.logspace(-6, 2, num=7).tolist()]


def fewshot_indices(labels: Sequence[int], k: int, seed: int, where: str = "train") -> list[int]:
    """The first k indices of each class in a seeded random permutation (CLIP_benchmark's sampling); a class
    with fewer than k images is a one-line error (CLIP_benchmark prints 'insufficient data' and stops)."""
    generator = torch.Generator().manual_seed(seed)
    counts: dict[int, int] = {}
    chosen = []
    for index in torch.randperm(len(labels), generator=generator).tolist():
        label = int(labels[index])
        if counts.setdefault(label, 0) < k:
            counts[label] += 1
            chosen.append(index)
    short = {label: count for label, count in counts.items() if count < k}
    if short:
        label, count = min(short.items())
        raise ClipModuleError(f"{where}: class {label} has {count} image(s), fewer than fewshot_k={k} "
                              f"({len(short)} class(es) short)")
    return chosen


def _cosine(base: float, step: int, steps: int) -> float:
    return 0.5 * (1 + math.cos(math.pi * step / steps)) * base


def _epoch_order(count: int) -> torch.Tensor:
    """The order a shuffling DataLoader visits `count` items in, drawn from the global RNG as it draws: one int64
    for its workers' base seed, one to seed the RandomSampler's permutation (torch.utils.data). Indexing the
    features in that order gives CLIP_benchmark's batches without a DataLoader's per-item collation."""
    torch.empty((), dtype=torch.int64).random_()
    seed = int(torch.empty((), dtype=torch.int64).random_().item())
    return torch.randperm(count, generator=torch.Generator().manual_seed(seed))


def train_linear(features: torch.Tensor, labels: torch.Tensor, num_classes: int, weight_decay: float,
                 options: LinearProbeOptions) -> torch.nn.Linear:
    """The linear layer CLIP_benchmark's `train` fits (same seed, initialisation, batch order and schedule)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(options.seed)
        layer = torch.nn.Linear(features.shape[1], num_classes)
        optimizer = torch.optim.AdamW(layer.parameters(), lr=options.fewshot_lr, weight_decay=weight_decay)
        batches = math.ceil(len(labels) / options.fewshot_batch_size)
        steps = options.fewshot_epochs * batches
        criterion = torch.nn.CrossEntropyLoss()
        for epoch in range(options.fewshot_epochs):
            for index, chosen in enumerate(_epoch_order(len(labels)).split(options.fewshot_batch_size)):
                for group in optimizer.param_groups:
                    group["lr"] = _cosine(options.fewshot_lr, index + epoch * batches, steps)
                optimizer.zero_grad()
                criterion(layer(features[chosen]), labels[chosen]).backward()
                optimizer.step()
    return layer


def _top1(layer: torch.nn.Linear, features: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return (layer(features).argmax(dim=1) == labels).float().mean().item()


def _peak(indices: Sequence[int], fit: tuple, val: tuple, num_classes: int, options: LinearProbeOptions) -> int:
    best, best_accuracy = 0, 0.0  # CLIP_benchmark's find_peak: a strictly better accuracy moves the peak
    for index in indices:
        accuracy = _top1(train_linear(*fit, num_classes, WEIGHT_DECAYS[index], options), *val)
        if best_accuracy < accuracy:
            best, best_accuracy = index, accuracy
    return best


def sweep_weight_decay(fit: tuple, val: tuple, num_classes: int, options: LinearProbeOptions) -> float:
    """CLIP_benchmark's search: the best of 7 decades, then around the peak at spans 8, 4, 2, 1 of the 97."""
    peak = _peak(FIRST_GRID, fit, val, num_classes, options)
    span = 8
    while span > 0:
        peak = _peak([max(peak - span, 0), peak, min(peak + span, len(WEIGHT_DECAYS) - 1)], fit, val, num_classes,
                     options)
        span //= 2
    return WEIGHT_DECAYS[peak]


def _normalised(model, dataset: Dataset, loader: LoaderOptions, progress: Progress, description: str,
                cache: FeatureCache | None) -> tuple[torch.Tensor, torch.Tensor]:
    features, labels = image_features(model, "embedding", dataset, loader, progress, description, cache)
    return torch.nn.functional.normalize(features.float(), dim=-1), torch.as_tensor(labels, dtype=torch.long)


def fewshot_from_features(train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor],
                          num_classes: int, k: int, options: LinearProbeOptions,
                          where: str = "train") -> dict[str, Any]:
    """The k-shot probe's metrics from (normalised features, labels) of the training and test images."""
    if k < 1:
        raise ClipModuleError(f"fewshot_k must be at least 1, not {k}")
    train_x, train_y = train
    val = None
    if options.fewshot_val_fraction:
        order = torch.randperm(len(train_y), generator=torch.Generator().manual_seed(options.seed))
        cut = len(order) - int(round(options.fewshot_val_fraction * len(order)))
        val = (train_x[order[cut:]], train_y[order[cut:]])
        train_x, train_y = train_x[order[:cut]], train_y[order[:cut]]
    chosen = fewshot_indices(train_y.tolist(), k, options.seed, where)
    fit = (train_x[chosen], train_y[chosen])
    weight_decay = sweep_weight_decay(fit, val, num_classes, options) if val is not None else 0.0
    layer = train_linear(*fit, num_classes, weight_decay, options)
    with torch.no_grad():
        logits = layer(test[0])
    metrics = classification_metrics(logits, test[1], num_classes)
    return {**metrics, "fewshot_k": k, "weight_decay": weight_decay, "num_train": len(chosen)}


def fewshot_probe(model: torch.nn.Module, train: Dataset, test: Dataset, num_classes: int, k: int,
                  options: LinearProbeOptions | None = None, loader: LoaderOptions | None = None,
                  progress: Progress = None, cache: FeatureCache | None = None) -> dict[str, Any]:
    """Top-1/top-5/mean per-class recall on `test` of CLIP_benchmark's k-shot probe (module docstring)."""
    options, loader = options or LinearProbeOptions(), loader or LoaderOptions()
    model = model.to(loader.torch_device()).eval()
    train_features = _normalised(model, train, loader, progress, "probe train", cache)
    test_features = _normalised(model, test, loader, progress, "probe test", cache)
    metrics = fewshot_from_features(train_features, test_features, num_classes, k, options,
                                    getattr(train, "name", "train"))
    return {**metrics, **data_damage(train, test)}
