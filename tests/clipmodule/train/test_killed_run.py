"""A fit stopped by SIGTERM ends its MLflow run as KILLED, in one line, also when the signal comes before
Lightning's loop (and its SIGTERM handler) has started: the default action used to kill the process on the
spot and leave the run RUNNING for ever."""

from __future__ import annotations

import contextlib
import signal
import sqlite3
import subprocess
import sys
import time

from clipmodule.data.synthetic import write_synthetic_shards
from tests.clipmodule.train.test_cli import TINY, _runs
from tests.conftest import QUIET_WORKER, tree_env


def _run_statuses(store) -> list[str]:
    with contextlib.suppress(sqlite3.Error), contextlib.closing(sqlite3.connect(f"file:{store}?mode=ro", uri=True,
                                                                               timeout=0.1)) as connection:
        return [row[0] for row in connection.execute("SELECT status FROM runs")]
    return []


def test_sigterm_as_soon_as_the_run_exists_ends_it_as_killed(tmp_path):
    write_synthetic_shards(tmp_path / "shards", 1, 16, image_size=32)
    args = [sys.executable, "-m", "clipmodule", "fit", *TINY, "--data.train_shards", str(tmp_path / "shards"),
            "--data.num_workers", "1", "--data.batch_size", "8", "--trainer.max_steps", "100000",
            "--trainer.enable_progress_bar", "false"]
    process = subprocess.Popen(args, cwd=tmp_path, env=tree_env(**QUIET_WORKER), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not _run_statuses(tmp_path / "mlruns.db") and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.02)
        assert _run_statuses(tmp_path / "mlruns.db") == ["RUNNING"], "the fit never started its MLflow run"
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 2, err[-2000:]
    assert [line for line in err.splitlines() if "error" in line.lower()] == [
        line for line in err.splitlines() if line.startswith("clipmodule fit: error: stopped by SIGTERM at step")]
    assert "Traceback" not in err and "stopped by SIGTERM" in err, err[-2000:]
    _, runs = _runs(tmp_path, "tiny_cpu")
    assert [run.info.status for run in runs] == ["KILLED"] and runs[0].info.end_time
