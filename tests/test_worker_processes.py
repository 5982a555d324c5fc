"""The worker as it runs in production: real ``liteq worker`` subprocesses, real
signals, real SIGKILL. The application is ``workerapp.py``; every test checks the
database afterwards, never the worker's word for it. On every engine."""

from __future__ import annotations

import importlib
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from dbsql import corrupt_payload, sql
from workerapp_tools import PATIENCE, alive, children_of, start_worker, stop, wait_until

import liteq
from liteq.backends import State

pytestmark = [
    pytest.mark.skipif(not hasattr(os, "fork"), reason="the process pool needs fork()"),
    pytest.mark.every_engine,
]


@pytest.fixture
def app(db_target: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The test app's module, (re)imported on a fresh database: its tasks enqueue there."""
    monkeypatch.setenv("LITEQ_DB", db_target)
    import workerapp

    module = importlib.reload(workerapp)
    yield module
    module.db.close()


def _results(db: liteq.Database, state: int = State.DONE) -> int:
    return int(sql(db, "SELECT count(*) FROM results WHERE state = ?", (int(state),))[0][0])


def _count(db: liteq.Database, query: str) -> int:
    return int(sql(db, query)[0][0])


def test_a_worker_killed_halfway_and_restarted_completes_every_task_and_atomic_effects_happen_once(
        app, tmp_path: Path) -> None:
    db = app.db
    db.queue("default", lease=2.0)
    jobs = app.record.enqueue_many([(n,) for n in range(2500)])
    jobs += app.touch.enqueue_many([(n,) for n in range(2500)])
    log = tmp_path / "worker.log"
    first = start_worker(os.environ["LITEQ_DB"], "--pool", "process", "-c", "2", log=log)
    wait_until(lambda: _results(db) >= 2500, what="half of the jobs")
    kids = children_of(first.pid)
    assert len(kids) == 2
    first.kill()  # SIGKILL: no cleanup of any kind
    assert first.wait(PATIENCE) == -signal.SIGKILL
    wait_until(lambda: not any(alive(k) for k in kids), what="the children to die with it")
    assert _results(db) < 5000, "the worker finished before it was killed"

    second = start_worker(os.environ["LITEQ_DB"], "--pool", "process", "-c", "2", log=log)
    wait_until(lambda: _results(db) == 5000, what="every job to finish")
    assert stop(second) == 0

    # Every job is done; the atomic side effects happened exactly once each, the
    # others at least once.
    assert {j.state for j in jobs} == {"done"}
    effects = Counter(n for (n,) in sql(db, "SELECT n FROM effects"))
    assert sorted(effects) == list(range(2500))
    assert set(effects.values()) == {1}
    touches = Counter(n for (n,) in sql(db, "SELECT n FROM touches"))
    assert sorted(touches) == list(range(2500))
    assert db.queue("default").stats()["depth"] == 0
    assert db.integrity_check() == ["ok"]


def test_a_task_that_sleeps_longer_than_its_lease_runs_once_while_another_worker_waits(
        app, tmp_path: Path) -> None:
    db = app.db
    db.queue("slow", lease=1.0)
    job = app.sleepy.delay("long", 2.5)
    log = tmp_path / "worker.log"
    workers = [start_worker(os.environ["LITEQ_DB"], "--pool", "process", "-c", "1", log=log),
               start_worker(os.environ["LITEQ_DB"], "--pool", "thread", "-c", "2", log=log)]
    try:
        assert job.result(wait=PATIENCE) == "long"
    finally:
        for w in workers:
            assert stop(w) == 0
    assert _count(db, "SELECT count(*) FROM starts WHERE tag = 'long'") == 1
    assert job.attempts == 1


def test_sigterm_lets_running_tasks_finish_within_the_grace_period(app, tmp_path: Path) -> None:
    db = app.db
    jobs = [app.sleepy.delay(f"t{i}", 1.0) for i in range(2)]
    w = start_worker(os.environ["LITEQ_DB"], "--pool", "process", "-c", "2", "--grace", "20",
                     log=tmp_path / "worker.log")
    wait_until(lambda: _count(db, "SELECT count(*) FROM starts") == 2,
               what="both tasks to start")
    sent = time.monotonic()
    assert stop(w, signal.SIGTERM) == 0
    assert time.monotonic() - sent < 10  # they needed about 1 s, not the 20 s grace
    assert [j.state for j in jobs] == ["done", "done"]
    assert [j.attempts for j in jobs] == [1, 1]
    assert _count(db, "SELECT count(*) FROM finishes") == 2


def test_sigterm_releases_tasks_still_running_after_the_grace_and_another_worker_takes_them_at_once(
        app, tmp_path: Path) -> None:
    db = app.db
    db.queue("slow", lease=30.0)
    # Each sleeps 30 s the first time it starts and 0.1 s the second time.
    jobs = [app.sleepy.delay(f"t{i}", 30.0, 0.1) for i in range(2)]
    log = tmp_path / "worker.log"
    first = start_worker(os.environ["LITEQ_DB"], "--pool", "process", "-c", "2", "--grace", "0.5", log=log)
    wait_until(lambda: _count(db, "SELECT count(*) FROM starts") == 2,
               what="both tasks to start")
    second = start_worker(os.environ["LITEQ_DB"], "--pool", "thread", "-c", "2", log=log)
    time.sleep(0.3)  # let it start and sit idle
    sent = time.monotonic()
    assert stop(first, signal.SIGTERM) == 0
    for i, j in enumerate(jobs):
        assert j.result(wait=PATIENCE) == f"t{i}"
    took = time.monotonic() - sent
    assert stop(second) == 0
    assert took < 15, f"picked up after {took:.1f}s: that is the 30 s lease, not a release"
    pids = {pid for (pid,) in sql(db, "SELECT pid FROM finishes")}
    assert pids == {second.pid}
    # The interrupted attempt was given back, not counted.
    assert [j.attempts for j in jobs] == [1, 1]


def test_a_second_sigterm_stops_at_once_and_releases_running_tasks(app, tmp_path: Path) -> None:
    db = app.db
    jobs = [app.sleepy.delay(f"t{i}", 30.0) for i in range(2)]
    w = start_worker(os.environ["LITEQ_DB"], "--pool", "process", "-c", "2", "--grace", "60",
                     log=tmp_path / "worker.log")
    wait_until(lambda: _count(db, "SELECT count(*) FROM starts") == 2,
               what="both tasks to start")
    w.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    assert w.poll() is None, "the first signal should wait for the grace period"
    sent = time.monotonic()
    assert stop(w, signal.SIGTERM) == 0
    assert time.monotonic() - sent < 10
    assert [j.state for j in jobs] == ["queued", "queued"]


def test_bad_messages_each_end_as_documented_and_the_process_pool_keeps_serving(
        app, tmp_path: Path) -> None:
    db = app.db
    bad = db.queue("bad", max_attempts=2, backoff=liteq.Backoff(base=0.01, jitter=0))
    before = app.whoami.delay()
    unknown = bad.put({"task": "app.nope", "args": [], "kwargs": {}})
    not_a_task = bad.put({"hello": "world"})
    garbled = bad.put({"task": "app.noop", "args": [], "kwargs": {}})
    corrupt_payload(db, garbled, b"\xff\x00\xff")
    timeout = app.forever.delay()
    crash = app.die.delay()
    exits = {kind: app.base.delay(kind) for kind in ("exit", "interrupt", "meltdown")}
    log = tmp_path / "worker.log"
    w = start_worker(os.environ["LITEQ_DB"], "--pool", "process", "-c", "1", "--queues", "bad", log=log)
    try:
        pid_before = before.result(wait=PATIENCE)
        finished = [unknown, not_a_task, garbled, timeout.id, crash.id,
                    *(j.id for j in exits.values())]
        wait_until(lambda: all(db.job(i).state == "failed" for i in finished),
                   what="every bad job to fail")
        after = app.whoami.delay()
        pid_after = after.result(wait=PATIENCE)
    finally:
        assert stop(w) == 0
    assert str(db.job(unknown).error) == \
        "unknown task 'app.nope': no task of that name is registered in this worker's application"
    assert db.job(unknown).attempts == 2  # after its attempts, as DESIGN says
    assert db.job(not_a_task).attempts == 1
    assert str(db.job(not_a_task).error).startswith("not a task message")
    assert str(db.job(garbled).error).startswith("undecodable payload")
    error = timeout.error
    assert error is not None and error.type == "liteq.TaskTimeout"
    assert "exceeded its timeout of 0.5 s" in error.message
    assert "died (exit code 3)" in str(crash.error)
    assert crash.attempts == 2
    assert exits["exit"].error.type == "SystemExit"
    assert exits["interrupt"].error.type == "KeyboardInterrupt"
    assert exits["meltdown"].error.type == "workerapp.Meltdown"
    assert "raise Meltdown" in exits["meltdown"].error.traceback
    # The timed-out and crashed children were replaced by new processes.
    assert pid_before != pid_after
    # Each has a results row, except the undecodable one: the claim buried it.
    assert _results(db, State.DEAD) == 7
