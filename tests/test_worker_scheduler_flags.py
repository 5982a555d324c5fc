"""``liteq worker --scheduler --allow-shell``: one process that fires schedules and runs
their tasks and commands; without --allow-shell, commands are never run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import liteq

pytestmark = pytest.mark.every_engine

APP = '''
import liteq
db = liteq.connect({path!r})

@db.task(queue="default")
def touch(name):
    open(name, "a").close()
'''


def _start(tmp_path: Path, *flags: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    return subprocess.Popen(
        [sys.executable, "-m", "liteq", "worker", "flagapp", "--summary-interval", "0", *flags],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for(predicate, timeout: float = 60) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("pool", ["thread", "process"])
def test_a_worker_with_scheduler_and_allow_shell_fires_schedules_and_runs_commands(
        tmp_path: Path, db_target: str, pool: str) -> None:
    path = db_target
    (tmp_path / "flagapp.py").write_text(APP.format(path=path))
    db = liteq.connect(path)
    marker = tmp_path / "from-shell"
    db.schedule("touch", every=1, task="flagapp.touch", args=[str(tmp_path / "from-task")])
    db.schedule("shell", every=1, command=f"touch {marker}")
    proc = _start(tmp_path, "--scheduler", "--allow-shell", "--pool", pool, "-c", "1")
    try:
        assert _wait_for(lambda: marker.exists() and (tmp_path / "from-task").exists()), \
            "the worker did not fire both schedules and run them"
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    states = {db.job(run.job_id).state for s in db.schedules() for run in s.history()
              if run.job_id is not None}
    assert "done" in states and "failed" not in states


def test_without_allow_shell_the_workers_queues_leave_commands_alone(tmp_path: Path, db_target: str) -> None:
    path = db_target
    (tmp_path / "flagapp.py").write_text(APP.format(path=path))
    db = liteq.connect(path)
    marker = tmp_path / "from-shell"
    db.schedule("shell", every=1, command=f"touch {marker}")
    proc = _start(tmp_path, "--scheduler")
    try:
        assert _wait_for(lambda: db.queue("shell").stats()["ready"] >= 2)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert not marker.exists()
