"""Run by test_loss_ddp.py: 2 gloo processes, each with half of a batch, a tiny CLIP wrapped in DDP.

Usage: python ddp_loss_worker.py OUT_DIR. Writes OUT_DIR/rank{r}.pt with, per loss variant, the loss this
rank computed and the gradients after DDP's all-reduce."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from clipmodule.loss import clip_loss, siglip_loss
from clipmodule.models import create_model

VARIANTS = ("clip", "clip_local", "siglip")
GLOBAL_BATCH = 8


def make_inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(GLOBAL_BATCH, 3, 32, 32, generator=generator, dtype=torch.float64)
    tokens = torch.randint(1, 400, (GLOBAL_BATCH, 77), generator=generator)
    tokens[:, 20:] = 0
    tokens[:, 19] = 49407  # end-of-text, the highest id: the text feature is taken there
    return images, tokens


def make_model(variant: str) -> torch.nn.Module:
    # float64, so that a 1e-6 tolerance tests the gradient semantics rather than float32 summation order.
    torch.manual_seed(1234)
    return create_model("tiny-vit", init_logit_bias=-10.0 if variant == "siglip" else None).double()


class Features(torch.nn.Module):
    """DDP must see a forward call to sync gradients; this one returns both normalised features."""

    def __init__(self, clip: torch.nn.Module):
        super().__init__()
        self.clip = clip

    def forward(self, images, tokens):
        return self.clip.encode_image(images, normalize=True), self.clip.encode_text(tokens, normalize=True)


def variant_loss(model, images, tokens, variant: str, rank: int, world_size: int) -> torch.Tensor:
    clip = model.module.clip if hasattr(model, "module") else model.clip
    image_features, text_features = model(images, tokens)
    scale = clip.logit_scale.exp()
    if variant == "siglip":
        return siglip_loss(image_features, text_features, scale, clip.logit_bias, rank=rank, world_size=world_size)
    local = variant == "clip_local"
    return clip_loss(image_features, text_features, scale, rank=rank, world_size=world_size, local_loss=local)


def run_rank(rank: int, world_size: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{out_dir}/rendezvous", rank=rank, world_size=world_size)
    images, tokens = make_inputs()
    rows = GLOBAL_BATCH // world_size
    mine = slice(rank * rows, (rank + 1) * rows)
    results = {}
    for variant in VARIANTS:
        model = DistributedDataParallel(Features(make_model(variant)))
        loss = variant_loss(model, images[mine], tokens[mine], variant, rank, world_size)
        loss.backward()
        results[variant] = {
            "loss": loss.detach(),
            "grads": {name: p.grad.detach().clone() for name, p in model.module.clip.named_parameters()},
        }
    torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    mp.spawn(run_rank, args=(2, sys.argv[1]), nprocs=2)
