"""Image-text retrieval: image→text and text→image recall@k (`metrics.recall_at_k`: a query scores when one of its
matches ranks in the top k, ties counting against it), several captions per image. The task kind `retrieval`."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

from clipmodule.errors import ClipModuleError
from clipmodule.eval.metrics import PairedEmbeddings, retrieval_recall
from clipmodule.eval.options import LoaderOptions, TaskSpec
from clipmodule.eval.readers import open_retrieval
from clipmodule.eval.tasks.features import Progress, data_damage, extract_features, model_tokenizer
from clipmodule.eval.tasks.kind import TaskContext, TaskKind, TrackedSet


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


def _open(spec: TaskSpec, preprocess: Callable) -> tuple:
    from clipmodule.eval.languages import split_for

    return (open_retrieval(spec.dataset, preprocess, root=spec.root, split=split_for(spec)),)


def _run(model, spec: TaskSpec, data: tuple, context: TaskContext) -> dict[str, Any]:
    return retrieval(model, data[0], spec.recall_at, context.loader, context.progress)


def main_metric(metrics: dict[str, Any], dataset: str | None) -> tuple[str, float] | None:
    """DataComp's: the mean of both directions' recall@1."""
    recalls = [metrics.get(f"{direction}_R@1") for direction in ("image_to_text", "text_to_image")]
    return ("mean_R@1", sum(recalls) / 2) if None not in recalls else None


class RetrievalTracker:
    """Recall@k both ways over the held-out pairs of every rank (`data.val_shards`), logged as `val/<direction>_R<k>`
    (no "@": MLflow's metric names)."""

    def __init__(self, tracked: TrackedSet):
        self.model = tracked.model
        self.pairs = PairedEmbeddings().to(tracked.device)

    def update(self, batch: dict[str, Any]) -> None:
        self.pairs.update(self.model.encode_image(batch["image"], normalize=True),
                          self.model.encode_text(batch["text"], normalize=True))

    def results(self) -> dict[str, Any]:
        out = {f"val/{name}": value for name, value in self.pairs.compute().items()} if self.pairs.update_count \
            else {}
        self.pairs.reset()
        return out


KIND = TaskKind(name="retrieval", data_keys=("dataset",), open=_open, run=_run, main_metric=main_metric,
                group="Retrieval", tracker=RetrievalTracker)
