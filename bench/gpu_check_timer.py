"""A Lightning callback `bench/gpu_check.sh` adds to `clipmodule fit` (bench/ on PYTHONPATH):

    --trainer.callbacks '[{"class_path": "gpu_check_timer.StepTimer",
                           "init_args": {"output": "ours.json", "window": 32}}]'

It times the fit's last `window` optimizer steps, data-loader waits included (as open_clip's `Batch (t)`, which
the script reads for the peer over the same last steps), and writes samples per second as JSON at the end of
the fit. The device is synchronised at both ends of the window only, so the steps inside it run as they would.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback


class StepTimer(Callback):
    """Samples per second over the last `window` steps of a fit, written to `output` (JSON)."""

    def __init__(self, output: str, window: int):
        self.output, self.window = Path(output), window
        self.start: float | None = None
        self.batch_size = 0

    def _now(self, trainer) -> float:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize(trainer.strategy.root_device)
        return time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.batch_size = int(batch["image"].shape[0])
        if trainer.global_step == trainer.max_steps - self.window:
            self.start = self._now(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        if self.start is None or trainer.global_rank != 0:
            return
        seconds = self._now(trainer) - self.start
        samples = self.window * self.batch_size * trainer.world_size
        self.output.write_text(json.dumps({
            "samples_per_s": samples / seconds, "window_steps": self.window, "seconds": seconds,
            "batch_size": self.batch_size, "world_size": trainer.world_size,
            "device": str(trainer.strategy.root_device), "precision": str(trainer.precision)}) + "\n")
