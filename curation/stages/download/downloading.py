"""`curation download`: a thin layer over img2dataset's Python API, made quiet, resumable and accountable.

img2dataset runs in a child process (see `curation.stages.download.fetch`) whose output goes to `<out>.log`; this
process shows one progress bar fed by the per-shard `*_stats.json` files img2dataset writes. img2dataset's
incremental mode skips shards whose stats file exists and redoes the others from scratch, so a stopped
download resumes without duplicates. img2dataset writes no overall stats: `aggregate_shard_stats` adds up
the shards' files and checks that successes + failures = input rows, with failure reasons counted.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from clipformats.files import atomic_path
from clipformats.urls import allowed_schemes
from curation.config import DownloadConfig
from curation.engines.processes import stop_group
from curation.errors import CurationError, StageIncomplete
from curation.progress import progress_bar, report
from curation.stage import Stage, file_signature, read_json, sidecar, stats_path

# Settings that change which bytes end up in the shards; the rest (processes, timeouts …) may change
# between a stopped run and its resumption.
OUTPUT_SETTINGS = ("output_format", "image_size", "resize_mode", "encode_format", "encode_quality",
                   "samples_per_shard", "save_columns", "allow_schemes", "max_image_pixels", "dedup_urls")
# What img2dataset writes into `out` (shards, their stats, its `_tmp` work folder) and the de-duplicated input:
# the only names --overwrite removes there.
DEDUP_FOLDER = "_input"
MADE = ("*.tar", "*.parquet", "*_stats.json", "_tmp", DEDUP_FOLDER)


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
        shard_reasons: Counter[str] = Counter()
        for reason, n in shard.get("status_dict", {}).items():
            if reason != "success":  # an exception's text may span lines: one line each, so summaries stay lines
                shard_reasons[" ".join(str(reason).split()) or "no reason given"] += n
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
    if stats.get("stage") != "balance":
        raise CurationError(f"{balanced}: made by `curation {stats.get('stage', '?')}`, not `curation balance`; "
                            f"give --input the output of `curation balance`")
    if not stats.get("finished"):
        raise CurationError(f"{balanced}: `curation balance` has not finished there")
    try:
        files = [balanced / shard["name"] for shard in stats["shards"]]
        rows = sum(int(shard["rows"]) for shard in stats["shards"])
    except (KeyError, TypeError, ValueError):
        raise CurationError(f"{stats_path(balanced)}: balance stats without a shard list (re-run `curation balance`)"
                            ) from None
    missing = [p for p in files if not p.is_file()]
    if missing:
        raise CurationError(f"{missing[0]}: balanced shard missing (re-run `curation balance`)")
    return files, rows


def _check_save_columns(files: list[Path], wanted: list[str]) -> None:
    """A column img2dataset cannot find fails every shard with the cause only in its log: say it here."""
    import pyarrow.parquet as pq

    for path in files:
        names = pq.read_schema(path).names
        if (missing := [c for c in wanted if c not in names]):
            raise CurationError(f"{path}: no column {missing[0]!r} for --save_columns (columns: {', '.join(names)})")


def duplicate_urls(files: list[Path], dedup_into: Path | None = None) -> int:
    """Rows whose URL an earlier row (in file order) already has; with `dedup_into`, the first row of each
    URL is written there, one parquet per input file (kept if already there: a resumed run reuses it)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    urls = pa.chunked_array([pq.read_table(p, columns=["url"])["url"].combine_chunks() for p in files],
                            type=pa.string()).combine_chunks()
    order = pa.table({"url": urls, "row": pa.array(range(len(urls)), pa.int64())})
    first = order.group_by("url", use_threads=False).aggregate([("row", "min")])["row_min"]
    if dedup_into is not None:
        keep = np.zeros(len(urls), dtype=bool)
        keep[first.to_numpy()] = True
        dedup_into.mkdir(parents=True, exist_ok=True)
        offset = 0
        for path in files:
            table = pq.read_table(path)
            target = dedup_into / path.name
            if not target.exists():
                with atomic_path(target) as tmp:
                    pq.write_table(table.filter(pa.array(keep[offset: offset + table.num_rows])), tmp)
            offset += table.num_rows
    return len(urls) - len(first)


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


