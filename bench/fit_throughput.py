"""Whole-process training throughput: `clipmodule fit` against open_clip's own trainer, same shards and settings.

    .venv/bin/python bench/fit_throughput.py [--steps 15] [--rounds 3] [--batch-size 128] [--workers 1]
                                             [--threads 2] [--loader-rounds 3] [--skip-fit]
                                             [--shard-size 64] [--crop-size N] [--long-captions]

Both trainers train the demo's model (`experiments/demo.yaml`: ViT, 32 px, 3 layers, width 128, text context
24; open_clip gets it as a model-config JSON) on the same webdataset shards of 64 px JPEGs in img2dataset's
layout (jpg + txt + json, `_stats.json` beside each tar; `clipmodule.data.synthetic`), batch 128, one loader
worker, two intra-op threads (OMP_NUM_THREADS), fp32 on CPU, no validation. Each trainer runs as a whole
process for S and for 3S steps; the steady-state rate is 2S x batch over the difference of the two wall
times, so start-up (imports, MLflow store, worker start, first shards, final checkpoint) cancels. Rounds
alternate which trainer goes first; the table gives the median over rounds and the spread (min-max), on the
wall clock and in CPU seconds of the trainer and its loader worker (less disturbed by other jobs).

open_clip runs through `bench/open_clip_peer.py` (`open_clip_train.main` plus a model-config flag and an
adaptation of its webdataset grouping to webdataset 1.x; see that file).

The loader comparison runs each pipeline in this process on one thread, as in one DataLoader worker: ours
(`ShardTrainDataset` + `TokenizingCollate`: index, shuffle, read, decode, augment, tokenise, batch of uint8
pixels, which `ClipLitModule` normalises on the device) against open_clip's `get_wds_dataset` pipeline (tar
streaming, shuffle, decode "pilrgb", RandomResizedCrop + ToTensor + Normalize in the worker, open_clip's
tokenizer, batch) over the same shards; samples per second of wall and CPU. The whole-process fit comparison
includes our normalisation (on CPU it runs in the training process).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
MODEL_NAME = "bench-demo-vit"
SAMPLES_PER_SHARD = 500


def demo_model_config():
    """Our config of the demo's model, read from experiments/demo.yaml's overrides of its named config."""
    import yaml

    from clipmodule.models import get_model_config

    init = yaml.safe_load((ROOT / "experiments" / "demo.yaml").read_text())["model"]["model"]["init_args"]
    return get_model_config(init["name"], **init.get("overrides", {}))


def write_open_clip_config(config, path: Path) -> None:
    """The same architecture as an open_clip model-config JSON."""
    vision, text = config.vision, config.text
    path.write_text(json.dumps({
        "embed_dim": config.embed_dim, "quick_gelu": config.quick_gelu,
        "vision_cfg": {"image_size": vision.image_size, "layers": vision.layers, "width": vision.width,
                       "patch_size": vision.patch_size, "head_width": vision.head_width,
                       "mlp_ratio": vision.mlp_ratio},
        "text_cfg": {"context_length": text.context_length, "vocab_size": text.vocab_size, "width": text.width,
                     "heads": text.width // text.head_width, "layers": text.layers, "mlp_ratio": text.mlp_ratio},
    }))


def environment(work: Path, threads: int) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               TOKENIZERS_PARALLELISM="false", CLIPMODULE_CACHE=str(work / "cache"), PYTHONWARNINGS="ignore")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def ours_command(work: Path, shards: Path, steps: int, args, tag: str) -> list[str]:
    return [PYTHON, "-m", "clipmodule", "fit", "-c", str(ROOT / "experiments/base.yaml"),
            "-c", str(ROOT / "experiments/demo.yaml"), "--data.train_shards", str(shards),
            "--data.zeroshot_shards", "null", "--data.data_card", "null",
            "--data.batch_size", str(args.batch_size), "--data.num_workers", str(args.workers),
            "--trainer.max_steps", str(steps), "--trainer.default_root_dir", str(work / "runs" / tag),
            "--trainer.logger.init_args.tracking_uri", f"sqlite:///{work}/mlruns.db",
            "--trainer.logger.init_args.run_name", tag, "--checkpoint.every_n_train_steps", "1000000"]


def open_clip_command(work: Path, shards: Path, steps: int, args, tag: str) -> list[str]:
    pattern = f"{shards}/{{00000..{args.num_shards - 1:05d}}}.tar"
    return [PYTHON, str(ROOT / "bench/open_clip_peer.py"), "--model-config", str(work / f"{MODEL_NAME}.json"),
            "--model", MODEL_NAME, "--train-data", pattern, "--dataset-type", "webdataset",
            "--train-num-samples", str(steps * args.batch_size), "--batch-size", str(args.batch_size),
            "--workers", str(args.workers), "--epochs", "1", "--lr", "1e-3", "--wd", "0.1", "--warmup", "40",
            "--precision", "fp32", "--seed", "0", "--logs", str(work / "open_clip_logs"), "--name", tag,
            "--report-to", "", "--log-every-n-steps", "10", "--save-frequency", "1"]


def timed(command: list[str], env: dict[str, str], work: Path) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds of the process and its loader workers, its output) of one whole run."""
    start, cpu = time.perf_counter(), _children_cpu()
    done = subprocess.run(command, env=env, cwd=work, capture_output=True, text=True)
    seconds, cpu = time.perf_counter() - start, _children_cpu() - cpu
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {' '.join(command)}\n{done.stderr[-3000:]}")
    return seconds, cpu, done.stdout + done.stderr


