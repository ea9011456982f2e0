"""AdamW with weight decay on matrices only, and the warmup-cosine schedule (the paper's recipe)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from clipmodule.errors import ClipModuleError


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with a linear warmup and a cosine decay, stepped every optimiser step (the paper's recipe)."""

    lr: float = 5e-4
    """Peak learning rate, reached after the warmup."""
    weight_decay: float = 0.2
    """Applied to weight matrices only: gains, biases, embeddings' 1-d params and the logit scale/bias are exempt."""
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    warmup_steps: int = 2000
    min_lr_ratio: float = 0.0
    """The cosine ends at lr * min_lr_ratio."""
    fused: bool | None = None
    """One fused kernel for the AdamW update; None: on when every parameter is a plain CPU or CUDA tensor.
    On CPU it makes the update several times faster (the 49k-token embedding dominates small models)."""


class WarmupCosine:
    """Learning-rate multiplier: linear 0->1 over `warmup` steps, then cosine 1->`floor` until `total`."""

    def __init__(self, warmup: int, total: int, floor: float = 0.0):
        self.warmup, self.total, self.floor = warmup, max(total, warmup + 1), floor

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        progress = min(1.0, (step - self.warmup) / (self.total - self.warmup))
        return self.floor + (1 - self.floor) * 0.5 * (1 + math.cos(math.pi * progress))


def matrix_names(model: nn.Module) -> frozenset[str]:
    """The parameters with 2 or more dimensions, read before FSDP turns every parameter into a 1-d shard."""
    return frozenset(name for name, parameter in model.named_parameters() if parameter.ndim >= 2)


def parameter_groups(model: nn.Module, weight_decay: float,
                     matrices: frozenset[str] | None = None) -> list[dict[str, Any]]:
    """Weight decay on matrices and conv kernels; none on gains, biases and the logit scale/bias.
    `matrices`: the names of the matrices (`matrix_names` of the unwrapped model); default: read them now."""
    matrices = matrix_names(model) if matrices is None else matrices
    decay, exempt = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        (exempt if name not in matrices or "logit_" in name else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": exempt, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, optim: OptimConfig, total_steps: int, matrices: frozenset[str] | None = None):
    """AdamW over `parameter_groups` and its warmup-cosine schedule over `total_steps` optimiser steps.
    Parameters without `requires_grad` (locked towers, `clipmodule.train.lock`) are not in it."""
    groups = parameter_groups(model, optim.weight_decay, matrices)
    if not any(group["params"] for group in groups):
        raise ClipModuleError("nothing to train: every parameter is locked (model.lock); unlock some groups")
    fused = optim.fused
    if fused is None:
        fused = all(type(p) is nn.Parameter and p.device.type in ("cpu", "cuda") for p in model.parameters())
    optimizer = torch.optim.AdamW(groups, lr=optim.lr, betas=optim.betas, eps=optim.eps, fused=fused)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(optim.warmup_steps, total_steps,
                                                                         optim.min_lr_ratio))
    return optimizer, schedule