def run_img2dataset(config: DownloadConfig, source: Path, out: Path, expected_rows: int, log_file: Path,
                    stage: Stage | None = None) -> None:
    """img2dataset in a spawned child (its own prints and signal handler stay there), with a progress bar.
    The child leads its own process group, noted in the stage's lock: however this run ends, the group is
    stopped, and a later run waits for stragglers of a killed one."""
    from curation.stages.download import fetch

    context = multiprocessing.get_context("spawn")
    arguments = img2dataset_arguments(config, source, out)
    policy = fetch.FetchPolicy(allowed_schemes(config.allow_schemes), config.max_image_pixels,
                               workers_are_children=config.distributor == "multiprocessing")
    child = context.Process(target=fetch.child_main, args=(arguments, str(log_file), policy, os.getpid()))
    child.start()
    with contextlib.suppress(OSError):  # the child does the same: whichever runs first, the group exists
        os.setpgid(child.pid, child.pid)
    if stage is not None:
        stage.lock.note(process_group=child.pid)
    try:
        _watch(child, out, expected_rows)
    except BaseException:
        stop_group(child.pid)
        child.join(5)
        raise
    child.join()
    stop_group(child.pid, grace=2.0)  # img2dataset's logger or a worker that outlived it
    if child.exitcode != 0:
        raise StageIncomplete(f"{out}: img2dataset stopped with exit code {child.exitcode} (see {log_file}); "
                              f"run again to resume")


def _reasons(stats: dict[str, Any]) -> str:
    return ", ".join(f"{n:,} {reason}" for reason, n in list(stats["failure_reasons"].items())[:3])


def run_download(config: DownloadConfig, balanced: Path, out: Path, overwrite: bool = False) -> dict[str, Any]:
    """Download the balanced rows into shards in `out`; `<out>.stats.json` accounts for every row."""
    balanced, out = Path(balanced), Path(out)
    files, rows = _balanced_rows(balanced)
    log_file = sidecar(out, ".log")
    settings = {k: v for k, v in asdict(config).items() if k in OUTPUT_SETTINGS}
    stage = Stage("download", out, {"config": settings, "inputs": file_signature(files)}, overwrite,
                  extra_outputs=(log_file,), inputs=(balanced, stats_path(balanced), *files), made=MADE)
    if (done := stage.finished()) is not None:
        report(f"download: up to date ({done['successes']:,} of {done['input_rows']:,} images in {out})")
        return done
    _check_save_columns(files, config.save_columns)
    with stage.running():
        out.mkdir(parents=True, exist_ok=True)
        dedup_folder = out / DEDUP_FOLDER if config.dedup_urls else None
        duplicates = duplicate_urls(files, dedup_folder) if rows else 0
        expected = rows - duplicates if config.dedup_urls else rows
        if expected:
            run_img2dataset(config, dedup_folder or balanced, out, expected, log_file, stage)
        totals = aggregate_shard_stats(shard_stats(out), expected)
        if totals["rows_accounted"] != expected:
            raise StageIncomplete(f"{out}: {totals['rows_accounted']:,} of {expected:,} rows accounted for "
                                  f"(some shards failed, see {log_file}); run again to resume")
        if expected and not totals["successes"]:
            stage.discard_made()  # so the next run fetches again instead of resuming from nothing
            raise StageIncomplete(f"{out}: not one of {expected:,} images downloaded ({_reasons(totals)}); "
                                  f"not recorded as finished: run again when the images can be reached")
        shards = [p.name for p in data_files(out, config.output_format)]
        stats = stage.finish({**totals, "balanced_rows": rows, "duplicate_urls": duplicates,
                              "duplicates_dropped": duplicates if config.dedup_urls else 0,
                              "output_format": config.output_format, "data_files": shards,
                              "log": str(log_file), "settings": asdict(config)})
    reasons = _reasons(stats)
    report(f"download: {stats['successes']:,} of {expected:,} images → {out} ({len(shards)} shards)"
           + (f"; failed: {reasons}" if reasons else "")
           + (f"; {duplicates:,} rows repeat an earlier URL" + (" (dropped)" if config.dedup_urls else "")
              if duplicates else ""))
    return stats