def reported_rate(name: str, output: str, work: Path, tag: str, batch_size: int) -> float:
    """The trainer's own figure for its last steps, in samples/s: Lightning's progress bar (it/s) for ours,
    open_clip's `Batch (t)` (mean step time since its previous log line) from its out.log."""
    if name == "clipmodule fit":
        found = re.findall(r"(\d+(?:\.\d+)?)(s/it|it/s)", output)
        value, unit = found[-1] if found else ("nan", "it/s")
        return batch_size * (float(value) if unit == "it/s" else 1 / float(value))
    log = (work / "open_clip_logs" / tag / "out.log").read_text()
    found = re.findall(r"Batch \(t\): (\d+\.\d+)", log)
    return batch_size / float(found[-1]) if found else float("nan")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def fit_rounds(work: Path, shards: Path, args) -> dict[str, list[tuple[float, float, float, float]]]:
    """Per trainer and round: (S-step seconds, 3S-step seconds, steady samples/s, steady samples/CPU-s,
    the trainer's own samples/s at the end of the long run)."""
    env = environment(work, args.threads)
    commands = {"clipmodule fit": ours_command, "open_clip_train.main": open_clip_command}
    results: dict[str, list[tuple[float, ...]]] = {name: [] for name in commands}
    timed(ours_command(work, shards, 2, args, "warm-up"), env, work)  # fills the shard-index cache
    for round_number in range(args.rounds):
        order = list(commands) if round_number % 2 == 0 else list(commands)[::-1]
        for name in order:
            tags = [f"r{round_number}-{steps}" for steps in (args.steps, 3 * args.steps)]
            short, long = (timed(commands[name](work, shards, steps, args, tag), env, work)
                           for steps, tag in zip((args.steps, 3 * args.steps), tags))
            samples = 2 * args.steps * args.batch_size
            rate, cpu_rate = samples / (long[0] - short[0]), samples / (long[1] - short[1])
            own = reported_rate(name, long[2], work, tags[1], args.batch_size)
            results[name].append((short[0], long[0], rate, cpu_rate, own))
            print(f"round {round_number} {name}: {args.steps} steps {short[0]:.1f} s, {3 * args.steps} steps "
                  f"{long[0]:.1f} s -> {rate:.1f} samples/s, {cpu_rate:.1f} samples/CPU-s; its own figure "
                  f"{own:.1f} samples/s", flush=True)
    return results


