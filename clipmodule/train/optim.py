"""The optimiser and its schedule: weight decay on matrices only, AdamW (the paper's recipe), LAMB, Lion or any of
timm's optimisers by name, and open_clip's schedules (warmup, then cosine, constant, or constant with a cooldown),
optionally with per-layer learning rates (`clipmodule.train.layer_decay`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from clipmodule.errors import ClipModuleError
from clipmodule.train.decay_rule import decays, matrix_names, parameter_groups

OPTIMIZERS = ("adamw", "lamb", "lion")
SCHEDULES = ("cosine", "const", "const-cooldown")
__all__ = ["OptimConfig", "WarmupConstant", "WarmupCosine", "build_optimizer", "decays", "matrix_names",
           "parameter_groups"]


@dataclass(frozen=True)
class OptimConfig:
    """The optimiser, with a linear warmup and a schedule, stepped every optimiser step (the paper's recipe:
    AdamW and cosine)."""

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
    name: str = "adamw"
    """adamw (torch's), lamb, lion (timm's), or `timm/<name>`: any optimiser of timm's registry
    (`timm.optim.list_optimizers()`), given lr, weight_decay and `kwargs`."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Further arguments of a `timm/<name>` optimiser (e.g. {momentum: 0.9})."""
    schedule: Literal["cosine", "const", "const-cooldown"] = "cosine"
    """open_clip's schedules, after the warmup: cosine to lr * min_lr_ratio; constant; constant, then a cooldown."""
    cooldown_steps: int = 0
    """const-cooldown: the last `cooldown_steps` optimiser steps decay to lr * cooldown_end_ratio."""
    cooldown_power: float = 1.0
    """const-cooldown: 1 decays linearly, other values polynomially."""
    cooldown_end_ratio: float = 0.0
    layer_decay: float | None = None
    """Per-layer learning rates (BEiT, timm): a block `d` blocks below its tower's head trains at lr * layer_decay**d,
    in both towers (`clipmodule.train.layer_decay`). None: every parameter at lr."""


class WarmupCosine:
    """Learning-rate multiplier: linear 0->1 over `warmup` steps, then cosine 1->`floor` until `total`."""

    def __init__(self, warmup: int, total: int, floor: float = 0.0):
        self.warmup, self.total, self.floor = warmup, max(total, warmup + 1), floor

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        progress = min(1.0, (step - self.warmup) / (self.total - self.warmup))
        return self.floor + (1 - self.floor) * 0.5 * (1 + math.cos(math.pi * progress))


class WarmupConstant:
    """Learning-rate multiplier: linear 0->1 over `warmup` steps, then 1 (open_clip's `const`); with
    `cooldown` > 0, the last `cooldown` of `total` steps decay as (1 - e/cooldown)**power to `end`
    (open_clip's `const-cooldown`)."""

    def __init__(self, warmup: int, total: int, cooldown: int = 0, power: float = 1.0, end: float = 0.0):
        self.warmup, self.total, self.cooldown, self.power, self.end = warmup, total, cooldown, power, end

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        start = self.total - self.cooldown
        if self.cooldown <= 0 or step < start:
            return 1.0
        decay = max(0.0, 1 - (step - start) / self.cooldown) ** self.power
        return self.end + decay * (1 - self.end)


def schedule_of(optim: OptimConfig, total_steps: int):
    """The multiplier of `optim.schedule` over `total_steps` optimiser steps."""
    if optim.schedule == "cosine":
        return WarmupCosine(optim.warmup_steps, total_steps, optim.min_lr_ratio)
    if optim.schedule == "const":
        return WarmupConstant(optim.warmup_steps, total_steps)
    if optim.schedule == "const-cooldown":
        if not 0 < optim.cooldown_steps <= total_steps - optim.warmup_steps:
            raise ClipModuleError(f"model.optim.cooldown_steps={optim.cooldown_steps} must be between 1 and the "
                                  f"steps after the warmup ({total_steps - optim.warmup_steps})")
        return WarmupConstant(optim.warmup_steps, total_steps, optim.cooldown_steps, optim.cooldown_power,
                              optim.cooldown_end_ratio)
    raise ClipModuleError(f"model.optim.schedule={optim.schedule!r} is not one of {', '.join(SCHEDULES)}")


def _timm_optim() -> Any:
    try:
        import timm.optim
    except ImportError:
        raise ClipModuleError("model.optim.name: lamb, lion and timm/* need timm (pip install timm)") from None
    return timm.optim


# timm's create_optimizer_v2 arguments this project sets itself: refused in kwargs, naming the field to use instead
_TIMM_OWN = {"lr": "model.optim.lr", "weight_decay": "model.optim.weight_decay",
             "layer_decay": "model.optim.layer_decay", "param_group_fn": "model.optim.layer_decay (the groups are "
             "this project's)", "opt": "model.optim.name (timm/<name>)", "filter_bias_and_bn": "nothing (weight "
             "decay is on matrices only, always)"}
