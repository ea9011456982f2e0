"""The Python side of `bench/gpu_check.sh` (see that script for what it runs and why):

    python bench/gpu_check.py shards DIR --shards N --per-shard M --size PX [--jobs J]
    python bench/gpu_check.py open-clip-config --model NAME --out FILE
    python bench/gpu_check.py flops --model NAME --out FILE
    python bench/gpu_check.py report OUT --peak-tflops P --window W --tolerance T

`report` gathers what the steps left in OUT into `OUT/results.json` and `OUT/results.md` and exits 1 when a
check failed (a trainer's figure missing, losses that differ by more than the tolerance, CUDA tests that did not
pass where a GPU was used).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import platform
import re
import shutil
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEER_PREFIX = "gpu-check-"
"""open_clip learns our architecture under this prefix and our model name (`open-clip-config`)."""


def _one_shard(directory: str, index: int, per_shard: int, size: int) -> None:
    from clipmodule.data.synthetic import write_synthetic_shards

    with tempfile.TemporaryDirectory(dir=directory) as scratch:
        write_synthetic_shards(scratch, 1, per_shard, image_size=size, first_sample=index * per_shard)
        for name, renamed in (("00000.tar", f"{index:05d}.tar"), ("00000_stats.json", f"{index:05d}_stats.json")):
            shutil.move(Path(scratch) / name, Path(directory) / renamed)


def write_shards(directory: Path, shards: int, per_shard: int, size: int, jobs: int) -> None:
    """`clipmodule.data.synthetic`'s shards (img2dataset's layout), one process per shard. Every shard's samples
    are others (first_sample), but each shard numbers its keys from 0 as the writer does for a first shard."""
    directory.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(max(1, jobs)) as pool:
        list(pool.map(_one_shard, [str(directory)] * shards, range(shards), [per_shard] * shards, [size] * shards))


def open_clip_config(model: str, out: Path) -> None:
    """Our named architecture as an open_clip model-config JSON (registered by bench/open_clip_peer.py)."""
    sys.path.insert(0, str(ROOT / "bench"))
    from fit_throughput import write_open_clip_config

    from clipmodule.models import get_model_config

    write_open_clip_config(get_model_config(model), out)


def training_flops(model_name: str) -> dict:
    """FLOPs (a multiply-add is 2) of one training sample of `model_name`: forward and backward of both towers on
    one image and one caption filling the whole context, counted by `torch.utils.flop_counter` on open_clip's
    build of the same architecture (the nominal model: every token through every layer, where ours cuts the
    padding and runs the text tower's last layer at the pooled token only) with attention on the math path (so
    its products are counted as matrix products). ViT-B-32: 14.8 GFLOP forward, open_clip's 7.4 GMACs. The
    contrastive loss's [B, B] product is left out (under 0.1% at B = 256)."""
    import open_clip
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    with tempfile.TemporaryDirectory() as scratch:
        config = Path(scratch) / f"{PEER_PREFIX}{model_name}.json"
        open_clip_config(model_name, config)
        open_clip.add_model_config(config)
    model = open_clip.create_model(f"{PEER_PREFIX}{model_name}")
    size, context = model.visual.image_size[0], model.context_length
    image = torch.randn(1, 3, size, size)
    text = torch.randint(1, model.vocab_size - 1, (1, context))
    with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH):
        (model.encode_image(image).sum() + model.encode_text(text).sum()).backward()
    return {"model": model_name, "image_size": size, "context_length": context,
            "train_flops_per_sample": counter.get_total_flops()}


def fit_losses(folder: Path) -> list[float]:
    """`train/loss` per step from a CSVLogger's metrics.csv under `folder`, in step order."""
    found = sorted(folder.rglob("metrics.csv"))
    if not found:
        return []
    losses = {}
    with open(found[-1], newline="") as handle:
        for row in csv.DictReader(handle):
            if row.get("train/loss"):
                losses[int(row["step"])] = float(row["train/loss"])
    return [losses[step] for step in sorted(losses)]


def open_clip_rate(log: Path, batch_size: int) -> float | None:
    """Samples per second over open_clip's last logged interval: `Batch (t)` is its mean step time (data
    waits included) since the previous log line, which the script places `window` steps before the end."""
    if not log.is_file():
        return None
    found = re.findall(r"Batch \(t\): (\d+\.\d+)", log.read_text())
    return batch_size / float(found[-1]) if found else None


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def loss_check(reference: list[float], other: list[float], steps: int, tolerance: float) -> dict:
    """The first `steps` losses of two runs (same data, same start), and their largest relative difference."""
    pairs = list(zip(reference[:steps], other[:steps]))
    worst = max((abs(a - b) / abs(a) for a, b in pairs), default=math.inf)
    return {"steps": len(pairs), "max_relative_difference": worst, "tolerance": tolerance,
            "ok": len(pairs) == steps and worst <= tolerance,
            "reference": reference[:steps], "other": other[:steps]}


def pytest_counts(log: Path) -> dict:
    text = log.read_text() if log.is_file() else ""
    counts = {word: int(number) for number, word in re.findall(r"(\d+) (passed|failed|skipped|errors?)", text)}
    return {"passed": counts.get("passed", 0), "failed": counts.get("failed", 0) + counts.get("error", 0)
            + counts.get("errors", 0), "skipped": counts.get("skipped", 0)}


