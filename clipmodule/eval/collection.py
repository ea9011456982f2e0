"""Several models through one suite (CLIP_benchmark's model collections): `models:` in the suite YAML or `--models`
names model names, checkpoint files, hub folders or globs of checkpoints (`ckpts/epoch_*.safetensors`, expanded in
sorted order). Each model runs the suite's rows as a single-model suite does, its per-task records under the same
`<output>/<name>.tasks/` (keyed by the model's fingerprint, so a collection resumes per (model, task)); then

    <output>/<name>.md    one table: a row per task, a column per model, DataComp's main metric of each (percent),
                          then the grouped averages of each model
    <output>/<name>.json  every model's rows, groups, missing/failed rows and fingerprint
    <output>/<name>.png   the scores as grouped bars: per task (and group average), one bar per model

The files are written before anything is logged to MLflow (one run per model), as a single suite does: an
unreachable tracking server must not lose hours of results. The JSON is written again with the runs' ids.
"""

from __future__ import annotations

import glob
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from clipmodule.errors import ClipModuleError
from clipmodule.eval.groups import main_metric

GLOB_CHARACTERS = ("*", "?", "[")


def expand_models(entries: list[str]) -> list[str]:
    """The models of `entries` in order, each glob replaced by its sorted matches; a glob matching nothing and a
    model listed twice are one line each."""
    models: list[str] = []
    for entry in entries:
        if any(character in entry for character in GLOB_CHARACTERS):
            matches = sorted(glob.glob(entry))
            if not matches:
                raise ClipModuleError(f"models: {entry!r} matches no file")
            models.extend(matches)
        else:
            models.append(entry)
    twice = sorted({model for model in models if models.count(model) > 1})
    if twice:
        raise ClipModuleError(f"models: {twice[0]!r} is listed twice")
    return models


def model_labels(models: list[str]) -> list[str]:
    """Short column labels: each entry's last path part, or as many last parts as tell it from the others
    (`<run>/checkpoints/last.ckpt`)."""
    parts = [Path(model.rstrip("/")).parts or (model,) for model in models]
    labels = []
    for own in parts:
        for depth in range(1, len(own) + 1):
            label = "/".join(own[-depth:])
            if sum("/".join(other[-depth:]) == label for other in parts) == 1:
                break
        labels.append(label)
    return labels


def _percent(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.2f}"


def score_grid(results: list[dict[str, Any]]) -> tuple[list[str], list[str], list[list[float | None]]]:
    """(row names, metric names, scores[row][model]): DataComp's main metric of every task any model ran, then the
    grouped averages (`avg <group>`); None where a model has no score."""
    names: list[str] = []
    metric_of: dict[str, str] = {}
    for result in results:
        for row in result["rows"]:
            ranked = main_metric(row)
            if ranked is not None and row["name"] not in metric_of:
                names.append(row["name"])
                metric_of[row["name"]] = ranked[0]
    groups = [group["group"] for result in results for group in result["groups"]]
    group_names = list(dict.fromkeys(groups))
    grid = []
    for name in names:
        cells = []
        for result in results:
            row = next((row for row in result["rows"] if row["name"] == name), None)
            ranked = main_metric(row) if row is not None else None
            cells.append(ranked[1] if ranked is not None else None)
        grid.append(cells)
    for group in group_names:
        grid.append([next((entry["score"] for entry in result["groups"] if entry["group"] == group), None)
                     for result in results])
    return names + [f"avg {group}" for group in group_names], [metric_of[name] for name in names], grid


def comparison_markdown(results: list[dict[str, Any]], title: str) -> str:
    labels = model_labels([result["model"] for result in results])
    rows, metrics, grid = score_grid(results)
    lines = [f"# {title}", "", "DataComp's main metric of each task, in percent; a blank: the model has no result.",
             "", "| task | metric | " + " | ".join(labels) + " |", "|---|---|" + "---|" * len(labels)]
    for index, (name, cells) in enumerate(zip(rows, grid)):
        metric = metrics[index] if index < len(metrics) else "average"
        lines.append(f"| {name} | {metric} | " + " | ".join(_percent(value) for value in cells) + " |")
    lines += ["", "Models:"] + [f"- {label}: {result['model']} ({result['model_sha']})"
                                for label, result in zip(labels, results)]
    for label, result in zip(labels, results):
        for kind in ("missing", "failed"):
            lines += [f"- {label}: not run ({kind}): {name}: {reason}" for name, reason in result[kind].items()]
    return "\n".join(lines) + "\n"


