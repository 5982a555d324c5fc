"""Tasks and job handles: registration, enqueueing, states, results, cancellation.

Jobs are run by an in-process worker in burst mode (it stops once nothing is due),
against a real database of each engine under test (tests/engines.py).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time
from typing import Any

import dbsql
import pytest
from workerapp_tools import drain

import liteq
from liteq.backends import State
from liteq.task import (
    Job,
    JobCancelled,
    JobError,
    JobFailed,
    JobNotFound,
    NoResult,
    ResultTimeout,
    current_job,
    list_jobs,
    registry,
)
from liteq.worker import Worker

pytestmark = pytest.mark.every_engine


@pytest.fixture
def cdb(clocked_db: liteq.Database) -> liteq.Database:
    """conftest's database on the hand-moved ``clock``."""
    return clocked_db



def rows(db: liteq.Database) -> list[tuple[Any, ...]]:
    return dbsql.rows(db, "messages")


# -- registration --------------------------------------------------------------------------

def test_a_decorated_function_still_runs_when_called_directly(db) -> None:
    @db.task
    def add(a: int, b: int) -> int:
        return a + b

    assert add(2, 3) == 5
    assert add.__name__ == "add"
    assert rows(db) == []


def test_task_names_default_to_module_and_qualname_and_can_be_given(db) -> None:
    @db.task
    def plain() -> None: ...

    @db.task(name="billing.charge", queue="billing")
    def charge() -> None: ...

    assert plain.name == f"{__name__}.{plain.__qualname__}"
    assert charge.name == "billing.charge"
    assert registry(db)["billing.charge"] is charge
    assert charge.queue == "billing"


def test_registering_another_function_under_a_taken_name_is_refused(db) -> None:
    @db.task(name="x.one")
    def one() -> None: ...

    def other() -> None: ...

    with pytest.raises(liteq.InvalidArgument, match="already registered"):
        db.task(name="x.one")(other)


