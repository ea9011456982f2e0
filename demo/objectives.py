"""`python -m demo.objectives` (after `make demo`): the training objectives of the project beside their baselines,
on the demo's own data, in short runs, then `clipmodule compare` over them.

Every run reads the demo's curated shards (demo_out/curation/shards) and is validated on its held-out renders
(emoji, digits, shapes: `data.zeroshot_sets`, each reported as val/zeroshot/<set>/top1) at its end.

From scratch, a student of 1 block, width 64 in both towers (the demo model: 3 blocks, width 128):
    student                the baseline: AdamW, cosine; `model.ema` (val_ema/* beside val/*)
    student-distilled      the same, with the demo's CLIP checkpoint as teacher (`model.distill`)
    student-lion           the same, with Lion (`model.optim.name: lion`, its usual lower lr, higher decay)
    student-hard-negatives the same, with two rule-based negative captions per sample (`model.hard_negatives`)
From the demo's CLIP checkpoint (`model.init_from`), a few more steps at a fine-tuning rate:
    demo-clip              the checkpoint itself, validated (`clipmodule validate`: the starting point)
    finetune-full          every weight trained
    finetune-layer-decay   every weight, block d below its tower's head at lr * 0.75**d (`model.optim.layer_decay`)
    finetune-lora          rank-8 adapters on both towers only (`model.lora`)
    finetune-hard-negatives every weight, with two negative captions per sample (NegCLIP's recipe: fine-tuning)
Each run's last checkpoint then takes image-caption selection on `builtin:shape-swaps` (a shape on a coloured
background: its caption against the same words with the relation's sides swapped; chance 50%), what hard negatives
are for, and on `builtin:shape-replace-shape|colour` (the negative names another shape or background colour),
logged to the run as <set>/text_acc.

    demo_out/objectives/runs/       checkpoints;   demo_out/objectives/mlruns.db  the MLflow store
    demo_out/objectives/compare/    compare.md and its PNGs;   demo_out/objectives/summary.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

EXPERIMENT = "demo-objectives"
REPO = Path(__file__).resolve().parents[1]
SETS = ("emoji", "digits", "shapes")
STUDENT = ("{embed_dim: 64, image_size: 32, vision: {layers: 1, width: 64}, "
           "text: {layers: 1, width: 64, context_length: 24}}")
METRICS = [f"val/zeroshot/{name}/top1" for name in SETS] + [f"val_ema/zeroshot/{name}/top1" for name in SETS] + [
    f"{name}/text_acc" for name in ("shape_swaps", "shape_replace_shape", "shape_replace_colour")]


def student_runs(teacher: Path, steps: int) -> dict[str, list[str]]:
    """Run name -> its options, for the runs from scratch."""
    common = [f"--model.model.init_args.overrides={STUDENT}", f"--trainer.max_steps={steps}",
              f"--trainer.val_check_interval={steps}", f"--checkpoint.every_n_train_steps={steps}"]
    return {
        "student": [*common, "--model.ema={decay: 0.99}"],
        "student-distilled": [*common, f"--model.distill={{teacher: {teacher}}}"],
        "student-lion": [*common, "--model.optim.name=lion", "--model.optim.lr=2.5e-4",
                         "--model.optim.weight_decay=0.5"],
        "student-hard-negatives": [*common, "--model.hard_negatives={count: 2}"],
    }


def finetune_runs(start: Path, steps: int) -> dict[str, list[str]]:
    """Run name -> its options, for the runs from the demo's checkpoint."""
    common = [f"--model.init_from={start}", f"--trainer.max_steps={steps}", f"--trainer.val_check_interval={steps}",
              f"--checkpoint.every_n_train_steps={steps}", "--model.optim.warmup_steps=10"]
    return {
        "finetune-full": [*common, "--model.optim.lr=1.0e-4"],
        "finetune-layer-decay": [*common, "--model.optim.lr=1.0e-4", "--model.optim.layer_decay=0.75"],
        "finetune-lora": [*common, "--model.optim.lr=1.0e-3", "--model.optim.weight_decay=0.0",
                          "--model.lora={rank: 8, alpha: 16.0}"],
        "finetune-hard-negatives": [*common, "--model.optim.lr=1.0e-4", "--model.hard_negatives={count: 2}"],
    }


