"""The metrics every evaluation and training's validation report: one recall@k, one classification set.

    recall_at_k             share of queries with a match in the top k; used by `eval retrieval` and by
                            training's `PairedEmbeddings` (held-out pairs, gathered across ranks)
    classification_metrics  top-1, top-5 and mean per-class recall (torchmetrics); used by zero-shot,
                            linear probe and `clipmodule test`

The functions return plain numbers; each caller names the keys it reports (`image_to_text_R@1` in the
eval JSON, `val/image_to_text_R1` in MLflow, whose metric names allow no "@").
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torchmetrics import Metric
from torchmetrics.classification import MulticlassAccuracy, MulticlassRecall

DIRECTIONS = ("image_to_text", "text_to_image")


def recall_at_k(queries: torch.Tensor, items: torch.Tensor, query_owner: torch.Tensor, item_owner: torch.Tensor,
                ks: Sequence[int] = (1, 5, 10), chunk: int = 1024) -> dict[int, float]:
    """{k: share of queries with at least one matching item among the k best-scored items}.

    Scores are dot products of the rows (normalise them first for cosine similarity). Query i matches
    item j when `query_owner[i] == item_owner[j]`, so an image may have several captions. A query's rank is
    the number of non-matching items scored at least as high as its best match: a tie with a wrong item
    counts against the query (all-equal scores give R@1 = 0, not 1), and a query without any match is a
    miss. torchmetrics' hit rate is not used because it orders equal scores arbitrarily. Queries are
    scored `chunk` rows at a time, so memory stays chunk × len(items)."""
    query_owner, item_owner = torch.as_tensor(query_owner), torch.as_tensor(item_owner)
    ranks = []
    for start in range(0, len(queries), chunk):
        scores = queries[start : start + chunk].float() @ items.float().t()
        relevant = query_owner[start : start + chunk, None].to(item_owner.device) == item_owner[None, :]
        best_match = scores.masked_fill(~relevant, float("-inf")).max(dim=1, keepdim=True).values
        rank = ((scores >= best_match) & ~relevant).sum(dim=1)
        ranks.append(torch.where(relevant.any(dim=1), rank, len(items)))  # no match: ranked past every item
    rank = torch.cat(ranks) if ranks else torch.zeros(0, dtype=torch.long)
    return {k: float((rank < k).float().mean()) if len(rank) else 0.0 for k in ks}


def retrieval_recall(image_features: torch.Tensor, text_features: torch.Tensor,
                     text_to_image: Sequence[int] | torch.Tensor | None = None, ks: Sequence[int] = (1, 5, 10),
                     chunk: int = 1024) -> dict[str, dict[int, float]]:
    """`recall_at_k` both ways on cosine similarities: {"image_to_text": {k: R@k}, "text_to_image": {...}}.

    Caption j belongs to image `text_to_image[j]`; None pairs row i of each (one caption per image)."""
    images = F.normalize(image_features.float(), dim=-1)
    texts = F.normalize(text_features.float(), dim=-1)
    image_ids = torch.arange(len(images), device=images.device)
    owner = image_ids if text_to_image is None else torch.as_tensor(text_to_image, dtype=torch.long).to(images.device)
    return {
        "image_to_text": recall_at_k(images, texts, image_ids, owner, ks, chunk),
        "text_to_image": recall_at_k(texts, images, owner, image_ids, ks, chunk),
    }


DETAIL = "detail"
"""The key under which a task returns its per-class (and per-group) results beside its metrics; a suite row and a
record keep them as `detail`, out of the metrics table."""


def classification_metrics(scores: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict[str, float]:
    """top1, top5 (when there are more than 5 classes) and mean per-class recall over the classes present."""
    scores, labels = scores.float(), labels.long()
    metrics = {"top1": MulticlassAccuracy(num_classes, top_k=1, average="micro")(scores, labels).item()}
    if num_classes > 5:
        metrics["top5"] = MulticlassAccuracy(num_classes, top_k=5, average="micro")(scores, labels).item()
    per_class = MulticlassRecall(num_classes, average="none")(scores, labels)
    present = torch.bincount(labels, minlength=num_classes) > 0
    metrics["mean_per_class_recall"] = per_class[present].mean().item()
    metrics["num_samples"] = int(len(labels))
    return metrics


def per_class_results(scores: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict[str, list]:
    """What `mean_per_class_recall` is the mean of, in label order: `per_class_recall` (None for a class without
    test images) and `per_class_count` (test images per class)."""
    labels = labels.long()
    recall = MulticlassRecall(num_classes, average="none")(scores.float(), labels).tolist()
    counts = torch.bincount(labels, minlength=num_classes).tolist()
    return {"per_class_recall": [float(value) if count else None for value, count in zip(recall, counts)],
            "per_class_count": [int(count) for count in counts]}


class PairedEmbeddings(Metric):
    """Collects paired image/text embeddings (row i of each belongs together) on every rank; `compute`
    gives `{direction}_R{k}` over all of them (the names training logs, without "@" for MLflow)."""

    full_state_update = False

    def __init__(self, ks: Sequence[int] = (1, 5, 10), **kwargs):
        super().__init__(**kwargs)
        self.ks = tuple(ks)
        self.add_state("images", default=[], dist_reduce_fx="cat")
        self.add_state("texts", default=[], dist_reduce_fx="cat")

    def update(self, image_features: torch.Tensor, text_features: torch.Tensor) -> None:
        self.images.append(image_features.detach().float())
        self.texts.append(text_features.detach().float())

    def compute(self) -> dict[str, float]:
        images = torch.cat(self.images) if isinstance(self.images, list) else self.images
        texts = torch.cat(self.texts) if isinstance(self.texts, list) else self.texts
        recalls = retrieval_recall(images, texts, ks=self.ks)
        return {f"{direction}_R{k}": value for direction, by_k in recalls.items() for k, value in by_k.items()}
