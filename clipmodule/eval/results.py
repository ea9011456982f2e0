"""Where evaluation results go: a JSON record (written atomically) and a rich table; the MLflow run is
`clipmodule.tracking.mlflow`'s."""

from __future__ import annotations

import datetime
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from clipformats import files
from clipmodule.errors import ClipModuleError


def check_output_file(path: str | Path, option: str = "--output") -> Path:
    """`path` if a results file can be written there; checked before an evaluation that may take hours, so
    that a folder in the way or a parent that is a file fails now instead of losing the results afterwards."""
    path = Path(path)
    if path.is_dir():
        raise ClipModuleError(f"{path}: {option} is a folder; give a file name")
    _check_parents(path, option)
    return path


def check_output_dir(path: str | Path, names: list[str], option: str = "--output") -> Path:
    """`path` if the folder can hold the files `names`: not a file, under a writable folder, no folder named
    like one of the files."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ClipModuleError(f"{path}: {option} is a file; give a folder")
    for name in names:
        if (path / name).is_dir():
            raise ClipModuleError(f"{path / name}: a folder is in the way of the results file")
    _check_parents(path / "_", option)
    return path


def _check_parents(path: Path, option: str) -> None:
    for parent in path.parents:  # the nearest existing ancestor decides: the rest will be created in it
        if parent.exists():
            if not parent.is_dir():
                raise ClipModuleError(f"{path}: cannot write the {option} file: {parent} is a file, not a folder")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise ClipModuleError(f"{path}: cannot write the {option} file: {parent} is not writable")
            return


def write_json(path: str | Path, record: dict[str, Any]) -> Path:
    """Writes `record` to `path` atomically: a reader sees the old file or the whole new one."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)  # eval_results/ need not exist yet
    return files.write_json(path, record)


def write_text(path: str | Path, text: str) -> Path:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return files.write_text(path, text)


RECORD_FORMAT = 3  # bump when a metric's definition changes: older per-task records are then not reused
# 2: zero-shot records state their class names and templates (OpenAI's EuroSAT names were scrambled before)
# 3: classification records keep per-class results (recall, count; AP of a multi-label set) and DataComp's
#    worst-group metrics


def model_fingerprint(model: str) -> str:
    """What identifies the model's weights: the sha256 of a checkpoint file, of a folder's files (a hub
    folder) in name order; a model name is fingerprinted by the local weights `load` reads for it (the name
    itself only when it names none: `load` then fails)."""
    path = Path(model)
    if not path.exists():
        from clipmodule.api import local_weights

        try:
            path = local_weights(model, "")
        except ClipModuleError:
            return f"name:{model}"
    if path.is_file():
        return f"sha256:{files.sha256_file(path)}"
    if path.is_dir():
        digests = [f"{item.relative_to(path)}:{files.sha256_file(item)}" for item in sorted(path.rglob("*"))
                   if item.is_file()]
        return "sha256-folder:" + hashlib.sha256("\n".join(digests).encode()).hexdigest()
    return f"name:{model}"


TOKENIZER_FILES = ("tokenizer*.json", "special_tokens_map.json", "*.model", "vocab*", "merges*")
"""The files of a tokenizer folder that decide the ids (`hf_tokenizer`; sentencepiece models)."""


def model_identity(fingerprint: str, network: Any) -> str:
    """What a stored result's model is: the weights' `fingerprint` and, beside it, what loading added to them: the
    architecture config and preprocessing read from files beside the weights, and the tokenizer files the text is
    encoded with (`--tokenizer_folder`, a tokenizer.json beside the weights) hashed by content."""
    from clipmodule.api import tokenizer_spec

    folder = tokenizer_spec(network).folder
    tokenizer = sorted(f"{item.name}:{files.sha256_file(item)}" for pattern in TOKENIZER_FILES
                       for item in (Path(folder).glob(pattern) if folder else []) if item.is_file())
    setup = {"config": getattr(network, "config", None), "preprocess": getattr(network, "preprocess_cfg", None),
             "tokenizer": tokenizer}
    digest = hashlib.sha256(json.dumps(setup, sort_keys=True, default=repr).encode()).hexdigest()[:16]
    return f"{fingerprint}+setup:{digest}"


def task_key(model: str, spec: dict[str, Any], options: dict[str, Any], inputs: dict[str, str] | None = None) -> str:
    """The key of one finished task: the model's identity, the task spec (its data, class names, templates,
    language, few-shot k; not its row name), the options that change its result (the probe's, its seed included)
    and the content of the files the spec names (`inputs`: {field: sha256}, `identity.spec_inputs`), hashed."""
    identity = {"format": RECORD_FORMAT, "model": model, "spec": {k: v for k, v in spec.items() if k != "name"},
                "options": options, **({"inputs": inputs} if inputs else {})}
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:32]


def task_record_path(folder: str | Path, key: str) -> Path:
    return Path(folder) / f"{key}.json"


def read_task_record(folder: str | Path, key: str) -> dict[str, Any] | None:
    """A finished task's record, or None when there is none (or it is unreadable: the task is run again)."""
    path = task_record_path(folder, key)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("key") == key and "metrics" in record else None


def make_record(task: str, model: str, metrics: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {
        "task": task,
        "model": model,
        **fields,
        "metrics": metrics,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def print_metrics(title: str, metrics: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("metric", "value", title=title)
    for key, value in metrics.items():
        if isinstance(value, (dict, list)):  # detail (a sweep, the prompts) stays in the JSON record
            continue
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    Console().print(table)


RECORD_ARTIFACT = "eval_record.json"
"""The MLflow artifact holding an evaluation run's JSON record (class names and templates included)."""


def save_and_track(output: str | Path, record: dict[str, Any], tracking: Any, run_name: str,
                   params: dict[str, Any], metrics: dict[str, float], with_record: bool = False) -> dict[str, Any]:
    """Write `record` to `output`, log one MLflow run that names the file (and, `with_record`, carries the whole
    record as an artifact), then write the record again with the run's id. The first write comes before MLflow:
    an unreachable tracking server must not lose the results."""
    from clipmodule.tracking.mlflow import log_to_mlflow

    write_json(output, record)
    artifacts = {RECORD_ARTIFACT: record} if with_record else None
    record["mlflow_run_id"] = log_to_mlflow(tracking, run_name, params, metrics,
                                            {"results_json": str(Path(output).resolve())}, artifacts)
    write_json(output, record)
    return record
