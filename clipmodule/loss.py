"""Contrastive losses as pure functions of (features, scale[, bias], rank, world_size).

Both losses see the whole global batch: features from every rank are gathered with an all_gather that
carries gradients back to the rank that produced them. The backward pass of the gather *sums* the gradient
each rank computed for a slice, so with DDP's gradient averaging the update equals that of one process
running the concatenated batch (see tests/clipmodule/test_loss_ddp.py).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F


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


def clip_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor,
    *,
    rank: int = 0,
    world_size: int = 1,
    local_loss: bool = False,
) -> torch.Tensor:
    """The paper's symmetric cross-entropy over the N×N image-text similarities of the global batch.

    Features are L2-normalised, `logit_scale` is the multiplier (already exponentiated). With `local_loss`
    each rank scores only its own rows against all columns (N_local×N instead of N×N): the same loss on
    average over ranks, for less memory and compute."""
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


class _ShiftWithGrad(torch.autograd.Function):
    """Send `tensor` to `to_rank`, receive the one `from_rank` sent; backward returns the gradient of the
    received tensor to `from_rank` and receives the gradient of the sent one from `to_rank`."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, to_rank: int, from_rank: int) -> torch.Tensor:
        ctx.to_rank, ctx.from_rank = to_rank, from_rank
        return _exchange([(tensor, to_rank)], [from_rank], tensor)[0]

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return _exchange([(grad, ctx.from_rank)], [ctx.to_rank], grad)[0], None, None


class _BothWaysWithGrad(torch.autograd.Function):
    """One tensor to the left neighbour and one to the right at once; returns (from the right, from the left).
    The gradients travel back the way each tensor came."""

    @staticmethod
    def forward(ctx, to_left: torch.Tensor, to_right: torch.Tensor, left: int, right: int):
        ctx.left, ctx.right = left, right
        from_right, from_left = _exchange([(to_left, left), (to_right, right)], [right, left], to_left)
        return from_right, from_left

    @staticmethod
    def backward(ctx, grad_from_right: torch.Tensor, grad_from_left: torch.Tensor):
        grad_to_right, grad_to_left = _exchange([(grad_from_left, ctx.left), (grad_from_right, ctx.right)],
                                                [ctx.right, ctx.left], grad_from_right)
        return grad_to_left, grad_to_right, None, None


def _sigmoid_terms(image_features: torch.Tensor, texts: torch.Tensor, logit_scale: torch.Tensor,
                   logit_bias: torch.Tensor, positives_offset: int | None) -> torch.Tensor:
    """Sum of -log sigmoid(±logit) of `image_features` against one block of texts: every pair negative except,
    when `positives_offset` is given, image i with text i + offset."""
    logits = logit_scale * image_features @ texts.t() + logit_bias
    signs = -torch.ones_like(logits)
    if positives_offset is not None:
        rows = torch.arange(image_features.shape[0], device=logits.device)
        signs[rows, rows + positives_offset] = 1.0
    return -F.logsigmoid(signs * logits).sum()


def _siglip_ring(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor,
                 logit_bias: torch.Tensor, rank: int, world_size: int, both_ways: bool) -> torch.Tensor:
    """open_clip's `shift`/`bidir`: this rank's own block, then the other ranks' texts arrive one block per round
    from the neighbours (both neighbours at once with `both_ways`), each scored as negatives only. No
    (N_global × d) text tensor and no (N_local × N_global) logit matrix is ever built: each round's logits are
    N_local × N_local. Autograd still keeps every received block for the backward pass, which sends each
    block's gradient back round the ring to the rank that owns it."""
    left, right = (rank - 1) % world_size, (rank + 1) % world_size
    total = _sigmoid_terms(image_features, text_features, logit_scale, logit_bias, positives_offset=0)
    to_left = to_right = text_features
    rounds, remainder = divmod(world_size - 1, 2) if both_ways else (0, world_size - 1)
    for _ in range(rounds):
        to_left, to_right = _BothWaysWithGrad.apply(to_left, to_right, left, right)
        for block in (to_left, to_right):
            total = total + _sigmoid_terms(image_features, block, logit_scale, logit_bias, None)
    for _ in range(remainder):
        to_right = _ShiftWithGrad.apply(to_right, right, left)
        total = total + _sigmoid_terms(image_features, to_right, logit_scale, logit_bias, None)
    return total / image_features.shape[0]


def siglip_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor,
    logit_bias: torch.Tensor,
    *,
    rank: int = 0,
    world_size: int = 1,
    exchange: str = "gather",
) -> torch.Tensor:
    """SigLIP (Zhai et al. 2023): an independent binary decision for every image-text pair.

    Each rank scores its own images against the texts of all ranks, normalised by its local batch size,
    so the mean over ranks is the paper's loss over the global batch. `exchange` says how the texts reach
    each rank: "gather" (all at once, one N_local × N_global logit matrix), "shift" (passed round the ring,
    one block per round) or "bidir" (passed both ways round the ring: half the rounds). All three give the
    same loss and gradients."""
    if exchange not in SIGLIP_EXCHANGES:
        raise ValueError(f"siglip exchange {exchange!r} is not one of {', '.join(SIGLIP_EXCHANGES)}")
    if exchange != "gather" and world_size > 1:
        return _siglip_ring(image_features, text_features, logit_scale, logit_bias, rank, world_size,
                            both_ways=exchange == "bidir")
    all_texts = gather_with_grad(text_features, rank, world_size)
    rows = image_features.shape[0]
    return _sigmoid_terms(image_features, all_texts, logit_scale, logit_bias, positives_offset=rank * rows) / rows
