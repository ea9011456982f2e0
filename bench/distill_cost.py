"""What distillation adds to a training step: the teacher's forward pass, and nothing else.

    .venv/bin/python bench/distill_cost.py [--student tiny-vit] [--teacher small-vit] [--batch-size 32]
                                           [--steps 12] [--rounds 3] [--device cpu|cuda]

Three timings on the same in-memory batches (random pixels, random captions), taking turns batch by batch so
that load from other processes meets them alike:
  plain      the student's step: forward, CLIP loss, backward, AdamW step
  distilled  the same step with `model.distill`: the teacher's features (no gradients, eval mode) and
             `distill_clip_loss` (contrastive + distillation terms) instead of the CLIP loss
  teacher    the teacher's forward pass alone (`Teacher.encode`'s work)
The figure of merit is (distilled - plain) / teacher: 1.0 means distillation costs the teacher's forward pass
and nothing more (the extra loss term is an N x N softmax). Medians over all steps after the first of each round;
on the CPU in process CPU time with one thread (robust to a shared machine's load), on a GPU wall-clock time.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from clipmodule.loss import clip_loss
from clipmodule.models import create_model
from clipmodule.train.distill import distill_clip_loss
from clipmodule.train.optim import OptimConfig, build_optimizer


def batches(model, batch_size: int, count: int, device: str) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    size, length = model.config.vision.image_size, model.config.text.context_length
    out = []
    for _ in range(count):
        tokens = torch.randint(1, 49000, (batch_size, length), generator=generator)
        tokens[:, length // 2] = 49407
        tokens[:, length // 2 + 1:] = 0
        out.append({"image": torch.randn(batch_size, 3, size, size, generator=generator).to(device),
                    "text": tokens.to(device)})
    return out


def timed(function, device: str) -> float:
    """Wall-clock seconds on a GPU; on the CPU this process's CPU seconds (one thread), which the load of other
    processes on a shared machine leaves alone."""
    clock = time.perf_counter if device == "cuda" else time.process_time
    if device == "cuda":
        torch.cuda.synchronize()
    start = clock()
    function()
    if device == "cuda":
        torch.cuda.synchronize()
    return clock() - start


def run(args: argparse.Namespace) -> dict[str, float]:
    torch.manual_seed(0)
    student = create_model(args.student).to(args.device)
    teacher = create_model(args.teacher).to(args.device).eval().requires_grad_(False)
    optimizer, _ = build_optimizer(student, OptimConfig(warmup_steps=1), args.steps * args.rounds)
    data = batches(student, args.batch_size, args.steps, args.device)

    def features(batch):
        return student.encode_image(batch["image"], normalize=True), student.encode_text(batch["text"], normalize=True)

    @torch.no_grad()
    def teacher_features(batch):
        images = torch.nn.functional.interpolate(batch["image"], size=teacher.config.vision.image_size,
                                                 mode="bicubic")
        return teacher.encode_image(images, normalize=True), teacher.encode_text(batch["text"], normalize=True)

    def step(loss):
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def plain(batch):
        step(clip_loss(*features(batch), student.logit_scale.exp()))

    def distilled(batch):
        targets = teacher_features(batch)
        contrastive, distill = distill_clip_loss(*features(batch), student.logit_scale.exp(), *targets,
                                                 teacher.logit_scale.exp())
        step(contrastive + distill)

    times: dict[str, list[float]] = {"plain": [], "distilled": [], "teacher": []}
    for _ in range(args.rounds):
        for index, batch in enumerate(data):
            for name, function in (("plain", plain), ("distilled", distilled), ("teacher", teacher_features)):
                elapsed = timed(lambda: function(batch), args.device)  # noqa: B023 (called at once)
                if index:
                    times[name].append(elapsed)
    result = {name: statistics.median(values) * 1000 for name, values in times.items()}
    result["ratio"] = (result["distilled"] - result["plain"]) / result["teacher"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--student", default="tiny-vit")
    parser.add_argument("--teacher", default="small-vit")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(1)  # CPU time then measures the work, not the waits of a second thread
    result = run(args)
    print(f"{args.student} student, {args.teacher} teacher, batch {args.batch_size}, {args.device}: "
          f"plain step {result['plain']:.1f} ms, distilled step {result['distilled']:.1f} ms, teacher forward "
          f"{result['teacher']:.1f} ms; (distilled - plain) / teacher = {result['ratio']:.2f}")


if __name__ == "__main__":
    main()
