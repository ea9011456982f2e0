"""`make demo`: the whole loop on the embedded source, through the real commands.

    embedded web (emoji, MNIST digits, shapes) served on 127.0.0.1
      → curation build (queries, match, balance, img2dataset download, data card)
      → clipmodule fit, twice (CLIP loss, SigLIP loss) on the downloaded shards
      → clipmodule eval zeroshot on held-out renders never served for training
      → clipmodule eval concepts (per-class recall against the training captions naming each class)
      → clipmodule compare (table, markdown report, PNG curves)
      → curation embed + curation index with the CLIP run's model: the index `clipmodule serve` serves
      → worldwide curation (`python -m demo.worldwide`): English and German captions, rows per language

Each stage runs as its own process, exactly as a user would type it; this module only sequences them.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from rich.console import Console
from rich.rule import Rule

from demo.server import LoopbackServer
from demo.source import DemoSourceConfig, build_demo_source

# The demo reads the configs of the checkout it runs from.
REPO = Path(__file__).resolve().parents[1]
RUNS = {"demo-clip": ["experiments/demo.yaml"],
        "demo-siglip": ["experiments/demo.yaml", "experiments/demo_siglip.yaml"]}
EVAL_TASKS = ("emoji", "digits", "shapes")


@dataclass
class DemoPlan:
    """Sizes of one demo run; `small()` is the shrunken version the test runs."""

    out: Path = Path("demo_out")
    source: DemoSourceConfig = field(default_factory=DemoSourceConfig)
    fit_overrides: list[str] = field(default_factory=list)
    eval_tasks: tuple[str, ...] = EVAL_TASKS
    worldwide_captions: int = 30_000
    """Generated alt-texts of the worldwide step (two English for each German one)."""

    @classmethod
    def small(cls, out: Path) -> DemoPlan:
        source = DemoSourceConfig(emoji_classes=8, emoji_per_class=40, emoji_pairs=80, digits_per_class=20,
                                  shapes=60, eval_per_class=10, shape_eval_per_class=10,
                                  failing_urls=10)
        return cls(out=out, source=source, fit_overrides=[
            "--trainer.max_steps=150",
            "--trainer.val_check_interval=75", "--data.batch_size=64", "--checkpoint.every_n_train_steps=75"],
            eval_tasks=("emoji",), worldwide_captions=3000)


def _run(console: Console, title: str, command: list[str], log: Path) -> None:
    """Runs one stage with its output on the terminal; `log` records the commands; a failure stops the demo."""
    console.print(Rule(f"[bold]{title}"))
    console.print(f"$ {' '.join(command)}", style="dim", soft_wrap=True)
    start = time.time()
    with open(log, "a") as handle:
        handle.write(f"$ {' '.join(command)}\n")
    result = subprocess.run(command)
    if result.returncode != 0:
        raise SystemExit(f"demo: stage '{title}' failed with exit code {result.returncode} (log: {log})")
    console.print(f"[green]done[/] in {time.time() - start:.0f}s")


def _bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def _paths(out: Path) -> dict[str, Path]:
    return {"source": out / "source", "curation": out / "curation", "cards": out / "data_cards",
            "runs": out / "runs", "eval": out / "eval", "compare": out / "compare", "log": out / "demo.log",
            "store": out / "mlruns.db", "config": out / "dataset.yaml", "embeddings": out / "embeddings",
            "index": out / "index"}


def _dataset_config(out: Path, paths: dict[str, Path]) -> Path:
    """The demo's dataset YAML with its folders moved under `out` (the shipped one uses demo_out/)."""
    text = (REPO / "experiments/datasets/demo.yaml").read_text().replace("demo_out/", f"{out.as_posix()}/")
    paths["config"].write_text(text)
    return paths["config"]


def _fit_command(run_name: str, configs: list[str], plan: DemoPlan, paths: dict[str, Path],
                 classnames: list[str]) -> list[str]:
    out = plan.out.as_posix()
    command = [_bin("clipmodule"), "fit", "-c", str(REPO / "experiments/base.yaml")]
    for config in configs:
        command += ["-c", str(REPO / config)]
    return command + [
        f"--trainer.default_root_dir={paths['runs']}",
        f"--trainer.logger.init_args.tracking_uri=sqlite:///{paths['store']}",
        f"--trainer.logger.init_args.run_name={run_name}",
        f"--data.train_shards={paths['curation'] / 'shards'}",
        f"--data.zeroshot_shards={paths['source'] / 'eval_shards' / 'emoji'}",
        f"--data.zeroshot_classnames={json.dumps(classnames)}",
        f"--data.data_card={out}/data_cards/demo.json",
        *plan.fit_overrides,
    ]


