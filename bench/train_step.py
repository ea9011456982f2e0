"""Training-step throughput (samples/s): our model + loss against open_clip's, and Lightning against our loop.

    .venv/bin/python bench/train_step.py [--model small-vit] [--batch-size 64] [--steps 20] [--rounds 3]
                                         [--device cpu|cuda] [--precision 32|bf16]

Three contenders run the same step on the same in-memory batches (random pixels, random captions):
  open_clip      open_clip.CLIP of the same architecture + open_clip.loss.ClipLoss, a plain loop
  ours (plain)   clipmodule's CLIP + clipmodule.loss.clip_loss, the same plain loop
  ours (Lightning)  ClipLitModule under lightning.Trainer: what `clipmodule fit` runs
Every step is forward, loss, backward, AdamW step (`clipmodule.train.optim.build_optimizer` for all three:
weight-decay groups, fused update, warmup-cosine schedule) and the logit-scale clamp. open_clip and our
plain loop take turns batch by batch, so load from other processes meets both alike; figures are the batch
size over the median step time of all rounds (steps after `--warmup`), on the wall clock and in this
process's CPU time. Lightning cannot be interleaved per step: each round runs our plain loop and Lightning
on fresh models (in alternating order), and the overhead is the median over rounds of their median
step-time ratio. Lightning's steps are timed between the starts of consecutive batches, so its start-up
(once per run) is left out and its per-step hooks, logging and optimiser plumbing are counted.
"""

from __future__ import annotations

import argparse
import gc
import math
import statistics
import time

import lightning as L
import open_clip
import torch
from lightning.pytorch.callbacks import Callback
from open_clip.loss import ClipLoss
from open_clip.model import CLIPTextCfg, CLIPVisionCfg

from clipmodule.loss import clip_loss
from clipmodule.models import create_model
from clipmodule.train.module import MAX_LOG_SCALE, ClipLitModule
from clipmodule.train.optim import OptimConfig, build_optimizer


def make_batches(config, batch_size: int, count: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    size, length = config.vision.image_size, config.text.context_length
    batches = []
    for _ in range(count):
        tokens = torch.randint(1, 49000, (batch_size, length), generator=generator)
        ends = torch.randint(5, length, (batch_size,), generator=generator)
        tokens[torch.arange(batch_size), ends] = 49407  # end-of-text: highest id, where features are taken
        tokens[torch.arange(length)[None, :] > ends[:, None]] = 0
        batches.append({"image": torch.randn(batch_size, 3, size, size, generator=generator), "text": tokens})
    return batches


def open_clip_twin(config) -> torch.nn.Module:
    """open_clip's CLIP with our config's architecture (ViT configs only)."""
    vision, text = config.vision, config.text
    return open_clip.CLIP(
        config.embed_dim,
        CLIPVisionCfg(layers=vision.layers, width=vision.width, head_width=vision.head_width,
                      mlp_ratio=vision.mlp_ratio,
                      patch_size=vision.patch_size, image_size=vision.image_size),
        CLIPTextCfg(context_length=text.context_length, vocab_size=text.vocab_size, width=text.width,
                    heads=text.width // text.head_width, layers=text.layers, mlp_ratio=text.mlp_ratio),
        quick_gelu=config.quick_gelu,
    )


def make_optimizer(model: torch.nn.Module, steps: int):
    """The optimiser `clipmodule fit` builds (fused AdamW where possible), for every contender alike."""
    return build_optimizer(model, OptimConfig(warmup_steps=2), steps)


def now() -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds): CPU time counts little of other processes' load."""
    return time.perf_counter(), time.process_time()


def timed_loop(step, batches, warmup: int, device: str) -> list[tuple[float, float]]:
    """(wall, CPU) seconds per step of `step(batch)` (start to start), the first `warmup` not counted."""
    stamps = []
    for number, batch in enumerate(batches):
        if number >= warmup:
            sync(device)
            stamps.append(now())
        step(batch)
    sync(device)
    stamps.append(now())
    return intervals(stamps)


def alternating(steps: dict, batches, warmup: int, device: str) -> dict[str, list[tuple[float, float]]]:
    """(wall, CPU) seconds per step of several step functions taking turns batch by batch: whatever load
    other processes put on the machine, each contender meets it alike."""
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in steps}
    for number, batch in enumerate(batches):
        for name, step in steps.items():
            sync(device)
            start = now()
            step(batch)
            sync(device)
            if number >= warmup:
                times[name].append(intervals([start, now()])[0])
    return times


def intervals(stamps: list[tuple[float, float]]) -> list[tuple[float, float]]:
    return [(b[0] - a[0], b[1] - a[1]) for a, b in zip(stamps, stamps[1:])]


def median_rate(batch_size: int, steps: list[tuple[float, float]], which: int) -> float:
    """Samples/s from the median step time; which = 0: wall clock, 1: CPU time."""
    return batch_size / statistics.median(step[which] for step in steps)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def autocast(device: str, precision: str):
    return torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16")