def build_results(out: Path, args) -> dict:
    settings = read_json(out / "settings.json") or {}
    flops = (read_json(out / "flops.json") or {}).get("train_flops_per_sample")
    batch, window, steps = settings.get("batch_size", 0), args.window, args.loss_steps
    peak = args.peak_tflops * 1e12 if args.peak_tflops else None

    def throughput(rate: float | None) -> dict:
        mfu = rate * flops / peak if rate and flops and peak else None
        return {"samples_per_s": rate, "mfu": mfu}

    ours = read_json(out / "fit_bf16_timer.json") or {}
    compiled = read_json(out / "fit_compile_timer.json") or {}
    fit = {"clipmodule fit": throughput(ours.get("samples_per_s")),
           "open_clip_train": throughput(open_clip_rate(out / "open_clip" / "peer" / "out.log", batch)),
           "clipmodule fit, model.compile": throughput(compiled.get("samples_per_s"))}
    bf16 = fit_losses(out / "fit_bf16")
    cuda = pytest_counts(out / "cuda_tests.log")
    on_gpu = settings.get("accelerator") == "gpu"
    results = {
        "settings": settings, "window_steps": window, "train_flops_per_sample": flops,
        "peak_tflops": args.peak_tflops, "fit": fit,
        "bf16_vs_fp32": loss_check(fit_losses(out / "fit_fp32"), bf16, steps, args.tolerance),
        "compile_vs_eager": loss_check(bf16, fit_losses(out / "fit_compile"), steps, args.tolerance),
        "eval": read_json(out / "eval.json"),
        "cuda_tests": {**cuda, "ok": cuda["failed"] == 0 and (cuda["passed"] > 0 or not on_gpu)},
    }
    results["checks"] = {
        "fit throughput measured": all(row["samples_per_s"] for row in fit.values()),
        "bf16 loss close to fp32": results["bf16_vs_fp32"]["ok"],
        "compiled fit runs and matches": results["compile_vs_eager"]["ok"],
        "eval throughput measured": results["eval"] is not None,
        "CUDA tests": results["cuda_tests"]["ok"],
    }
    return results


def _figure(value: float | None, scale: float = 1.0, digits: int = 1) -> str:
    return "-" if value is None else f"{value * scale:.{digits}f}"


def markdown(results: dict) -> str:
    settings = results["settings"]
    lines = [f"# gpu_check: {settings.get('mode')} on {settings.get('device_name', '?')}", "",
             f"{settings.get('model')} at {settings.get('image_size')} px, batch {settings.get('batch_size')}, "
             f"{settings.get('steps')} steps ({results['window_steps']} timed at the end), "
             f"{settings.get('workers')} loader workers, {settings.get('precision')}; "
             f"{_figure(results['train_flops_per_sample'], 1e-9)} GFLOP per training sample; "
             f"peak {results['peak_tflops'] or '-'} TFLOP/s", "",
             "| trainer | samples/s | MFU % |", "|---|---|---|"]
    lines += [f"| {name} | {_figure(row['samples_per_s'])} | {_figure(row['mfu'], 100, 2)} |"
              for name, row in results["fit"].items()]
    for key, title in (("bf16_vs_fp32", "bf16 against fp32"), ("compile_vs_eager", "compiled against eager")):
        check = results[key]
        lines += ["", f"{title}: largest relative loss difference over the first {check['steps']} steps "
                      f"{_figure(check['max_relative_difference'], 1, 4)} (tolerance {check['tolerance']})"]
    if results["eval"]:
        lines += ["", "| zero-shot pipeline (same loader) | images/s | class embeddings s | image pass s |",
                  "|---|---|---|---|"]
        lines += [f"| {name} | {_figure(row['images_per_s'])} | {_figure(row['class_embeddings_s'])} | "
                  f"{_figure(row['image_pass_s'])} |" for name, row in results["eval"]["same"].items()]
    cuda = results["cuda_tests"]
    lines += ["", f"CUDA tests: {cuda['passed']} passed, {cuda['failed']} failed, {cuda['skipped']} skipped", ""]
    lines += [f"- {'ok' if ok else 'FAILED'}: {name}" for name, ok in results["checks"].items()]
    return "\n".join(lines) + "\n"


def report(out: Path, args) -> int:
    results = build_results(out, args)
    results["platform"] = {"python": platform.python_version(), "machine": platform.machine()}
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "results.md").write_text(markdown(results))
    print(markdown(results))
    return 0 if all(results["checks"].values()) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    shards = commands.add_parser("shards")
    shards.add_argument("directory", type=Path)
    for name in ("--shards", "--per-shard", "--size"):
        shards.add_argument(name, type=int, required=True)
    shards.add_argument("--jobs", type=int, default=1)
    for name in ("open-clip-config", "flops"):
        command = commands.add_parser(name)
        command.add_argument("--model", required=True)
        command.add_argument("--out", type=Path, required=True)
    summary = commands.add_parser("report")
    summary.add_argument("out", type=Path)
    summary.add_argument("--peak-tflops", type=float, help="the device's dense bf16 peak (none: no MFU)")
    summary.add_argument("--window", type=int, required=True, help="steps timed at the end of each fit")
    summary.add_argument("--loss-steps", type=int, required=True, help="steps whose losses are compared")
    summary.add_argument("--tolerance", type=float, required=True, help="largest relative loss difference")
    args = parser.parse_args(argv)
    if args.command == "shards":
        write_shards(args.directory, args.shards, args.per_shard, args.size, args.jobs)
    elif args.command == "open-clip-config":
        open_clip_config(args.model, args.out)
    elif args.command == "flops":
        args.out.write_text(json.dumps(training_flops(args.model)) + "\n")
    else:
        return report(args.out, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
