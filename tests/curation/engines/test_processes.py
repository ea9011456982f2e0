"""Children die with their parent: `kill -9` of `curation match --workers 2` leaves no pool worker behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads the process table from /proc")


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid and fields[0] != "Z" and b"spawn_main" in cmdline:
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def test_killing_match_kills_its_pool_workers(tmp_path, tiny_queries, clean_env):
    (tmp_path / "captions").mkdir()
    for i in range(4):
        pq.write_table(pa.table({"url": [f"http://x/{i}/{j}.jpg" for j in range(20000)],
                                 "caption": [f"a red circle {j}" for j in range(20000)]}),
                       tmp_path / "captions" / f"p{i}.parquet")
    command = [sys.executable, "-m", "curation", "match", "--captions", str(tmp_path / "captions"),
               "--queries", str(tiny_queries),
               "--out", str(tmp_path / "matched"), "--workers", "2"]
    driver = subprocess.Popen(command, env=clean_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while len(workers := children(driver.pid)) < 2 and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(workers) == 2, "the pool must be running when the driver is killed"
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
        deadline = time.monotonic() + 10
        while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(alive(pid) for pid in workers), "pool workers outlived their driver"
    finally:
        for pid in children(driver.pid):
            os.kill(pid, signal.SIGKILL)