def open_clip_step(config, batches, args):
    model = open_clip_twin(config).to(args.device)
    optimizer, schedule = make_optimizer(model, len(batches))
    loss_fn = ClipLoss()

    def step(batch):
        with autocast(args.device, args.precision):
            image_features, text_features, scale = model(batch["image"], batch["text"])
            loss = loss_fn(image_features, text_features, scale)
        loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))

    return step


def ours_step(config, batches, args):
    model = create_model(args.model).to(args.device)
    optimizer, schedule = make_optimizer(model, len(batches))

    def step(batch):
        with autocast(args.device, args.precision):
            image_features = model.encode_image(batch["image"], normalize=True)
            text_features = model.encode_text(batch["text"], normalize=True)
            loss = clip_loss(image_features, text_features, model.logit_scale.exp())
        loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            model.logit_scale.clamp_(max=MAX_LOG_SCALE)

    return step


class StepClock(Callback):
    """The start time of every batch from `warmup` on, and the end of training: the intervals hold all of
    Lightning's per-step work (hooks, logging, optimiser closure, data fetching)."""

    def __init__(self, warmup: int, device: str):
        self.warmup, self.device, self.stamps = warmup, device, []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if batch_idx >= self.warmup:
            sync(self.device)
            self.stamps.append(now())

    def on_train_end(self, trainer, module):
        sync(self.device)
        self.stamps.append(now())


def lightning_steps(config, batches, args) -> list[float]:
    module = ClipLitModule(create_model(args.model), optim=OptimConfig(warmup_steps=2))
    clock = StepClock(args.warmup, args.device)
    trainer = L.Trainer(accelerator=args.device, devices=1, max_steps=len(batches), logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        precision="bf16-mixed" if args.precision == "bf16" else "32-true", callbacks=[clock],
                        num_sanity_val_steps=0, limit_val_batches=0)
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(batches, batch_size=None))
    return intervals(clock.stamps)


def to_device(batches, device: str):
    return [{k: v.to(device) for k, v in b.items()} for b in batches]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="small-vit")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20, help="measured steps per contender and round")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--precision", default="32", choices=["32", "bf16"])
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    config = create_model(args.model).config
    batches = make_batches(config, args.batch_size, args.steps + args.warmup)
    report(*run_rounds(config, batches, args), args)


def run_rounds(config, batches, args):
    """Per-step (wall, CPU) times of every contender over all rounds, and Lightning's overhead per round."""
    on_device = to_device(batches, args.device)
    times: dict[str, list[tuple[float, float]]] = {
        "open_clip": [], "ours (plain loop)": [], "ours (plain, run alone)": [], "ours (Lightning)": []}
    overhead: list[tuple[float, float]] = []
    for round_number in range(args.rounds):
        torch.manual_seed(round_number)
        pair = {"open_clip": open_clip_step(config, batches, args),
                "ours (plain loop)": ours_step(config, batches, args)}
        for name, values in alternating(pair, on_device, args.warmup, args.device).items():
            times[name] += values
        del pair
        gc.collect()
        # Which of the two runs first alternates between rounds: the first run after a change of model
        # pays for the allocator growing, and that must not land on one side only.
        if round_number % 2 == 0:
            plain = timed_loop(ours_step(config, batches, args), on_device, args.warmup, args.device)
            gc.collect()
            lightning = lightning_steps(config, batches, args)
        else:
            lightning = lightning_steps(config, batches, args)
            gc.collect()
            plain = timed_loop(ours_step(config, batches, args), on_device, args.warmup, args.device)
        gc.collect()
        times["ours (plain, run alone)"] += plain
        times["ours (Lightning)"] += lightning
        overhead.append(tuple(median_rate(1, plain, i) / median_rate(1, lightning, i) - 1 for i in (0, 1)))
        print(f"round {round_number + 1}: " + ", ".join(
            f"{name} {median_rate(args.batch_size, steps[-args.steps:], 0):.1f}" for name, steps in times.items())
            + " samples/s (wall)", flush=True)
    return times, overhead


def report(times, overhead, args) -> None:
    print(f"\n{args.model}, batch {args.batch_size}, {args.steps} steps x {args.rounds} rounds, {args.device}, "
          f"precision {args.precision}, {torch.get_num_threads()} threads")
    print("| contender | samples/s (wall, median step) | samples/CPU-s (median step) |\n|---|---|---|")
    rates = {name: [median_rate(args.batch_size, steps, i) for i in (0, 1)] for name, steps in times.items()}
    for name, (wall, cpu) in rates.items():
        print(f"| {name} | {wall:.1f} | {cpu:.1f} |")
    for label, name in (("ours (plain) / open_clip, steps taking turns", "ours (plain loop)"),
                        ("ours (Lightning) / open_clip", "ours (Lightning)")):
        wall, cpu = (rates[name][i] / rates["open_clip"][i] for i in (0, 1))
        print(f"{label}: {wall:.3f}x wall, {cpu:.3f}x CPU")
    for i, clock in enumerate(("wall", "CPU")):
        per_round = [o[i] for o in overhead]
        print(f"Lightning overhead vs our plain loop ({clock}, median of rounds): "
              f"{100 * statistics.median(per_round):.1f}% (rounds: {', '.join(f'{100 * o:.1f}%' for o in per_round)})")


if __name__ == "__main__":
    main()
