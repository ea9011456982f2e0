"""Zero-shot throughput: `clipmodule eval`'s pipeline against CLIP_benchmark's own, same model, data and device.

    .venv/bin/python bench/eval_throughput.py [--model tiny-vit] [--per-class 10] [--rounds 3] [--threads 2]
                                              [--batch-size 64] [--workers 2] [--device cpu] [--json FILE]
                                              [--max-templates N]

The data is an ImageNet-R copy in its distributed layout (200 WordNet-id folders of JPEGs; synthetic 500x375
photos, `--per-class` each), which both pipelines read from disk: CLIP_benchmark through its own
`build_dataset("imagenet-r")` (torchvision's ImageFolder, its class names and its 80 ImageNet templates) and
DataLoader, ours through `eval.suite.run_task` (the `imagenet-r` reader, `templates: clip_benchmark`, the same
80 templates and names). Both get the same model object (ours, random weights of `--model`, fp32), the same
preprocess, the same intra-op threads and the same device (`--device`, the CPU by default; `cuda` on a GPU,
where both image passes and both text passes run there); CLIP_benchmark's text side gets the model's tokenizer
at full context length (what open_clip's gives it). `--max-templates N` gives both pipelines only the first N
of those templates (a quick check: the class embeddings then cost N/80 of the full run). Each round runs both,
alternating which goes first; the table gives medians over rounds of the whole zero-shot evaluation (class
embeddings + image pass + metrics) in images per second, and of each phase.

Two settings: "same loader" (both with --batch-size and --workers) and "defaults" (ours: batch 256 and
workers by data size; CLIP_benchmark's CLI: batch 64, 4 workers, amp on, which on a CPU is bfloat16
autocast). CLIP_benchmark 1.6.2's `accuracy` fails under numpy 2 (`float()` of a 1-element array): the bench
replaces it with the same arithmetic taking `.item()`, the one-line fix, before running it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def write_imagenet_r(root: Path, per_class: int, seed: int = 0) -> Path:
    """200 wnid folders of `per_class` 500x375 JPEGs (smooth colour fields with noise: photo-like to decode)."""
    from clipmodule.eval.readers.imagenet import subset_wnids

    folder = root / "imagenet-r"
    rng = np.random.default_rng(seed)
    for index, wnid in enumerate(subset_wnids("imagenet_r")):
        (folder / wnid).mkdir(parents=True, exist_ok=True)
        for item in range(per_class):
            base = rng.integers(0, 255, size=(6, 8, 3), dtype=np.uint8)
            image = Image.fromarray(base).resize((500, 375), Image.BICUBIC)
            noisy = np.asarray(image, dtype=np.int16) + rng.integers(-20, 20, size=(375, 500, 3))
            Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(folder / wnid / f"{index}_{item}.jpg",
                                                                         quality=90)
    return folder


def fixed_accuracy(output, target, topk=(1,)):
    """CLIP_benchmark's `accuracy` with `.item()` for numpy 2 (see the module docstring)."""
    pred = output.topk(max(topk), 1, True, True)[1].t()
    correct = pred.eq(target.view(1, -1).expand_as(pred))
    return [correct[:k].reshape(-1).float().sum(0, keepdim=True).item() / len(target) for k in topk]


class Timed:
    """Wall seconds spent inside wrapped functions, by label."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.originals: list[tuple] = []

    def restore(self) -> None:
        for owner, name, original in self.originals:
            setattr(owner, name, original)

    def wrap(self, owner, name: str, label: str) -> None:
        original = getattr(owner, name)
        self.originals.append((owner, name, original))

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[label] = self.seconds.get(label, 0.0) + time.perf_counter() - start

        setattr(owner, name, timed)


def run_ours(model, preprocess, folder: Path, batch_size: int | None, workers: int | None, device: str,
             templates: Path | None) -> dict:
    from clipmodule.eval import suite
    from clipmodule.eval.options import LinearProbeOptions, LoaderOptions, TaskSpec
    from clipmodule.eval.tasks import zeroshot  # the zero-shot task kind: the names it calls are timed there

    timer = Timed()
    timer.wrap(zeroshot, "build_zeroshot_classifier", "text")
    timer.wrap(zeroshot, "image_features", "images")
    loader = LoaderOptions(device=device, num_workers=workers) if batch_size is None else \
        LoaderOptions(batch_size=batch_size, num_workers=workers, device=device)
    spec = TaskSpec("zeroshot", dataset="imagenet-r", root=str(folder),
                    templates=str(templates) if templates else "clip_benchmark")
    start = time.perf_counter()
    metrics = suite.run_task(model, preprocess, spec, loader, LinearProbeOptions())
    total = time.perf_counter() - start
    timer.restore()
    return {"total": total, **timer.seconds, "top1": metrics["top1"], "n": metrics["num_samples"]}


def run_clip_benchmark(model, preprocess, folder: Path, batch_size: int, workers: int, amp: bool,
                       device: str, templates: Path | None) -> dict:
    from clip_benchmark.datasets.builder import build_dataset
    from clip_benchmark.metrics import zeroshot_classification as zs

    from clipmodule.api import tokenizer_spec

    zs.accuracy = fixed_accuracy
    timer = Timed()
    timer.wrap(zs, "zero_shot_classifier", "text")
    timer.wrap(zs, "run_classification", "images")
    start = time.perf_counter()
    dataset = build_dataset("imagenet-r", root=str(folder), transform=preprocess, split="test", download=False)
    if templates:
        dataset.templates = json.loads(templates.read_text())
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)
    tokenizer = tokenizer_spec(model).build(truncate=True)
    metrics = zs.evaluate(model, loader, tokenizer, dataset.classes, dataset.templates, device, amp=amp)
    total = time.perf_counter() - start
    timer.restore()
    return {"total": total, **timer.seconds, "top1": metrics["acc1"], "n": len(dataset)}


def first_templates(folder: Path, count: int | None, path: Path) -> Path | None:
    """CLIP_benchmark's ImageNet-R templates cut to the first `count`, as a JSON list both pipelines read."""
    if not count:
        return None
    from clip_benchmark.datasets.builder import build_dataset

    templates = build_dataset("imagenet-r", root=str(folder), split="test", download=False).templates[:count]
    path.write_text(json.dumps(templates))
    return path


