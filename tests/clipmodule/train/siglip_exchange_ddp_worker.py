"""Run by test_siglip_exchange_ddp.py: 2-rank gloo DDP fits (forked processes) of tiny-vit with the SigLIP loss,
each rank with batch 8, 3 steps, once per fit named on the command line: a `siglip_exchange`, optionally with
`@K` for model.accum_freq K. Writes OUT/weights.pt: name -> the weights of its fit (rank 0's, which DDP keeps
equal to rank 1's) and the world size it ran on.

Usage: python siglip_exchange_ddp_worker.py OUT EXCHANGE[@K] [EXCHANGE[@K] ...]"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from clipmodule.train.module import ClipLitModule
from tests.clipmodule.fixtures import SyntheticDataModule
from tests.clipmodule.train.test_accumulate import OPTIM, _network, _trainer


def fit(name: str, out: Path) -> dict:
    exchange, _, accum_freq = name.partition("@")
    module = ClipLitModule(_network("siglip"), optim=OPTIM, loss="siglip", siglip_exchange=exchange,
                           accum_freq=int(accum_freq or 1))
    trainer = _trainer(out, devices=2, strategy="ddp_fork", max_steps=3)
    trainer.fit(module, SyntheticDataModule(num_samples=64, batch_size=8, image_size=32))
    weights = {name: value.detach().clone() for name, value in module.model.state_dict().items()}
    return {"weights": weights, "world_size": trainer.world_size}


def main() -> None:
    torch.set_num_threads(1)
    out = Path(sys.argv[1])
    torch.save({name: fit(name, out) for name in sys.argv[2:]}, out / "weights.pt")


if __name__ == "__main__":
    main()
