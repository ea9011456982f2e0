"""Zero-shot classification from embeddings (retrieval and the metrics are in `clipmodule.eval.metrics`).

The zero-shot classifier is the paper's prompt ensemble: for each class, embed every template filled with
the class name, normalise, average, and normalise the mean again. Image features scored against those
class embeddings are the classification logits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from clipmodule.eval.prompts import Prompts, class_prompts

Tokenizer = Callable[[list[str]], torch.Tensor]


@torch.no_grad()
def build_zeroshot_classifier(model: torch.nn.Module, tokenizer: Tokenizer, classnames: Sequence[str],
                              templates: Prompts, *, batch_size: int = 256, where: str = "templates") -> torch.Tensor:
    """Class embeddings [embed_dim, num_classes] (unit columns) from `model.encode_text`.

    `tokenizer(texts)` returns token ids [len(texts), context_length]. `templates` hold one "{}" or "{c}"
    each, or are a dict of class-specific prompts {class name: [prompt, …]} (`eval.prompts`); errors name
    them as `where`."""
    per_class = class_prompts(classnames, templates, where)
    device = next(model.parameters()).device
    texts = [text for prompts in per_class for text in prompts]
    chunks = []
    for start in range(0, len(texts), batch_size):
        tokens = tokenizer(texts[start : start + batch_size]).to(device)
        chunks.append(model.encode_text(tokens, normalize=True).float())
    embeddings = torch.cat(chunks).split([len(prompts) for prompts in per_class])
    means = torch.stack([class_embeddings.mean(dim=0) for class_embeddings in embeddings])
    return F.normalize(means, dim=-1).t().contiguous()


def zeroshot_logits(image_features: torch.Tensor, classifier: torch.Tensor, scale: float = 100.0) -> torch.Tensor:
    """[N, num_classes] scores of (re-normalised) image features against the class embeddings."""
    return scale * F.normalize(image_features.float(), dim=-1) @ classifier
