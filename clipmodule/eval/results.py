"""Where evaluation results go: a JSON file (temp file + rename) and an MLflow run, plus a rich table.

MLflow is imported only when a run is logged, and talked to through an `MlflowClient` bound to the URI
given, so nothing process-wide (the global tracking URI, an active run) is touched.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clipmodule.errors import ClipModuleError

DEFAULT_TRACKING_URI = "sqlite:///mlruns.db"


@dataclass
class TrackingOptions:
    """MLflow tracking of evaluation results."""

    uri: str | None = DEFAULT_TRACKING_URI
    """Tracking URI: an sqlite file (`sqlite:///path/mlruns.db`) or a server; null/`none` disables MLflow."""
    experiment: str = "clipmodule-eval"
    """MLflow experiment the run is logged under."""
    run_name: str | None = None
    """Run name; default: the task and dataset."""

    @property
    def enabled(self) -> bool:
        return self.uri not in (None, "", "none")


def write_json(path: str | Path, record: dict[str, Any]) -> Path:
    """Writes `record` to `path` atomically: a reader sees the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(json.dumps(record, indent=2, sort_keys=False) + "\n")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_text(path: str | Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def make_record(task: str, model: str, metrics: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {
        "task": task,
        "model": model,
        **fields,
        "metrics": metrics,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def mlflow_key(key: str) -> str:
    """MLflow metric names allow letters, digits and `_-. :/`; `R@5` becomes `R5`."""
    return re.sub(r"[^\w\-. :/]", "", key)


def numeric_metrics(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The finite numbers of a (nested) metrics dict, keys joined with "/" and made MLflow-safe."""
    out = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            continue  # sweeps and other detail stay in the JSON file
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[mlflow_key(name)] = float(value)
    return out


def log_to_mlflow(options: TrackingOptions, run_name: str, params: dict[str, Any], metrics: dict[str, float],
                  tags: dict[str, str] | None = None) -> str | None:
    """One finished MLflow run with `params` and `metrics`; returns its id (None when tracking is off)."""
    if not options.enabled:
        return None
    if str(options.uri).startswith(("http://", "https://")):
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # an unreachable server fails fast
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        client = MlflowClient(tracking_uri=options.uri)
        experiment = client.get_experiment_by_name(options.experiment)
        experiment_id = experiment.experiment_id if experiment else client.create_experiment(options.experiment)
        run = client.create_run(experiment_id, run_name=options.run_name or run_name)
        now = int(datetime.datetime.now().timestamp() * 1000)
        client.log_batch(
            run.info.run_id,
            metrics=[Metric(key, value, now, 0) for key, value in metrics.items()],
            params=[Param(key, str(value)[:6000]) for key, value in params.items()],
            tags=[RunTag(key, value) for key, value in (tags or {}).items()],
        )
        client.set_terminated(run.info.run_id, "FINISHED")
    except MlflowException as error:
        raise ClipModuleError(f"{options.uri}: MLflow logging failed ({str(error).splitlines()[0][:200]})") from None
    return run.info.run_id


def print_metrics(title: str, metrics: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("metric", "value", title=title)
    for key, value in metrics.items():
        if isinstance(value, dict):
            continue
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    Console().print(table)
