"""An exponential moving average of the weights (`model.ema`), as timm's `ModelEmaV3`.

After every optimiser step the average moves towards the live weights: ema = decay * ema + (1 - decay) * live, for
every floating-point entry of the network's state dict (parameters and buffers; integer buffers are copied). The
decay is timm's: 0 until `update_after_step`, then `decay`, or with `warmup` 1 - (1 + t / gamma) ** -power capped at
`decay` and floored at `min_decay`. The average is held in float32 (for a float32 network: timm's arithmetic).

`EmaCallback` (added by the module when `model.ema` is set) updates it, validates it beside the live weights
(`val_ema/...` beside `val/...`), stores it in the checkpoint (its callback state) and restores it on resume.
`export` writes a fit checkpoint whose weights are the average: everything that reads fit checkpoints reads it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback
from torch import nn

from clipmodule.errors import ClipModuleError


@dataclass(frozen=True)
class EmaConfig:
    """timm's ModelEmaV3 options."""

    decay: float = 0.9999
    min_decay: float = 0.0
    update_after_step: int = 0
    """Steps before the average starts moving (decay 0 until then: it copies the live weights)."""
    warmup: bool = False
    """timm's warmup: decay 1 - (1 + t / warmup_gamma) ** -warmup_power, at most `decay`."""
    warmup_gamma: float = 1.0
    warmup_power: float = 2 / 3
    validate: bool = True
    """Validate the average beside the live weights (`val_ema/...`)."""


def ema_decay(config: EmaConfig, step: int) -> float:
    """The decay at optimiser step `step` (timm's `get_decay`)."""
    step = max(0, step - config.update_after_step - 1)
    if step <= 0:
        return 0.0
    if not config.warmup:
        return config.decay
    decay = 1 - (1 + step / config.warmup_gamma) ** -config.warmup_power
    return max(min(decay, config.decay), config.min_decay)


class WeightAverage:
    """The averaged network: a copy of the live one, in eval mode, outside any optimiser."""

    def __init__(self, network: nn.Module, config: EmaConfig):
        self.config = config
        self.network = copy.deepcopy(network).eval().requires_grad_(False)
        for name, value in self.network.state_dict().items():
            if value.is_floating_point() and value.dtype != torch.float32:
                raise ClipModuleError(f"model.ema: {name} is {value.dtype}; the average is kept in float32 "
                                      "(train in a *-mixed precision)")

    @torch.no_grad()
    def update(self, network: nn.Module, step: int) -> None:
        weight = 1.0 - ema_decay(self.config, step)
        averaged, live = [], []
        for mine, theirs in zip(self.network.state_dict().values(), network.state_dict().values()):
            if mine.is_floating_point():
                averaged.append(mine)
                live.append(theirs.detach())
            else:
                mine.copy_(theirs)
        if averaged:
            torch._foreach_lerp_(averaged, live, weight)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: value.detach().clone() for name, value in self.network.state_dict().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor], source: str) -> None:
        own = self.network.state_dict()
        if set(own) != set(state) or any(own[k].shape != state[k].shape for k in own):
            raise ClipModuleError(f"{source}: its EMA weights do not fit this network (model.ema)")
        self.network.load_state_dict(state)


class EmaCallback(Callback):
    """Keeps the `WeightAverage` of `module.model` through fit, validation and resume."""

    def __init__(self, config: EmaConfig):
        self.config = config
        self.average: WeightAverage | None = None
        self._pending: dict[str, torch.Tensor] | None = None

    @property
    def state_key(self) -> str:
        return "EmaCallback"

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if "FSDP" in type(trainer.strategy).__name__:
            raise ClipModuleError("model.ema is not supported with the FSDP strategy: use ddp")

    def _ensure(self, pl_module: Any) -> WeightAverage:
        if self.average is None:
            self.average = WeightAverage(pl_module.model, self.config)
        if self._pending is not None:
            self.average.load_state_dict(self._pending, "the checkpoint")
            self._pending = None
        return self.average

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        self._ensure(pl_module)

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._ensure(pl_module).update(pl_module.model, trainer.global_step)

    def on_validation_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        fitting = trainer.state.fn == "fit"
        if self.config.validate and (fitting or self.average is not None or self._pending is not None):
            # outside fit, only an average the checkpoint brought: a fresh one would be the live weights
            pl_module.start_shadow_validation(self._ensure(pl_module).network)

    def on_validation_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int,
                                dataloader_idx: int = 0) -> None:
        if self.config.validate:
            pl_module.shadow_validation_step(batch)

    def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if self.config.validate:
            pl_module.end_shadow_validation("val_ema/")

    def state_dict(self) -> dict[str, Any]:
        if self.average is not None:
            return {"weights": self.average.state_dict()}
        return {"weights": self._pending} if self._pending is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("weights") is not None:
            self._pending = state_dict["weights"]  # put in on first use: the network may not exist yet


def export(checkpoint_path: str | Path, out: str | Path) -> Path:
    """A copy of the fit checkpoint at `checkpoint_path` whose `state_dict` holds the EMA weights (at `out`)."""
    from clipmodule.train.callbacks import load_checkpoint_safely

    checkpoint = load_checkpoint_safely(str(checkpoint_path), map_location="cpu")
    weights = checkpoint.get("callbacks", {}).get("EmaCallback", {}).get("weights")
    if weights is None:
        raise ClipModuleError(f"{checkpoint_path}: no EMA weights in it (train with model.ema)")
    checkpoint["state_dict"] = {f"model.{name}": value for name, value in weights.items()}
    out = Path(out)
    torch.save(checkpoint, out)
    return out


def main(argv: list[str]) -> int:
    """`clipmodule ema-export CHECKPOINT OUT`."""
    from clipmodule.options import new_parser, parse

    parser = new_parser("clipmodule ema-export", "Write the EMA weights of a fit checkpoint (model.ema) as a fit "
                        "checkpoint of their own, which clipmodule.load, eval and convert read like any other.")
    parser.add_argument("checkpoint", help="a fit checkpoint of a run with model.ema")
    parser.add_argument("out", help="the checkpoint to write (.ckpt)")
    args = parse(parser, argv)
    print(f"{args.checkpoint} -> {export(args.checkpoint, args.out)}: the EMA weights")
    return 0
