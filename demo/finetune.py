"""`python -m demo.finetune` (after `make demo`): LiT-style fine-tuning of the demo's CLIP on new captions.

The demo's web names its emoji in English ("a dog face on a red background"). Here the same pictures are re-captioned
with German names ("a hund on a red background") for half of the emoji pairs, English for the other half, digits
and shapes as they were: words the base run never saw paired with these images. The run starts from the demo's
CLIP checkpoint (`model.init_from`), locks the image tower (`model.lock.lock_image`) and trains the text tower only
(experiments/finetune_lit.yaml). Zero-shot on the held-out emoji renders named in German rises from what the base
model gets by sub-word overlap (tiger, panda, hamburger) towards what it gets in English; `clipmodule compare`
shows both models side by side, and the fine-tuning run's curve.

    demo_out/finetune/shards/         the re-captioned training shards (same images, same keys)
    demo_out/finetune/eval/           German class names for the held-out emoji shard; the suite YAML
    demo_out/finetune/compare/        compare.md and its PNGs;  demo_out/finetune/summary.json
"""

from __future__ import annotations

import argparse
import io
import json
import re
import shutil
import sys
import tarfile
import time
import zlib
from pathlib import Path

from rich.console import Console
from rich.rule import Rule

from demo.app import REPO, _bin, _run, training_runs

EXPERIMENT = "demo-finetune"
# The demo's emoji (demo.source.EMOJI, named by unicodedata) in German: the new names the fine-tuning teaches.
GERMAN = {
    "dog face": "hund", "cat face": "katze", "mouse face": "maus", "rabbit face": "hase", "fox face": "fuchs",
    "bear face": "bär", "panda face": "panda", "frog face": "frosch", "monkey face": "affe", "pig face": "schwein",
    "cow face": "kuh", "tiger face": "tiger", "lion face": "löwe", "chicken": "huhn", "penguin": "pinguin",
    "turtle": "schildkröte", "octopus": "krake", "fish": "fisch", "butterfly": "schmetterling", "red apple": "apfel",
    "banana": "banane", "grapes": "trauben", "strawberry": "erdbeere", "lemon": "zitrone",
    "watermelon": "wassermelone", "slice of pizza": "pizzastück", "hamburger": "hamburger",
    "birthday cake": "geburtstagstorte", "rocket": "rakete", "automobile": "auto", "bicycle": "fahrrad",
    "house building": "haus", "cactus": "kaktus", "sunflower": "sonnenblume", "mushroom": "pilz",
    "soccer ball": "fußball", "guitar": "gitarre", "key": "schlüssel", "electric light bulb": "glühbirne",
    "balloon": "luftballon", "crown": "krone", "fire": "feuer",
}
# Longest names first, whole words only: "monkey face" must not become "mon" + "schlüssel".
_NAMES = re.compile(r"\b(" + "|".join(re.escape(name) for name in sorted(GERMAN, key=len, reverse=True)) + r")\b")


def german_caption(caption: str) -> str | None:
    """The caption with every emoji name in German, or None when it names no emoji."""
    if not _NAMES.search(caption):
        return None
    return _NAMES.sub(lambda match: GERMAN[match.group(1)], caption)


def recaption_shard(source: Path, target: Path) -> tuple[int, int]:
    """Copies a webdataset shard, the caption (`.txt`) of every other emoji sample (by a hash of its key) in German;
    returns (samples, re-captioned)."""
    samples = changed = 0
    target.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(source) as reading, tarfile.open(target.with_suffix(".tmp"), "w") as writing:
        for member in reading:
            payload = reading.extractfile(member).read() if member.isfile() else b""
            key, _, suffix = member.name.partition(".")
            if suffix == "txt":
                samples += 1
                new = german_caption(payload.decode())
                if new is not None and zlib.crc32(key.encode()) % 2 == 0:
                    payload, changed = new.encode(), changed + 1
            info = tarfile.TarInfo(member.name)
            info.size, info.mtime = len(payload), member.mtime
            writing.addfile(info, io.BytesIO(payload))
    target.with_suffix(".tmp").replace(target)
    return samples, changed


def write_training_shards(shards: Path, out: Path) -> dict[str, int]:
    """Every shard of the demo's curation re-captioned into `out`, with img2dataset's stats files beside them."""
    shutil.rmtree(out, ignore_errors=True)
    totals = {"samples": 0, "german": 0}
    for shard in sorted(shards.glob("*.tar")):
        samples, changed = recaption_shard(shard, out / shard.name)
        totals["samples"] += samples
        totals["german"] += changed
        stats = shard.with_name(f"{shard.stem}_stats.json")
        if stats.is_file():
            shutil.copy(stats, out / stats.name)
    return totals


def write_suite(demo_out: Path, folder: Path) -> tuple[Path, list[str]]:
    """The held-out emoji renders twice: named in German (the new names) and in English (what the base run knew)."""
    import yaml

    english = (demo_out / "source/eval/emoji/classnames.txt").read_text().splitlines()
    german = [GERMAN[name] for name in english]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "classnames_de.txt").write_text("\n".join(german) + "\n")
    templates = str(demo_out / "source/eval/emoji/templates.txt")
    tasks = [{"name": "emoji_de", "task": "zeroshot", "dataset": str(demo_out / "source/eval_shards/emoji/000000.tar"),
              "classnames": str(folder / "classnames_de.txt"), "templates": templates},
             {"name": "emoji", "task": "zeroshot", "dataset": str(demo_out / "source/eval/emoji"),
              "classnames": str(demo_out / "source/eval/emoji/classnames.txt"), "templates": templates}]
    suite = folder / "suite.yaml"
    suite.write_text(yaml.safe_dump({"output": str(folder), "tasks": tasks}, sort_keys=False))
    return suite, german


