"""Schedulers as they run in production: three real ``liteq scheduler`` processes on
one file. Every check reads the database file (and the schedulers' own logs)
afterwards, never a scheduler's word for it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from dbsql import sql
from helpers import PATIENCE, wait_until

import liteq
from liteq.scheduler import schedule

pytestmark = pytest.mark.every_engine

HERE = Path(__file__).resolve().parent
FIRES = 6  # fire times each schedule must reach before the schedulers are stopped
_FIRED = re.compile(r"\[(\d+)\] liteq\.scheduler: schedule (\S+) fired for \S+: job (\d+)$")


def liteq_command() -> list[str]:
    """The ``liteq`` command, as ``python -m liteq``."""
    return [sys.executable, "-m", "liteq"]


def start_scheduler(db_path: str, start: float, log: Path, *args: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ, LITEQ_DB=db_path, SCHEDAPP_START=repr(start),
               PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    out = open(log, "wb")  # noqa: SIM115 - the child holds it
    cmd = [*liteq_command(), "--db", db_path, "scheduler", *args]
    return subprocess.Popen(cmd, env=env, cwd=str(HERE), stdout=out, stderr=out)


def runs(db: liteq.Database, name: str) -> list[tuple[float, int]]:
    return [(r[0], r[1]) for r in sql(db,
        "SELECT fire_at, job_id FROM schedule_runs WHERE schedule = ? ORDER BY fire_at", (name,))]


def test_three_scheduler_processes_enqueue_every_fire_time_exactly_once_and_none_is_missing(
        tmp_path: Path, db_target: str) -> None:
    path = db_target
    db = liteq.connect(path)  # the file exists before a scheduler without APP opens it
    start = float(int(time.time()) + 3)  # whole seconds, after the processes are up
    # Declared here first, as schedapp declares them: a process that starts late (a loaded
    # machine) re-declares the same timing, which keeps next_run_at at the start; if it
    # declared them first after the start had passed, the first fire would be a later one.
    for name, timing, payload in (("every-second", {"every": 1}, "every"),
                                  ("cron-second", {"cron": "* * * * * *"}, "cron")):
        schedule(db, name, **timing, start=start, queue="fires", payload=payload, misfire="all")
    logs = [tmp_path / f"scheduler-{i}.log" for i in range(3)]
    procs = [
        start_scheduler(path, start, logs[0], "schedapp", "--interval", "0.5"),
        start_scheduler(path, start, logs[1], "schedapp:db"),
        start_scheduler(path, start, logs[2]),  # no APP: the file named by --db
    ]
    try:
        # Every process up (its signal handlers set) before any is stopped: on a loaded
        # machine one can still be importing when the others have fired enough.
        wait_until(lambda: all("scheduler started" in log.read_text() for log in logs),
                   timeout=PATIENCE, what="the three schedulers to start")
        wait_until(lambda: all(len(runs(db, n)) >= FIRES for n in ("every-second", "cron-second")),
                   timeout=PATIENCE, what=f"{FIRES} fires of each schedule")
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        codes = [p.wait(PATIENCE) for p in procs]
    assert codes == [0, 0, 0], [log.read_text()[-2000:] for log in logs]

    msgs = {m.id: m for m in db.queue("fires").peek(1000)}
    for name, payload in (("every-second", "every"), ("cron-second", "cron")):
        fired = runs(db, name)
        times = [t for t, _ in fired]
        # none missing: one fire per second from the start, without a gap
        assert times == [start + k for k in range(len(times))], times
        # each enqueued exactly once: one message per fire, keyed by (schedule, time)
        jobs = [j for _, j in fired]
        assert len(set(jobs)) == len(jobs)
        assert [msgs[j].key for j in jobs] == [f"schedule:{name}:{t!r}" for t in times]
        assert {msgs[j].payload for j in jobs} == {payload}
        s = sql(db, "SELECT next_run_at, last_run_at, last_job_id FROM schedules "
                    "WHERE name = ?", (name,))[0]
        assert s == (times[-1] + 1, times[-1], jobs[-1])
    assert len(msgs) == len(runs(db, "every-second")) + len(runs(db, "cron-second"))

    # The schedulers' logs agree: every fire was logged by exactly one process.
    logged = Counter()
    pids = set()
    for log in logs:
        for line in log.read_text().splitlines():
            match = _FIRED.search(line)
            if match:
                pids.add(match.group(1))
                logged[(match.group(2), int(match.group(3)))] += 1
    assert set(logged.values()) == {1}
    assert set(logged) == {(n, j) for n in ("every-second", "cron-second") for _, j in runs(db, n)}
    assert 1 <= len(pids) <= 3
    assert db.integrity_check() == ["ok"]
    db.close()
