"""The new evaluation tasks against CLIP_benchmark's own code, same model, data, loader settings and device:

    .venv/bin/python bench/selection_throughput.py [--model tiny-vit] [--items 600] [--rounds 3] [--threads 2]
                                                   [--batch-size 64] [--workers 2] [--device cpu] [--json FILE]

- SugarCrepe (`image_caption_selection`): a copy in its release layout (add_att.json + COCO-like val2017/ of
  500x375 JPEGs, one per entry of `--items`), read by CLIP_benchmark's `SugarCrepe` dataset and scored by its
  `metrics.image_caption_selection.evaluate`, against `eval.suite.run_task` on the same files. (Ours encodes an
  image named by several entries once; the copy names each once, so that saving is not in the ratio.)
- SugarCrepe's seven subsets as one suite (each subset's json names the same images, as the real subsets share
  COCO's val2017): `eval.suite.run_suite` (a shared image is encoded once per suite) against seven CLIP_benchmark
  runs.
- Winoground (two images and two captions an item): the same items for both (CLIP_benchmark's own reader needs
  the HF hub), each pipeline's loader and metric.
- Few-shot probe (k=16, 10 classes of 512-d features, the weight-decay sweep on a 20% validation share): its
  `metrics.linear_probe.evaluate` from its feature cache (its `.cuda()` calls made no-ops, inference on the CPU)
  against `tasks.fewshot.fewshot_from_features`.

CLIP_benchmark's text side gets the model's tokenizer at full context length (what open_clip's gives it) and
amp off (bfloat16 autocast on a CPU would change the scores). After an untimed warm-up, each round runs both,
alternating which goes first; the table gives the median seconds and the ratio (CLIP_benchmark's time over ours:
above 1, ours is faster), in wall time and in CPU time (this process and its loader workers: on a shared machine
the steadier of the two). The metrics of both must agree, or the bench stops.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `tests` holds the release-layout writers

from tests.clipmodule.eval.readers.selection_copies import write_winoground  # noqa: E402

SUBSETS = ("add_att", "add_obj", "replace_att", "replace_obj", "replace_rel", "swap_att", "swap_obj")


def write_sugar_crepe(root: Path, items: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    images = root / "val2017"
    images.mkdir(parents=True, exist_ok=True)
    names = [f"{139 + index:012d}.jpg" for index in range(items)]  # one image per entry: no reuse to exploit
    for name in names:
        base = Image.fromarray(rng.integers(0, 255, size=(6, 8, 3), dtype=np.uint8)).resize((500, 375))
        base.save(images / name, quality=90)
    entries = {str(index): {"filename": names[index % len(names)], "caption": f"a photo of thing number {index}",
                            "negative_caption": f"a photo of thing number {index + 1} in red"}
               for index in range(items)}
    for subset in SUBSETS:  # every subset names the same val2017 images, as SugarCrepe's subsets share COCO's
        (root / f"{subset}.json").write_text(json.dumps(entries))
    return root


def _cpu() -> float:
    """CPU seconds of this process and its reaped children (the loader workers): what a busy machine's other
    users do not add to, unlike wall time."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(run) -> tuple[float, float, dict]:
    start, cpu = time.perf_counter(), _cpu()
    metrics = run()
    return time.perf_counter() - start, _cpu() - cpu, metrics


def selection_pair(model, preprocess, root: Path, dataset: str, args) -> tuple:
    from clip_benchmark.datasets.builder import image_captions_collate_fn
    from clip_benchmark.datasets.sugar_crepe import SugarCrepe
    from clip_benchmark.metrics.image_caption_selection import evaluate

    from clipmodule.api import tokenizer_spec
    from clipmodule.eval.options import LinearProbeOptions, LoaderOptions, TaskSpec
    from clipmodule.eval.suite import open_data, run_task

    spec = TaskSpec("image_caption_selection", dataset=dataset, root=str(root))
    loader = LoaderOptions(batch_size=args.batch_size, num_workers=args.workers, device=args.device)

    def ours():
        return run_task(model, preprocess, spec, loader, LinearProbeOptions())

    def theirs():
        if dataset == "winoground":
            items = open_data(spec, preprocess)[0]
        else:
            items = SugarCrepe(str(root / "val2017"), str(root / "add_att.json"), preprocess)
        batches = torch.utils.data.DataLoader(items, batch_size=args.batch_size, num_workers=args.workers,
                                              collate_fn=image_captions_collate_fn)
        return evaluate(model, batches, tokenizer_spec(model).build(truncate=True), args.device, amp=False)

    return ours, theirs, ("acc", "text_acc", "image_acc")


def suite_pair(model, preprocess, root: Path, args) -> tuple:
    """All seven SugarCrepe subsets: one `run_suite` against seven CLIP_benchmark runs."""
    from clip_benchmark.datasets.builder import image_captions_collate_fn
    from clip_benchmark.datasets.sugar_crepe import SugarCrepe
    from clip_benchmark.metrics.image_caption_selection import evaluate

    from clipmodule.api import tokenizer_spec
    from clipmodule.eval.options import LoaderOptions, SuiteConfig, TaskSpec
    from clipmodule.eval.suite import run_suite

    rows = [TaskSpec("image_caption_selection", dataset=f"sugar_crepe/{subset}", root=str(root), name=subset)
            for subset in SUBSETS]
    config = SuiteConfig(tasks=rows, loader=LoaderOptions(batch_size=args.batch_size, num_workers=args.workers,
                                                          device=args.device))

    def ours():
        run = run_suite(model, preprocess, config, store=None, say=lambda line: None)
        return {row["name"]: row["metrics"]["acc"] for row in run.rows}

    def theirs():
        out = {}
        for subset in SUBSETS:
            items = SugarCrepe(str(root / "val2017"), str(root / f"{subset}.json"), preprocess)
            batches = torch.utils.data.DataLoader(items, batch_size=args.batch_size, num_workers=args.workers,
                                                  collate_fn=image_captions_collate_fn)
            out[subset] = evaluate(model, batches, tokenizer_spec(model).build(truncate=True), args.device,
                                   amp=False)["acc"]
        return out

    return ours, theirs, SUBSETS


