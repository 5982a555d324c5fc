"""Each attempt of a job, with its worker, times, outcome and error (issue 21): the
attempts that did not end a job are rows of their own (a retry written with the retry,
a lease that ran out written by the engine's trigger); the attempt that ended it is its
results row. On every engine."""

from __future__ import annotations

import json
import os
import socket
import time

import pytest
from click.testing import CliRunner
from dbsql import is_postgres
from webclient import served, table_rows
from workerapp_tools import drain

import liteq
from liteq.cli import cli

pytestmark = pytest.mark.every_engine

_NOW = liteq.Backoff(base=0, jitter=0)


def _stored_attempts(db: liteq.Database) -> int:
    """Rows in the attempts table (the engine's schema on PostgreSQL)."""
    table = f'"{db.backend.schema}".attempts' if is_postgres(db) else "attempts"  # type: ignore[attr-defined]
    return int(db.execute(f"SELECT count(*) FROM {table}")[0][0])


def test_a_job_that_fails_twice_then_succeeds_has_three_attempts_with_worker_outcome_and_error(
        db: liteq.Database) -> None:
    calls: list[int] = []

    @db.task(name="flaky", max_attempts=5, backoff=_NOW)
    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ValueError(f"no luck {len(calls)}")
        return "ok"

    job = flaky.delay()
    drain(db)
    tried = db.backend.attempts(job.id)
    assert [(a.attempt, a.outcome) for a in tried] == [(1, "retried"), (2, "retried"),
                                                       (3, "done")]
    host = f"{socket.gethostname()}:{os.getpid()}:"
    assert all(a.worker is not None and a.worker.startswith(host) for a in tried)
    assert len({a.worker for a in tried}) == 1  # one worker ran all three
    assert "ValueError: no luck 1" in (tried[0].error or "")
    assert "ValueError: no luck 2" in (tried[1].error or "")
    assert "Traceback" in (tried[0].error or "") and "flaky" in (tried[0].error or "")
    assert tried[2].error is None
    for a in tried:
        assert a.started_at is not None and a.started_at <= a.ended_at
    assert tried[0].ended_at <= tried[1].started_at  # type: ignore[operator]


def test_a_job_that_succeeds_at_once_writes_no_attempts_row(db: liteq.Database) -> None:
    @db.task(name="fine")
    def fine() -> int:
        return 1

    job = fine.delay()
    drain(db)
    (only,) = db.backend.attempts(job.id)
    assert (only.attempt, only.outcome, only.error) == (1, "done", None)
    assert _stored_attempts(db) == 0


def test_a_job_that_fails_for_good_ends_with_its_dead_attempt(db: liteq.Database) -> None:
    @db.task(name="doomed", max_attempts=2, backoff=_NOW)
    def doomed() -> None:
        raise KeyError("gone")

    job = doomed.delay()
    drain(db)
    tried = db.backend.attempts(job.id)
    assert [(a.attempt, a.outcome) for a in tried] == [(1, "retried"), (2, "dead")]
    assert all("KeyError" in (a.error or "") for a in tried)


def test_a_lease_that_runs_out_is_an_attempt_with_the_worker_that_held_it(
        db: liteq.Database) -> None:
    q = db.queue("slow", lease=0.2, max_attempts=3)
    mid = q.put({"task": "x", "args": [], "kwargs": {}})
    msg = q.get()
    assert msg is not None and msg.id == mid
    # The registry says which worker runs it (as a worker's heartbeat would).
    reg = liteq.registry.Registration(db, "worker", queues=["slow"], pool="thread",
                                      concurrency=1, running=lambda: [mid])
    reg.start()
    time.sleep(0.3)
    again = q.get()  # the claim's maintenance releases the expired lease first
    assert again is not None and again.id == mid and again.attempts == 2
    (expired,) = db.backend.attempts(mid)
    assert (expired.attempt, expired.outcome, expired.error) == (1, "lease expired",
                                                                 "lease expired")
    assert expired.worker == reg.id
    assert expired.started_at is not None and expired.started_at <= expired.ended_at
    reg.stop()


def test_a_lease_that_runs_out_with_no_worker_registered_has_an_unknown_worker(
        db: liteq.Database) -> None:
    q = db.queue("slow", lease=0.2, max_attempts=3)
    mid = q.put(1)
    assert q.get() is not None
    time.sleep(0.3)
    assert q.get() is not None
    (expired,) = db.backend.attempts(mid)
    assert (expired.attempt, expired.outcome, expired.worker) == (1, "lease expired", None)