def plot_scores(results: list[dict[str, Any]], path: str | Path, title: str) -> Path:
    """Grouped bars of `score_grid` (percent) saved as a PNG at `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = model_labels([result["model"] for result in results])
    rows, _, grid = score_grid(results)
    width = 0.8 / max(1, len(labels))
    figure, axes = plt.subplots(figsize=(max(6.0, 0.6 * len(rows) * max(1, len(labels)) ** 0.5 + 2), 4.5))
    for number, label in enumerate(labels):
        heights = [100 * (cells[number] or 0.0) for cells in grid]
        axes.bar([index + number * width for index in range(len(rows))], heights, width, label=label)
    axes.set_xticks([index + 0.4 - width / 2 for index in range(len(rows))], rows, rotation=60, ha="right",
                    fontsize=8)
    axes.set_ylabel("score (%)")
    axes.set_title(title)
    axes.legend(fontsize=8)
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return Path(path)


def _model_result(command: Any, model: str, load_model: Callable, progress: Callable, output: Path) -> dict[str, Any]:
    """One model's suite run (`suite.run_suite`, resuming from the shared per-task records) and its metrics."""
    from clipmodule.eval.groups import group_metrics, grouped_averages
    from clipmodule.eval.results import model_fingerprint, model_identity
    from clipmodule.eval.suite import run_suite
    from clipmodule.tracking.mlflow import numeric_metrics

    fingerprint = model_fingerprint(model)
    network, preprocess = load_model(model)
    identity = model_identity(fingerprint, network)
    with progress() as bar:
        run = run_suite(network, preprocess, command, bar, model_id=identity,
                        store=output / f"{command.name}.tasks", say=lambda line: print(line, file=sys.stderr))
    groups = grouped_averages(run.rows)
    metrics = group_metrics(groups)
    for row in run.rows:
        metrics.update(numeric_metrics(row["metrics"], prefix=f"{row['name']}/"))
    return {"model": model, "model_sha": fingerprint, "model_id": identity, "rows": run.rows, "groups": groups,
            "missing": run.missing, "failed": run.failed, "reused": run.reused, "metrics": metrics}


def _write_results(command: Any, output: Path, models: list[str], results: list[dict[str, Any]]) -> dict[str, Any]:
    """The table, plot and JSON of the models finished so far (`pending`: those still to run); the record."""
    from clipmodule.eval.results import make_record, write_json, write_text

    done = len(results)
    title = f"{command.name}: {len(models)} models" if done == len(models) else \
        f"{command.name}: {done} of {len(models)} models"
    write_text(output / f"{command.name}.md", comparison_markdown(results, title))
    plot_scores(results, output / f"{command.name}.png", title)
    record = make_record("suite", ", ".join(models), {}, suite=command.name, models=results,
                         **({"pending": models[done:]} if done < len(models) else {}))
    write_json(output / f"{command.name}.json", record)
    return record


def run_collection(command: Any, load_model: Callable, progress: Callable) -> dict[str, Any]:
    """Every model of `command.models` through the suite `command` (a `cli.SuiteCommand`); `load_model(model)` gives
    (network, preprocess), `progress()` a progress context. Writes the table, plot and JSON after each model (a
    failure on a later model keeps the earlier ones' results), then one MLflow run per model, then the JSON again
    with the runs' ids; returns the record."""
    from clipmodule.eval.results import check_output_dir, write_json
    from clipmodule.tracking.mlflow import log_to_mlflow

    models = expand_models(list(command.models))
    if not models:
        raise ClipModuleError(f"suite {command.name!r}: `models` lists no model")
    output = check_output_dir(command.output, [f"{command.name}{suffix}" for suffix in (".md", ".json", ".png")])
    results: list[dict[str, Any]] = []
    metrics = []
    for model in models:
        results.append(_model_result(command, model, load_model, progress, output))
        metrics.append(results[-1].pop("metrics"))
        record = _write_results(command, output, models, results)
    path = output / f"{command.name}.json"
    for result, values in zip(results, metrics):
        result["mlflow_run_id"] = log_to_mlflow(
            command.tracking, f"suite:{command.name}:{Path(result['model']).name or result['model']}",
            {"task": "suite", "suite": command.name, "model": result["model"], "model_sha": result["model_sha"]},
            values, {"results_json": str(Path(path).resolve())})
    write_json(path, record)
    print(f"results: {output / (command.name + '.md')}, .json, .png")
    return record
