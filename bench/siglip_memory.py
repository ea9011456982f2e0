"""SigLIP across ranks: peak memory and time per rank of the loss (forward and backward) when the texts are
gathered against when they are passed round the ranks ("shift", "bidir"), on gloo CPU processes.

    .venv/bin/python bench/siglip_memory.py [--world 2] [--rows 2048] [--width 512] [--rounds 5]

Every rank holds `--rows` normalised image and text features (fp32, leaves with gradients, as the towers'
outputs would be) and runs `clipmodule.loss.siglip_loss` forward and backward with each exchange in turn
(alternating the order per round). Memory is the peak of the bytes torch's CPU allocator holds above the
level before the call, from torch.profiler's allocation records (bench/accumulation.py's
`peak_allocated_bytes`): the gathered or received texts, logits, intermediates and gradients, not the
features themselves. Figures are medians over rounds of the maximum over ranks.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accumulation import peak_allocated_bytes  # noqa: E402

from clipmodule.loss import SIGLIP_EXCHANGES, siglip_loss  # noqa: E402


def rank_features(rank: int, rows: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(rank)
    images = F.normalize(torch.randn(rows, width, generator=generator), dim=-1)
    texts = F.normalize(images + 0.5 * torch.randn(rows, width, generator=generator), dim=-1)
    return images.requires_grad_(), texts.requires_grad_()


def measure_rank(rank: int, world: int, args: argparse.Namespace, folder: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=world)
    images, texts = rank_features(rank, args.rows, args.width)
    scale, bias = torch.tensor(10.0, requires_grad=True), torch.tensor(-10.0, requires_grad=True)

    def run(exchange: str) -> None:
        siglip_loss(images, texts, scale, bias, rank=rank, world_size=world, exchange=exchange).backward()
        for leaf in (images, texts, scale, bias):
            leaf.grad = None

    results: dict[str, dict[str, list[float]]] = {name: {"bytes": [], "seconds": []} for name in SIGLIP_EXCHANGES}
    for exchange in SIGLIP_EXCHANGES:
        run(exchange)  # warm-up: gloo's buffers, the allocator
    for round_index in range(args.rounds):
        order = SIGLIP_EXCHANGES if round_index % 2 == 0 else SIGLIP_EXCHANGES[::-1]
        for exchange in order:
            dist.barrier()
            results[exchange]["bytes"].append(peak_allocated_bytes(lambda exchange=exchange: run(exchange)))
            dist.barrier()
            start = time.perf_counter()
            run(exchange)
            results[exchange]["seconds"].append(time.perf_counter() - start)
    torch.save(results, Path(folder) / f"rank{rank}.pt")
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--world", type=int, default=2)
    parser.add_argument("--rows", type=int, default=2048, help="features per rank")
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        # fork: the ranks inherit the imported torch (seconds each on a loaded machine)
        mp.start_processes(measure_rank, args=(args.world, args, folder), nprocs=args.world, start_method="fork")
        ranks = [torch.load(Path(folder) / f"rank{r}.pt", weights_only=True) for r in range(args.world)]
    print(f"{args.world} gloo ranks x {args.rows} features of width {args.width} (fp32), {args.rounds} rounds\n")
    print("| exchange | peak loss memory per rank (MiB) | × gather | loss fwd+bwd (s) | × gather |")
    print("|---|---|---|---|---|")
    figures = {}
    for exchange in SIGLIP_EXCHANGES:
        per_round = zip(*(rank[exchange]["bytes"] for rank in ranks))
        seconds = zip(*(rank[exchange]["seconds"] for rank in ranks))
        figures[exchange] = (statistics.median(max(r) for r in per_round), statistics.median(max(s) for s in seconds))
    base_bytes, base_seconds = figures["gather"]
    for exchange, (peak, duration) in figures.items():
        print(f"| {exchange} | {peak / 2**20:.0f} | {peak / base_bytes:.2f} | {duration:.3f} | "
              f"{duration / base_seconds:.2f} |")


if __name__ == "__main__":
    main()
