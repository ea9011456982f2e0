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

from clipformats.curation_outputs import ROWS_IDENTITY, rows_identity
from clipformats.files import atomic_path, write_json
from clipformats.urls import allowed_schemes
from curation.config import DownloadConfig
from curation.engines.processes import stop_group
from curation.errors import CurationError, StageIncomplete
from curation.progress import progress_bar, report
from curation.stage import Stage, file_signature, read_json, sidecar, stats_path
from curation.stages.download.faces import FACES_FOLDER, faces_blurred

# Settings that change which bytes end up in the shards; the rest (processes, timeouts …) may change
# between a stopped run and its resumption.
OUTPUT_SETTINGS = ("output_format", "image_size", "resize_mode", "encode_format", "encode_quality",
                   "samples_per_shard", "save_columns", "allow_schemes", "max_image_pixels", "dedup_urls")
# Output settings added later: in the fingerprint only when set, so earlier downloads stay up to date.
LATER_OUTPUT_SETTINGS = {"min_image_size": 0, "max_aspect_ratio": None, "verify_hash_column": None,
                         "bbox_column": None, "blur_faces": False}
# What img2dataset writes into `out` (shards, their stats, its `_tmp` work folder) and the de-duplicated input:
# the only names --overwrite removes there.
DEDUP_FOLDER = "_input"
HEARTBEAT = "_heartbeat"
MADE = ("*.tar", "*.parquet", "*_stats.json", "_tmp", DEDUP_FOLDER, HEARTBEAT, "_retry", FACES_FOLDER)


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
        "min_image_size": config.min_image_size, "bbox_col": config.bbox_column,
        "max_aspect_ratio": float("inf") if config.max_aspect_ratio is None else config.max_aspect_ratio,
        "verify_hash": None if config.verify_hash_column is None else [config.verify_hash_column, "sha256"],
    }


def output_settings(config: DownloadConfig) -> dict[str, Any]:
    """The settings that decide the shards' bytes (the stage's fingerprint)."""
    return {k: v for k, v in asdict(config).items()
            if k in OUTPUT_SETTINGS or (k in LATER_OUTPUT_SETTINGS and v != LATER_OUTPUT_SETTINGS[k])}


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


def _balanced_rows(balanced: Path, from_matched: bool = False) -> tuple[list[Path], int]:
    stats = read_json(stats_path(balanced), "balance stats (run `curation balance` first)")
    stage, wanted = stats.get("stage"), "match" if from_matched else "balance"  # match: online curation's pool
    if stage != wanted:
        raise CurationError(f"{balanced}: made by `curation {stats.get('stage', '?')}`, not `curation {wanted}`; "
                            f"give --input the output of `curation {wanted}`"
                            + ("" if from_matched else " (a match output with --from_matched, for online curation)"))
    if not stats.get("finished"):
        raise CurationError(f"{balanced}: `curation {stage}` has not finished there")
    try:
        files = [balanced / shard["name"] for shard in stats["shards"]]
        rows = sum(int(shard["rows" if stage == "balance" else "rows_out"]) for shard in stats["shards"])
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


def written(out: Path, log_file: Path) -> tuple[int, int, int]:
    """(files, bytes, last heartbeat) img2dataset has written so far: under `out` (shards, their stats, its _tmp,
    the workers' heartbeat) and its log."""
    files = size = beat = 0
    for path in [log_file, *Path(out).rglob("*")]:
        with contextlib.suppress(OSError):  # renamed or removed while we look
            if path.is_file():
                files, size = files + 1, size + path.stat().st_size
    with contextlib.suppress(OSError):
        beat = (Path(out) / HEARTBEAT).stat().st_mtime_ns
    return files, size, beat


def _watch(child: multiprocessing.Process, out: Path, expected_rows: int, log_file: Path, stall_seconds: int,
           baseline: int = 0) -> None:
    """Progress from the shards' stats; with `stall_seconds`, the job is stopped (StageIncomplete) once a worker
    has begun fetching in this run (start-up imports write nothing) and then nothing is written for that long."""
    with progress_bar("download", expected_rows) as advance:
        look = (lambda: written(out, log_file)) if stall_seconds else (lambda: (0, 0, 0))  # walks `out`: if asked
        shown, last, changed = 0, look(), time.monotonic()
        first_beat = last[2]
        while True:
            alive = child.is_alive()
            done = sum(s["count"] for s in shard_stats(out)) - baseline
            advance(done - shown)
            shown = done
            if not alive:
                return
            now_written = look()
            if now_written != last:
                last, changed = now_written, time.monotonic()
            elif (stall_seconds and last[2] != first_beat and done < expected_rows  # (not while it shuts down)
                  and time.monotonic() - changed > stall_seconds):
                raise StageIncomplete(f"{out}: img2dataset wrote nothing for {stall_seconds} s (download.stall_seconds)"
                                      f"; stopped it: run again to resume")
            time.sleep(0.5)