def ours_loader(shards: Path, args, batches: int):
    from clipmodule.data.datamodule import EpochLoader, ShardTrainDataset, TokenizingCollate
    from clipmodule.data.shards import shard_paths
    from clipmodule.transforms import image_transform

    config = demo_model_config()
    size = args.crop_size or config.vision.image_size
    dataset = ShardTrainDataset(shard_paths(str(shards)), image_transform(size, train=True),
                                batch_size=args.batch_size, batches_per_rank=batches, shuffle_buffer=2000)
    return EpochLoader(dataset, batch_size=args.batch_size, num_workers=0,
                       collate_fn=TokenizingCollate(config.text.context_length))


def open_clip_loader(work: Path, shards: Path, args, batches: int):
    import open_clip
    from open_clip_train.data import get_wds_dataset

    sys.path.insert(0, str(ROOT / "bench"))
    from open_clip_peer import adapt_open_clip_data

    open_clip.add_model_config(work / f"{MODEL_NAME}.json")
    adapt_open_clip_data()
    config = demo_model_config()
    options = SimpleNamespace(train_data=f"{shards}/{{00000..{args.num_shards - 1:05d}}}.tar",
                              train_num_samples=batches * args.batch_size, dataset_resampled=False,
                              train_data_upsampling_factors=None, seed=0, batch_size=args.batch_size,
                              workers=0, world_size=1)
    preprocess = open_clip.image_transform(args.crop_size or config.vision.image_size, is_train=True)
    info = get_wds_dataset(options, preprocess, True, epoch=0, tokenizer=open_clip.get_tokenizer(MODEL_NAME))
    return info.dataloader


def loader_rounds(work: Path, shards: Path, args) -> dict[str, list[tuple[float, float]]]:
    """Per pipeline and round: (samples/s wall, samples/s CPU) over `--loader-batches` batches, in-process,
    after `--loader-warmup` batches: the steady rate comes once the shuffle buffers have filled and turned
    over several shards (ours fell 7x there, to ~280 samples/s, before its shard cache kept the shards the
    buffer holds; the first 15 batches had not shown it)."""
    import torch

    torch.set_num_threads(1)  # as in a DataLoader worker
    makers = {"clipmodule.data (ours)": lambda n: ours_loader(shards, args, n),
              "open_clip_train.data (webdataset)": lambda n: open_clip_loader(work, shards, args, n)}
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in makers}
    for round_number in range(args.loader_rounds):
        order = list(makers) if round_number % 2 == 0 else list(makers)[::-1]
        for name in order:
            iterator = iter(makers[name](args.loader_warmup + args.loader_batches))
            for _ in range(args.loader_warmup):  # tokenizer, shuffle buffer fill and turnover
                next(iterator)
            wall, cpu, samples = time.perf_counter(), time.process_time(), 0
            for batch in iterator:
                samples += len(batch["text"] if isinstance(batch, dict) else batch[1])
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            results[name].append((samples / wall, samples / cpu))
            print(f"round {round_number} {name}: {samples / wall:.0f} samples/s wall, {samples / cpu:.0f} CPU",
                  flush=True)
    return results


# Appended to every caption by --long-captions: past the 24-token context, so every caption is truncated
# and fills it, and cutting padding (`CLIP.encode_text`) saves nothing.
FILLER = (" drawn in the middle of a small square card lying on a plain wooden table next to an open notebook,"
          " a pencil and a cup of tea, in soft morning light from a window on the left")


def lengthen_captions(shards: Path) -> None:
    """Rewrite each tar with FILLER appended to its captions (the `txt` members and the json's caption)."""
    import tarfile

    for path in sorted(shards.glob("*.tar")):
        members = []
        with tarfile.open(path) as tar:
            for info in tar.getmembers():
                data = tar.extractfile(info).read()
                if info.name.endswith(".txt"):
                    data = data + FILLER.encode()
                elif info.name.endswith(".json"):
                    meta = json.loads(data)
                    data = json.dumps({**meta, "caption": meta["caption"] + FILLER}).encode()
                members.append((info, data))
        with tarfile.open(path.with_suffix(".tmp"), "w", format=tarfile.USTAR_FORMAT) as tar:
            for info, data in members:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        path.with_suffix(".tmp").replace(path)


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"


