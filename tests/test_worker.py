"""The worker in this process (thread pool): retries and backoff with an injected
clock, flow signals, bad messages, BaseExceptions, timeouts, atomic tasks,
cancellation, hooks, logging and shutdown. The process pool, signals and SIGKILL
are in ``test_worker_processes.py``."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest
from dbsql import app_table, corrupt_payload, sql
from helpers import count_claims
from workerapp_tools import PATIENCE, drain, wait_until

import liteq
from liteq.hooks import Hook
from liteq.task import (
    Cancelled,
    Fail,
    JobContext,
    JobError,
    Outcome,
    Retry,
    current_job,
)
from liteq.worker import Worker

pytestmark = pytest.mark.every_engine


@pytest.fixture
def cdb(clocked_db: liteq.Database) -> liteq.Database:
    """conftest's database on the hand-moved ``clock``."""
    return clocked_db



class Background:
    """A worker running in a thread of this process until the test stops it."""

    def __init__(self, db: liteq.Database, **options: Any) -> None:
        self.worker = Worker(db, install_signals=False, summary_interval=0, **options)
        self.thread = threading.Thread(target=self.worker.run, daemon=True)

    def __enter__(self) -> Worker:
        self.thread.start()
        return self.worker

    def __exit__(self, *exc: object) -> None:
        self.worker.stop()
        self.thread.join(30)
        assert not self.thread.is_alive()


# -- retries ---------------------------------------------------------------------------------

def test_retry_delays_follow_the_backoff_and_the_last_attempt_keeps_the_traceback(
        cdb, clock) -> None:
    runs = []

    @cdb.task(max_attempts=4, backoff=liteq.Backoff(base=10, factor=3, max=50, jitter=0))
    def flaky() -> None:
        runs.append(clock())
        raise ValueError(f"attempt {len(runs)} failed")

    job = flaky.delay()
    start = clock()
    for attempt, delay in [(1, 10), (2, 30), (3, 50)]:  # 10 * 3**(n-1), at most 50
        drain(cdb)
        assert job.state == "retrying" and job.attempts == attempt
        msg = cdb.message(job.id)
        assert msg is not None and msg.run_at == clock() + delay
        clock.advance(delay - 1)
        drain(cdb)
        assert len(runs) == attempt  # not due yet: nothing ran
        clock.advance(1)
    drain(cdb)
    assert runs == [start, start + 10, start + 40, start + 90]
    assert job.state == "failed" and job.attempts == 4
    error = job.error
    assert error is not None and error.type == "ValueError"
    assert error.message == "attempt 4 failed"
    assert 'raise ValueError(f"attempt {len(runs)} failed")' in error.traceback
    assert cdb.message(job.id).state == "dead"


def test_jitter_spreads_retry_delays_within_the_configured_fraction(cdb, clock) -> None:
    @cdb.task(max_attempts=2, backoff=liteq.Backoff(base=100, jitter=0.5))
    def flaky(i: int) -> None:
        raise ValueError(i)

    jobs = flaky.enqueue_many([(i,) for i in range(40)])
    drain(cdb)
    delays = [cdb.message(j.id).run_at - clock() for j in jobs]
    assert all(50 <= d <= 150 for d in delays)
    assert len(set(delays)) > 30  # spread, not in step


def test_the_queues_backoff_applies_when_the_task_has_none(cdb, clock) -> None:
    cdb.queue("default", backoff=liteq.Backoff(base=7, jitter=0))

    @cdb.task
    def flaky() -> None:
        raise ValueError

    job = flaky.delay()
    drain(cdb)
    assert cdb.message(job.id).run_at == clock() + 7


def test_retry_asks_for_another_attempt_after_its_delay_and_counts_it(cdb, clock) -> None:
    @cdb.task(max_attempts=2)
    def later() -> None:
        raise Retry("rate limited", delay=7)

    job = later.delay()
    drain(cdb)
    assert job.state == "retrying" and cdb.message(job.id).run_at == clock() + 7
    assert str(job.error) == "liteq.Retry: rate limited"
    clock.advance(7)
    drain(cdb)
    assert job.state == "failed" and str(job.error) == "liteq.Retry: rate limited"


def test_fail_fails_the_job_at_once_without_retries(db) -> None:
    @db.task(max_attempts=5)
    def refuse() -> None:
        raise Fail("card declined")

    job = refuse.delay()
    drain(db)
    assert (job.state, job.attempts, str(job.error)) == ("failed", 1, "liteq.Fail: card declined")


# -- bad messages ------------------------------------------------------------------------

