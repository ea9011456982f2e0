"""Parameter and FLOP counts, counted the way mmpretrain's model tables are.

mmpretrain (through mmengine's fvcore-derived counter) counts one multiply-add as one FLOP and counts the
layers that carry weights: convolutions and linear layers. The two activation-by-activation products of
attention (q·kᵀ and attention·v) are not counted there, so they are left out here too; `include_attention`
adds them. Counting runs under `torch.utils.flop_counter.FlopCounterMode` on the `meta` device: shapes
only, no memory, no arithmetic, so the ViT-B/16 at 384 px counts in well under a second.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from clipmodule.models import count_parameters

_aten = torch.ops.aten
# Weight-carrying ops (a Linear is addmm/mm, a Conv2d is convolution) and the attention products.
WEIGHT_OPS = {_aten.convolution, _aten._convolution, _aten.addmm, _aten.mm}
ATTENTION_OPS = {
    _aten.bmm,
    _aten.baddbmm,
    _aten._scaled_dot_product_efficient_attention,
    _aten._scaled_dot_product_flash_attention,
    _aten._scaled_dot_product_cudnn_attention,
}


def count_flops(model: nn.Module, image_size: int, include_attention: bool = False) -> int:
    """Multiply-adds of one forward pass on a single [1, 3, image_size, image_size] image.

    `model` may live on any device; it is counted on a `meta` copy of its shapes when it is not on meta."""
    if next(model.parameters()).device.type != "meta":
        model = _meta_copy(model)
    images = torch.empty(1, 3, image_size, image_size, device="meta")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(images)
    ops = WEIGHT_OPS | (ATTENTION_OPS if include_attention else set())
    total = sum(count for op, count in counter.get_flop_counts()["Global"].items() if op in ops)
    return total // 2  # FlopCounterMode counts a multiply-add as two FLOPs


def _meta_copy(model: nn.Module) -> nn.Module:
    import copy

    clone = copy.deepcopy(model)
    return clone.to_empty(device="meta")


def complexity_on_meta(build: Callable[[], nn.Module], image_size: int) -> tuple[int, int]:
    """(parameters, FLOPs as mmpretrain counts them) of the model `build()` makes, built on `meta`."""
    with torch.device("meta"):
        model = build()
    return count_parameters(model), count_flops(model.eval(), image_size)
