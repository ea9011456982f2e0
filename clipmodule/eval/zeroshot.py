"""Zero-shot classification and image-text retrieval from embeddings: pure functions plus a torchmetrics
metric that gathers paired embeddings across ranks.

The zero-shot classifier is the paper's prompt ensemble: for each class, embed every template filled with
the class name, normalise, average, and normalise the mean again. Image features scored against those
class embeddings are the classification logits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torchmetrics import Metric

Tokenizer = Callable[[list[str]], torch.Tensor]


@torch.no_grad()
def build_zeroshot_classifier(model: torch.nn.Module, tokenizer: Tokenizer, classnames: Sequence[str],
                              templates: Sequence[str], *, batch_size: int = 256) -> torch.Tensor:
    """Class embeddings [embed_dim, num_classes] (unit columns) from `model.encode_text`.

    `tokenizer(texts)` returns token ids [len(texts), context_length]; templates contain "{}"."""
    if not classnames or not templates:
        raise ValueError("zero-shot classification needs at least one class name and one template")
    device = next(model.parameters()).device
    texts = [template.format(name) for name in classnames for template in templates]
    chunks = []
    for start in range(0, len(texts), batch_size):
        tokens = tokenizer(texts[start : start + batch_size]).to(device)
        chunks.append(model.encode_text(tokens, normalize=True).float())
    per_template = torch.cat(chunks).view(len(classnames), len(templates), -1)
    return F.normalize(per_template.mean(dim=1), dim=-1).t().contiguous()


def zeroshot_logits(image_features: torch.Tensor, classifier: torch.Tensor, scale: float = 100.0) -> torch.Tensor:
    """[N, num_classes] scores of (re-normalised) image features against the class embeddings."""
    return scale * F.normalize(image_features.float(), dim=-1) @ classifier


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = (1, 5)) -> dict[int, int]:
    """How many rows have their label among the k highest scores, for each k (k capped at the classes)."""
    top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices
    hits = top == labels[:, None]
    return {k: int(hits[:, :k].any(dim=1).sum()) for k in ks}


def retrieval_recall(image_features: torch.Tensor, text_features: torch.Tensor, ks: Sequence[int] = (1, 5, 10),
                     chunk: int = 1024) -> dict[str, float]:
    """Recall@k of paired embeddings (row i of each belongs together), both directions.

    `image_to_text_R<k>`: share of images whose own caption ranks in the top k of all captions."""
    images = F.normalize(image_features.float(), dim=-1)
    texts = F.normalize(text_features.float(), dim=-1)
    results = {}
    for name, queries, items in (("image_to_text", images, texts), ("text_to_image", texts, images)):
        ranks = []
        for start in range(0, len(queries), chunk):
            scores = queries[start : start + chunk] @ items.t()
            own = torch.arange(start, start + len(scores), device=scores.device)
            own_score = scores.gather(1, own[:, None])
            ranks.append((scores > own_score).sum(dim=1))  # items scored strictly higher than the match
        rank = torch.cat(ranks)
        for k in ks:
            results[f"{name}_R{k}"] = float((rank < k).float().mean())  # MLflow allows no "@" in names
    return results


class PairedEmbeddings(Metric):
    """Collects paired image/text embeddings on every rank; `compute` gives `retrieval_recall` over all."""

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
        return retrieval_recall(images, texts, self.ks)
