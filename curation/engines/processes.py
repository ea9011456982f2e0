"""Child processes die with their parent: no worker keeps writing into an output after its run is gone.

`die_with_parent` is called first thing in every child a stage starts (pool workers, img2dataset and its
workers): on Linux it asks the kernel for SIGKILL when the parent dies (prctl PR_SET_PDEATHSIG), so even
`kill -9` of `curation …` takes its children with it; elsewhere a thread watches the parent pid. A parent
that is stopped cleanly (an error, Ctrl-C, SIGTERM) stops its child's whole process group (`stop_group`).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time

from clipformats.locks import group_alive

PR_SET_PDEATHSIG = 1
WATCH_THREAD = "curation-watch-parent"


def die_with_parent(parent_pid: int, sig: int = signal.SIGKILL, kernel: bool = True) -> None:
    """Have `sig` sent to this process when `parent_pid` (its parent) dies; now, if it already has.

    `kernel=False` for a child that a helper thread of its parent may have started (multiprocessing.Pool
    replaces retired workers from its worker-handler thread): the kernel's PR_SET_PDEATHSIG fires when the
    *thread* that forked the child exits, so such a worker would be killed at the pool's shutdown while it
    holds the pool's queue lock, and `Pool.terminate()` would wait for that lock for ever. Those children
    poll their parent instead (every 0.5 s)."""
    armed = False
    if kernel and sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            armed = libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    watching = any(thread.name == WATCH_THREAD for thread in threading.enumerate())  # called once per task
    if not armed and not watching:
        threading.Thread(target=_watch_parent, args=(parent_pid, sig), name=WATCH_THREAD, daemon=True).start()
    if os.getppid() != parent_pid:  # the parent died before the signal was armed: it will never come
        os.kill(os.getpid(), sig)


def _watch_parent(parent_pid: int, sig: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(0.5)
    os.kill(os.getpid(), sig)


def stop_group(group: int, grace: float = 5.0) -> None:
    """SIGTERM to every process of `group`, SIGKILL to what is left after `grace` seconds; returns when the
    group is gone (or after another `grace`)."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, grace)):
        if not group_alive(group):  # gone already: never signal a group id the system may reuse
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not group_alive(group):
                return
            time.sleep(0.05)
