"""Run by test_loss_siglip_chunked.py: WORLD gloo processes score their share of one batch of features with the
SigLIP loss under every text exchange ("gather", "shift", "bidir") and write the loss and the gradients of
their image and text features, logit scale and bias, and how many elements autograd saved for the backward
pass, to OUT/rank{r}.pt.

Usage: python siglip_chunked_worker.py OUT WORLD"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from clipmodule.loss import SIGLIP_EXCHANGES, siglip_loss

ROWS_PER_RANK = 3
WIDTH = 8


def global_inputs(world_size: int) -> dict[str, torch.Tensor]:
    """The whole batch (float64, so that the comparison tests the exchange, not summation order)."""
    generator = torch.Generator().manual_seed(world_size)
    rows = ROWS_PER_RANK * world_size
    images = F.normalize(torch.randn(rows, WIDTH, generator=generator, dtype=torch.float64), dim=-1)
    texts = F.normalize(images + 0.5 * torch.randn(rows, WIDTH, generator=generator, dtype=torch.float64), dim=-1)
    return {"images": images, "texts": texts, "scale": torch.tensor(10.0, dtype=torch.float64),
            "bias": torch.tensor(-3.0, dtype=torch.float64)}


def loss_and_grads(inputs: dict[str, torch.Tensor], rank: int, world_size: int, exchange: str) -> dict:
    mine = slice(rank * ROWS_PER_RANK, (rank + 1) * ROWS_PER_RANK)
    leaves = {"images": inputs["images"][mine].clone().requires_grad_(),
              "texts": inputs["texts"][mine].clone().requires_grad_(),
              "scale": inputs["scale"].clone().requires_grad_(), "bias": inputs["bias"].clone().requires_grad_()}
    saved: dict[int, int] = {}  # storage address -> elements: what autograd keeps for the backward pass

    def keep(tensor: torch.Tensor) -> torch.Tensor:
        saved[tensor.untyped_storage().data_ptr()] = tensor.numel()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
        loss = siglip_loss(leaves["images"], leaves["texts"], leaves["scale"], leaves["bias"], rank=rank,
                           world_size=world_size, exchange=exchange)
    loss.backward()
    return {"loss": loss.detach(), "saved_elements": torch.tensor(sum(saved.values())),
            **{name: leaf.grad for name, leaf in leaves.items()}}


def run_rank(rank: int, world_size: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{out_dir}/rendezvous", rank=rank, world_size=world_size)
    inputs = global_inputs(world_size)
    results = {exchange: loss_and_grads(inputs, rank, world_size, exchange) for exchange in SIGLIP_EXCHANGES}
    torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    world = int(sys.argv[2])
    # fork: the children inherit the imported torch instead of importing it again (seconds on a loaded machine)
    mp.start_processes(run_rank, args=(world, sys.argv[1]), nprocs=world, start_method="fork")
