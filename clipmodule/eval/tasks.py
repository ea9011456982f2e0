"""Evaluations of a CLIP model: zero-shot classification, image-text retrieval, linear probe.

    zero-shot      class embeddings from class names × templates (`zeroshot.build_zeroshot_classifier`),
                   logits 100 · image·W; top-1, top-5 and mean per-class recall (torchmetrics)
    retrieval      image→text and text→image recall@k (`metrics.recall_at_k`: a query scores when one of
                   its matches ranks in the top k, ties counting against it), several captions per image
    linear probe   frozen features, scikit-learn's L-BFGS logistic regression; the inverse regularisation
                   C is chosen on a validation split by the paper's sweep (10^-6..10^6, coarse-to-fine
                   down to 8 steps per decade), then refit on train+validation and scored on the test set

Every function takes a model, a dataset from `eval.sources` and plain options, and returns a dict of metrics.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from clipmodule.api import tokenizer_spec
from clipmodule.errors import ClipModuleError, one_line
from clipmodule.eval.datasets import make_loader
from clipmodule.eval.metrics import classification_metrics, retrieval_recall
from clipmodule.eval.options import LinearProbeOptions, LoaderOptions
from clipmodule.eval.prompts import Prompts
from clipmodule.eval.zeroshot import build_zeroshot_classifier, zeroshot_logits

Progress = Any  # rich.progress.Progress, optional everywhere


@torch.no_grad()
def extract_features(encode: Callable[[torch.Tensor], torch.Tensor], dataset: Dataset, options: LoaderOptions,
                     progress: Progress = None, description: str = "images",
                     captions: bool = False) -> tuple[torch.Tensor, list]:
    """(features [N, D] as float32 on the CPU, the second element of every item: labels or caption lists)."""
    device = options.torch_device()
    total = len(dataset) if hasattr(dataset, "__len__") else None
    loader = make_loader(dataset, options.batch_size, options.workers_for(total), captions=captions)
    task = progress.add_task(description, total=total) if progress is not None else None
    features, targets = [], []
    try:
        for images, batch_targets in loader:
            features.append(encode(images.to(device)).float().cpu())
            targets.extend(batch_targets if captions else batch_targets.tolist())
            if task is not None:
                progress.advance(task, len(images))
    except ClipModuleError as error:
        raise ClipModuleError(one_line(error)) from None  # a worker's error arrives wrapped in its traceback
    if not features:
        raise ClipModuleError(f"{getattr(dataset, 'name', 'dataset')}: dataset is empty")
    return torch.cat(features), targets


def data_damage(*datasets: Dataset) -> dict[str, int]:
    """Shards read only up to their damage and incomplete samples skipped there (`eval.shards`), summed over
    the datasets read from shards; {} when none was. Every evaluation reports them beside its metrics."""
    counts = [dataset.damage() for dataset in datasets if hasattr(dataset, "damage")]
    return {key: sum(count[key] for count in counts) for key in counts[0]} if counts else {}


def model_tokenizer(model: torch.nn.Module) -> Callable[[list[str]], torch.Tensor]:
    """The tokenizer the model reads (OpenAI's BPE, or the `tokenizer.json` that came with its weights) at its
    context length; long captions are truncated.

    Each batch of ids is cut by `CLIP.cut_padding` (the rule `encode_text` applies too): for short prompts the
    padding is most of the work (a zero-shot classifier is 80 templates × classes)."""
    tokenize = tokenizer_spec(model).build(truncate=True)
    return lambda texts: model.cut_padding(tokenize(texts))


def zeroshot_classification(model: torch.nn.Module, dataset: Dataset, classnames: Sequence[str],
                            templates: Prompts, options: LoaderOptions | None = None,
                            progress: Progress = None, where: str = "templates",
                            cache: FeatureCache | None = None) -> dict[str, float]:
    """Zero-shot top-1/top-5/mean per-class recall of a CLIP model with the prompt ensemble (or class-specific
    prompts: see `zeroshot.build_zeroshot_classifier`); errors about the templates name them as `where`.
    With a `cache`, image features already computed for the dataset are reused (see `FeatureCache`)."""
    options = options or LoaderOptions()
    model = model.to(options.torch_device()).eval()
    key = (tuple(classnames), repr(templates))  # ImageNet, -V2 and -Sketch share one classifier
    classifier = cache.classifiers.get(key) if cache is not None else None
    if classifier is None:
        classifier = build_zeroshot_classifier(model, model_tokenizer(model), classnames, templates, where=where)
        if cache is not None:
            cache.classifiers[key] = classifier
    features, labels = image_features(model, "embedding", dataset, options, progress, "zero-shot", cache)
    if len(classnames) < 2:  # torchmetrics' own error is a traceback
        raise ClipModuleError(f"{getattr(dataset, 'name', 'dataset')}: zero-shot classification needs at least "
                              f"two classes, not {len(classnames)}")
    logits = zeroshot_logits(features, classifier.cpu())
    return {**classification_metrics(logits, torch.tensor(labels), len(classnames)), **data_damage(dataset)}


def retrieval_metrics(image_features: torch.Tensor, text_features: torch.Tensor, text_to_image: Sequence[int],
                      ks: Sequence[int] = (1, 5, 10), chunk: int = 1024) -> dict[str, float]:
    """image→text and text→image recall@k (`metrics.recall_at_k`); caption j belongs to image `text_to_image[j]`."""
    recalls = retrieval_recall(image_features, text_features, text_to_image, ks, chunk)
    return {f"{direction}_R@{k}": value for direction, by_k in recalls.items() for k, value in by_k.items()}


def retrieval(model: torch.nn.Module, dataset: Dataset, ks: Sequence[int] = (1, 5, 10),
              options: LoaderOptions | None = None, progress: Progress = None) -> dict[str, float]:
    """Recall@k both ways for a dataset of images with one or more captions each."""
    options = options or LoaderOptions()
    device = options.torch_device()
    model = model.to(device).eval()
    image_features, caption_lists = extract_features(
        functools.partial(model.encode_image, normalize=True), dataset, options, progress, "retrieval", captions=True)
    captions = [caption for captions in caption_lists for caption in captions]
    text_to_image = [index for index, captions in enumerate(caption_lists) for _ in captions]
    if not captions:
        raise ClipModuleError(f"{getattr(dataset, 'name', 'dataset')}: no captions")
    tokenizer = model_tokenizer(model)
    with torch.no_grad():
        text_features = torch.cat([
            model.encode_text(tokenizer(captions[i : i + 256]).to(device), normalize=True).float().cpu()
            for i in range(0, len(captions), 256)
        ])
    metrics = retrieval_metrics(image_features, text_features, text_to_image, ks)
    return {**metrics, "num_images": len(caption_lists), "num_captions": len(captions), **data_damage(dataset)}


def probe_encoder(model: torch.nn.Module, features: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The frozen image features a linear probe reads (see `LinearProbeOptions.features`)."""
    if features not in ("pre_projection", "embedding"):
        raise ClipModuleError(f"unknown linear-probe features {features!r} (pre_projection or embedding)")
    visual = model.visual
    has_projection = getattr(visual, "proj", None) is not None
    if features == "pre_projection" and hasattr(visual, "forward_features") and has_projection:
        return lambda images: visual.forward_features(images.to(model.dtype))[:, 0]
    return model.encode_image


def _projection(model: torch.nn.Module) -> torch.Tensor | None:
    """The ViT's projection when its image embedding is exactly `pre_projection @ proj` (see `probe_encoder`)."""
    visual = model.visual
    if hasattr(visual, "forward_features") and getattr(visual, "proj", None) is not None:
        return visual.proj
    return None


class FeatureCache:
    """Image features of one model, computed once per dataset and reused by every task that reads it (and
    its zero-shot classifiers, built once per class names and templates).

    A dataset is known by the key it was `register`ed with (the suite's: its spec, split and class names;
    an unregistered one is read every time). For a ViT the cache
    holds the class token before the projection: the linear probe reads it as is, zero-shot projects it
    (`@ visual.proj`, the same product `encode_image` takes), so one pass over the images serves both."""

    def __init__(self):
        self.store: dict[tuple, tuple[torch.Tensor, list]] = {}
        self.keys: dict[int, tuple] = {}  # id(dataset) -> key; the suite keeps its datasets alive
        self.classifiers: dict[tuple, torch.Tensor] = {}  # zero-shot class embeddings by (names, templates)
        self.passes = 0  # image passes actually run (what the reuse saves is visible in tests and logs)

    def register(self, dataset: Dataset, key: tuple) -> None:
        self.keys[id(dataset)] = key

    def knows(self, dataset: Dataset) -> bool:
        return id(dataset) in self.keys

    def features(self, model, kind: str, dataset: Dataset, options: LoaderOptions, progress: Progress,
                 description: str) -> tuple[torch.Tensor, list]:
        projection = _projection(model)
        stored = "pre_projection" if projection is not None else "embedding"
        key = (self.keys[id(dataset)], stored)
        if key not in self.store:
            encode = probe_encoder(model, stored) if stored == "pre_projection" else model.encode_image
            self.store[key] = extract_features(encode, dataset, options, progress, description)
            self.passes += 1
        features, labels = self.store[key]
        if kind == "embedding" and projection is not None:
            with torch.no_grad():
                features = (features.to(projection.dtype) @ projection.detach().cpu()).float()
        return features, labels


def image_features(model: torch.nn.Module, kind: str, dataset: Dataset, options: LoaderOptions,
                   progress: Progress, description: str, cache: FeatureCache | None) -> tuple[torch.Tensor, list]:
    """Features of `kind` (`embedding`, or a probe's `LinearProbeOptions.features`) and the labels, from the
    cache when it knows the dataset, else by a pass over the images."""
    encode = probe_encoder(model, kind) if kind != "embedding" else model.encode_image  # checks `kind`
    if cache is None or not cache.knows(dataset):
        return extract_features(encode, dataset, options, progress, description)
    return cache.features(model, kind, dataset, options, progress, description)


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
                 progress: Progress = None, cache: FeatureCache | None = None) -> dict[str, float]:
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
    return {**metrics, "best_C": best_c, "val_accuracy": history[best_c], "num_train": int(len(y)),
            **data_damage(train, test), "sweep": {f"{c:.6g}": value for c, value in history.items()}}


__all__ = [
    "LinearProbeOptions",
    "LoaderOptions",
    "classification_metrics",
    "FeatureCache",
    "extract_features",
    "linear_probe",
    "retrieval",
    "retrieval_metrics",
    "sweep_c",
    "zeroshot_classification",
]
