"""Run by test_fsdp.py: 3 steps of a 2-rank gloo fit of tiny-vit (SigLIP, so the logit bias trains too) with
strategy "ddp" or "fsdp", then `trainer.save_checkpoint(OUT/final.ckpt)` (FSDP: the full state dict).

Lightning refuses FSDP without CUDA and hands FSDP no device on CPU; `CPUFSDPStrategy` is the one change that
lets the same FSDP wrapping run on CPU processes: it passes `device_id=cpu`.

Usage: python fsdp_worker.py ddp|fsdp OUT"""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.strategies import FSDPStrategy

from clipmodule.train.module import ClipLitModule, build_network
from clipmodule.train.optim import OptimConfig
from tests.clipmodule.fixtures import SyntheticDataModule


class CPUFSDPStrategy(FSDPStrategy):
    def _setup_model(self, model: torch.nn.Module) -> torch.nn.Module:
        from torch.distributed.fsdp import FullyShardedDataParallel

        return FullyShardedDataParallel(module=model, sharding_strategy=self.sharding_strategy,
                                        device_id=torch.device("cpu"), **self.kwargs)


def main(strategy_name: str, out: Path) -> None:
    torch.set_num_threads(1)
    L.seed_everything(0, verbose=False)
    network = build_network("tiny-vit", init_logit_scale=2.3, init_logit_bias=-10.0)
    module = ClipLitModule(network, loss="siglip", optim=OptimConfig(lr=1e-3, warmup_steps=1, weight_decay=0.2))
    strategy = CPUFSDPStrategy(process_group_backend="gloo") if strategy_name == "fsdp" else "ddp"
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy=strategy, max_steps=3, logger=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        limit_val_batches=0, enable_checkpointing=False, default_root_dir=out)
    trainer.fit(module, SyntheticDataModule(num_samples=48, batch_size=8, image_size=32))
    trainer.save_checkpoint(out / "final.ckpt")


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