def run_img2dataset(config: DownloadConfig, source: Path, out: Path, expected_rows: int, log_file: Path,
                    stage: Stage | None = None, first_shard: int = 0) -> None:
    """img2dataset in a spawned child (its own prints and signal handler stay there), with a progress bar.
    The child leads its own process group, noted in the stage's lock: however this run ends, the group is
    stopped, and a later run waits for stragglers of a killed one."""
    from curation.stages.download import fetch

    context = multiprocessing.get_context("spawn")
    arguments = img2dataset_arguments(config, source, out)
    policy = fetch.FetchPolicy(allowed_schemes(config.allow_schemes), config.max_image_pixels,
                               workers_are_children=config.distributor == "multiprocessing",
                               heartbeat=str(Path(out) / HEARTBEAT), blur_faces=config.blur_faces,
                               faces_folder=str(Path(out) / FACES_FOLDER) if config.blur_faces else None)
    child = context.Process(target=fetch.child_main, args=(arguments, str(log_file), policy, os.getpid(),
                                                           first_shard))
    child.start()
    with contextlib.suppress(OSError):  # the child does the same: whichever runs first, the group exists
        os.setpgid(child.pid, child.pid)
    if stage is not None:
        stage.lock.note(process_group=child.pid)
    try:
        baseline = sum(s["count"] for s in shard_stats(out) if int(s["shard"]) < first_shard)
        _watch(child, out, expected_rows, log_file, config.stall_seconds, baseline)
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


def run_download(config: DownloadConfig, balanced: Path, out: Path, overwrite: bool = False,
                 retry_failed: bool = False) -> dict[str, Any]:
    """Download the balanced rows into shards in `out`; `<out>.stats.json` accounts for every row. With
    `retry_failed`, a finished download fetches again the rows that failed for a retriable reason (`retry`)."""
    balanced, out = Path(balanced), Path(out)
    files, rows = _balanced_rows(balanced, config.from_matched)
    log_file = sidecar(out, ".log")
    settings = output_settings(config)
    stage = Stage("download", out, {"config": settings, "inputs": file_signature(files)}, overwrite,
                  extra_outputs=(log_file,), inputs=(balanced, stats_path(balanced), *files), made=MADE)
    old = read_json(stage.stats_file, "download stats") if stage.stats_file.exists() else {}
    if retry_failed or (old.get("retry_pending") and old.get("fingerprint") == stage.fingerprint):
        return retry_download(config, stage, old, log_file)
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
        if config.blur_faces:
            totals["faces_blurred"] = faces_blurred(str(out / FACES_FOLDER))
        stats = stage.finish({**totals, "balanced_rows": rows, "duplicate_urls": duplicates,
                              "duplicates_dropped": duplicates if config.dedup_urls else 0,
                              "output_format": config.output_format, "data_files": shards,
                              ROWS_IDENTITY: rows_identity(files),
                              "log": str(log_file), "settings": asdict(config)})
    reasons = _reasons(stats)
    report(f"download: {stats['successes']:,} of {expected:,} images → {out} ({len(shards)} shards)"
           + (f"; failed: {reasons}" if reasons else "")
           + (f"; {duplicates:,} rows repeat an earlier URL" + (" (dropped)" if config.dedup_urls else "")
              if duplicates else ""))
    return stats


def retry_download(config: DownloadConfig, stage: Stage, old: dict[str, Any], log_file: Path) -> dict[str, Any]:
    """One retry round (or the rest of a stopped one) over a finished download; see `retry`."""
    from curation.stages.download import retry

    out = stage.out
    if old.get("fingerprint") != stage.fingerprint or not (old.get("finished") or old.get("retry_pending")):
        raise CurationError(f"{out}: no finished download with these settings to retry; run `curation download` "
                            f"first (without --retry-failed)")
    with stage.running():
        base = {k: v for k, v in old.items() if k not in ("stage", "finished", "fingerprint", "retry_pending")}
        pending = old.get("retry_pending")
        if pending is None:
            ids = [int(s["shard"]) for s in shard_stats(out)]
            columns = ["url", "caption", *config.save_columns, *([config.bbox_column] if config.bbox_column else [])]
            if (pending := retry.plan_round(out, old, ids, columns)) is None:
                report(f"download: no failed row of {out} may pass on another try (404s and refusals are final)")
                return old
            write_json(stage.stats_file, {"stage": "download", "finished": False, "fingerprint": stage.fingerprint,
                                          **base, "retry_pending": pending})
        run_img2dataset(config, Path(pending["input"]), out, pending["rows"], log_file, stage,
                        pending["first_shard"])
        shards = shard_stats(out)
        mine = [s["shard"] for s in retry.round_shards(shards, pending)]
        rounds = [*old.get("retry_rounds", []), {**pending, "shards": mine}]
        totals = retry.merged_totals(aggregate_shard_stats(shards, base["input_rows"]), rounds)
        if config.blur_faces:
            totals["faces_blurred"] = faces_blurred(str(out / FACES_FOLDER))
        stats = stage.finish({**base, **totals, "retry_rounds": rounds,
                              "data_files": [p.name for p in data_files(out, config.output_format)]})
    report(f"download: retry round {pending['round']}: {stats['successes'] - old.get('successes', 0):,} of "
           f"{pending['rows']:,} failed rows downloaded; {stats['successes']:,} of {stats['input_rows']:,} images "
           f"in {out}")
    return stats