def _latest_checkpoint(runs: Path) -> Path:
    found = sorted(runs.rglob("last.ckpt"), key=lambda path: path.stat().st_mtime)
    if not found:
        raise SystemExit(f"demo.finetune: no last.ckpt under {runs}")
    return found[-1]


def _fit_run(store: Path) -> tuple[object, str | None]:
    """(MLflow client, id of the latest fine-tuning fit run in EXPERIMENT or None)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{store}")
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id], "tags.mlflow.runName = 'finetune-lit-fit'",
                              order_by=["attributes.start_time DESC"]) if experiment else []
    return client, runs[0].info.run_id if runs else None


def _forget_earlier_runs(store: Path) -> None:
    """A re-run replaces the last one's runs in the comparison (MLflow keeps them, marked deleted)."""
    client, _ = _fit_run(store)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    for run in client.search_runs([experiment.experiment_id]) if experiment else []:
        client.delete_run(run.info.run_id)


def run_finetune(demo_out: Path, steps: int | None = None, console: Console | None = None) -> dict:
    console = console or Console()
    start, store = time.time(), demo_out / "mlruns.db"
    runs = training_runs(store) if store.is_file() else {}
    if "demo-clip" not in runs:
        raise SystemExit(f"demo.finetune: no demo-clip run in {store}; run `make demo` first")
    base = Path(runs["demo-clip"][1]) / "checkpoints" / "last.ckpt"
    work, log = demo_out / "finetune", demo_out / "finetune" / "finetune.log"
    shutil.rmtree(work / "runs", ignore_errors=True)
    _forget_earlier_runs(store)
    console.print(Rule("[bold]new captions"))
    with console.status("re-captioning the demo's shards"):
        counts = write_training_shards(demo_out / "curation" / "shards", work / "shards")
    console.print(f"{counts['samples']} pairs, {counts['german']} emoji captions now in German")
    suite, german = write_suite(demo_out, work / "eval")
    store_uri = f"sqlite:///{store}"
    fit = [_bin("clipmodule"), "fit", "-c", str(REPO / "experiments/base.yaml"),
           "-c", str(REPO / "experiments/finetune_lit.yaml"), f"--model.init_from={base}",
           f"--data.train_shards={work / 'shards'}", f"--trainer.default_root_dir={work / 'runs'}",
           f"--data.zeroshot_shards={demo_out / 'source/eval_shards/emoji'}",
           f"--data.zeroshot_classnames={json.dumps(german)}", f"--trainer.logger.init_args.tracking_uri={store_uri}"]
    _run(console, "clipmodule fit: LiT from the demo's CLIP", fit + ([f"--trainer.max_steps={steps}"] if steps else []),
         log)
    tuned = _latest_checkpoint(work / "runs")
    results = {}
    for name, checkpoint in (("base", base), ("finetune-lit", tuned)):
        _run(console, f"zero-shot, German and English names: {name}", [
            _bin("clipmodule"), "eval", "suite", "-c", str(suite), "--model", str(checkpoint), "--name", name,
            f"--tracking.uri={store_uri}", f"--tracking.experiment={EXPERIMENT}"], log)
        metrics = json.loads((work / "eval" / f"{name}.json").read_text())["metrics"]
        results[name] = {task: metrics[task]["top1"] for task in ("emoji_de", "emoji")}
    # The fit's val/zeroshot_top1 is the emoji_de task (same images, names and templates); its curve starts at
    # validation step 50, so the base checkpoint's score is its step 0.
    client, fit_run = _fit_run(store)
    client.log_metric(fit_run, "val/zeroshot_top1", results["base"]["emoji_de"], step=0)
    _run(console, "clipmodule compare", [
        _bin("clipmodule"), "compare", "--experiment", EXPERIMENT, "--tracking.uri", store_uri,
        "--out", str(work / "compare"), "--params", "init_from/sha256,lock/lock_image",
        "--metrics", "emoji_de/top1,emoji/top1,val/zeroshot_top1,train/loss",
        "--plot", "val/zeroshot_top1,train/loss"], log)
    summary = {"base_checkpoint": str(base), "finetuned_checkpoint": str(tuned), "captions": counts,
               "top1": results, "chance": 1 / len(german), "seconds": time.time() - start}
    (work / "summary.json").write_text(json.dumps(summary, indent=2))
    console.print(Rule("[bold]summary"))
    for name, tasks in results.items():
        console.print(f"{name:<13} zero-shot top-1: German names {tasks['emoji_de']:.1%}, English names "
                      f"{tasks['emoji']:.1%} (chance {summary['chance']:.1%})")
    console.print(f"comparison: {work / 'compare' / 'compare.md'}   total {summary['seconds'] / 60:.1f} min")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo.finetune", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="the folder `make demo` wrote")
    parser.add_argument("--steps", type=int, default=None, help="optimiser steps (default: the YAML's)")
    args = parser.parse_args(argv)
    run_finetune(args.out, args.steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