def zeroshot_sets(demo_out: Path) -> str:
    """The held-out renders as `data.zeroshot_sets` (ImageNet-style folders with their names and templates)."""
    sets = {}
    for name in SETS:
        folder = demo_out / "source" / "eval" / name
        sets[name] = {"data": str(folder), "classnames": str(folder / "classnames.txt"),
                      "templates": str(folder / "templates.txt")}
    return json.dumps(sets)


def base_command(verb: str, demo_out: Path, work: Path) -> list[str]:
    """`clipmodule <verb>` with the demo's config, its data and this comparison's MLflow store."""
    return [sys.executable, "-m", "clipmodule", verb, "-c", str(REPO / "experiments/base.yaml"),
            "-c", str(REPO / "experiments/demo.yaml"),
            f"--trainer.default_root_dir={work / 'runs'}",
            f"--trainer.logger.init_args.tracking_uri=sqlite:///{work / 'mlruns.db'}",
            f"--trainer.logger.init_args.experiment_name={EXPERIMENT}",
            f"--data.train_shards={demo_out / 'curation' / 'shards'}", "--data.zeroshot_shards=null",
            f"--data.zeroshot_sets={zeroshot_sets(demo_out)}", f"--data.data_card={demo_out / 'data_cards/demo.json'}"]


def demo_checkpoint(demo_out: Path) -> Path:
    """The demo-clip run's last checkpoint (the demo's MLflow store says where its run folder is)."""
    from demo.app import training_runs

    store = demo_out / "mlruns.db"
    found = training_runs(store).get("demo-clip") if store.is_file() else None
    if found is None:
        raise SystemExit(f"demo.objectives: no demo-clip run in {store}; run `make demo` first")
    folder = Path(found[1])
    if not folder.is_absolute():  # the demo writes its folders relative to where it ran
        folder = demo_out.resolve().parent / folder
    checkpoint = folder / "checkpoints" / "last.ckpt"
    if not checkpoint.is_file():
        raise SystemExit(f"demo.objectives: {checkpoint} is missing")
    return checkpoint


def run(title: str, command: list[str], log: Path) -> float:
    """Runs one command, its output appended to `log`; returns its seconds. A failure stops the comparison."""
    print(f"== {title}", flush=True)
    start = time.time()
    with open(log, "a") as handle:
        handle.write(f"\n$ {' '.join(command)}\n")
        handle.flush()
        result = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        raise SystemExit(f"demo.objectives: {title} failed with exit code {result.returncode} (log: {log})")
    seconds = time.time() - start
    print(f"   done in {seconds:.0f}s", flush=True)
    return seconds


def forget(work: Path, name: str) -> None:
    """A run done again (`--only`) replaces its earlier one in the comparison (MLflow keeps it, marked deleted)."""
    from mlflow.tracking import MlflowClient

    if not (work / "mlruns.db").is_file():
        return
    client = MlflowClient(tracking_uri=f"sqlite:///{work / 'mlruns.db'}")
    experiment = client.get_experiment_by_name(EXPERIMENT)
    for found in client.search_runs([experiment.experiment_id], f"tags.mlflow.runName = '{name}'") if experiment \
            else []:
        client.delete_run(found.info.run_id)


def selection_suite(work: Path) -> Path:
    """The three rendered compositional sets as one suite (`clipmodule eval suite`: one process per checkpoint)."""
    import yaml

    from clipmodule.eval.readers.builtin import SELECTION_SETS

    tasks = [{"name": name.replace("-", "_"), "task": "image_caption_selection", "dataset": f"builtin:{name}"}
             for name in SELECTION_SETS]
    path = work / "selection" / "suite.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"output": str(path.parent), "tasks": tasks}, sort_keys=False))
    return path


