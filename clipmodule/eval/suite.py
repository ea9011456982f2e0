"""Benchmark suites: one model, many (task, dataset) pairs, one table, like CLIP_benchmark.

A suite is a YAML file (see experiments/benchmarks/):

    name: builtin
    model: checkpoints/last.safetensors      # or given on the command line: --model
    tasks:
      - {task: zeroshot, dataset: "builtin:digits", templates: experiments/benchmarks/digits_templates.txt}
      - {task: retrieval, dataset: "builtin:skimage"}
      - {task: linear-probe, train: "builtin:digits:train", test: "builtin:digits:test"}

`clipmodule eval suite -c suite.yaml` evaluates every row, writes `<output>/<name>.md` and `.json`, and logs
one MLflow run whose metrics are `<row name>/<metric>`. The single commands (`clipmodule eval zeroshot`…)
run one row through the same `run_task`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from clipmodule.errors import ClipModuleError
from clipmodule.eval import tasks as evaluate
from clipmodule.eval.datasets import read_classnames, read_templates
from clipmodule.eval.options import LinearProbeOptions, LoaderOptions, SuiteConfig, TaskSpec
from clipmodule.eval.sources import open_classification, open_retrieval

# Table columns, in order; a row leaves blank what its task does not measure.
TABLE_COLUMNS = {"top1": "top-1", "top5": "top-5", "mean_per_class_recall": "mean recall",
                 **{f"{direction}_R@{k}": f"{arrow} R@{k}" for direction, arrow in
                    (("image_to_text", "I→T"), ("text_to_image", "T→I")) for k in (1, 5, 10)}}


def preflight(spec: TaskSpec) -> None:
    """The checks that need no model or images: the task, its data keys, class-name and template files."""
    spec.check()
    _classnames(spec)
    if spec.task == "zeroshot":
        read_templates(spec.templates)


def _classnames(spec: TaskSpec) -> list[str] | None:
    return read_classnames(spec.classnames) if spec.classnames else None


def run_task(model, preprocess: Callable, spec: TaskSpec, loader: LoaderOptions, probe: LinearProbeOptions,
             progress=None) -> dict[str, Any]:
    """The metrics of one task (see `clipmodule.eval.tasks`)."""
    spec.check()
    if spec.task == "zeroshot":
        templates = read_templates(spec.templates)
        dataset = open_classification(spec.dataset, preprocess, _classnames(spec))
        return evaluate.zeroshot_classification(model, dataset, dataset.classnames, templates, loader, progress,
                                                where=spec.templates)
    if spec.task == "retrieval":
        dataset = open_retrieval(spec.dataset, preprocess)
        return evaluate.retrieval(model, dataset, spec.recall_at, loader, progress)
    train = open_classification(spec.train, preprocess, _classnames(spec))
    test = open_classification(spec.test, preprocess, list(train.classnames))
    return evaluate.linear_probe(model, train, test, len(train.classnames), probe, loader, progress)


def run_suite(model, preprocess: Callable, config: SuiteConfig, progress=None) -> list[dict[str, Any]]:
    """One row per task: {name, task, dataset, metrics}. A row with an unknown task, missing data, or a
    missing class-name or template file fails before any evaluation starts."""
    if not config.tasks:
        raise ClipModuleError(f"suite {config.name!r} lists no tasks")
    labels = [spec.label() for spec in config.tasks]
    duplicated = sorted({label for label in labels if labels.count(label) > 1})
    if duplicated:
        raise ClipModuleError(f"suite {config.name!r}: task name {duplicated[0]!r} appears twice; give rows a name")
    for spec in config.tasks:
        preflight(spec)
    rows = []
    for spec in config.tasks:
        metrics = run_task(model, preprocess, spec, config.loader, config.probe, progress)
        rows.append({"name": spec.label(), "task": spec.task, "dataset": spec.dataset or f"{spec.train} → {spec.test}",
                     "metrics": metrics, "spec": asdict(spec)})
    return rows


def _cell(value: Any) -> str:
    return f"{100 * value:.2f}" if isinstance(value, float) else ""


def table_cells(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """(headers, one list of cells per row): metrics in percent, blank where a task does not measure one."""
    columns = [column for column in TABLE_COLUMNS if any(column in row["metrics"] for row in rows)]
    headers = ["task", "kind", "data", *(TABLE_COLUMNS[column] for column in columns)]
    cells = [[row["name"], row["task"], row["dataset"], *(_cell(row["metrics"].get(column)) for column in columns)]
             for row in rows]
    return headers, cells


def markdown_table(rows: list[dict[str, Any]], title: str) -> str:
    headers, cells = table_cells(rows)
    lines = [f"# {title}", "", "Metrics in percent (R@k: recall at k, I→T image to text).", "",
             "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    damaged = [row for row in rows if row["metrics"].get("corrupt_shards")]
    if damaged:  # the numbers above were measured on less data than the task names
        lines += ["", "Damaged data (read up to the damage, as training does):"]
        lines += [f"- {row['name']}: {row['metrics']['corrupt_shards']} corrupt shard(s), "
                  f"{row['metrics'].get('skipped_samples', 0)} incomplete sample(s) skipped" for row in damaged]
    return "\n".join(lines) + "\n"


def print_table(rows: list[dict[str, Any]], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    headers, cells = table_cells(rows)
    table = Table(title=title, caption="metrics in percent; the markdown file also names each task's data")
    table.add_column(headers[0], no_wrap=True)
    for header in headers[3:]:  # kind and data stay in the markdown file: the console is narrow
        table.add_column(header, justify="right")
    for row in cells:
        table.add_row(row[0], *row[3:])
    Console().print(table)