# fields one schedule reads, refused (when set) under another
_SCHEDULE_OWN = {"min_lr_ratio": "cosine", "cooldown_steps": "const-cooldown", "cooldown_power": "const-cooldown",
                 "cooldown_end_ratio": "const-cooldown"}


def check_name(optim: OptimConfig) -> None:
    """`optim.name` is one of OPTIMIZERS or `timm/<one of timm's optimisers>`, `optim.schedule` one of SCHEDULES."""
    name = optim.name.lower()
    if name.startswith("timm/"):
        if name[5:] not in _timm_optim().list_optimizers():
            raise ClipModuleError(f"model.optim.name={optim.name!r}: timm has no optimiser {name[5:]!r} "
                                  "(timm.optim.list_optimizers() lists them)")
    elif name not in OPTIMIZERS:
        raise ClipModuleError(f"model.optim.name={optim.name!r} is not one of {', '.join(OPTIMIZERS)} or timm/<name>")
    if optim.schedule not in SCHEDULES:
        raise ClipModuleError(f"model.optim.schedule={optim.schedule!r} is not one of {', '.join(SCHEDULES)}")


def check_options(optim: OptimConfig) -> None:
    """Refuses, in one line, an unknown optimiser or schedule and an option the named optimiser or schedule would
    ignore: `fused` is AdamW's only; Lion has no `eps`; a `timm/<name>` optimiser takes its own options from `kwargs`
    only (betas/eps there, not beside `name`), and not those this project sets (`_TIMM_OWN`); `kwargs` go to
    `timm/<name>` only; min_lr_ratio is cosine's, cooldown_* const-cooldown's."""
    check_name(optim)
    name, default = optim.name.lower(), OptimConfig()
    where = f"model.optim (name {optim.name!r})"
    for option, schedule in _SCHEDULE_OWN.items():
        if optim.schedule != schedule and getattr(optim, option) != getattr(default, option):
            raise ClipModuleError(f"{where}: {option} is read by the {schedule} schedule only, and this run's is "
                                  f"{optim.schedule!r}; drop model.optim.{option} or set model.optim.schedule")
    if optim.fused and name != "adamw":
        raise ClipModuleError(f"{where}: fused is torch's AdamW only; drop model.optim.fused")
    if name.startswith("timm/"):
        for option in ("betas", "eps"):
            if getattr(optim, option) != getattr(default, option):
                raise ClipModuleError(f"{where}: {option} is not passed to a timm/<name> optimiser; give it in "
                                      f"model.optim.kwargs (e.g. {{{option}: ...}}) if it takes one")
        for option in sorted(set(optim.kwargs) & set(_TIMM_OWN)):
            raise ClipModuleError(f"{where}: kwargs.{option} is set by this project; use {_TIMM_OWN[option]}")
        return
    if optim.kwargs:
        raise ClipModuleError(f"{where}: kwargs go to timm/<name> optimisers only; {', '.join(optim.kwargs)} "
                              "would be ignored")
    if name == "lion" and optim.eps != default.eps:
        raise ClipModuleError(f"{where}: Lion has no eps; drop model.optim.eps")


def make_optimizer(groups: list[dict[str, Any]], optim: OptimConfig, fused: bool) -> torch.optim.Optimizer:
    """The optimiser `optim.name` over `groups` (each group's own `weight_decay` and `lr` kept)."""
    check_options(optim)
    name = optim.name.lower()
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=optim.lr, betas=optim.betas, eps=optim.eps, fused=fused)
    if name == "lamb":
        return _timm_optim().Lamb(groups, lr=optim.lr, betas=optim.betas, eps=optim.eps)
    if name == "lion":
        return _timm_optim().Lion(groups, lr=optim.lr, betas=optim.betas)
    return _timm_optim().create_optimizer_v2(groups, opt=name[5:], lr=optim.lr, **optim.kwargs)  # check_name: timm/


def build_optimizer(model: nn.Module, optim: OptimConfig, total_steps: int, matrices: frozenset[str] | None = None):
    """The optimiser over `parameter_groups` (or the layer-decay groups) and its schedule over `total_steps`
    optimiser steps. Parameters without `requires_grad` (locked towers, `clipmodule.train.lock`) are not in it."""
    if optim.layer_decay is not None:
        from clipmodule.train.layer_decay import layer_decay_groups

        groups = layer_decay_groups(model, optim.lr, optim.weight_decay, optim.layer_decay, matrices)
    else:
        groups = parameter_groups(model, optim.weight_decay, matrices)
    if not any(group["params"] for group in groups):
        raise ClipModuleError("nothing to train: every parameter is locked (model.lock); unlock some groups")
    fused = optim.fused
    if fused is None:
        fused = all(type(p) is nn.Parameter and p.device.type in ("cpu", "cuda") for p in model.parameters())
    optimizer = make_optimizer(groups, optim, fused)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule_of(optim, total_steps))
    return optimizer, schedule