def test_an_unknown_task_is_retried_then_dead_with_its_name_and_the_worker_goes_on(cdb, clock) -> None:
    q = cdb.queue("default", max_attempts=3, backoff=liteq.Backoff(base=1, jitter=0))
    done = []

    @cdb.task
    def known() -> None:
        done.append(1)

    mid = q.put({"task": "gone.away", "args": [1], "kwargs": {}})
    known.delay()
    for _ in range(3):
        drain(cdb)
        clock.advance(10)
    job = cdb.job(mid)
    assert job.state == "failed" and job.attempts == 3
    assert str(job.error).startswith("unknown task 'gone.away'")
    assert cdb.message(mid).error.startswith("unknown task 'gone.away'")
    assert done == [1]


def test_a_payload_that_is_not_a_task_call_is_dead_at_once(db) -> None:
    q = db.queue("default")
    ids = [q.put("hello"), q.put({"task": 3}), q.put({"task": "t", "args": "no"})]
    drain(db)
    for mid in ids:
        msg = db.message(mid)
        assert msg is not None and msg.state == "dead" and msg.attempts == 1
        assert msg.error.startswith("not a task message")


def test_an_undecodable_payload_is_buried_and_the_worker_goes_on(db) -> None:
    q = db.queue("default")

    @db.task
    def fine() -> None: ...

    mid = q.put({"task": "x", "args": [], "kwargs": {}})
    corrupt_payload(db, mid)
    job = fine.delay()
    drain(db)
    assert db.job(mid).state == "failed"
    assert str(db.job(mid).error).startswith("undecodable payload")
    assert job.state == "done"


@pytest.mark.parametrize("exc", [SystemExit(2), KeyboardInterrupt(), GeneratorExit()])
def test_a_task_raising_a_base_exception_fails_its_job_and_not_the_worker(db, exc) -> None:
    @db.task(max_attempts=1)
    def bad() -> None:
        raise exc

    @db.task
    def good() -> None: ...

    first, second = bad.delay(), good.delay()
    w = drain(db)
    assert first.state == "failed" and first.error.type == type(exc).__name__
    assert second.state == "done"
    assert w.counts()["failed"] == 1 and w.counts()["done"] == 1


# -- timeouts ------------------------------------------------------------------------------

def test_a_thread_pool_task_past_its_timeout_gets_task_timeout_raised_inside_it(db) -> None:
    caught = []

    @db.task(timeout=0.3, max_attempts=1)
    def spin() -> None:
        try:
            while True:  # Python code: the exception lands between two sleeps
                time.sleep(0.01)
        except Exception:  # noqa: BLE001 - TaskTimeout is no Exception, so not here
            caught.append("swallowed")
            raise

    @db.task
    def after() -> None: ...

    jobs = spin.delay(), after.delay()
    with Background(db, concurrency=1):
        wait_until(lambda: jobs[1].state == "done", timeout=30, what="the worker to go on")
    assert caught == []
    assert jobs[0].state == "failed"
    assert str(jobs[0].error).startswith("liteq.TaskTimeout: task ")
    assert "exceeded its timeout of 0.3 s" in str(jobs[0].error)


def test_an_async_task_past_its_timeout_is_cancelled_in_the_event_loop(db) -> None:
    import asyncio

    @db.task(timeout=0.2, max_attempts=1)
    async def hang() -> None:
        await asyncio.sleep(60)

    job = hang.delay()
    drain(db)
    assert job.state == "failed" and job.error.type == "liteq.TaskTimeout"


# -- atomic tasks: side effects commit with the ack ------------------------------------------

def test_an_atomic_tasks_writes_commit_with_its_ack_and_roll_back_when_it_fails(db) -> None:
    app_table(db, "ledger", "n INTEGER")

    @db.task(atomic=True, max_attempts=2, backoff=liteq.Backoff(base=0, jitter=0))
    def book(n: int, fail_first: bool) -> None:
        sql(db, "INSERT INTO ledger (n) VALUES (?)", (n,))
        job = current_job()
        if fail_first and job is not None and job.attempts == 1:
            raise RuntimeError("half way")

    ok, retried = book.delay(1, False), book.delay(2, True)
    drain(db)
    assert ok.state == retried.state == "done"
    assert retried.attempts == 2
    assert sorted(sql(db, "SELECT n FROM ledger")) == [(1,), (2,)]


def test_a_job_whose_lease_was_lost_while_it_ran_is_not_acked_by_the_late_worker(cdb, clock) -> None:
    q = cdb.queue("default", lease=5)
    taken: list[liteq.Message] = []

    @cdb.task
    def slow() -> None:
        clock.advance(60)  # the lease runs out; someone else claims the job
        t = threading.Thread(target=lambda: taken.append(q.get()))
        t.start()
        t.join()

    job = slow.delay()
    w = drain(cdb)
    assert w.counts()["lost"] == 1
    assert taken[0] is not None and taken[0].id == job.id and taken[0].attempts == 2
    assert job.state == "running"  # the second holder has it; nothing was acked under it
    assert cdb.backend.result(job.id) is None