def fewshot_pair(root: Path, args) -> tuple:
    from clip_benchmark.metrics import linear_probe as lp

    from clipmodule.eval.options import LinearProbeOptions
    from clipmodule.eval.tasks.fewshot import fewshot_from_features

    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(10, 512, generator=generator)

    def features(count: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.arange(10).repeat_interleave(count)
        noisy = centres[labels] + 2.0 * torch.randn(len(labels), 512, generator=generator)
        return torch.nn.functional.normalize(noisy, dim=-1), labels

    train, test = features(60), features(50)
    order = torch.randperm(len(train[1]), generator=torch.Generator().manual_seed(0))
    cut = len(order) - round(0.2 * len(order))
    folder = root / "features" / "m"
    folder.mkdir(parents=True, exist_ok=True)
    splits = {"train": (train[0][order[:cut]], train[1][order[:cut]]), "val": (train[0][order[cut:]],
              train[1][order[cut:]]), "test": test}
    for split, (x, y) in splits.items():
        torch.save(x, folder / f"features_{split}.pt")
        torch.save(y, folder / f"targets_{split}.pt")
    torch.nn.Module.cuda = lambda self, *a, **k: self  # this process only runs the bench
    torch.Tensor.cuda = lambda self, *a, **k: self
    infer = lp.infer
    lp.infer = lambda model, loader, amp, device: infer(model, loader, amp, "cpu")
    lp.accuracy = lambda output, target, topk=(1,): [
        output.topk(max(topk), 1)[1].t()[:k].eq(target.view(1, -1)).float().sum().item() / len(target) for k in topk]

    def ours():
        return fewshot_from_features(train, test, 10, 16, LinearProbeOptions(fewshot_val_fraction=0.2))

    def theirs():
        torch.manual_seed(0)
        result = lp.evaluate(None, None, None, 16, 64, 0, 0.1, 10, "m", 0, str(root / "features"), "cuda",
                             val_dataloader=object(), amp=False)
        return {"top1": result["lp_acc1"], "weight_decay": result["weight_decay"]}

    return ours, theirs, ("top1", "weight_decay")


def compare(name: str, pair: tuple, rounds: int) -> dict:
    ours, theirs, keys = pair
    ours(), theirs()  # warm-up, untimed: lazy imports, tokenizer files, the OS file cache
    times: dict[str, list[float]] = {"ours": [], "clip_benchmark": [], "ours_cpu": [], "clip_benchmark_cpu": []}
    for round_ in range(rounds):
        for label, run in (("ours", ours), ("clip_benchmark", theirs))[:: 1 if round_ % 2 == 0 else -1]:
            with contextlib.redirect_stdout(io.StringIO()):  # CLIP_benchmark prints every few batches
                seconds, cpu, metrics = timed(run)
            times[label].append(seconds)
            times[f"{label}_cpu"].append(cpu)
            if label == "ours":
                mine = metrics
            else:
                reference = metrics
        for key in keys:
            if abs(float(mine[key]) - float(reference[key])) > 1e-5 * max(1.0, abs(float(reference[key]))):
                raise SystemExit(f"{name}: {key} differs: ours {mine[key]}, CLIP_benchmark {reference[key]}")
    result = {label: statistics.median(values) for label, values in times.items()}
    result["ratio"] = result["clip_benchmark"] / result["ours"]
    result["cpu_ratio"] = result["clip_benchmark_cpu"] / result["ours_cpu"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-vit")
    parser.add_argument("--items", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", help="also write the medians to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from clipmodule.models import create_model
    from clipmodule.transforms import image_transform

    torch.manual_seed(0)
    model = create_model(args.model).eval().to(args.device)
    preprocess = image_transform(model.config.vision.image_size)
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        write_sugar_crepe(root / "sugar_crepe", args.items)
        write_winoground(root / "winoground", examples=max(2, args.items // 4))
        results["sugar_crepe/add_att"] = compare("sugar_crepe", selection_pair(
            model, preprocess, root / "sugar_crepe", "sugar_crepe/add_att", args), args.rounds)
        results["sugar_crepe, 7 subsets (suite)"] = compare("sugar_crepe suite", suite_pair(
            model, preprocess, root / "sugar_crepe", args), args.rounds)
        results["winoground"] = compare("winoground", selection_pair(
            model, preprocess, root / "winoground", "winoground", args), args.rounds)
        results["fewshot k=16 (sweep)"] = compare("fewshot", fewshot_pair(root, args), args.rounds)
    print(f"\n{args.model}, {args.items} SugarCrepe items, {args.rounds} rounds, {args.threads} threads, "
          f"batch {args.batch_size}, {args.workers} workers, {args.device}")
    print("| task | clipmodule wall (s) | CLIP_benchmark wall (s) | ratio | clipmodule CPU (s) "
          "| CLIP_benchmark CPU (s) | CPU ratio |\n|---|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['ours']:.2f} | {r['clip_benchmark']:.2f} | {r['ratio']:.2f}x | {r['ours_cpu']:.2f} | "
              f"{r['clip_benchmark_cpu']:.2f} | {r['cpu_ratio']:.2f}x |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
