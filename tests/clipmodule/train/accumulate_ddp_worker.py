"""Run by test_accumulate.py: 2-rank gloo DDP fits (forked processes) of tiny-vit, each rank with batch 8,
3 steps, for every loss variant in one piece and as 4 micro-batches of 2. Writes OUT/weights.pt: the weights
of each (variant, accum_freq) fit (rank 0's, which DDP keeps equal to rank 1's).

Usage: python accumulate_ddp_worker.py OUT"""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
import torch

from clipmodule.train.module import ClipLitModule
from tests.clipmodule.fixtures import SyntheticDataModule
from tests.clipmodule.train.test_accumulate import OPTIM, VARIANTS, _network


def fit(variant: str, accum_freq: int, out: Path) -> dict[str, torch.Tensor]:
    options = VARIANTS[variant]
    module = ClipLitModule(_network(options["loss"]), optim=OPTIM, accum_freq=accum_freq, **options)
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp_fork", max_steps=3, logger=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        limit_val_batches=0, enable_checkpointing=False, default_root_dir=out)
    trainer.fit(module, SyntheticDataModule(num_samples=64, batch_size=8, image_size=32))
    return {name: value.detach().clone() for name, value in module.model.state_dict().items()}


def main() -> None:
    torch.set_num_threads(1)
    out = Path(sys.argv[1])
    weights = {f"{variant}/{accum}": fit(variant, accum, out) for variant in VARIANTS for accum in (1, 4)}
    torch.save(weights, out / "weights.pt")


if __name__ == "__main__":
    main()