# -- cancellation -----------------------------------------------------------------------------

def test_a_running_job_asked_to_cancel_stops_at_its_next_checkpoint(db) -> None:
    started = threading.Event()

    @db.task
    def export() -> None:
        started.set()
        job = current_job()
        assert job is not None
        for _ in range(3000):
            job.checkpoint()
            time.sleep(0.01)

    job = export.delay()
    with Background(db, concurrency=1):
        assert started.wait(30)
        assert job.cancel() == "requested"
        wait_until(lambda: job.state == "cancelled", timeout=30, what="the job to stop")
    assert job.error is not None and job.error.type == "liteq.Cancelled"
    assert job.cancel() == "finished"


def test_a_cancel_requested_before_a_worker_died_is_honoured_on_redelivery(cdb, clock) -> None:
    ran = []

    @cdb.task
    def work() -> None:
        ran.append(1)

    q = cdb.queue("default", lease=5)
    job = work.delay()
    held = q.get()  # a worker claims it ...
    assert held is not None
    assert job.cancel() == "requested"
    clock.advance(10)  # ... and dies: its lease runs out
    drain(cdb)
    assert ran == []
    assert job.state == "cancelled"


# -- hooks and logging ----------------------------------------------------------------------

class Recorder(Hook):
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def on_worker_start(self, worker: Worker) -> None:
        self.calls.append(("start",))

    def before_job(self, job: JobContext) -> None:
        self.calls.append(("before", job.id))

    def after_job(self, job: JobContext, outcome: Outcome) -> None:
        self.calls.append(("after", job.id, outcome.state, outcome.result))

    def on_retry(self, job: JobContext, error: JobError, delay: float) -> None:
        self.calls.append(("retry", job.id, str(error), delay))

    def on_failure(self, job: JobContext, error: JobError) -> None:
        self.calls.append(("failure", job.id, str(error)))

    def on_worker_stop(self, worker: Worker) -> None:
        self.calls.append(("stop",))


class Broken(Hook):
    def before_job(self, job: JobContext) -> None:
        raise RuntimeError("hook bug")

    def after_job(self, job: JobContext, outcome: Outcome) -> None:
        raise SystemExit("hook exits")


def test_hooks_see_each_job_start_end_retry_and_failure_and_a_raising_hook_is_only_logged(
        db, caplog) -> None:
    @db.task(max_attempts=2, backoff=liteq.Backoff(base=0, jitter=0))
    def flaky() -> None:
        raise ValueError("nope")

    @db.task
    def fine() -> int:
        return 5

    bad, good = flaky.delay(), fine.delay()
    recorder = Recorder()
    with caplog.at_level(logging.ERROR, logger="liteq.worker"):
        drain(db, hooks=[Broken(), recorder])
    calls = recorder.calls
    assert calls[0] == ("start",) and calls[-1] == ("stop",)
    # Successful jobs are acked in batches: their after_job comes once the ack has
    # committed, which may be after the next job started. Per job, the order holds.
    assert [c for c in calls if c[1:2] == (bad.id,)] == [
        ("before", bad.id), ("retry", bad.id, "ValueError: nope", 0.0),
        ("after", bad.id, "retrying", None),
        ("before", bad.id), ("failure", bad.id, "ValueError: nope"),
        ("after", bad.id, "failed", None),
    ]
    assert [c for c in calls if c[1:2] == (good.id,)] == [
        ("before", good.id), ("after", good.id, "done", 5)]
    assert good.state == "done" and bad.state == "failed"
    hook_errors = [r for r in caplog.records if "hook Broken" in r.getMessage()]
    assert len(hook_errors) == 6  # before and after, for each of the three runs


def test_each_job_logs_one_line_as_it_starts_and_one_with_its_duration_as_it_ends(
        db, caplog) -> None:
    @db.task(name="app.hello")
    def hello() -> None: ...

    job = hello.delay()
    with caplog.at_level(logging.DEBUG, logger="liteq.worker"):
        drain(db)
    lines = [r for r in caplog.records if getattr(r, "job_id", None) == job.id]
    assert [r.getMessage().split(" (run time ")[0] for r in lines] == [
        f"job {job.id} app.hello started (attempt 1 of 5)", f"job {job.id} app.hello done"]
    assert lines[1].duration >= 0 and lines[1].task == "app.hello"  # type: ignore[attr-defined]


