"""Run by test_hard_negatives_ddp.py: 2 gloo processes, each with half of a batch and its captions' hard negatives
(some absent), a tiny CLIP wrapped in DDP.

Usage: python hard_negatives_ddp_worker.py OUT_DIR. Writes OUT_DIR/rank{r}.pt with, per loss variant, the loss this
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
from clipmodule.train.hard_negatives import encode_with_negatives

VARIANTS = ("clip", "clip_local", "siglip", "siglip_shift")
GLOBAL_BATCH, NEGATIVES = 8, 2
VOCAB = 512  # a small embedding table: its dense gradient is most of the all-reduce


def _tokens(rows: int, generator: torch.Generator) -> torch.Tensor:
    tokens = torch.randint(1, 400, (rows, 77), generator=generator)
    tokens[:, 20:] = 0
    tokens[:, 19] = VOCAB - 1  # end-of-text, the highest id: the text feature is taken there
    return tokens


def make_inputs(seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    present = torch.ones(GLOBAL_BATCH, NEGATIVES, dtype=torch.bool)
    present[1, 1] = present[6, 0] = present[6, 1] = False  # absent negatives on both ranks
    return {"image": torch.randn(GLOBAL_BATCH, 3, 32, 32, generator=generator, dtype=torch.float64),
            "text": _tokens(GLOBAL_BATCH, generator),
            "negatives": _tokens(GLOBAL_BATCH * NEGATIVES, generator).view(GLOBAL_BATCH, NEGATIVES, 77),
            "negatives_present": present}


def make_model(variant: str) -> torch.nn.Module:
    # float64, so that a 1e-6 tolerance tests the gradient semantics rather than float32 summation order.
    torch.manual_seed(1234)
    return create_model("tiny-vit", init_logit_bias=-10.0 if variant.startswith("siglip") else None,
                        text={"vocab_size": VOCAB}).double()


class Features(torch.nn.Module):
    """DDP must see a forward call to sync gradients: image features, and each caption's with its negatives'."""

    def __init__(self, clip: torch.nn.Module):
        super().__init__()
        self.clip = clip

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.clip.encode_image(batch["image"], normalize=True), encode_with_negatives(self.clip, batch)


def variant_loss(model, batch, variant: str, rank: int, world_size: int) -> torch.Tensor:
    clip = model.module.clip if hasattr(model, "module") else model.clip
    image_features, texts = model(batch)
    texts, negatives = texts[:, 0], texts[:, 1:]
    scale = clip.logit_scale.exp()
    if variant.startswith("siglip"):
        exchange = "shift" if variant == "siglip_shift" else "gather"
        return siglip_loss(image_features, texts, scale, clip.logit_bias, rank=rank, world_size=world_size,
                           exchange=exchange, hard_negatives=negatives)
    return clip_loss(image_features, texts, scale, rank=rank, world_size=world_size,
                     local_loss=variant == "clip_local", hard_negatives=negatives)


def run_rank(rank: int, world_size: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{out_dir}/rendezvous", rank=rank, world_size=world_size)
    batch = make_inputs()
    rows = GLOBAL_BATCH // world_size
    mine = {key: value[rank * rows:(rank + 1) * rows] for key, value in batch.items()}
    results = {}
    for variant in VARIANTS:
        model = DistributedDataParallel(Features(make_model(variant)))
        loss = variant_loss(model, mine, variant, rank, world_size)
        loss.backward()
        results[variant] = {
            "loss": loss.detach(),
            "grads": {name: p.grad.detach().clone() for name, p in model.module.clip.named_parameters()},
        }
    torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    mp.spawn(run_rank, args=(2, sys.argv[1]), nprocs=2)
