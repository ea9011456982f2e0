"""One writer per output: a lock file beside it (`work/matched.lock`) that says who holds it.

The lock itself is an exclusive `flock` on that file, which the kernel drops the moment its process dies,
however it dies: so a lock left behind by a killed run (a dead pid, the file still there) is simply taken
over, and two live runs can never both hold it. The file's JSON (pid, host, start time, what runs) is only
there to tell the second run who holds it. A holder that started child processes notes their process
group (`note(process_group=…)`); a run taking over the lock of a dead holder waits for that group's
stragglers to exit before it touches the output, and refuses if they do not.

Stdlib only.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

STRAGGLER_WAIT = 10.0
"""Seconds a run waits for the child processes of a dead earlier run to exit."""


class OutputLocked(RuntimeError):
    """The output is in use; the message is one line naming the holder."""


def group_alive(group: int) -> bool:
    """Whether process group `group` still has a living (non-zombie) member on this machine."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # exited while we looked
        if int(fields[2]) == group and fields[0] not in ("Z", "X"):
            return True
    return False


def describe(holder: dict[str, Any]) -> str:
    if not holder.get("pid"):
        return "another process"
    since = f", since {holder['since']}" if holder.get("since") else ""
    what = f"`{holder['command']}` " if holder.get("command") else ""
    return f"{what}(pid {holder['pid']} on host {holder.get('host', '?')}{since})"


class OutputLock:
    """`acquire()` or `OutputLocked`; `release()` removes the file. Not re-entrant."""

    def __init__(self, path: Path, command: str):
        self.path, self.command = Path(path), command
        self._fd: int | None = None
        self._facts: dict[str, Any] = {}

    def acquire(self) -> dict[str, Any]:
        """Take the lock; returns what a dead earlier holder had written (empty if there was none)."""
        for _ in range(20):  # the file may be removed by its releasing holder between open and flock
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read(fd)
                os.close(fd)
                raise OutputLocked(f"in use by {describe(holder)}; wait for it to finish or stop it") from None
            if _same_file(fd, self.path):
                previous = _read(fd)
                self._fd = fd
                self._wait_for_stragglers(previous)
                try:
                    self.note(pid=os.getpid(), host=socket.gethostname(), command=self.command,
                              since=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
                except OSError:  # e.g. a full disk: no empty lock file is left behind
                    self.release()
                    raise
                return previous
            os.close(fd)
        raise OutputLocked(f"{self.path}: cannot take the lock (the file keeps being replaced)")

    def note(self, **facts: Any) -> None:
        """Add facts (e.g. the process group of the children this run started) to the lock file."""
        assert self._fd is not None, "note() needs the lock"
        self._facts.update(facts)
        data = (json.dumps(self._facts) + "\n").encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # while still locked: a run waiting to open it opens a new file instead
        os.close(self._fd)
        self._fd, self._facts = None, {}

    def _wait_for_stragglers(self, previous: dict[str, Any]) -> None:
        group = previous.get("process_group")
        if not group or previous.get("host") != socket.gethostname():
            return
        deadline = time.monotonic() + STRAGGLER_WAIT
        while group_alive(int(group)):
            if time.monotonic() > deadline:
                self.release()
                raise OutputLocked(f"processes of an earlier run {describe(previous)} are still running "
                                   f"(process group {group}); wait for them to exit or stop them: kill -- -{group}")
            time.sleep(0.1)

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _read(fd: int) -> dict[str, Any]:
    try:
        data = json.loads(os.pread(fd, 1 << 16, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