def median(runs: list[dict], key: str) -> float:
    return statistics.median(run[key] for run in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-vit")
    parser.add_argument("--per-class", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--settings", default="same,defaults")
    parser.add_argument("--device", default="cpu", help="where both pipelines run the model: cpu, cuda, cuda:1...")
    parser.add_argument("--json", help="also write the medians of each setting to this file")
    parser.add_argument("--max-templates", type=int, help="only the first N of CLIP_benchmark's templates")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from clipmodule.checkpoints.io import preprocess_of
    from clipmodule.models import create_model

    torch.manual_seed(0)
    model = create_model(args.model).eval().to(args.device)
    preprocess = preprocess_of(model).transform()  # what `clipmodule.load` hands out with the model
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_imagenet_r(Path(tmp), args.per_class)
        templates = first_templates(folder, args.max_templates, Path(tmp) / "templates.json")
        settings = {"same": ((args.batch_size, args.workers), (args.batch_size, args.workers, False)),
                    "defaults": ((None, None), (64, 4, True))}
        results = {}
        for setting in args.settings.split(","):
            ours_args, theirs_args = settings[setting]
            runs = {"ours": [], "theirs": []}
            for round_ in range(args.rounds):
                for who in ("ours", "theirs") if round_ % 2 == 0 else ("theirs", "ours"):
                    run = run_ours if who == "ours" else run_clip_benchmark
                    chosen = ours_args if who == "ours" else theirs_args
                    runs[who].append(run(model, preprocess, folder, *chosen, args.device, templates))
            report(setting, args, runs["ours"], runs["theirs"])
            results[setting] = summary(runs["ours"], runs["theirs"])
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "device": args.device, "rounds": args.rounds,
                                               "max_templates": args.max_templates, **results}, indent=2) + "\n")


def summary(ours: list[dict], theirs: list[dict]) -> dict:
    """Medians of one setting: images per second of the whole evaluation, phase seconds and top-1, per pipeline."""
    n = ours[0]["n"]
    return {name: {"images": n, "images_per_s": n / median(runs, "total"), "class_embeddings_s": median(runs, "text"),
                   "image_pass_s": median(runs, "images"), "top1": median(runs, "top1")}
            for name, runs in (("clipmodule eval", ours), ("CLIP_benchmark", theirs))}


def report(setting: str, args, ours: list[dict], theirs: list[dict]) -> None:
    n = ours[0]["n"]
    templates = f", first {args.max_templates} templates" if args.max_templates else ""
    print(f"\n{setting}: {args.model}, {n} images, {args.rounds} rounds, {args.threads} threads, {args.device}"
          f"{templates}, medians")
    print("| pipeline | images/s (whole eval) | class embeddings s | image pass s | top-1 |")
    print("|---|---|---|---|---|")
    for name, runs in (("clipmodule eval", ours), ("CLIP_benchmark", theirs)):
        print(f"| {name} | {n / median(runs, 'total'):.1f} | {median(runs, 'text'):.1f} | "
              f"{median(runs, 'images'):.1f} | {100 * median(runs, 'top1'):.2f} |")
    print(f"ratio (whole eval): {median(theirs, 'total') / median(ours, 'total'):.2f}x; "
          f"image pass: {median(theirs, 'images') / median(ours, 'images'):.2f}x; "
          f"class embeddings: {median(theirs, 'text') / median(ours, 'text'):.2f}x")


if __name__ == "__main__":
    main()