def selection(name: str, checkpoint: Path, work: Path, log: Path) -> float:
    """Compositional selection on the rendered shape sets (a shape on a coloured background: its caption against
    the relation-swapped one, what hard negatives train for, and against another shape or background colour),
    each logged to the run as <set>/text_acc."""
    from mlflow.tracking import MlflowClient

    seconds = 0.0
    if name.endswith("lora"):  # adapters are folded into plain weights first (eval reads plain weights)
        merged = work / "selection" / f"{name}-merged.safetensors"
        seconds += run(f"{name}: clipmodule convert --merge_lora", [
            sys.executable, "-m", "clipmodule", "convert", "--merge_lora", str(checkpoint), str(merged)], log)
        checkpoint = merged
    seconds += run(f"{name}: image-caption selection on the builtin:shape-* sets", [
        sys.executable, "-m", "clipmodule", "eval", "suite", "-c", str(selection_suite(work)), "--model",
        str(checkpoint), "--name", name, f"--tracking.uri=sqlite:///{work / 'mlruns.db'}",
        f"--tracking.experiment={EXPERIMENT}-eval"], log)
    metrics = json.loads((work / "selection" / f"{name}.json").read_text())["metrics"]
    client = MlflowClient(tracking_uri=f"sqlite:///{work / 'mlruns.db'}")
    experiment = client.get_experiment_by_name(EXPERIMENT)
    (found,) = client.search_runs([experiment.experiment_id], f"tags.mlflow.runName = '{name}'",
                                  order_by=["attributes.start_time DESC"], max_results=1)
    for task, values in metrics.items():
        client.log_metric(found.info.run_id, f"{task}/text_acc", values["text_acc"])
    return seconds


def plan_names() -> list[str]:
    """The comparison's run names, in order: the teacher's validation, the runs from scratch, the fine-tunes."""
    return ["demo-clip", *student_runs(Path("teacher"), 1), *finetune_runs(Path("start"), 1)]


def check_only(only: list[str] | None) -> None:
    """`--only` names runs of the plan: anything else is one line listing them (it would silently run nothing)."""
    unknown = [name for name in only or () if name not in plan_names()]
    if unknown:
        raise SystemExit(f"demo.objectives: --only {','.join(unknown)}: not a run of the plan "
                         f"({', '.join(plan_names())})")


def run_all(demo_out: Path, work: Path, steps: int, finetune_steps: int, only: list[str] | None = None) -> dict:
    start = time.time()
    check_only(only)
    teacher = demo_checkpoint(demo_out)
    if only is None:
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    log, seconds = work / "objectives.log", {}
    validate = [*base_command("validate", demo_out, work), f"--ckpt_path={teacher}",
                "--trainer.logger.init_args.run_name=demo-clip"]
    plan = {"demo-clip": validate}
    for name, options in {**student_runs(teacher, steps), **finetune_runs(teacher, finetune_steps)}.items():
        plan[name] = [*base_command("fit", demo_out, work), *options, f"--trainer.logger.init_args.run_name={name}",
                      f"--checkpoint.dirpath={work / 'runs' / name}"]
    for name, command in plan.items():
        if only is None or name in only:
            forget(work, name)
            seconds[name] = run(name, command, log)
    for name in plan:
        if only is None or name in only:
            checkpoint = teacher if name == "demo-clip" else work / "runs" / name / "last.ckpt"
            seconds[f"{name} selection"] = selection(name, checkpoint, work, log)
    run("clipmodule compare", [sys.executable, "-m", "clipmodule", "compare", "--experiment", EXPERIMENT,
                               "--tracking.uri", f"sqlite:///{work / 'mlruns.db'}", "--out", str(work / "compare"),
                               "--params", "optim/name,optim/lr", "--metrics", ",".join([*METRICS, "train/loss"]),
                               "--plot", "val/zeroshot/emoji/top1,train/loss"], log)
    summary = {"teacher": str(teacher), "steps": steps, "finetune_steps": finetune_steps, "seconds": seconds,
               "total_seconds": time.time() - start}
    (work / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"comparison: {work / 'compare' / 'compare.md'}   total {summary['total_seconds'] / 60:.1f} min")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo.objectives", description=__doc__.split("\n\n")[0])
    parser.add_argument("--demo_out", type=Path, default=Path("demo_out"), help="the folder `make demo` wrote")
    parser.add_argument("--out", type=Path, default=None, help="where the runs go (default DEMO_OUT/objectives)")
    parser.add_argument("--steps", type=int, default=480, help="optimiser steps of the runs from scratch")
    parser.add_argument("--finetune_steps", type=int, default=120, help="steps of the runs from the checkpoint")
    parser.add_argument("--only", default=None, help="comma-separated run names to (re)run, the others kept")
    args = parser.parse_args(argv)
    run_all(args.demo_out.resolve(), (args.out or args.demo_out / "objectives").resolve(), args.steps,
            args.finetune_steps, args.only.split(",") if args.only else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
