"""Which data a model was trained on: the `data_card_hash` tag of the fit run whose run folder holds a checkpoint
(`eval concepts` follows it to the data card)."""

from __future__ import annotations

from pathlib import Path

from clipmodule.errors import ClipModuleError, one_line
from clipmodule.tracking.mlflow import DATA_CARD_TAG, TrackingOptions, check_store, client


def data_card_hash_for(options: TrackingOptions, model: str) -> str | None:
    """The `data_card_hash` of the newest MLflow run whose `run_folder` holds `model` (None: no such run, or
    tracking is off)."""
    if not options.enabled:
        return None
    from mlflow.exceptions import MlflowException

    check_store(str(options.uri))
    target = Path(model).expanduser().resolve()
    found: tuple[int, str] | None = None
    try:
        tracker = client(str(options.uri))
        for experiment in tracker.search_experiments():
            for run in tracker.search_runs([experiment.experiment_id], max_results=5000):
                tags = run.data.tags
                folder, card = tags.get("run_folder"), tags.get(DATA_CARD_TAG)
                holds = folder and card and card != "unknown" and target.is_relative_to(Path(folder).resolve())
                if holds and (found is None or run.info.start_time > found[0]):
                    found = (run.info.start_time, card)
    except MlflowException as error:
        raise ClipModuleError(f"{options.uri}: cannot search the MLflow runs ({one_line(error)[:200]})") from None
    return found[1] if found else None