@pytest.mark.parametrize("options, message", [
    ({"queue": "bad name"}, "queue name"),
    ({"max_attempts": 0}, "max_attempts must be a positive integer"),
    ({"timeout": -1}, "timeout must be"),
    ({"timeout": 0}, "timeout must be a number of seconds > 0"),
    ({"backoff": 3}, "backoff must be a liteq.Backoff"),
    ({"priority": "high"}, "priority must be an integer"),
    ({"result_ttl": -5}, "result_ttl must be"),
    ({"name": ""}, "task name must be a non-empty string"),
])
def test_bad_task_options_are_refused_at_registration_saying_what_is_allowed(
        db, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        db.task(**options)(lambda: None)
    assert rows(db) == []


# -- enqueueing ------------------------------------------------------------------------------

def test_delay_enqueues_one_message_naming_the_task_and_returns_a_queued_job(db) -> None:
    @db.task(name="mail.send", queue="emails", priority=3)
    def send(to: str, subject: str = "") -> None: ...

    job = send.delay("a@b.c", subject="hi")
    msg = db.message(job.id)
    assert msg is not None and msg.queue == "emails" and msg.priority == 3
    assert msg.payload == {"task": "mail.send", "args": ["a@b.c"], "kwargs": {"subject": "hi"}}
    assert (job.state, job.attempts, job.error, job.task) == ("queued", 0, None, "mail.send")
    assert db.job(job.id) == job


def test_an_argument_cbor_cannot_encode_fails_at_delay_and_nothing_is_written(db) -> None:
    @db.task
    def store(value: Any) -> None: ...

    with pytest.raises(liteq.SerializationError, match="object"):
        store.delay(object())
    with pytest.raises(liteq.SerializationError):
        store.enqueue_many([(1,), (threading.Lock(),), (3,)])
    assert rows(db) == []
    # CBOR types do go through, tuples arrive as lists.
    when = dt.datetime(2026, 1, 2, tzinfo=dt.UTC)
    job = store.delay((1, b"\x00", when))
    assert db.message(job.id).payload["args"] == [[1, b"\x00", when]]


def test_a_delayed_job_is_scheduled_until_due_then_queued(cdb, clock) -> None:
    @cdb.task
    def later() -> None: ...

    job = later.enqueue(delay=60)
    assert job.state == "scheduled"
    clock.advance(60)
    cdb.queue("default").expire()
    assert job.state == "queued"


def test_enqueue_with_a_key_returns_the_unfinished_job_holding_it(db) -> None:
    @db.task
    def report(day: str) -> None: ...

    first = report.enqueue(["mon"], key="report:mon")
    assert report.enqueue(["mon"], key="report:mon") == first
    assert report.enqueue(["tue"], key="report:tue") != first
    assert len(rows(db)) == 2


def test_enqueue_many_puts_every_call_in_one_transaction(db) -> None:
    calls = []

    @db.task
    def square(x: int) -> int:
        calls.append(x)
        return x * x

    jobs = square.enqueue_many([(i,) for i in range(100)], priority=1)
    assert [j.id for j in jobs] == sorted(j.id for j in jobs)
    drain(db)
    assert sorted(calls) == list(range(100))
    assert {j.state for j in jobs} == {"done"}


# -- results and states ----------------------------------------------------------------------

def test_a_done_jobs_result_outlives_its_deleted_message_until_its_result_ttl(cdb, clock) -> None:
    @cdb.task(store_result=True, result_ttl=3600)
    def add(a: int, b: int) -> int:
        return a + b

    job = add.delay(2, 40)
    drain(cdb)
    assert cdb.message(job.id) is None  # acked with retention 0: the message is gone
    assert (job.state, job.result(), job.attempts) == ("done", 42, 1)
    assert cdb.backend.result(job.id)[2] == State.DONE
    clock.advance(3601)
    cdb.backend.prune_results(clock())
    with pytest.raises(JobNotFound, match="result_ttl"):
        job.state  # noqa: B018


def test_result_raises_a_clear_error_for_each_way_there_is_no_value(db) -> None:
    @db.task
    def quiet() -> int:
        return 1

    @db.task(max_attempts=1)
    def broken() -> None:
        raise ValueError("no luck")

    @db.task(store_result=True)
    def handle() -> Any:
        return threading.Lock()

    @db.task
    def never() -> None: ...

    jobs = quiet.delay(), broken.delay(), handle.delay(), never.delay()
    cancelled = never.delay()
    assert cancelled.cancel() == "cancelled"
    with pytest.raises(ResultTimeout, match="still queued after waiting 0.05 s"):
        jobs[0].result(wait=0.05)
    drain(db)
    with pytest.raises(NoResult, match="store_result=True"):
        jobs[0].result()
    with pytest.raises(JobFailed, match="ValueError: no luck") as failed:
        jobs[1].result()
    assert failed.value.error is not None and failed.value.error.type == "ValueError"
    with pytest.raises(NoResult, match="not stored: cannot encode"):
        jobs[2].result()
    assert jobs[2].state == "done"
    with pytest.raises(JobCancelled):
        cancelled.result()
    assert isinstance(ResultTimeout("x"), TimeoutError)


def test_a_job_id_that_never_existed_is_not_found(db) -> None:
    with pytest.raises(JobNotFound, match="no job with id 99"):
        db.job(99).state  # noqa: B018
    with pytest.raises(liteq.InvalidArgument):
        Job(db, 0)


def test_result_waits_for_a_worker_in_another_thread(db) -> None:
    @db.task(store_result=True)
    def slow() -> str:
        time.sleep(0.2)
        return "ok"

    job = slow.delay()
    w = Worker(db, concurrency=1, install_signals=False, summary_interval=0)
    t = threading.Thread(target=w.run)
    t.start()
    try:
        assert job.result(wait=30) == "ok"
    finally:
        w.stop()
        t.join(30)


def test_job_errors_keep_type_message_and_traceback_through_their_text_form() -> None:
    try:
        raise KeyError("missing")
    except KeyError as exc:
        error = JobError.from_exception(exc)
    parsed = JobError.parse(error.format())
    assert parsed == error
    assert parsed.type == "KeyError" and parsed.message == "'missing'"
    assert parsed.traceback.startswith("Traceback (most recent call last):")
    assert JobError.parse("lease expired") == JobError(None, "lease expired")
    assert JobError.parse("unknown task 'x'") == JobError(None, "unknown task 'x'")
    assert JobError.parse("app.Boom: two\nlines") == JobError("app.Boom", "two\nlines")
    assert str(JobError("liteq.Fail", "")) == "liteq.Fail"


# -- cancellation and context ----------------------------------------------------------------

def test_a_queued_job_that_is_cancelled_never_runs_and_stays_cancelled(db) -> None:
    ran = []

    @db.task
    def work() -> None:
        ran.append(1)

    job = work.delay()
    assert job.cancel() == "cancelled"
    drain(db)
    assert ran == []
    assert job.state == "cancelled"
    assert db.backend.result(job.id)[2] == State.CANCELLED
    assert job.cancel() == "finished"


def test_current_job_tells_a_task_about_its_job_and_is_none_outside(db) -> None:
    seen = []

    @db.task(max_attempts=4)
    def who(x: int) -> None:
        job = current_job()
        assert job is not None
        seen.append((job.id, job.task, job.queue, job.attempts, job.max_attempts, job.args))

    job = who.delay(7)
    drain(db)
    assert seen == [(job.id, who.name, "default", 1, 4, [7])]
    assert current_job() is None


def test_an_async_task_runs_in_the_workers_event_loop(db) -> None:
    @db.task(store_result=True)
    async def fetch(x: int) -> int:
        await asyncio.sleep(0.01)
        return x + 1

    assert asyncio.run(fetch(1)) == 2  # a direct call is the coroutine function itself
    job = fetch.delay(41)
    drain(db)
    assert job.result() == 42


def test_jobs_are_listed_newest_first_by_state_and_task(db) -> None:
    @db.task(name="t.ok")
    def ok() -> None: ...

    @db.task(name="t.bad", max_attempts=1)
    def bad() -> None:
        raise RuntimeError("x")

    done = ok.delay()
    failed = bad.delay()
    drain(db)
    waiting = ok.delay()
    db.queue("default").put("not a job")
    assert [i.id for i in list_jobs(db)] == [waiting.id, failed.id, done.id]
    assert [i.id for i in list_jobs(db, state="failed")] == [failed.id]
    assert [i.id for i in list_jobs(db, task="t.ok")] == [waiting.id, done.id]
    assert [i.id for i in list_jobs(db, state="queued")] == [waiting.id]
    assert [i.id for i in list_jobs(db, limit=1)] == [waiting.id]
    with pytest.raises(ValueError, match="state must be one of"):
        list_jobs(db, state="pending")
