"""Run by test_metrics_ddp.py: 2 gloo processes, each holding its own uneven share of paired embeddings.

Usage: python ddp_metrics_worker.py OUT_DIR. Writes OUT_DIR/rank{r}.json: what PairedEmbeddings.compute gives
on that rank after gathering, and how many rows it gathered."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from clipmodule.eval.metrics import PairedEmbeddings

SPLIT = 7  # rank 0 holds rows 0..6, rank 1 rows 7..11: uneven, so the gather must handle unequal sizes
KS = (1, 2, 5)


def make_pairs() -> tuple[torch.Tensor, torch.Tensor]:
    """12 noisy pairs; pairs 3 (rank 0) and 10 (rank 1) are identical, so they tie across the ranks."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(12, 6, generator=generator)
    texts = images + 0.9 * torch.randn(12, 6, generator=generator)
    images[10], texts[10] = images[3], texts[3]
    return images, texts


class RecordingPairs(PairedEmbeddings):
    """PairedEmbeddings that keeps the gathered images `compute` saw (torchmetrics restores the local state after)."""

    def compute(self) -> dict[str, float]:
        self.seen = torch.cat(self.images) if isinstance(self.images, list) else self.images
        return super().compute()


def run(rank: int, out: str, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        images, texts = make_pairs()
        mine = slice(0, SPLIT) if rank == 0 else slice(SPLIT, None)
        images, texts = images[mine], texts[mine]
        metric = RecordingPairs(ks=KS)
        metric.update(images[:2], texts[:2])  # two updates per rank: list states are gathered whole
        metric.update(images[2:], texts[2:])
        recalls = metric.compute()
        result = {"recalls": recalls, "rows": len(images), "gathered": metric.seen.tolist()}
        Path(out, f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    mp.spawn(run, args=(sys.argv[1], int(sys.argv[2])), nprocs=2, join=True)