def training_runs(store: Path) -> dict[str, tuple[str, str]]:
    """run name -> (run id, run folder) of the demo's training runs."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{store}")
    experiment = client.get_experiment_by_name("demo")
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"]) if experiment else []
    found: dict[str, tuple[str, str]] = {}
    for run in runs:
        name = run.data.tags.get("mlflow.runName")
        if name in RUNS and name not in found:
            found[name] = (run.info.run_id, run.data.tags["run_folder"])
    return found


def _suite_config(plan: DemoPlan, paths: dict[str, Path]) -> Path:
    """The held-out zero-shot tasks as one benchmark suite (one process per model, one table)."""
    import yaml

    tasks = []
    for task in plan.eval_tasks:
        folder = paths["source"] / "eval" / task
        tasks.append({"name": task, "task": "zeroshot", "dataset": str(folder),
                      "classnames": str(folder / "classnames.txt"), "templates": str(folder / "templates.txt")})
    path = paths["eval"] / "heldout.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"output": str(paths["eval"]), "tasks": tasks}, sort_keys=False))
    return path


def _evaluate(console: Console, plan: DemoPlan, paths: dict[str, Path]) -> dict[str, dict[str, float]]:
    """Zero-shot on every held-out task for each run; top-1 is also logged to the training run in MLflow."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{paths['store']}")
    suite = _suite_config(plan, paths)
    results: dict[str, dict[str, float]] = {}
    for run_name, (run_id, folder) in training_runs(paths["store"]).items():
        checkpoint = Path(folder) / "checkpoints" / "last.ckpt"
        _run(console, f"held-out zero-shot: {run_name}", [
            _bin("clipmodule"), "eval", "suite", "-c", str(suite), "--model", str(checkpoint), "--name", run_name,
            f"--tracking.uri=sqlite:///{paths['store']}", "--tracking.experiment=demo-eval",
        ], paths["log"])
        record = json.loads((paths["eval"] / f"{run_name}.json").read_text())
        for task in plan.eval_tasks:
            top1 = record["metrics"][task]["top1"]
            results.setdefault(run_name, {})[task] = top1
            client.log_metric(run_id, f"heldout/{task}_top1", top1)
    return results


def stage_accounting(curation_dir: Path) -> list[tuple[str, int, int, int]]:
    """(stage, rows in, rows out, rows dropped or failed) per curation stage; in = out + dropped must hold."""
    match = json.loads((curation_dir / "matched.stats.json").read_text())
    balance = json.loads((curation_dir / "balanced.stats.json").read_text())
    download = json.loads((curation_dir / "shards.stats.json").read_text())
    return [
        ("match", match["rows_in"], match["rows_matched"], match["rows_dropped"]),
        ("balance", balance["rows_in"], balance["rows_out"], balance["rows_in"] - balance["rows_out"]),
        ("download", download["input_rows"], download["successes"], download["failed"]),
    ]


def capped_queries(curation_dir: Path, top: int = 5) -> list[tuple[str, int, int]]:
    """(query, rows matched, rows kept) of the queries the balancing cap cut most, largest cut first."""
    import pyarrow.parquet as pq

    counts = pq.read_table(curation_dir / "balanced.counts.parquet", columns=["term", "matched", "kept"]).to_pylist()
    cut = sorted((row for row in counts if row["kept"] < row["matched"]), key=lambda r: r["kept"] - r["matched"])
    return [(row["term"], row["matched"], row["kept"]) for row in cut[:top]]


def run_demo(plan: DemoPlan, console: Console | None = None) -> dict:
    """Runs the whole loop into `plan.out` (emptied first); returns the held-out zero-shot results and stats."""
    console = console or Console()
    start = time.time()
    shutil.rmtree(plan.out, ignore_errors=True)
    paths = _paths(plan.out)
    (paths["source"] / "web").mkdir(parents=True)
    with LoopbackServer(paths["source"] / "web") as server:
        console.print(Rule("[bold]embedded source"))
        with console.status("rendering emoji, digits and shapes; writing captions"):
            summary = build_demo_source(paths["source"], server.url(), plan.source)
        console.print(f"{summary['rows']} captioned images at {server.url()} ({summary['failing_urls']} failing "
                      f"on purpose); held-out eval images: {summary['eval_images']}")
        _run(console, "curation build", [_bin("curation"), "build", "-c", str(_dataset_config(plan.out, paths))],
             paths["log"])
    accounting = stage_accounting(paths["curation"])
    capped = capped_queries(paths["curation"])
    classnames = (paths["source"] / "eval" / "emoji" / "classnames.txt").read_text().split("\n")[:-1]
    for run_name, configs in RUNS.items():
        _run(console, f"clipmodule fit: {run_name}", _fit_command(run_name, configs, plan, paths, classnames),
             paths["log"])
    results = _evaluate(console, plan, paths)
    _run(console, "which concepts the data taught: demo-clip", [  # per-class recall vs training captions per class
        _bin("clipmodule"), "eval", "concepts", "--result", str(paths["eval"] / "demo-clip.json"), "--row",
        plan.eval_tasks[0], "--cards", str(paths["cards"]), "--tracking.uri", f"sqlite:///{paths['store']}",
        "--output", str(paths["eval"] / "concepts-demo-clip"),
    ], paths["log"])
    _run(console, "clipmodule compare", [
        _bin("clipmodule"), "compare", "--experiment", "demo", "--tracking.uri", f"sqlite:///{paths['store']}",
        "--out", str(paths["compare"]), "--params", "loss,global_batch_size",
        "--metrics", "train/loss,val/zeroshot_top1," + ",".join(f"heldout/{task}_top1" for task in plan.eval_tasks),
        "--plot", "train/loss,val/zeroshot_top1",
    ], paths["log"])
    _search_index(console, paths)
    worldwide = run_worldwide(console, plan, paths)
    report = {"results": results, "accounting": accounting, "capped": capped, "seconds": time.time() - start,
              "worldwide": worldwide,
              "chance": {task: 1 / len((paths["source"] / "eval" / task / "classnames.txt").read_text().splitlines())
                         for task in plan.eval_tasks}}
    (plan.out / "demo_summary.json").write_text(json.dumps(report, indent=2))
    _print_summary(console, plan, paths, report)
    return report


