"""This machine's Ray worker processes as /proc shows them (Linux): which wait for work, and their CPU.

Ray renames a worker process `ray::IDLE` while it has nothing to run. A local cluster's prestarted
workers go on importing `connect.WORKER_PRELOAD` for seconds after ray.init returns, and the last
import (sweeps.worker_ready) leaves a file under `ready_dir()`; the sweep benchmark waits for that, and
the tests use it to check which processes the trials reuse.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from pathlib import Path


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def all_cpu_seconds(title: bytes = b"") -> dict[int, float]:
    """pid -> CPU seconds of every process on the machine (whose title starts with `title`)."""
    found = {}
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):  # a process may exit while we look
            if entry.name.isdigit() and (entry / "cmdline").read_bytes().startswith(title):
                found[int(entry.name)] = cpu_seconds(int(entry.name))
    return found


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def descends_from(pid: int, ancestor: int) -> bool:
    with contextlib.suppress(OSError, ValueError, IndexError):
        while pid > 1:
            pid = _parent(pid)
            if pid == ancestor:
                return True
    return False


def idle_workers() -> dict[int, float]:
    """pid -> CPU seconds of every Ray worker process of this process's local Ray (its descendants: other
    Ray clusters on the machine do not count) waiting for work."""
    me = os.getpid()
    return {pid: t for pid, t in all_cpu_seconds(b"ray::IDLE").items() if descends_from(pid, me)}


def ready_dir() -> Path:
    """Where this process's local Ray workers mark the end of their preload (sweeps.worker_ready)."""
    return Path(tempfile.gettempdir()) / f"gitsweep-workers-{os.getpid()}"


def fresh_ready_dir() -> Path:
    """ready_dir(), emptied of an earlier local Ray's marks (pids are reused)."""
    shutil.rmtree(ready_dir(), ignore_errors=True)
    return ready_dir()


def wait_until_idle(count: int, timeout_s: float = 120.0) -> set[int]:
    """Wait until `count` of this process's local Ray workers are idle and done with their preload;
    returns their pids, or those there are at the timeout. Not by running a warm-up task: a worker that
    ran a task is never given an actor (a trial) afterwards."""
    deadline = time.monotonic() + timeout_s
    ready: set[int] = set()
    while time.monotonic() < deadline:
        marked = {int(p.name) for p in ready_dir().glob("*") if p.name.isdigit()}
        ready = set(idle_workers()) & marked
        if len(ready) >= count:
            break
        time.sleep(0.2)
    return ready
