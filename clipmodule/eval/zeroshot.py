"""Zero-shot classification from embeddings (retrieval and the metrics are in `clipmodule.eval.metrics`).

The zero-shot classifier is the paper's prompt ensemble: for each class, embed every template filled with
the class name, normalise, average, and normalise the mean again. Image features scored against those
class embeddings are the classification logits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

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
