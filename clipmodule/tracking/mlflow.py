"""Every MLflow touch: the default store, the tags every run carries, the client, metric keys, logging.

MLflow is imported inside the functions that talk to it, so the CLIs answer `--help` (and the core imports)
without it. The client is bound to the URI given: nothing process-wide (the global tracking URI, an active
run) is touched.
"""

from __future__ import annotations

import contextlib
import datetime
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clipmodule.errors import ClipModuleError, one_line

DEFAULT_TRACKING_URI = "sqlite:///mlruns.db"
SQLITE = "sqlite:///"
"""The embedded store: an sqlite file in the working directory; a server URI works the same."""
DATA_CARD_TAG = "data_card_hash"
"""Tag naming the data card of a run's training data (`clipmodule compare` shows it)."""


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


# Schemes of the stores MLflow's tracking client reads; anything else fails deep inside MLflow.
STORE_SCHEMES = ("sqlite", "http", "https", "file", "postgresql", "mysql", "mssql", "databricks")
_SQLITE_HEADER = b"SQLite format 3\x00"


def check_store(uri: str, must_exist: bool = True) -> None:
    """One line now, without contacting anything, for a URI that names no MLflow store: an unknown scheme,
    or an sqlite path that is a folder, is not an sqlite file, or (with `must_exist`, as when reading runs)
    does not exist, where MLflow would silently create an empty store."""
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
    if "://" in uri and (scheme.split("+", 1)[0] not in STORE_SCHEMES):
        raise ClipModuleError(f"{uri}: not a tracking URI MLflow reads (sqlite:///path/mlruns.db, "
                              f"http(s)://host:port, or one of the schemes {', '.join(STORE_SCHEMES)})")
    if scheme != "sqlite":
        return
    path = sqlite_path(uri)
    if not path:
        raise ClipModuleError(f"{uri}: an sqlite store is sqlite:///relative/path.db or sqlite:////absolute/path.db")
    if os.path.isdir(path):
        raise ClipModuleError(f"{path}: a folder, not an MLflow store (sqlite file)")
    if not os.path.exists(path):
        if must_exist:
            raise ClipModuleError(f"{path}: no MLflow store (sqlite file) there")
        return
    try:
        with open(path, "rb") as handle:
            header = handle.read(len(_SQLITE_HEADER))
    except OSError as error:
        raise ClipModuleError(f"{path}: unreadable MLflow store ({error.strerror})") from None
    if header != _SQLITE_HEADER:
        raise ClipModuleError(f"{path}: not an sqlite database, so not an MLflow store")
    if not _has_mlflow_tables(path):  # MLflow would add its tables to someone else's database
        raise ClipModuleError(f"{path}: an sqlite database without MLflow's tables, not an MLflow store")


def _has_mlflow_tables(path: str) -> bool:
    import sqlite3

    try:
        with contextlib.closing(sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True)) as connection:
            tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.Error as error:
        raise ClipModuleError(f"{path}: unreadable sqlite database ({one_line(error)})") from None
    return {"experiments", "runs"} <= tables


def sqlite_path(uri: str) -> str | None:
    """The file of an sqlite store URI as written (relative or absolute), or None for another URI."""
    return str(uri)[len(SQLITE):] if str(uri).startswith(SQLITE) else None


def absolute_store(uri: str) -> str:
    """A relative sqlite store (`sqlite:///mlruns.db`) named by its absolute path: MLflow caches a store per URI
    string, so a process that changes folder would keep writing to the first folder's file."""
    path = sqlite_path(uri)
    return uri if path is None or path.startswith("/") else SQLITE + str(Path(path).resolve())


def client(tracking_uri: str):
    """An `MlflowClient` bound to `tracking_uri`."""
    if str(tracking_uri).startswith(("http://", "https://")):
        # Fail in seconds, not after minutes of retries, when the server is down.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=absolute_store(tracking_uri))


def mlflow_key(key: str) -> str:
    """MLflow metric names allow letters, digits and `_-. :/`; `R@5` becomes `R5`."""
    return re.sub(r"[^\w\-. :/]", "", key)


def numeric_metrics(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The finite numbers of a metrics dict, keys prefixed and made MLflow-safe; nested dicts (sweeps and
    other detail) stay in the JSON file."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[mlflow_key(f"{prefix}{key}")] = float(value)
    return out


def artifact_location(uri: str) -> str | None:
    """Where a new experiment of an sqlite store keeps its artifacts: `mlartifacts/` beside the sqlite file (MLflow's
    default, `./mlruns` of whatever folder the command ran in, scatters them); None for a server (it decides)."""
    path = sqlite_path(uri)
    return None if path is None else (Path(path).resolve().parent / "mlartifacts").as_uri()


def log_to_mlflow(options: TrackingOptions, run_name: str, params: dict[str, Any], metrics: dict[str, float],
                  tags: dict[str, str] | None = None, artifacts: dict[str, Any] | None = None) -> str | None:
    """One finished MLflow run with `params` and `metrics`, and `artifacts` {file name: JSON-able object} (an
    evaluation's whole record: its class names and templates are too long for params); returns its id (None when
    tracking is off)."""
    if not options.enabled:
        return None
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.exceptions import MlflowException

    try:
        tracker = client(options.uri)
        experiment = tracker.get_experiment_by_name(options.experiment)
        experiment_id = experiment.experiment_id if experiment else tracker.create_experiment(
            options.experiment, artifact_location=artifact_location(options.uri))
        run = tracker.create_run(experiment_id, run_name=options.run_name or run_name)
        now = int(datetime.datetime.now().timestamp() * 1000)
        tracker.log_batch(
            run.info.run_id,
            metrics=[Metric(key, value, now, 0) for key, value in metrics.items()],
            params=[Param(key, str(value)[:6000]) for key, value in params.items()],
            tags=[RunTag(key, value) for key, value in (tags or {}).items()],
        )
        for name, content in (artifacts or {}).items():
            tracker.log_dict(run.info.run_id, content, name)
        tracker.set_terminated(run.info.run_id, "FINISHED")
    except (MlflowException, OSError) as error:
        raise ClipModuleError(f"{options.uri}: MLflow logging failed ({one_line(error)[:200]})") from None
    return run.info.run_id


def end_started_runs(loggers: Any, status: str) -> None:
    """Ends with `status` (`KILLED`, `FAILED`) the MLflow run of each Lightning `MLFlowLogger` in `loggers` that
    started one; a logger that never started a run starts none here (its `run_id` would), others are skipped.
    Best effort: the process is ending, and a store that cannot be reached now must not hide why."""
    from mlflow.exceptions import MlflowException

    for logger in loggers:
        if getattr(logger, "_run_id", None) is not None and hasattr(logger, "experiment"):
            with contextlib.suppress(MlflowException):
                logger.experiment.set_terminated(logger.run_id, status)
