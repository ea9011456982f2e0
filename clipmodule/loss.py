"""Contrastive losses as pure functions of (features, scale[, bias], rank, world_size).

Both losses see the whole global batch: features from every rank are gathered with an all_gather that
carries gradients back to the rank that produced them. The backward pass of the gather *sums* the gradient
each rank computed for a slice, so with DDP's gradient averaging the update equals that of one process
running the concatenated batch (see tests/clipmodule/test_loss_ddp.py). SigLIP can instead pass the texts
round the ranks, one block at a time (`siglip_loss(..., exchange="shift"|"bidir")`), for the same gradients.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.autograd.function import once_differentiable


class _GatherWithGrad(torch.autograd.Function):
    """all_gather forward; backward sums every rank's gradient for the gathered tensor and keeps this
    rank's slice (a reduce-scatter, written as all_reduce + slice because gloo has no reduce_scatter)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
        ctx.rank, ctx.rows = rank, tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(world_size)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = ctx.rank * ctx.rows
        return grad[start : start + ctx.rows], None, None


def gather_with_grad(tensor: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """Concatenate `tensor` from all ranks along dim 0 (same shape on every rank); gradients flow back."""
    if world_size == 1:
        return tensor
    return _GatherWithGrad.apply(tensor, rank, world_size)


def gathered_negatives(hard_negatives: torch.Tensor, rank: int, world_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every rank's hard negatives [N_local, K, D] as one block of text columns [N·K, D] (gradients flow back), and
    which of them are present: an absent negative is a zero vector, which no normalised feature is."""
    flat = gather_with_grad(hard_negatives.flatten(0, 1), rank, world_size)
    return flat, flat.detach().ne(0).any(dim=-1)


def clip_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor,
    *,
    rank: int = 0,
    world_size: int = 1,
    local_loss: bool = False,
    hard_negatives: torch.Tensor | None = None,
) -> torch.Tensor:
    """The paper's symmetric cross-entropy over the N×N image-text similarities of the global batch.

    Features are L2-normalised, `logit_scale` is the multiplier (already exponentiated). With `local_loss`
    each rank scores only its own rows against all columns (N_local×N instead of N×N): the same loss on
    average over ranks, for less memory and compute. `hard_negatives` ([N_local, K, D], absent ones zero; NegCLIP)
    are extra text columns of every rank, for the image->text direction only; K = 0 is the plain loss."""
    all_images = gather_with_grad(image_features, rank, world_size)
    all_texts = gather_with_grad(text_features, rank, world_size)
    if local_loss:
        logits_per_image = logit_scale * image_features @ all_texts.t()
        logits_per_text = logit_scale * text_features @ all_images.t()
        offset = rank * image_features.shape[0]
    else:
        logits_per_image = logit_scale * all_images @ all_texts.t()
        logits_per_text = logits_per_image.t()
        offset = 0
    if hard_negatives is not None and hard_negatives.shape[1]:
        negatives, present = gathered_negatives(hard_negatives, rank, world_size)
        scored = (logit_scale * (image_features if local_loss else all_images) @ negatives.t())
        logits_per_image = torch.cat([logits_per_image, scored.masked_fill(~present, float("-inf"))], dim=1)
    labels = torch.arange(logits_per_image.shape[0], device=logits_per_image.device) + offset
    return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2


SIGLIP_EXCHANGES = ("gather", "shift", "bidir")


def _exchange(sends: list[tuple[torch.Tensor, int]], receives_from: list[int],
              like: torch.Tensor) -> list[torch.Tensor]:
    """Point-to-point: send each tensor to its rank and receive one tensor (shaped like `like`) from each rank
    in `receives_from`, all at once, so a ring of ranks cannot deadlock."""
    received = [torch.empty_like(like) for _ in receives_from]
    ops = [dist.P2POp(dist.isend, tensor.contiguous(), peer) for tensor, peer in sends]
    ops += [dist.P2POp(dist.irecv, buffer, peer) for buffer, peer in zip(received, receives_from)]
    for request in dist.batch_isend_irecv(ops):
        request.wait()
    return received


def _signs(logits: torch.Tensor, positives_offset: int | None) -> torch.Tensor:
    """-1 for every pair except, when `positives_offset` is given, image i with text i + offset (+1)."""
    signs = -torch.ones_like(logits)
    if positives_offset is not None:
        rows = torch.arange(logits.shape[0], device=logits.device)
        signs[rows, rows + positives_offset] = 1.0
    return signs


def _sigmoid_terms(image_features: torch.Tensor, texts: torch.Tensor, logit_scale: torch.Tensor,
                   logit_bias: torch.Tensor, positives_offset: int | None) -> torch.Tensor:
    """Sum of -log sigmoid(±logit) of `image_features` against one block of texts (signs from `_signs`)."""
    logits = logit_scale * image_features @ texts.t() + logit_bias
    return -F.logsigmoid(_signs(logits, positives_offset) * logits).sum()


def _sigmoid_block_grads(images: torch.Tensor, texts: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor,
                         positives_offset: int | None, weight: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Gradients of `weight * _sigmoid_terms(...)` for (images, texts, scale, bias), written out so that no
    autograd graph is built: d/dz -log sigmoid(s z) = -s sigmoid(-s z)."""
    products = images @ texts.t()
    logits = scale * products + bias
    signs = _signs(logits, positives_offset)
    dlogits = -weight * signs * torch.sigmoid(-signs * logits)
    return (scale * dlogits @ texts, scale * dlogits.t() @ images, (dlogits * products).sum().reshape(scale.shape),
            dlogits.sum().reshape(bias.shape))


def _ring_loss_sum(images: torch.Tensor, texts: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor,
                   rank: int, world_size: int, both_ways: bool) -> torch.Tensor:
    """The forward pass (no gradients): this rank's own block with its positives, then the other ranks' text
    blocks as they arrive from the neighbours, one block a round (both neighbours at once with `both_ways`:
    half the rounds). Only the running sum is kept; each received block is dropped once it is scored."""
    left, right = (rank - 1) % world_size, (rank + 1) % world_size
    total = _sigmoid_terms(images, texts, scale, bias, positives_offset=0)
    to_left = to_right = texts
    rounds, remainder = divmod(world_size - 1, 2) if both_ways else (0, world_size - 1)
    for _ in range(rounds):
        to_left, to_right = _exchange([(to_left, left), (to_right, right)], [right, left], texts)
        total = total + _sigmoid_terms(images, to_left, scale, bias, None)
        total = total + _sigmoid_terms(images, to_right, scale, bias, None)
    for _ in range(remainder):
        (to_right,) = _exchange([(to_right, right)], [left], texts)
        total = total + _sigmoid_terms(images, to_right, scale, bias, None)
    return total


def _ring_grads(images: torch.Tensor, texts: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor,
                rank: int, world_size: int, weight: torch.Tensor) -> list[torch.Tensor]:
    """The backward pass: every text block goes once round the ring to the right together with its gradient
    accumulator (one tensor, the two stacked), each rank scoring the block again and adding its share; one
    last hop brings the accumulator home, where it meets the owner's own share. The image, scale and bias
    gradients stay local. A rank holds one travelling pair and one received pair at any time."""
    left, right = (rank - 1) % world_size, (rank + 1) % world_size
    grads = list(_sigmoid_block_grads(images, texts, scale, bias, 0, weight))
    travelling = torch.stack([texts, torch.zeros_like(texts)])
    for _ in range(world_size - 1):
        (travelling,) = _exchange([(travelling, right)], [left], travelling)
        image_grad, text_grad, scale_grad, bias_grad = _sigmoid_block_grads(images, travelling[0], scale, bias,
                                                                            None, weight)
        travelling[1] += text_grad
        grads[0] += image_grad
        grads[2] += scale_grad
        grads[3] += bias_grad
        del image_grad, text_grad  # before the next round's logits: one block's gradients alive at a time
    (accumulated,) = _exchange([(travelling[1], right)], [left], texts)
    grads[1] = grads[1] + accumulated
    return grads


class _SigLIPRing(torch.autograd.Function):
    """open_clip's `shift`/`bidir` exchanges with memory flat in the number of ranks: the forward pass keeps
    only the loss (not the received text blocks, nor their logits) and saves only this rank's features, scale
    and bias; the backward pass passes the texts round again, recomputing each block's logits.

    The backward pass goes one way round for both exchanges. A block's gradient has to come home: carried on
    round the ring that is world_size rounds; sent both ways it would reach every rank in half the rounds, but
    its two accumulators would then take as many again to travel back, so a two-way backward saves no rounds,
    only adds code. "bidir" keeps its two-way forward (half the rounds). Under autocast the backward pass
    recomputes in the features' own dtype (it runs outside autocast, like every backward pass)."""

    @staticmethod
    def forward(ctx, images, texts, scale, bias, rank: int, world_size: int, both_ways: bool):
        ctx.save_for_backward(images, texts, scale, bias)
        ctx.rank, ctx.world_size = rank, world_size
        return _ring_loss_sum(images, texts, scale, bias, rank, world_size, both_ways) / images.shape[0]

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        images, texts, scale, bias = ctx.saved_tensors
        # the ring runs whichever inputs want a gradient here: every rank must take part in every round
        grads = _ring_grads(images, texts, scale, bias, ctx.rank, ctx.world_size, grad / images.shape[0])
        wanted = [g.to(t.dtype) if need else None
                  for g, t, need in zip(grads, (images, texts, scale, bias), ctx.needs_input_grad)]
        return *wanted, None, None, None


def siglip_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor,
    logit_bias: torch.Tensor,
    *,
    rank: int = 0,
    world_size: int = 1,
    exchange: str = "gather",
    hard_negatives: torch.Tensor | None = None,
) -> torch.Tensor:
    """SigLIP (Zhai et al. 2023): an independent binary decision for every image-text pair.

    Each rank scores its own images against the texts of all ranks, normalised by its local batch size,
    so the mean over ranks is the paper's loss over the global batch. `exchange` says how the texts reach
    each rank: "gather" (all at once, one N_local × N_global logit matrix), "shift" (passed round the ring,
    one block per round) or "bidir" (passed both ways round the ring: half the rounds). All three give the
    same loss and gradients; the ring's memory per rank stays flat as ranks are added (it recomputes each
    block's logits in the backward pass, `_SigLIPRing`), the gather's grows with the global batch.
    `hard_negatives` ([N_local, K, D], absent ones zero) are gathered (whatever the exchange) and scored as more
    negative pairs of this rank's images; K = 0 is the plain loss."""
    if exchange not in SIGLIP_EXCHANGES:
        raise ValueError(f"siglip exchange {exchange!r} is not one of {', '.join(SIGLIP_EXCHANGES)}")
    rows = image_features.shape[0]
    if exchange != "gather" and world_size > 1:
        loss = _SigLIPRing.apply(image_features, text_features, logit_scale, logit_bias, rank, world_size,
                                 exchange == "bidir")
    else:
        all_texts = gather_with_grad(text_features, rank, world_size)
        loss = _sigmoid_terms(image_features, all_texts, logit_scale, logit_bias, positives_offset=rank * rows) / rows
    if hard_negatives is not None and hard_negatives.shape[1]:
        negatives, present = gathered_negatives(hard_negatives, rank, world_size)
        logits = logit_scale * image_features @ negatives.t() + logit_bias
        loss = loss - (F.logsigmoid(-logits) * present).sum() / rows
    return loss
