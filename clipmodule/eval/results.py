"""Where evaluation results go: a JSON record (written atomically) and a rich table; the MLflow run is
`clipmodule.tracking.mlflow`'s."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

from curation.formats import files


def write_json(path: str | Path, record: dict[str, Any]) -> Path:
    """Writes `record` to `path` atomically: a reader sees the old file or the whole new one."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)  # eval_results/ need not exist yet
    return files.write_json(path, record)


def write_text(path: str | Path, text: str) -> Path:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return files.write_text(path, text)


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
        if isinstance(value, dict):
            continue
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    Console().print(table)
