"""`curation download`: a thin layer over img2dataset's Python API, made quiet, resumable and accountable.

img2dataset runs in a child process whose output goes to `<out>.log`; this process shows one progress bar
fed by the per-shard `*_stats.json` files img2dataset writes. img2dataset's incremental mode skips shards
whose stats file exists and redoes the others from scratch, so a stopped download resumes without
duplicates. img2dataset writes no overall stats: `aggregate_shard_stats` adds up the shards' files and
checks that successes + failures = input rows, with failure reasons counted.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

from curation.config import DownloadConfig
from curation.errors import CurationError, StageIncomplete
from curation.progress import progress_bar, report
from curation.stage import Stage, file_signature, read_json, sidecar, stats_path

# Settings that change which bytes end up in the shards; the rest (processes, timeouts …) may change
# between a stopped run and its resumption.
OUTPUT_SETTINGS = ("output_format", "image_size", "resize_mode", "encode_format", "encode_quality",
                   "samples_per_shard", "save_columns")


def img2dataset_arguments(config: DownloadConfig, source: Path, out: Path) -> dict[str, Any]:
    """Keyword arguments for `img2dataset.download` (input: the balanced parquet folder)."""
    return {
        "url_list": str(source), "input_format": "parquet", "url_col": "url", "caption_col": "caption",
        "output_folder": str(out), "output_format": config.output_format, "image_size": config.image_size,
        "resize_mode": config.resize_mode, "encode_format": config.encode_format,
        "encode_quality": config.encode_quality, "number_sample_per_shard": config.samples_per_shard,
        "processes_count": config.processes, "thread_count": config.threads, "retries": config.retries,
        "timeout": config.timeout, "distributor": config.distributor,
        "save_additional_columns": list(config.save_columns) or None,
        "incremental_mode": "incremental", "enable_wandb": False, "compute_hash": "sha256",
    }


def _img2dataset_child(arguments: dict[str, Any], log_file: str) -> None:
    """Runs in the child process: quiet, offline-safe, then img2dataset."""
    os.environ["NO_ALBUMENTATIONS_UPDATE"] = "1"  # albumentations otherwise checks for updates online
    os.environ["WANDB_MODE"] = "disabled"
    log = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    from img2dataset import download

    download(**arguments)


def shard_stats(out: Path) -> list[dict[str, Any]]:
    """img2dataset's per-shard stats files in `out`, each with its shard name added."""
    found = []
    for path in sorted(Path(out).glob("*_stats.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue  # being written right now; picked up on the next look
        found.append({"shard": path.name[: -len("_stats.json")], **data})
    return found


def aggregate_shard_stats(shards: list[dict[str, Any]], expected_rows: int) -> dict[str, Any]:
    """Totals over shards; every row is a success or a failure with a reason."""
    reasons: Counter[str] = Counter()
    count = successes = 0
    for shard in shards:
        count += shard["count"]
        successes += shard["successes"]
        shard_reasons = Counter({k: v for k, v in shard.get("status_dict", {}).items() if k != "success"})
        # img2dataset logs (but does not count) a sample whose writing raised; count it as a failure here.
        lost = shard["count"] - shard["successes"] - shard["failed_to_download"] - shard["failed_to_resize"]
        if lost > 0:
            shard_reasons["lost while writing (see the download log)"] += lost
        reasons.update(shard_reasons)
    failed = count - successes
    return {"input_rows": expected_rows, "rows_accounted": count, "successes": successes, "failed": failed,
            "success_rate": successes / count if count else 0.0,
            "failed_to_download": sum(s["failed_to_download"] for s in shards),
            "failed_to_resize": sum(s["failed_to_resize"] for s in shards),
            "failure_reasons": dict(reasons.most_common()), "shards": len(shards)}


def data_files(out: Path, output_format: str) -> list[Path]:
    """The shards a trainer reads: tars for webdataset, parquet files for parquet."""
    suffix = ".tar" if output_format == "webdataset" else ".parquet"
    return sorted(p for p in Path(out).glob(f"*{suffix}") if not p.name.startswith((".", "_")))


def _balanced_rows(balanced: Path) -> tuple[list[Path], int]:
    stats = read_json(stats_path(balanced), "balance stats (run `curation balance` first)")
    if not stats.get("finished"):
        raise CurationError(f"{balanced}: `curation balance` has not finished there")
    files = [balanced / shard["name"] for shard in stats["shards"]]
    missing = [p for p in files if not p.is_file()]
    if missing:
        raise CurationError(f"{missing[0]}: balanced shard missing (re-run `curation balance`)")
    return files, sum(shard["rows"] for shard in stats["shards"])


def _watch(child: multiprocessing.Process, out: Path, expected_rows: int) -> None:
    with progress_bar("download", expected_rows) as advance:
        shown = 0
        while True:
            alive = child.is_alive()
            done = sum(s["count"] for s in shard_stats(out))
            advance(done - shown)
            shown = done
            if not alive:
                return
            time.sleep(0.5)


def run_img2dataset(config: DownloadConfig, balanced: Path, out: Path, expected_rows: int, log_file: Path) -> None:
    """img2dataset in a spawned child (its own prints and signal handler stay there), with a progress bar."""
    context = multiprocessing.get_context("spawn")
    arguments = img2dataset_arguments(config, balanced, out)
    child = context.Process(target=_img2dataset_child, args=(arguments, str(log_file)))
    child.start()
    try:
        _watch(child, out, expected_rows)
    except BaseException:
        child.terminate()
        child.join(10)
        raise
    child.join()
    if child.exitcode != 0:
        raise StageIncomplete(f"{out}: img2dataset stopped with exit code {child.exitcode} (see {log_file}); "
                              f"run again to resume")


def run_download(config: DownloadConfig, balanced: Path, out: Path, overwrite: bool = False) -> dict[str, Any]:
    """Download the balanced rows into shards in `out`; `<out>.stats.json` accounts for every row."""
    balanced, out = Path(balanced), Path(out)
    files, expected = _balanced_rows(balanced)
    log_file = sidecar(out, ".log")
    settings = {k: v for k, v in asdict(config).items() if k in OUTPUT_SETTINGS}
    stage = Stage("download", out, {"config": settings, "inputs": file_signature(files)}, overwrite,
                  extra_outputs=(log_file,))
    if (done := stage.finished()) is not None:
        report(f"download: up to date ({done['successes']:,} of {done['input_rows']:,} images in {out})")
        return done
    with stage.running():
        out.mkdir(parents=True, exist_ok=True)
        if expected:
            run_img2dataset(config, balanced, out, expected, log_file)
        totals = aggregate_shard_stats(shard_stats(out), expected)
        if totals["rows_accounted"] != expected:
            raise StageIncomplete(f"{out}: {totals['rows_accounted']:,} of {expected:,} rows accounted for "
                                  f"(some shards failed, see {log_file}); run again to resume")
        shards = [p.name for p in data_files(out, config.output_format)]
        stats = stage.finish({**totals, "output_format": config.output_format, "data_files": shards,
                              "log": str(log_file), "settings": asdict(config)})
    reasons = ", ".join(f"{n:,} {reason}" for reason, n in list(stats["failure_reasons"].items())[:3])
    report(f"download: {stats['successes']:,} of {expected:,} images → {out} ({len(shards)} shards)"
           + (f"; failed: {reasons}" if reasons else ""))
    return stats
