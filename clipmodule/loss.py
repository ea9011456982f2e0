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


def siglip_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor,
    logit_bias: torch.Tensor,
    *,
    rank: int = 0,
    world_size: int = 1,
) -> torch.Tensor:
    """SigLIP (Zhai et al. 2023): an independent binary decision for every image-text pair.

    Each rank scores its own images against the texts of all ranks, normalised by its local batch size,
    so the mean over ranks is the paper's loss over the global batch."""
    all_texts = gather_with_grad(text_features, rank, world_size)
    logits = logit_scale * image_features @ all_texts.t() + logit_bias
    rows = image_features.shape[0]
    signs = -torch.ones_like(logits)
    positives = torch.arange(rows, device=logits.device)
    signs[positives, positives + rank * rows] = 1.0
    return -F.logsigmoid(signs * logits).sum() / rows
