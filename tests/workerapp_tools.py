"""Helpers of the worker tests: start ``liteq worker`` subprocesses on the test app
(``workerapp.py``), wait for conditions, and an injectable clock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from helpers import FakeClock  # noqa: F401 - re-exported for the worker tests

import liteq
from liteq.worker import Worker

HERE = Path(__file__).resolve().parent
#: Bound for anything awaited: waits end as soon as the thing happens.
PATIENCE = 60.0


def worker_command() -> list[str]:
    """The ``liteq`` command, as ``python -m liteq``."""
    return [sys.executable, "-m", "liteq"]


def start_worker(db_path: str, *args: str, log: Path | None = None,
                 app: str = "workerapp") -> subprocess.Popen[bytes]:
    """``liteq --db DB worker APP ARGS`` in a new process (its log to *log*); *app* is
    a module of tests/ (default ``workerapp``)."""
    env = dict(os.environ, LITEQ_DB=db_path,
               PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    out = open(log, "ab") if log is not None else subprocess.DEVNULL  # noqa: SIM115
    cmd = [*worker_command(), "--db", db_path, "worker", app, "--summary-interval",
           "0", *args]
    return subprocess.Popen(cmd, env=env, cwd=str(HERE), stdout=out, stderr=out)


def children_of(pid: int) -> list[int]:
    """Linux: the child processes of *pid*."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def alive(pid: int) -> bool:
    """True if *pid* runs (and is not a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> int:
    """Signal *proc* and wait for it; its exit code."""
    if proc.poll() is None:
        proc.send_signal(sig)
    return proc.wait(PATIENCE)


def wait_until(predicate: Any, timeout: float = PATIENCE, what: str = "condition",
               every: float = 0.01) -> float:
    """Poll *predicate* until true; return how long it took, or fail the test."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)
    return time.monotonic() - start


def drain(db: liteq.Database, **options: Any) -> Worker:
    """Run a one-thread worker until no job is due; return it (for its counts)."""
    w = Worker(db, burst=True, install_signals=False, summary_interval=0,
               **{"concurrency": 1, **options})
    w.run()
    return w
