"""Benchmark suites: one model, many (task, dataset) pairs, one table, like CLIP_benchmark.

A suite is a YAML file (see experiments/benchmarks/):

    name: builtin
    model: checkpoints/last.safetensors      # or given on the command line: --model
    tasks:
      - {task: zeroshot, dataset: "builtin:digits", templates: experiments/benchmarks/digits_templates.txt}
      - {task: retrieval, dataset: "builtin:skimage"}
      - {task: linear-probe, train: "builtin:digits:train", test: "builtin:digits:test"}

`templates: openai` or `templates: clip_benchmark` take the dataset's class names and templates from the
shipped data (`eval.names`) by the dataset's name. `clipmodule eval suite -c suite.yaml`:

- checks every row's options first (an unknown task or a missing template file stops it before any work);
- says which datasets cannot be opened (missing or incomplete on disk), one line each, and runs the rest;
- skips a task already finished for the same model, data and inputs (the class names and templates it prompts
  with as resolved from files or shipped data, `TaskKind.prompts`, else its files by content,
  `identity.spec_inputs`; the model's weights, config and tokenizer, `results.model_identity`): each
  record is written atomically to `<output>/<name>.tasks/<key>.json` as soon as it ends (`results.task_key`),
  so a suite that crashed resumes where it stopped;
- computes a dataset's image features once for all the tasks reading it (`tasks.FeatureCache`);
- writes `<output>/<name>.md` and `.json` with DataComp-style grouped averages (`eval.groups`) and logs one
  MLflow run whose metrics are `<row name>/<metric>` and `avg/<group>`.

The single commands (`clipmodule eval zeroshot`…) run one row through the same `run_task`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from clipformats.webdataset import is_shard_spec
from clipmodule.errors import ClipModuleError, one_line
from clipmodule.eval.groups import grouped_averages, main_metric, markdown_lines
from clipmodule.eval.identity import data_identity, spec_inputs
from clipmodule.eval.languages import expand_languages, language_lines
from clipmodule.eval.metrics import DETAIL
from clipmodule.eval.options import LinearProbeOptions, LoaderOptions, SuiteConfig, TaskSpec
from clipmodule.eval.prompts import PROMPTS
from clipmodule.eval.readers.base import MissingData
from clipmodule.eval.results import make_record, read_task_record, task_key, task_record_path, write_json
from clipmodule.eval.tasks import FeatureCache, TaskContext, kind_of

# Table columns, in order; a row leaves blank what its task does not measure.
TABLE_COLUMNS = {"top1": "top-1", "top5": "top-5", "mean_per_class_recall": "mean recall",
                 "mean_average_precision": "mAP",
                 **{f"{direction}_R@{k}": f"{arrow} R@{k}" for direction, arrow in
                    (("image_to_text", "I→T"), ("text_to_image", "T→I")) for k in (1, 5, 10)},
                 # DataComp's distribution-shift, fairness and association metrics (`eval.subgroups`,
                 # `tasks.attributes`, `tasks.association`): a column only when a row measures it
                 "macro_f1": "macro F1", "worst_region_top1": "worst region", "worst_income_top5": "worst income top-5",
                 "jaccard_10_12": "Jaccard 10-12", "race_top1_gap": "race gap", "gender_top1_gap": "gender gap",
                 "age_top1_gap": "age gap", "mIoU": "mIoU", "aAcc": "pixel acc",
                 "text_acc": "text", "image_acc": "image", "acc": "group", "macro_acc": "macro acc"}


def preflight(spec: TaskSpec) -> None:
    """The checks that need no model or images: the task, its data keys, class-name and template files."""
    kind_of(spec).preflight(spec)


def open_data(spec: TaskSpec, preprocess: Callable) -> tuple:
    """The row's datasets (one, or a probe's train and test), opened: a missing copy fails here, before any
    model work."""
    return kind_of(spec).open(spec, preprocess)


def run_task(model, preprocess: Callable, spec: TaskSpec, loader: LoaderOptions, probe: LinearProbeOptions,
             progress=None, data: tuple | None = None, cache: FeatureCache | None = None) -> dict[str, Any]:
    """The metrics of one task (its kind's run: `clipmodule.eval.tasks`), on `data` from `open_data` if given."""
    kind = kind_of(spec)
    data = data or kind.open(spec, preprocess)
    return kind.run(model, spec, data, TaskContext(loader, probe, progress, cache))


@dataclass
class SuiteRun:
    """What a suite run produced: its rows in suite order, the rows skipped because their data is not on disk
    (`missing`) or is there but was refused, damaged or inconsistent (`failed`), each {row name: reason},
    the rows reused from an earlier run on the same model and data, and those run again because their data
    changed since (`changed`)."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    missing: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    reused: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    image_passes: int = 0


def _absent(spec: TaskSpec, error: ClipModuleError) -> bool:
    """Whether a row's data could not be opened because it is not there (rather than refused as damaged):
    a benchmark copy whose expected files are absent, or a folder / CSV path that does not exist."""
    if isinstance(error, MissingData):
        return True
    names = kind_of(spec).data_names(spec)
    return spec.root is None and any(not name.startswith("builtin:") and not is_shard_spec(name)
                                     and not Path(name).exists() for name in names if name)


def _open_or_file(run: SuiteRun, spec: TaskSpec, preprocess: Callable, say: Callable[[str], None]) -> tuple | None:
    """The row's data, or None after filing the row under missing or failed with its one-line reason."""
    try:
        return open_data(spec, preprocess)
    except ClipModuleError as error:
        bucket, word = (run.missing, "missing") if _absent(spec, error) else (run.failed, "failed")
        bucket[spec.label()] = one_line(error)
        say(f"{word}: {spec.label()}: {bucket[spec.label()]}")
        return None


def _check_rows(config: SuiteConfig) -> None:
    if not config.tasks:
        raise ClipModuleError(f"suite {config.name!r} lists no tasks")
    labels = [spec.label() for spec in config.tasks]
    duplicated = sorted({label for label in labels if labels.count(label) > 1})
    if duplicated:
        raise ClipModuleError(f"suite {config.name!r}: task name {duplicated[0]!r} appears twice; give rows a name")
    for spec in config.tasks:
        preflight(spec)


def _row(spec: TaskSpec, metrics: dict[str, Any], data: str | None = None) -> dict[str, Any]:
    metrics = dict(metrics)
    prompted = metrics.pop(PROMPTS, {})  # a zero-shot row's class names and templates, beside its metrics
    detail = metrics.pop(DETAIL, None)  # per-class (and per-group) results, beside them too
    return {"name": spec.label(), "task": spec.task, "dataset": " → ".join(kind_of(spec).data_names(spec)),
            **prompted, "metrics": metrics, **({DETAIL: detail} if detail else {}), "spec": asdict(spec),
            **({"data": data} if data else {})}


def _register(cache: FeatureCache, spec: TaskSpec, data: tuple) -> None:
    """Datasets named alike (spec string, class names) hold the same images in the same order: one key."""
    for name, dataset in zip(kind_of(spec).data_names(spec), data):
        cache.register(dataset, (name, spec.classnames, spec.root, getattr(dataset, "split", None)))


def _key(model_id: str, spec: TaskSpec, config: SuiteConfig, files: dict[str, str],
         prompts: dict[str, Any] | None) -> str:
    """A row's resume key: its model, spec and run settings, and the class names and templates it prompts with
    (resolved: from files or shipped data, `TaskKind.prompts`) or, for a kind without prompts, its files' content."""
    used = files if prompts is None else {
        "prompts": hashlib.sha256(json.dumps(prompts, sort_keys=True, ensure_ascii=False).encode()).hexdigest()}
    return task_key(model_id, asdict(spec), kind_of(spec).run_settings(config), used)


def run_suite(model, preprocess: Callable, config: SuiteConfig, progress=None, *, model_id: str = "",
              store: str | Path | None = None, say: Callable[[str], None] = print) -> SuiteRun:
    """Every row of the suite (see the module docstring); `model_id` is the model's fingerprint and `store`
    the folder of per-task records (None: no resume)."""
    config = replace(config, tasks=expand_languages(config.tasks))  # a row per language it lists
    _check_rows(config)
    run, cache, pending = SuiteRun(), FeatureCache(), {}
    inputs: dict[str, dict[str, str]] = {}  # template / class-name files, by content, read beside the data
    keys: dict[str, str] = {}
    identities: dict[str, str] = {}
    stored: dict[str, dict[str, Any]] = {}  # the metrics of rows reused from their records
    for spec in config.tasks:
        label = spec.label()
        if (data := _open_or_file(run, spec, preprocess, say)) is None:
            continue
        if store is not None:  # a stored result counts only for the data it was computed on
            identities[label], inputs[label] = data_identity(data), spec_inputs(spec)
            keys[label] = _key(model_id, spec, config, inputs[label], kind_of(spec).prompts(spec, data))
            if (record := read_task_record(store, keys[label])) is not None:
                if record.get("data") == identities[label]:
                    run.reused.append(label)
                    stored[label] = record["metrics"]
                    continue
                run.changed.append(label)
        pending[label] = data
        kind_of(spec).check_data(spec, pending[label])  # e.g. names that do not fit the copy: now, not hours later
        _register(cache, spec, pending[label])
    if run.reused:
        say(f"finished before (same model and data), not run again: {', '.join(run.reused)}")
    if run.changed:
        say(f"data changed since the stored result (or it names none), run again: {', '.join(run.changed)}")
    for spec in config.tasks:
        label = spec.label()
        if label in pending:
            metrics = run_task(model, preprocess, spec, config.loader, config.probe, progress, pending.pop(label),
                               cache)
            if store is not None:  # keyed on the prompts the run used (a file may have changed since it opened)
                key = _key(model_id, spec, config, inputs[label], metrics.get(PROMPTS))
                record = make_record(spec.task, model_id, metrics, key=key, row=_row(spec, {}),
                                     data=identities[label], inputs=inputs[label])
                write_json(task_record_path(store, key), record)
            run.rows.append(_row(spec, metrics, identities.get(label)))
        elif label in run.reused:
            run.rows.append(_row(spec, stored[label], identities[label]))
    run.image_passes = cache.passes
    return run


def _cell(value: Any) -> str:
    return f"{100 * value:.2f}" if isinstance(value, float) else ""


def table_cells(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """(headers, one list of cells per row): metrics in percent, blank where a task does not measure one."""
    columns = [column for column in TABLE_COLUMNS if any(column in row["metrics"] for row in rows)]
    headers = ["task", "kind", "data", *(TABLE_COLUMNS[column] for column in columns)]
    cells = [[row["name"], row["task"], row["dataset"], *(_cell(row["metrics"].get(column)) for column in columns)]
             for row in rows]
    return headers, cells


def markdown_table(rows: list[dict[str, Any]], title: str, missing: dict[str, str] | None = None,
                   failed: dict[str, str] | None = None) -> str:
    headers, cells = table_cells(rows)
    lines = [f"# {title}", "", "Metrics in percent (R@k: recall at k, I→T image to text).", "",
             "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    lines += markdown_lines(grouped_averages(rows))
    lines += language_lines(rows, main_metric)
    damaged = [row for row in rows if row["metrics"].get("corrupt_shards")]
    if damaged:  # the numbers above were measured on less data than the task names
        lines += ["", "Damaged data (read up to the damage, as training does):"]
        lines += [f"- {row['name']}: {row['metrics']['corrupt_shards']} corrupt shard(s), "
                  f"{row['metrics'].get('skipped_samples', 0)} incomplete sample(s) skipped" for row in damaged]
    if missing:  # rows not run: the averages above are over fewer tasks than the suite lists
        lines += ["", "Not run, data missing on disk:"] + [f"- {name}: {reason}" for name, reason in missing.items()]
    if failed:  # present on disk but refused: a damaged or inconsistent copy, to fetch again or fix
        lines += ["", "Not run, data refused (damaged or inconsistent copy):"]
        lines += [f"- {name}: {reason}" for name, reason in failed.items()]
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
    groups = grouped_averages(rows)
    if groups:
        table.add_section()
        for group in groups:
            count = str(group["count"]) + ("" if group["of"] is None else f"/{group['of']}")
            table.add_row(f"avg {group['group']} ({count})", _cell(group["score"]), *[""] * (len(headers) - 4))
    Console().print(table)