def test_attempts_are_pruned_with_their_jobs_result(db: liteq.Database) -> None:
    calls: list[int] = []

    @db.task(name="once_more", backoff=_NOW, result_ttl=0.1)
    def once_more() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("first")

    kept = once_more.delay()
    drain(db)
    assert len(db.backend.attempts(kept.id)) == 2
    time.sleep(0.2)
    db.prune_results()
    assert db.backend.attempts(kept.id) == []
    assert _stored_attempts(db) == 0


def _flaky_job(db: liteq.Database) -> int:
    """A job that failed twice with a traceback, then succeeded; its id."""
    calls: list[int] = []

    @db.task(name="flaky_page", backoff=_NOW)
    def flaky_page() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ValueError(f"<b>attempt {len(calls)}</b> failed")
        return "fine"

    job = flaky_page.delay()
    drain(db)
    return job.id


def test_liteq_job_shows_the_timeline_and_its_json_has_each_attempts_traceback(
        db: liteq.Database, db_target: str) -> None:
    mid = _flaky_job(db)
    run = CliRunner().invoke(cli, ["--db", db_target, "job", str(mid), "--json"],
                             prog_name="liteq", catch_exceptions=False)
    assert run.exit_code == 0, run.output
    timeline = json.loads(run.stdout)["timeline"]
    assert [(t["attempt"], t["outcome"]) for t in timeline] == [
        (1, "retried"), (2, "retried"), (3, "done")]
    assert "Traceback" in timeline[0]["error"] and "attempt 1" in timeline[0]["error"]
    assert all(t["worker"] and t["duration"] is not None for t in timeline)
    text = CliRunner().invoke(cli, ["--db", db_target, "job", str(mid)], prog_name="liteq",
                              catch_exceptions=False).stdout
    assert "1. retried on " in text and "ValueError: <b>attempt 1</b> failed" in text
    assert "3. done on " in text


def test_the_job_page_shows_each_attempt_with_its_worker_and_escaped_traceback(
        db: liteq.Database) -> None:
    mid = _flaky_job(db)
    with served(db) as client:
        page = client.get(f"/message/{mid}").text
    rows = table_rows(page, "attempts")
    assert [r[:2] for r in rows] == [["1", "retried"], ["2", "retried"], ["3", "done"]]
    worker = db.backend.attempts(mid)[0].worker
    assert worker is not None and all(r[2] == worker for r in rows)
    assert "&lt;b&gt;attempt 2&lt;/b&gt;" in page and "<b>attempt" not in page
    assert "<summary>traceback</summary>" in page


def test_a_process_pools_child_records_its_workers_registry_id_and_its_own_pid(
        db: liteq.Database) -> None:
    @db.task(name="second_time", backoff=_NOW)
    def second_time() -> int:
        job = liteq.current_job()
        assert job is not None
        if job.attempts == 1:
            raise ValueError("first")
        return os.getpid()

    handle = second_time.delay()
    worker = drain(db, pool="process")
    tried = db.backend.attempts(handle.id)
    assert [a.outcome for a in tried] == ["retried", "done"]
    for a in tried:
        assert a.worker is not None
        wid, _, child = a.worker.rpartition("/")
        assert wid.startswith(f"{socket.gethostname()}:{os.getpid()}:")
        assert child.isdigit() and int(child) != os.getpid()
    assert worker.counts()["done"] == 1


def test_each_attempts_end_minus_start_is_its_run_time(db: liteq.Database) -> None:
    @db.task(name="sleepy", backoff=_NOW)
    def sleepy() -> None:
        job = liteq.current_job()
        assert job is not None
        time.sleep(0.05 * job.attempts)
        if job.attempts == 1:
            raise ValueError("again")

    handle = sleepy.delay()
    drain(db)
    first, last = db.backend.attempts(handle.id)
    took = [a.ended_at - a.started_at for a in (first, last)]  # type: ignore[operator]
    assert took[0] >= 0.05 and took[1] >= 0.1  # each slept 0.05 s per attempt number
    info = db.job(handle.id).info()
    assert info.duration == pytest.approx(took[1], abs=1e-6)
