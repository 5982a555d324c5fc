"""No-op tasks through a real worker: ``liteq worker`` against huey's consumer.

Both run two worker processes on a fresh file, started idle. N no-op jobs are then
enqueued in one transaction, and the clock runs from just before that transaction
until every job is finished:

* liteq: ``liteq worker APP --pool process -c 2``; ``noop.enqueue_many`` commits the
  jobs; done when the queue's depth is 0 (each job's ``results`` row is written in
  the same transaction as its ack).
* huey: ``huey_consumer APP.huey -w 2 -k process -n`` with ``SqliteHuey``; the jobs
  are the rows ``noop()`` would enqueue (``huey.serialize_task``), inserted in one
  transaction because huey has no batch enqueue; the task returns 1 so that huey
  stores a result per job; done when all N results are stored. The consumer polls
  with ``-d 0.001 -m 0.05 -b 2`` (the harness's backoff) instead of its defaults
  (0.1 s growing to 10 s), which would add seconds of idle wait to a run.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import time
from typing import Any

from liteq.task import NoResult

LITEQ_APP = '''
import os
import liteq

db = liteq.connect(os.environ["LITEQ_DB"], durability=os.environ["BENCH_SYNC"].lower())

@db.task(name="bench.noop")
def noop():
    pass
'''

HUEY_APP = '''
import os
from huey import SqliteHuey
from huey.storage import SqliteStorage


class NormalSyncStorage(SqliteStorage):
    def _create_connection(self):
        conn = super()._create_connection()
        conn.execute("pragma synchronous=NORMAL")
        return conn


if os.environ["BENCH_SYNC"] == "FULL":
    huey = SqliteHuey("bench", filename=os.environ["BENCH_HUEY_DB"], fsync=True)
else:
    huey = SqliteHuey("bench", filename=os.environ["BENCH_HUEY_DB"],
                      storage_class=NormalSyncStorage)


@huey.task()
def noop():
    return 1
'''

TIMEOUT = 300.0


def _env(tmp: str, **extra: str) -> dict[str, str]:
    path = tmp + os.pathsep + os.environ.get("PYTHONPATH", "")
    return dict(os.environ, PYTHONPATH=path, **extra)


def _import_app(tmp: str, name: str, source: str, env: dict[str, str]) -> Any:
    with open(os.path.join(tmp, name + ".py"), "w") as f:
        f.write(source)
    os.environ.update({k: v for k, v in env.items() if k.startswith(("BENCH_", "LITEQ_DB"))})
    sys.path.insert(0, tmp)
    try:
        sys.modules.pop(name, None)
        return importlib.import_module(name)
    finally:
        sys.path.remove(tmp)


def _stop(proc: subprocess.Popen[bytes], sig_int: bool = False) -> None:
    if proc.poll() is None:
        if sig_int:
            proc.send_signal(2)
        else:
            proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def liteq_tasks(tmp: str, n: int, sync: str) -> dict[str, Any]:
    """Tasks/s through ``liteq worker`` (process pool, 2 children)."""
    db_path = os.path.join(tmp, "tasks.db")
    env = _env(tmp, LITEQ_DB=db_path, BENCH_SYNC=sync)
    app = _import_app(tmp, "liteq_benchapp", LITEQ_APP, env)
    db = app.db
    q = db.queue("default")
    cmd = [sys.executable, "-m", "liteq", "--db", db_path, "worker",
           "liteq_benchapp", "--log-level", "warning", "--pool", "process", "-c", "2"]
    proc = subprocess.Popen(cmd, env=env, cwd=tmp)
    try:
        probe = app.noop.delay()
        try:
            probe.result(wait=60)  # returns once the worker finished it
        except NoResult:
            pass  # a no-op stores no result: done is all we waited for
        start = time.perf_counter()
        app.noop.enqueue_many([()] * n)
        deadline = time.monotonic() + TIMEOUT
        while len(q) and time.monotonic() < deadline:
            time.sleep(0.002)
        took = time.perf_counter() - start
        done = db.execute("SELECT count(*) FROM results WHERE state = 3")[0][0] - 1
    finally:
        _stop(proc)
        db.close()
    return {"value": n / took, "done": done, "expected": n}


def huey_tasks(tmp: str, n: int, sync: str) -> dict[str, Any]:
    """Tasks/s through huey's consumer (2 worker processes) on SqliteHuey."""
    db_path = os.path.join(tmp, "huey-tasks.db")
    env = _env(tmp, BENCH_HUEY_DB=db_path, BENCH_SYNC=sync)
    app = _import_app(tmp, "huey_benchapp", HUEY_APP, env)
    huey = app.huey
    cmd = [sys.executable, "-m", "huey.bin.huey_consumer", "huey_benchapp.huey", "-w", "2",
           "-k", "process", "-n", "-d", "0.001", "-m", "0.05", "-b", "2", "-q"]
    proc = subprocess.Popen(cmd, env=env, cwd=tmp)
    try:
        probe = app.noop()
        probe.get(blocking=True, timeout=60)
        rows = [(huey.storage.name, huey.serialize_task(app.noop.s()), 0) for _ in range(n)]
        start = time.perf_counter()
        with huey.storage.db(commit=True) as curs:
            curs.executemany("insert into task (queue, data, priority) values (?, ?, ?)", rows)
        deadline = time.monotonic() + TIMEOUT
        while huey.result_count() < n and time.monotonic() < deadline:
            time.sleep(0.002)
        took = time.perf_counter() - start
        done = huey.result_count()
    finally:
        _stop(proc, sig_int=True)
        huey.storage.close()
    return {"value": n / took, "done": done, "expected": n}
