"""`clipmodule compare`: MLflow runs -> rich table, markdown report, PNG curves."""

from __future__ import annotations

import sys
from pathlib import Path

from clipmodule.options import new_parser, parse
from clipmodule.tracking.mlflow import DEFAULT_TRACKING_URI, check_store


def _csv(text: str | None) -> list[str] | None:
    return [part.strip() for part in text.split(",") if part.strip()] if text else None


def _parser():
    parser = new_parser(
        "clipmodule compare",
        "Compare runs of one MLflow experiment: params, final metrics, the data card each run "
        "trained on, and curves (loss, zero-shot top-1) against step and samples seen.",
    )
    parser.add_argument("--experiment", "-e", default="clipmodule", help="MLflow experiment name")
    parser.add_argument("--tracking.uri", default=DEFAULT_TRACKING_URI, help="sqlite:///file.db or http://host:port")
    parser.add_argument("--runs", help="comma-separated run names (default: all runs)")
    parser.add_argument("--filter", default="", help="MLflow filter, e.g. \"params.loss = 'siglip'\"")
    parser.add_argument("--params", help="comma-separated params to show (default: those that differ)")
    parser.add_argument("--metrics", help="comma-separated metrics for the table (default: all final metrics)")
    parser.add_argument("--plot", help="comma-separated metrics to plot (default: *loss and *top1 metrics)")
    parser.add_argument("--out", type=Path, help="report folder (default: compare/<experiment>)")
    return parser


def main(argv: list[str]) -> int:
    args = parse(_parser(), argv)
    check_store(args.tracking.uri)
    from rich.console import Console
    from rich.table import Table

    from clipmodule.tracking import compare

    wanted_plots = _csv(args.plot)
    runs = compare.fetch_runs(args.tracking.uri, args.experiment, _csv(args.runs), args.filter)
    logged = sorted({key for run in runs for key in run.metrics})
    metrics = _csv(args.metrics) or [m for m in logged if m not in compare.SAMPLES_METRICS]
    plots = wanted_plots or [m for m in logged if m.endswith("loss") or "top1" in m]
    compare.check_metrics(runs, metrics + plots)
    runs = compare.fetch_runs(args.tracking.uri, args.experiment, _csv(args.runs), args.filter, plots)
    params = _csv(args.params) or compare.differing_params(runs)
    compare.check_params(runs, params)
    header, rows = compare.comparison_rows(runs, params, metrics)

    table = Table(*header, title=f"experiment {args.experiment!r} at {args.tracking.uri}")
    for row in rows:
        table.add_row(*row)
    console = Console(width=None if sys.stdout.isatty() else 200)  # pipes and logs get the full table
    console.print(table)

    out_dir = args.out or Path("compare") / args.experiment
    written = []
    for metric in plots:
        for axis in ("step", "samples"):
            path = out_dir / f"{metric.replace('/', '_')}_vs_{axis}.png"
            if compare.plot_metric(runs, metric, path, axis):
                written.append(path)
    report = compare.write_report(runs, header, rows, written, out_dir, f"Runs of {args.experiment}")
    console.print(f"report: {report}")
    for path in written:
        console.print(f"plot:   {path}")
    return 0
