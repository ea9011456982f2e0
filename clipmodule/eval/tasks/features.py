"""What every task kind reads images through: features of a dataset (once per model and dataset, shared by the
tasks of a suite through `FeatureCache`), the damage a shard reader met, the model's tokenizer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import Dataset

from clipmodule.api import tokenizer_spec
from clipmodule.errors import ClipModuleError, one_line
from clipmodule.eval.options import LoaderOptions
from clipmodule.eval.readers import make_loader

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
    """Shards read only up to their damage and incomplete samples skipped there (`eval.readers.shards`), summed over
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
        self.by_image: dict[tuple, torch.Tensor] = {}  # normalised embeddings by (transform, image source): the
        # images several caption-selection rows share (SugarCrepe's seven subsets all read COCO's val2017)

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
