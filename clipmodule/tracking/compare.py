"""Compare training runs tracked in MLflow: a table of chosen params and final metrics, and curves as PNGs.

Works the same on the embedded sqlite store (`sqlite:///mlruns.db`) and on an `mlflow server` URI."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from clipformats.files import write_text
from clipmodule.errors import ClipModuleError, one_line
from clipmodule.tracking.mlflow import DATA_CARD_TAG, client

# Metrics that count training samples; used for the "against samples seen" plots when a run logged one.
SAMPLES_METRICS = ("samples_seen", "trainer/samples_seen", "train/samples_seen")


@dataclass
class RunSummary:
    """What the comparison shows for one run."""

    run_id: str
    name: str
    status: str
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]
    histories: dict[str, list[tuple[int, float]]] = field(default_factory=dict)

    @property
    def data_card(self) -> str:
        for key, value in self.tags.items():
            if key == DATA_CARD_TAG or "data_card" in key:
                return value
        return "-"


def fetch_runs(
    tracking_uri: str,
    experiment: str,
    run_names: list[str] | None = None,
    filter_string: str = "",
    history_metrics: list[str] | None = None,
) -> list[RunSummary]:
    """The runs of `experiment` (optionally only those named, or matching an MLflow filter), oldest first."""
    from mlflow.exceptions import MlflowException

    try:
        tracker = client(tracking_uri)
        found = tracker.get_experiment_by_name(experiment)
        if found is None:
            names = [e.name for e in tracker.search_experiments()]
            known = ", ".join(names) or "none"
            raise ClipModuleError(f"no experiment {experiment!r} at {tracking_uri} (known: {known})")
        runs = tracker.search_runs([found.experiment_id], filter_string=filter_string,
                                   order_by=["attributes.start_time ASC"])
    except MlflowException as error:
        raise ClipModuleError(f"{tracking_uri}: {one_line(error)[:240]}") from None
    except OSError as error:  # requests' ConnectionError is an OSError
        raise ClipModuleError(f"{tracking_uri}: tracking server unreachable ({one_line(error)[:240]})") from None
    summaries = []
    for run in runs:
        name = run.data.tags.get("mlflow.runName", run.info.run_id[:8])
        if run_names and name not in run_names:
            continue
        summary = RunSummary(run.info.run_id, name, run.info.status, dict(run.data.params), dict(run.data.metrics),
                             {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")})
        for key in set(history_metrics or []) | set(SAMPLES_METRICS):
            if key in summary.metrics:
                history = tracker.get_metric_history(run.info.run_id, key)
                summary.histories[key] = sorted((m.step, m.value) for m in history)
        summaries.append(summary)
    if run_names:
        missing = sorted(set(run_names) - {s.name for s in summaries})
        if missing:
            raise ClipModuleError(f"experiment {experiment!r} has no run named {', '.join(map(repr, missing))}")
    if not summaries:
        raise ClipModuleError(f"experiment {experiment!r} has no runs matching the selection")
    return summaries


def check_metrics(runs: list[RunSummary], metrics: list[str]) -> None:
    known = sorted({key for run in runs for key in run.metrics})
    for metric in metrics:
        if not any(metric in run.metrics for run in runs):
            raise ClipModuleError(f"metric {metric!r} was not logged by any selected run (logged: {', '.join(known)})")


def check_params(runs: list[RunSummary], params: list[str]) -> None:
    """Refuse a param no selected run has (a typo would show a column of dashes)."""
    known = sorted({key for run in runs for key in run.params})
    for param in params:
        if not any(param in run.params for run in runs):
            raise ClipModuleError(f"param {param!r} was not logged by any selected run "
                                  f"(logged: {', '.join(known) or 'none'})")


def differing_params(runs: list[RunSummary], limit: int = 8) -> list[str]:
    """Params whose values differ between runs: what a reader wants to see first."""
    keys = sorted({key for run in runs for key in run.params})
    differing = [key for key in keys if len({run.params.get(key) for run in runs}) > 1]
    return differing[:limit]


def comparison_rows(runs: list[RunSummary], params: list[str], metrics: list[str]) -> tuple[list[str], list[list[str]]]:
    header = ["run", "status", "data card", *params, *metrics]
    rows = []
    for run in runs:
        values = [f"{run.metrics[m]:.4g}" if m in run.metrics else "-" for m in metrics]
        rows.append([run.name, run.status, run.data_card[:12], *[run.params.get(p, "-") for p in params], *values])
    return header, rows


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _samples_axis(run: RunSummary) -> dict[int, float] | None:
    for key in SAMPLES_METRICS:
        if key in run.histories:
            return dict(run.histories[key])
    return None


def plot_metric(runs: list[RunSummary], metric: str, path: Path, x_axis: str = "step") -> Path | None:
    """One line per run of `metric` against step or samples seen; None when no run has that axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=110)
    plotted = 0
    for run in runs:
        points = run.histories.get(metric, [])
        if x_axis == "samples":
            samples = _samples_axis(run)
            if samples is None:
                continue
            points = [(samples[step], value) for step, value in points if step in samples]
        if points:
            xs, ys = zip(*points)
            axes.plot(xs, ys, marker="o" if len(points) < 20 else None, label=run.name)
            plotted += 1
    if not plotted:
        plt.close(figure)
        return None
    axes.set_xlabel("samples seen" if x_axis == "samples" else "step")
    axes.set_ylabel(metric)
    axes.set_title(f"{metric} against {'samples seen' if x_axis == 'samples' else 'step'}")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path


def write_report(runs: list[RunSummary], header: list[str], rows: list[list[str]], plots: list[Path],
                 out_dir: Path, title: str) -> Path:
    """compare.md (table + plots) and compare.json (everything fetched), written atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = [f"# {title}", "", markdown_table(header, rows), ""]
    lines += [f"![{plot.stem}]({plot.name})" for plot in plots]
    write_text(out_dir / "compare.json", json.dumps([asdict(run) for run in runs], indent=2))
    return write_text(out_dir / "compare.md", "\n".join(lines) + "\n")
