"""Peak memory and time of one training step: the whole batch at once against model.accum_freq micro-batches.

    .venv/bin/python bench/accumulation.py [--model small-vit] [--batch-size 128] [--accum 4] [--steps 3]
                                           [--rounds 5] [--loss clip|siglip]

Both contenders run the same step on the same in-memory batch (random pixels, random captions) with the same
model, loss and AdamW (`clipmodule.train.optim.build_optimizer`):
  whole batch    encode, loss, backward, step: what accum_freq 1 runs
  accumulated    `clipmodule.train.accumulate.accumulate_gradients` (a caching pass without gradients, then
                 each micro-batch encoded again with gradients and the whole batch's loss backpropagated),
                 then the step: what accum_freq k runs inside Lightning's manual optimisation
Lightning itself is left out (the same for both; bench/train_step.py measures its share).

Memory is the peak of the bytes torch's CPU allocator holds during one step above what it held before it
(model, AdamW state and batch already allocated), read from torch.profiler's allocation records (every
allocation and free, in order, attributed to the op that made it): the activations, feature caches and
gradients of the step, not the process's RSS (which also counts the allocator's cached pages and Python).
Time is the median wall-clock step time. Each round measures both contenders (alternating which goes first,
so load from other processes meets both alike); figures are medians over rounds, the time ratio the median
of the rounds' ratios.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable

import torch
from memory import peak_allocated_bytes  # bench/memory.py: the script's folder is on sys.path

from clipmodule.models import create_model
from clipmodule.train.accumulate import accumulate_gradients, split_batch
from clipmodule.train.module import ClipLitModule
from clipmodule.train.optim import OptimConfig, build_optimizer


def make_batch(config, batch_size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    size, length = config.vision.image_size, config.text.context_length
    tokens = torch.randint(1, 49000, (batch_size, length), generator=generator)
    ends = torch.randint(5, length, (batch_size,), generator=generator)
    tokens[torch.arange(batch_size), ends] = 49407  # end-of-text: the highest id, where the features are taken
    tokens[torch.arange(length)[None, :] > ends[:, None]] = 0
    return {"image": torch.randn(batch_size, 3, size, size, generator=generator), "text": tokens}


def contenders(model_name: str, loss: str, accum: int) -> dict[str, Callable[[dict], None]]:
    """name -> one training step over a batch; each contender has its own model, built from the same seed."""
    steps = {}
    for name, parts in (("whole batch", 1), (f"accumulated k={accum}", accum)):
        torch.manual_seed(0)
        siglip = loss == "siglip"
        network = create_model(model_name, init_logit_bias=-10.0 if siglip else None,
                               **({"init_logit_scale": math.log(10)} if siglip else {}))
        module = ClipLitModule(network, loss=loss)
        optimizer, _ = build_optimizer(network, OptimConfig(warmup_steps=1), total_steps=100)
        steps[name] = _step_function(module, optimizer, parts)
    return steps


def _step_function(module: ClipLitModule, optimizer: torch.optim.Optimizer, parts: int):
    def step(batch: dict) -> None:
        if parts == 1:
            module.contrastive_loss(batch["image"], batch["text"]).backward()
        else:
            accumulate_gradients(module.model, split_batch(batch, parts), module.encode_pair,
                                 module.loss_of_features, lambda loss, index: loss.backward(), torch.device("cpu"))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="small-vit")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--accum", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per contender and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--loss", choices=("clip", "siglip"), default="clip")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    steps = contenders(args.model, args.loss, args.accum)
    batch = make_batch(create_model(args.model).config, args.batch_size)
    for step in steps.values():
        step(batch)  # AdamW's state exists before anything is measured
    memory: dict[str, list[int]] = {name: [] for name in steps}
    times: dict[str, list[float]] = {name: [] for name in steps}
    names = list(steps)
    for round_index in range(args.rounds):
        for name in names if round_index % 2 == 0 else names[::-1]:
            memory[name].append(peak_allocated_bytes(lambda name=name: steps[name](batch)))
            durations = []
            for _ in range(args.steps):
                start = time.perf_counter()
                steps[name](batch)
                durations.append(time.perf_counter() - start)
            times[name].append(statistics.median(durations))
        print(f"round {round_index + 1}/{args.rounds}: " + ", ".join(
            f"{name} {memory[name][-1] / 2**20:.0f} MiB {times[name][-1]:.2f} s" for name in names), flush=True)
    print(f"\n{args.model}, {args.loss} loss, batch {args.batch_size}, {args.rounds} rounds x {args.steps} steps, "
          f"{args.threads} thread(s)\n")
    print("| step | peak step memory (MiB) | × whole | step time (s) | × whole (median of the rounds' ratios) |")
    print("|---|---|---|---|---|")
    base_memory, base_times = statistics.median(memory[names[0]]), times[names[0]]
    for name in names:
        peak, seconds = statistics.median(memory[name]), statistics.median(times[name])
        ratio = statistics.median(mine / base for mine, base in zip(times[name], base_times))
        print(f"| {name} | {peak / 2**20:.0f} | {peak / base_memory:.2f} | {seconds:.2f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