def _search_index(console: Console, paths: dict[str, Path]) -> None:
    """The downloaded shards embedded by the CLIP run's model and indexed, for `clipmodule serve`."""
    checkpoint = Path(training_runs(paths["store"])["demo-clip"][1]) / "checkpoints" / "last.ckpt"
    _run(console, "curation embed: the search index's embeddings", [
        _bin("curation"), "embed", "--model", str(checkpoint), "--shards", str(paths["curation"] / "shards"),
        "--out", str(paths["embeddings"])], paths["log"])
    _run(console, "curation index", [_bin("curation"), "index", "--embeddings", str(paths["embeddings"]),
                                     "--out", str(paths["index"])], paths["log"])


def run_worldwide(console: Console, plan: DemoPlan, paths: dict[str, Path]) -> dict:
    """The second language: MetaCLIP 2's worldwide curation of English and German alt-texts (a few seconds)."""
    out = plan.out / "worldwide"
    _run(console, "worldwide curation: English + German", [
        sys.executable, "-m", "demo.worldwide", "--out", str(out), "--captions", str(plan.worldwide_captions)],
        paths["log"])
    return json.loads((out / "summary.json").read_text())


def worldwide_line(summary: dict) -> str:
    """Rows per language through the per-language cap, one line."""
    rows = "; ".join(f"{lang} {r['captions']:,} → {r['matched']:,} → {r['kept']:,} (t {r['t']:,})"
                     for lang, r in summary["languages"].items())
    return f"worldwide curation, rows per language (captions → matched → kept by the cap): {rows}"


def serve_command(paths: dict[str, Path]) -> str:
    """The command that serves the demo's index, its curation decisions and its data card."""
    return (f"{_bin('clipmodule')} serve --index demo={paths['index']} --work demo={paths['curation']} "
            f"--cards {paths['cards']} --mlflow_ui http://127.0.0.1:5000 --port 8765")


def _print_summary(console: Console, plan: DemoPlan, paths: dict[str, Path], report: dict) -> None:
    console.print(Rule("[bold]summary"))
    for stage, rows_in, rows_out, dropped in report["accounting"]:
        mark = "ok" if rows_in == rows_out + dropped else "MISMATCH"
        console.print(f"{stage:<9} rows in {rows_in:>6} = out {rows_out:>6} + dropped/failed {dropped:>4}  [{mark}]")
    balance = next(row for row in report["accounting"] if row[0] == "balance")
    heads = ", ".join(f"{term!r} {matched:,}→{kept:,}" for term, matched, kept in report["capped"])
    console.print(f"the balancing cap removed {balance[3]:,} rows; the queries it cut most: {heads or 'none'}")
    console.print(worldwide_line(report["worldwide"]), soft_wrap=True)
    for run_name, tasks in report["results"].items():
        scores = ", ".join(f"{task} {top1:.1%} (chance {report['chance'][task]:.1%})" for task, top1 in tasks.items())
        console.print(f"held-out zero-shot top-1, {run_name}: {scores}")
    console.print(f"\ndata card:    {paths['cards'] / 'demo.md'}")
    console.print(f"MLflow store: {paths['store']}  (open it: mlflow ui --backend-store-uri sqlite:///{paths['store']})")
    console.print(f"checkpoints:  {paths['runs']}/<experiment>/<run>/checkpoints/")
    console.print(f"comparison:   {paths['compare'] / 'compare.md'} and the PNGs beside it")
    console.print(f"eval results: {paths['eval']}/*.json        total time {report['seconds'] / 60:.1f} min")
    console.print(f"\nsearch, browse and read the card in a browser (http://127.0.0.1:8765/):\n{serve_command(paths)}",
                  soft_wrap=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="folder for everything (emptied first)")
    parser.add_argument("--small", action="store_true", help="the shrunken version the tests run (a few minutes)")
    args = parser.parse_args(argv)
    plan = DemoPlan.small(args.out) if args.small else replace(DemoPlan(), out=args.out)
    run_demo(plan)
    return 0


if __name__ == "__main__":
    sys.exit(main())
