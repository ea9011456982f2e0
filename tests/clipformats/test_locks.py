"""One writer per output: a live holder is named, a killed one's lock is taken over, stragglers are waited for."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from clipformats import locks
from clipformats.locks import OutputLock, OutputLocked
from curation.config import BalanceConfig
from curation.errors import CurationError
from curation.stages.balance.balancing import run_balance
from tests.conftest import tree_env
from tests.curation.test_balancing import write_matched

HOLD = """
import sys, time
from clipformats.locks import OutputLock
OutputLock(sys.argv[1], "curation balance").acquire()
print("held", flush=True)
time.sleep(60)
"""


def hold_lock(path) -> subprocess.Popen:
    """A real process holding the lock at `path` until it is killed."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], env=tree_env(), stdout=subprocess.PIPE,
                              text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_second_run_is_refused_naming_the_holder_until_the_holder_is_killed(tmp_path):
    write_matched(tmp_path / "matched", shards=2)
    out = tmp_path / "balanced"
    holder = hold_lock(tmp_path / "balanced.lock")
    try:
        with pytest.raises(CurationError) as refused:
            run_balance(BalanceConfig(t=50, workers=1), tmp_path / "matched", out)
        message = str(refused.value)
        assert f"pid {holder.pid} on host {socket.gethostname()}" in message and "curation balance" in message
        assert "\n" not in message and not out.exists()  # refused before touching anything
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    stats = run_balance(BalanceConfig(t=50, workers=1), tmp_path / "matched", out)  # the dead holder's lock
    assert stats["finished"] and not (tmp_path / "balanced.lock").exists()


def test_a_stale_lock_file_of_a_dead_process_is_taken_over(tmp_path):
    path = tmp_path / "out.lock"
    path.write_text(json.dumps({"pid": dead_pid(), "host": socket.gethostname()}))
    lock = OutputLock(path, "curation match")
    previous = lock.acquire()
    assert previous["host"] == socket.gethostname()
    assert json.loads(path.read_text())["pid"] == os.getpid()
    with pytest.raises(OutputLocked, match=f"pid {os.getpid()}"):
        OutputLock(path, "curation match").acquire()
    lock.release()
    assert not path.exists()


def test_stragglers_of_a_killed_run_are_waited_for_then_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(locks, "STRAGGLER_WAIT", 0.5)
    straggler = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    path = tmp_path / "shards.lock"
    path.write_text(json.dumps({"pid": dead_pid(), "host": socket.gethostname(), "process_group": straggler.pid}))
    try:
        with pytest.raises(OutputLocked, match=f"still running \\(process group {straggler.pid}\\).*kill -- -"):
            OutputLock(path, "curation download").acquire()
    finally:
        straggler.kill()
        straggler.wait()
    started = time.monotonic()
    OutputLock(path, "curation download").acquire()  # the group is gone: taken over at once
    assert time.monotonic() - started < 0.5


def test_temporaries_of_dead_writers_are_removed_and_a_live_writers_kept(tmp_path):
    from clipformats.files import remove_stale_temporaries, temp_name

    target = tmp_path / "card.md"
    dead = tmp_path / f".card.md.tmp-{dead_pid()}"
    dead.write_text("half of a killed write")
    live = temp_name(target)  # this process's: a write in progress
    live.write_text("being written")
    other = tmp_path / f".other.md.tmp-{dead_pid()}"
    other.write_text("not this file's")
    assert remove_stale_temporaries(target) == [dead]
    assert live.exists() and other.exists() and not dead.exists()
