"""Run by test_distill.py: 2 gloo processes, each with half of a batch, a tiny student CLIP wrapped in DDP and a
frozen tiny teacher, through `distill_clip_loss` (the global batch, and `local_loss`).

Usage: python distill_ddp_worker.py OUT_DIR. Writes OUT_DIR/rank{r}.pt with, per variant, this rank's loss and the
student's gradients after DDP's all-reduce."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from clipmodule.models import create_model
from clipmodule.train.distill import distill_clip_loss

VARIANTS = ("global", "local")
GLOBAL_BATCH = 8
VOCAB = 500  # a small vocabulary: the 49k-row embedding would dominate the test's time


def make_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(GLOBAL_BATCH, 3, 32, 32, generator=generator, dtype=torch.float64)
    tokens = torch.randint(1, 400, (GLOBAL_BATCH, 16), generator=generator)
    tokens[:, 12:] = 0
    tokens[:, 11] = VOCAB - 1  # end-of-text: the largest id
    return images, tokens


def make_models() -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(1234)
    student = create_model("tiny-vit", text={"vocab_size": VOCAB}).double()
    torch.manual_seed(99)
    teacher = create_model("tiny-vit", text={"vocab_size": VOCAB}).double().eval().requires_grad_(False)
    with torch.no_grad():
        teacher.logit_scale.fill_(3.0)
    return Features(student), teacher


class Features(torch.nn.Module):
    def __init__(self, clip: torch.nn.Module):
        super().__init__()
        self.clip = clip

    def forward(self, images, tokens):
        return self.clip.encode_image(images, normalize=True), self.clip.encode_text(tokens, normalize=True)


def variant_loss(student, teacher, images, tokens, variant: str, rank: int, world_size: int) -> torch.Tensor:
    clip = student.module.clip if hasattr(student, "module") else student.clip
    image_features, text_features = student(images, tokens)
    with torch.no_grad():
        teacher_images = teacher.encode_image(images, normalize=True)
        teacher_texts = teacher.encode_text(tokens, normalize=True)
    contrastive, distill = distill_clip_loss(image_features, text_features, clip.logit_scale.exp(), teacher_images,
                                             teacher_texts, teacher.logit_scale.exp(), rank=rank,
                                             world_size=world_size, local_loss=variant == "local")
    return contrastive + 0.5 * distill


def run_rank(rank: int, world_size: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{out_dir}/rendezvous", rank=rank, world_size=world_size)
    images, tokens = make_inputs()
    rows = GLOBAL_BATCH // world_size
    mine = slice(rank * rows, (rank + 1) * rows)
    results = {}
    for variant in VARIANTS:
        student, teacher = make_models()
        model = DistributedDataParallel(student)
        loss = variant_loss(model, teacher, images[mine], tokens[mine], variant, rank, world_size)
        loss.backward()
        results[variant] = {"loss": loss.detach(),
                            "grads": {name: p.grad.detach().clone() for name, p in student.clip.named_parameters()}}
    torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    mp.spawn(run_rank, args=(2, sys.argv[1]), nprocs=2)