def report(fit: dict | None, loader: dict, args) -> None:
    captions = ", captions filling the context" if args.long_captions else ""
    print(f"\nbatch {args.batch_size}, {args.workers} loader worker(s), {args.threads} intra-op threads, "
          f"S = {args.steps} steps, {args.rounds} rounds{captions}; load average now {os.getloadavg()[0]:.1f}")
    if fit:
        print("\n| trainer (whole process) | S steps, s | 3S steps, s | steady samples/s | steady samples/CPU-s "
              "| own log, samples/s |")
        print("|---|---|---|---|---|---|")
        for name, rows in fit.items():
            short, long, rates, cpu_rates, own = zip(*rows)
            print(f"| {name} | {statistics.median(short):.1f} | {statistics.median(long):.1f} | {spread(rates)} "
                  f"| {spread(cpu_rates)} | {spread(own)} |")
        for which, column in (("wall", 2), ("CPU", 3), ("own log", 4)):
            ratios = [a[column] / b[column] for a, b in zip(*fit.values())]
            print(f"\nclipmodule fit / open_clip_train ({which}), per round: {', '.join(f'{r:.2f}' for r in ratios)};"
                  f" median {statistics.median(ratios):.2f}x")
    print("\n| loader, one worker (in-process, 1 thread) | samples/s wall | samples/CPU-s |")
    print("|---|---|---|")
    for name, rows in loader.items():
        wall, cpu = zip(*rows)
        print(f"| {name} | {spread(wall)} | {spread(cpu)} |")
    ours, peer = loader.values()
    ratios = [a[1] / b[1] for a, b in zip(ours, peer)]
    print(f"\nloader ours / open_clip per round (CPU): {', '.join(f'{r:.2f}' for r in ratios)}; "
          f"median {statistics.median(ratios):.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=15, help="S: the short run's steps (the long run: 3S)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--loader-rounds", type=int, default=3)
    parser.add_argument("--loader-batches", type=int, default=40, help="measured batches per loader round")
    parser.add_argument("--loader-warmup", type=int, default=40, help="batches read before measuring")
    parser.add_argument("--skip-fit", action="store_true", help="only the loader comparison")
    parser.add_argument("--shard-size", type=int, default=64, help="side of the JPEGs in the shards")
    parser.add_argument("--crop-size", type=int, help="the loaders' output side (default: the model's, 32)")
    parser.add_argument("--work", help="keep the shards and runs here (default: a temporary folder)")
    parser.add_argument("--long-captions", action="store_true",
                        help="captions longer than the context (so cutting padding cannot help)")
    args = parser.parse_args()
    from clipmodule.data.synthetic import write_synthetic_shards

    # twice the long run: both of our runs stop mid-epoch, so both wait alike for the loader worker to stop
    samples = max(6 * args.steps, args.loader_warmup + args.loader_batches) * args.batch_size
    args.num_shards = max(2 * args.workers, -(-samples // SAMPLES_PER_SHARD))
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(args.work or scratch).resolve()
        shards = work / (f"shards{args.shard_size}" + ("-long" if args.long_captions else ""))
        if len(list(shards.glob("*.tar"))) != args.num_shards:  # both trainers read exactly these
            shutil.rmtree(shards, ignore_errors=True)
            write_synthetic_shards(shards, args.num_shards, SAMPLES_PER_SHARD, image_size=args.shard_size)
            if args.long_captions:
                lengthen_captions(shards)
        write_open_clip_config(demo_model_config(), work / f"{MODEL_NAME}.json")
        fit = None if args.skip_fit else fit_rounds(work, shards, args)
        report(fit, loader_rounds(work, shards, args), args)


if __name__ == "__main__":
    main()