def test_the_periodic_summary_counts_jobs_by_outcome(db, caplog) -> None:
    @db.task
    def noop() -> None: ...

    noop.enqueue_many([()] * 20)
    summaries: list[dict[str, int]] = []

    class Summary(Hook):
        def on_summary(self, worker: Worker, counts: dict[str, int], seconds: float) -> None:
            summaries.append(counts)

    with caplog.at_level(logging.INFO, logger="liteq.worker"):
        w = Worker(db, install_signals=False, summary_interval=0.05, hooks=[Summary()])
        t = threading.Thread(target=w.run)
        t.start()
        wait_until(lambda: summaries and summaries[-1]["done"] == 20, timeout=30,
                   what="a summary counting every job")
        w.stop()
        t.join(30)
    assert any(r.getMessage().startswith("summary: ") for r in caplog.records)


# -- serving and stopping ---------------------------------------------------------------------

def test_a_worker_takes_from_its_first_queue_before_the_next(db) -> None:
    order = []

    @db.task(queue="low")
    def low(i: int) -> None:
        order.append(("low", i))

    @db.task(queue="high")
    def high(i: int) -> None:
        order.append(("high", i))

    low.enqueue_many([(i,) for i in range(3)])
    high.enqueue_many([(i,) for i in range(3)])
    drain(db, queues=["high", "low"])
    assert [q for q, _ in order] == ["high"] * 3 + ["low"] * 3


@pytest.mark.sqlite_only("counts the claims of consumers woken by inotify on the -wal file")
def test_idle_consumers_do_not_take_the_write_lock_for_other_queues_commits(db_path) -> None:
    # Every commit to the file wakes every idle consumer. A woken consumer looks without
    # the write lock first, so 50 puts to another queue cost the idle worker no claims
    # (each claim is a write transaction, queued on the lock with the producer), and a
    # job enqueued afterwards still starts at once.
    db = liteq.connect(db_path)
    if not db.waiter().uses_inotify:
        pytest.skip("needs inotify wake-ups (Linux)")
    claims = count_claims(db)  # before any queue is made: queues bind the claim once
    started = threading.Event()

    @db.task(queue="work")
    def job() -> None:
        started.set()

    other = liteq.connect(db_path)
    busy = other.queue("busy")
    with Background(db, queues=["work"], concurrency=2):
        wait_until(lambda: len(claims) >= 2)  # each consumer's first, empty claim
        before = len(claims)
        for i in range(50):
            busy.put(i)
            time.sleep(0.002)
        during = len(claims) - before
        job.delay()
        assert started.wait(PATIENCE)
    # A consumer re-claims after a wait that times out (at most 1 s): a few, not 100.
    assert during <= 4, f"{during} claims (write transactions) during 50 other commits"
    other.close()
    db.close()


def test_heartbeats_keep_a_task_longer_than_its_lease_from_running_twice(db) -> None:
    # Two and a half leases long. A heartbeat every third of the lease leaves two thirds
    # of it for one to get through: 0.67 s (a 0.3 s lease left 0.2 s, which a loaded
    # machine's PostgreSQL round trip sometimes missed).
    db.queue("default", lease=1.0)
    runs = []

    @db.task(store_result=True)
    def long() -> int:
        runs.append(1)
        time.sleep(2.5)
        return len(runs)

    job = long.delay()
    with Background(db, concurrency=3):
        assert job.result(wait=30) == 1
    assert runs == [1] and job.attempts == 1


def test_stop_releases_jobs_still_running_after_the_grace_without_counting_the_attempt(db) -> None:
    started = threading.Event()

    @db.task
    def stuck() -> None:
        started.set()
        for _ in range(1000):
            time.sleep(0.01)

    job = stuck.delay()
    w = Worker(db, concurrency=1, grace=0.2, install_signals=False, summary_interval=0)
    t = threading.Thread(target=w.run)
    t.start()
    assert started.wait(30)
    w.stop()
    t.join(30)
    assert not t.is_alive()
    assert job.state == "queued" and job.attempts == 0
    assert w.counts()["released"] == 1


def test_bad_worker_options_are_refused(db) -> None:
    with pytest.raises(ValueError, match="pool must be"):
        Worker(db, pool="greenlet")
    with pytest.raises(ValueError, match="concurrency must be a positive integer"):
        Worker(db, concurrency=0)
    with pytest.raises(ValueError, match="queues must be a non-empty list"):
        Worker(db, queues="default")
    with pytest.raises(ValueError, match="queue name"):
        Worker(db, queues=["no spaces"])


def test_cancelled_is_a_flow_signal_a_task_may_raise_itself(db) -> None:
    @db.task
    def give_up() -> None:
        raise Cancelled("not needed any more")

    job = give_up.delay()
    drain(db)
    assert job.state == "cancelled"
