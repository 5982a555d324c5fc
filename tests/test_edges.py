"""Validation at the edge: integers past 64 bits, NaN, infinity, booleans, lone
surrogates and times out of range are refused with InvalidArgument (or another
LiteqError) before anything is written, and the CLI says ``Error:`` without a
traceback (issue 16, items 4 and 5)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
from click.testing import CliRunner, Result
from dbsql import everything

import liteq
from liteq import Backoff
from liteq.cli import cli

pytestmark = pytest.mark.every_engine

BIG = 2**64
SURROGATE = "order\ud800.eu"


def refused(fn: Callable[[], Any], *fragments: str) -> liteq.LiteqError:
    with pytest.raises(liteq.LiteqError) as info:
        fn()
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))
    return info.value


@pytest.fixture
def full_db(db: liteq.Database) -> liteq.Database:
    """A database with a queue holding one message, a subscription and a schedule."""
    db.queue("q").put(1)
    db.topic("t").subscribe("s", pattern="#")
    db.schedule("s", every=60, queue="q", payload=1)
    return db


@pytest.mark.parametrize("call", [
    lambda db: db.queue("m", max_depth=2**63),
    lambda db: db.queue("m", max_attempts=2**63),
    lambda db: db.queue("q").get_many(BIG),
    lambda db: db.queue("q").peek(BIG),
    lambda db: db.queue("q").redrive(limit=BIG),
    lambda db: db.queue("q").cancel(BIG),
    lambda db: db.message(BIG),
    lambda db: db.cancel(BIG),
    lambda db: db.retry(BIG),
    lambda db: db.job(BIG),
    lambda db: db.ack(f"1:{BIG}"),
    lambda db: db.ack(f"{BIG}:1"),
    lambda db: db.schedule("s", every=60, queue="q", payload=1, misfire_cap=2**63),
    lambda db: db.schedule("s").history(BIG),
    lambda db: db.schedule("s").next(BIG),
    lambda db: db.topic("t").subscribe("s", max_depth=2**63),
    lambda db: db.topic("t").publish(1, "k", priority=BIG),
], ids=["max_depth", "max_attempts", "get_many", "peek", "redrive", "queue.cancel", "message",
        "cancel", "retry", "job", "ack token", "ack id", "misfire_cap", "history", "next",
        "subscribe max_depth", "publish priority"])
def test_an_integer_past_64_bits_raises_invalid_argument_and_changes_nothing(
        full_db: liteq.Database, call: Callable[[liteq.Database], Any]) -> None:
    before = everything(full_db)
    error = refused(lambda: call(full_db))
    assert isinstance(error, ValueError)
    assert everything(full_db) == before


@pytest.mark.parametrize("call, fragment", [
    (lambda db: db.queue("q").put(1, key=SURROGATE), "key contains a lone surrogate"),
    (lambda db: db.topic("t").publish(1, SURROGATE), "routing key contains a lone surrogate"),
    (lambda db: db.topic("t").subscribe("s2", pattern=SURROGATE), "pattern contains"),
    (lambda db: db.schedule("x", every=60, command=SURROGATE), "command contains"),
    (lambda db: db.schedule("x", every=60, task=SURROGATE), "task name contains"),
    (lambda db: db.schedule("x", at=1e20, queue="q", payload=1), "at must be a time from 1970"),
    (lambda db: db.schedule("x", at=-1e11, queue="q", payload=1), "at must be a time from 1970"),
    (lambda db: db.schedule("x", at="0001-01-01T00:00:00+05:00", queue="q", payload=1),
     "at must be a time"),
    (lambda db: db.schedule("x", every=60, start=1e20, queue="q", payload=1),
     "start must be a time"),
    (lambda db: db.schedule("x", every=math.inf, queue="q", payload=1), "every must be"),
    (lambda db: db.queue("b", backoff=Backoff(factor=math.nan)), "backoff factor"),
    (lambda db: db.queue("b", backoff=Backoff(factor=10**400)), "backoff factor"),
    (lambda db: db.queue("b", backoff=Backoff(factor=True)), "backoff factor"),
    (lambda db: db.queue("b", backoff=Backoff(jitter=True)), "backoff jitter"),
    (lambda db: db.queue("b", backoff=Backoff(jitter=math.nan)), "backoff jitter"),
    (lambda db: db.queue("b", lease=1e300), "lease must be at most"),
    (lambda db: db.queue("q").put(1, delay=1e300), "delay must be at most"),
    (lambda db: db.queue("q").put(1, block=True, timeout=1e300), "timeout must be at most"),
    (lambda db: db.queue("q").get(wait=1e300), "wait must be at most"),
    (lambda db: db.queue("q").get(wait=True), "wait must be"),
])
def test_nan_infinity_booleans_surrogates_and_far_times_are_refused_at_the_edge(
        full_db: liteq.Database, call: Callable[[liteq.Database], Any], fragment: str) -> None:
    before = everything(full_db)
    refused(lambda: call(full_db), fragment)
    assert everything(full_db) == before


def test_a_lone_surrogate_in_a_reason_or_error_is_refused_and_the_lease_is_kept(db) -> None:
    q = db.queue("q")
    q.put(1)
    msg = q.get()
    refused(lambda: msg.fail(SURROGATE), "reason contains a lone surrogate")
    refused(lambda: msg.nack(error=SURROGATE), "error contains a lone surrogate")
    assert db.message(msg.id).state == "leased"
    msg.ack()


def test_a_huge_backoff_exponent_gives_the_backoff_maximum_instead_of_overflowing() -> None:
    assert Backoff(base=1, factor=1000, max=300, jitter=0).delay(2**62) == 300


def test_the_largest_64_bit_values_are_accepted(db) -> None:
    q = db.queue("big", max_depth=2**63 - 1, max_attempts=2**63 - 1)
    assert q.config.max_depth == 2**63 - 1
    assert q.peek(2**63 - 1) == []
    assert db.message(2**63 - 1) is None
    with pytest.raises(liteq.LeaseLost):
        db.ack(f"1:{-(2**63)}")


def run(path: str, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--db", path, *args], prog_name="liteq")


@pytest.mark.parametrize("args", [
    ["ack", f"1:{BIG}"],
    ["show", str(BIG)],
    ["retry", str(BIG)],
    ["cancel", str(BIG)],
    ["job", str(BIG)],
    ["queue", "create", "q2", "--max-depth", str(BIG)],
    ["queue", "create", "q2", "--max-attempts", str(BIG)],
    ["queue", "config", "q", "--max-depth", str(BIG)],
    ["peek", "q", "-n", str(BIG)],
    ["dead", "list", "q", "-n", str(BIG)],
    ["dead", "redrive", "q", "-n", str(BIG)],
    ["put", "q", "1", "--priority", str(BIG)],
    ["put", "q", "1", "--key", SURROGATE],
    ["publish", "t", "k", "1", "--priority", str(BIG)],
    ["publish", "t", SURROGATE, "1"],
    ["subscribe", "t", "s2", "--max-depth", str(BIG)],
    ["subscribe", "t", "s2", "--pattern", SURROGATE],
    ["jobs", "-n", str(BIG)],
    ["put", "q", "1", "--delay", "99999999999d"],
    ["schedule", "add", "x", "--every", "1", "--queue", "q", "--payload", "1"] if False else
    ["schedule", "add", "x", "--every", "60", "--queue", "q", "--payload", "1",
     "--misfire-cap", str(BIG)],
    ["schedule", "add", "x", "--at", "3500-01-01T00:00:00Z", "--queue", "q", "--payload", "1"],
    ["schedule", "history", "s", "-n", str(BIG)],
])
def test_every_cli_command_refuses_out_of_range_input_with_error_and_no_traceback(
        full_db: liteq.Database, db_target: str, args: list[str]) -> None:
    before = everything(full_db)
    result = run(db_target, *args)
    assert result.exit_code in (1, 2), (args, result.output)
    assert "Error" in result.output and "Traceback" not in result.output, result.output
    assert not isinstance(result.exception, (OverflowError, UnicodeError)) or \
        isinstance(result.exception, SystemExit)
    assert everything(full_db) == before


def test_a_task_whose_exception_holds_a_lone_surrogate_fails_with_the_text_kept(db) -> None:
    import threading

    from helpers import wait_until

    @db.task(name="surrogate", max_attempts=1)
    def surrogate() -> None:
        raise ValueError("file x\udcff.txt")

    job = surrogate.delay()
    worker = liteq.Worker(db, concurrency=1, install_signals=False, summary_interval=0)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: job.state == "failed", what="the job to fail")
    finally:
        worker.stop()
        thread.join(30)
    assert "file x\\udcff.txt" in str(job.error)


@pytest.mark.parametrize("busy_timeout", [10**400, float("nan"), float("inf"), -1, True, "1"])
def test_connect_refuses_a_busy_timeout_that_is_not_a_finite_number_of_seconds(
    db_target, busy_timeout
) -> None:
    with pytest.raises(liteq.InvalidArgument, match="busy_timeout"):
        liteq.connect(db_target, busy_timeout=busy_timeout)
    with pytest.raises(liteq.LiteqError):  # refused before anything was made
        liteq.connect(db_target, create=False)


def test_a_task_name_with_a_lone_surrogate_is_refused_at_registration(db) -> None:
    with pytest.raises(liteq.InvalidArgument, match="lone surrogate"):
        db.task(name="send\ud800")(lambda: None)
    assert db.tasks == {} or all("\ud800" not in n for n in db.tasks)


def test_a_compat_maxsize_past_64_bits_is_refused_naming_maxsize(db_target) -> None:
    from liteq import compat

    with pytest.raises(liteq.InvalidArgument, match="maxsize must be at most"):
        compat.Queue(maxsize=2**64, path=db_target, name="jobs")
