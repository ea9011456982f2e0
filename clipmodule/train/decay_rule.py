"""Weight decay's rule: matrices and conv kernels decay; gains, biases, 1-d embeddings and the logit scale/bias do
not. Shared by the plain groups (`clipmodule.train.optim`) and the per-layer ones (`clipmodule.train.layer_decay`)."""

from __future__ import annotations

from typing import Any

from torch import nn


def matrix_names(model: nn.Module) -> frozenset[str]:
    """The parameters with 2 or more dimensions, read before FSDP turns every parameter into a 1-d shard."""
    return frozenset(name for name, parameter in model.named_parameters() if parameter.ndim >= 2)


def decays(name: str, matrices: frozenset[str]) -> bool:
    """Weight decay's rule: matrices and conv kernels, never the logit scale/bias."""
    return name in matrices and "logit_" not in name


def parameter_groups(model: nn.Module, weight_decay: float,
                     matrices: frozenset[str] | None = None) -> list[dict[str, Any]]:
    """Weight decay on matrices and conv kernels; none on gains, biases and the logit scale/bias.
    `matrices`: the names of the matrices (`matrix_names` of the unwrapped model); default: read them now."""
    matrices = matrix_names(model) if matrices is None else matrices
    decay, exempt = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        (decay if decays(name, matrices) else exempt).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": exempt, "weight_decay": 0.0}]
