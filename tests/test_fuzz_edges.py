"""Fuzzing the edge (issue 16): every public function and CLI command that takes a
number, a string or a time, fed the extremes (0, -1, 2**63, 2**64, NaN, infinity,
booleans, lone surrogates, NUL, 10 MB strings, times far out), either succeeds or
raises a LiteqError (``Error:`` and exit 1 or 2 on the CLI, never a traceback);
after a refusal the database's visible state is unchanged.

``LITEQ_FUZZ_EXAMPLES`` sets the examples per property (default 300).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import liteq
from liteq import Backoff
from liteq.cli import cli

pytestmark = pytest.mark.every_engine

FUZZ = settings(max_examples=int(os.environ.get("LITEQ_FUZZ_EXAMPLES", "300")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])

HUGE = "x" * (10 * 1024 * 1024)  # one 10 MB string, shared
EXTREMES: list[Any] = [
    0, -1, 2**63 - 1, 2**63, 2**64, -(2**63) - 1, 10**400, 0.0, -0.0, 1e-15, 1e20, -1e11,
    math.nan, math.inf, -math.inf, True, False, None, "", "\ud800", "a\x00b", HUGE,
    "9" * 5000, f"1:{2**64}", "1e400", "-1", "order.*.eu", b"\xff",
]
extremes = st.sampled_from(EXTREMES)


def visible_state(db: liteq.Database) -> list[Any]:
    """What a user can see: messages, queues and their options, schedules."""
    return [
        db.execute("SELECT * FROM messages ORDER BY id"),
        db.execute("SELECT id, name, max_depth, lease, max_attempts, dead_letter, retention, "
                   "backoff_base, backoff_factor, backoff_max, backoff_jitter, topic, pattern "
                   "FROM queues ORDER BY id"),
        db.execute("SELECT * FROM schedules ORDER BY id"),
        db.execute("SELECT * FROM schedule_runs ORDER BY id"),
    ]


def held(db: liteq.Database) -> liteq.Message:
    q = db.queue("q")
    q.put("work")
    msg = q.get()
    assert msg is not None
    return msg


def _task(db: liteq.Database, **options: Any) -> Any:
    def fn() -> None:
        return None
    return db.task(name="fuzz.fn", **options)(fn)


# Each takes the database and the value to feed in one place.
CALLS: dict[str, Callable[[liteq.Database, Any], Any]] = {
    "queue name": lambda db, v: db.queue(v),
    "queue max_depth": lambda db, v: db.queue("q", max_depth=v),
    "queue lease": lambda db, v: db.queue("q", lease=v),
    "queue max_attempts": lambda db, v: db.queue("q", max_attempts=v),
    "queue retention": lambda db, v: db.queue("q", retention=v),
    "queue dead_letter": lambda db, v: db.queue("q", dead_letter=v),
    "backoff base": lambda db, v: db.queue("q", backoff=Backoff(base=v)),
    "backoff factor": lambda db, v: db.queue("q", backoff=Backoff(factor=v)),
    "backoff max": lambda db, v: db.queue("q", backoff=Backoff(max=v)),
    "backoff jitter": lambda db, v: db.queue("q", backoff=Backoff(jitter=v)),
    "put payload": lambda db, v: db.queue("q").put(v),
    "put delay": lambda db, v: db.queue("q").put(1, delay=v),
    "put priority": lambda db, v: db.queue("q").put(1, priority=v),
    "put key": lambda db, v: db.queue("q").put(1, key=v),
    "put header": lambda db, v: db.queue("q").put(1, headers={"h": v}),
    "put timeout": lambda db, v: db.queue("q").put(1, block=True, timeout=v),
    "put_many delay": lambda db, v: db.queue("q").put_many([1, 2], delay=v),
    "put_many priority": lambda db, v: db.queue("q").put_many([1, 2], priority=v),
    "get wait": lambda db, v: db.queue("q").get(wait=v),
    "get_many n": lambda db, v: db.queue("q").get_many(v),
    "peek n": lambda db, v: db.queue("q").peek(v),
    "peek state": lambda db, v: db.queue("q").peek(1, state=v),
    "redrive limit": lambda db, v: db.queue("q").redrive(limit=v),
    "prune older_than": lambda db, v: db.queue("q").prune(older_than=v),
    "purge state": lambda db, v: db.queue("q").purge(state=v),
    "queue cancel": lambda db, v: db.queue("q").cancel(v),
    "extend": lambda db, v: held(db).extend(v),
    "nack delay": lambda db, v: held(db).nack(delay=v),
    "nack error": lambda db, v: held(db).nack(error=v),
    "fail reason": lambda db, v: held(db).fail(v),
    "message": lambda db, v: db.message(v),
    "cancel": lambda db, v: db.cancel(v),
    "retry": lambda db, v: db.retry(v),
    "job": lambda db, v: db.job(v),
    "ack receipt": lambda db, v: db.ack(v),
    "topic name": lambda db, v: db.topic(v),
    "publish key": lambda db, v: db.topic("t").publish(1, v),
    "publish priority": lambda db, v: db.topic("t").publish(1, "k", priority=v),
    "publish delay": lambda db, v: db.topic("t").publish(1, "k", delay=v),
    "subscribe name": lambda db, v: db.topic("t").subscribe(v),
    "subscribe pattern": lambda db, v: db.topic("t").subscribe("s", pattern=v),
    "subscribe max_depth": lambda db, v: db.topic("t").subscribe("s", max_depth=v),
    "schedule name": lambda db, v: db.schedule(v, every=60, queue="q", payload=1),
    "schedule every": lambda db, v: db.schedule("s", every=v, queue="q", payload=1),
    "schedule at": lambda db, v: db.schedule("s", at=v, queue="q", payload=1),
    "schedule at past": lambda db, v: db.schedule("s", at=v, queue="q", payload=1,
                                                  allow_past=True),
    "schedule start": lambda db, v: db.schedule("s", every=60, start=v, queue="q", payload=1),
    "schedule cron": lambda db, v: db.schedule("s", cron=v, queue="q", payload=1),
    "schedule tz": lambda db, v: db.schedule("s", cron="0 3 * * *", tz=v, queue="q", payload=1),
    "schedule misfire_cap": lambda db, v: db.schedule("s", every=60, queue="q", payload=1,
                                                      misfire="all", misfire_cap=v),
    "schedule task": lambda db, v: db.schedule("s", every=60, task=v),
    "schedule command": lambda db, v: db.schedule("s", every=60, command=v),
    "schedule next": lambda db, v: db.schedule("s0").next(v),
    "schedule history": lambda db, v: db.schedule("s0").history(v),
    "scheduler interval": lambda db, v: liteq.Scheduler(db, interval=v),
    "task max_attempts": lambda db, v: _task(db, max_attempts=v),
    "task priority": lambda db, v: _task(db, priority=v),
    "task timeout": lambda db, v: _task(db, timeout=v),
    "task result_ttl": lambda db, v: _task(db, result_ttl=v),
    "task queue": lambda db, v: _task(db, queue=v),
}


@pytest.fixture(scope="module")
def fuzz_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[liteq.Database]:
    db = liteq.connect(str(tmp_path_factory.mktemp("fuzz") / "f.db"))
    db.queue("q").put("first")
    db.topic("t").subscribe("s0")
    db.schedule("s0", every=60, queue="q", payload=1)
    yield db
    db.close()


@FUZZ
@given(name=st.sampled_from(sorted(CALLS)), value=extremes)
def test_every_public_call_fed_an_extreme_succeeds_or_refuses_with_a_liteq_error_changing_nothing(
        fuzz_db: liteq.Database, name: str, value: Any) -> None:
    call = CALLS[name]
    if name in ("extend", "nack delay", "nack error", "fail reason"):
        msg = held(fuzz_db)  # the lease is taken before the state is read
        call = lambda db, v: getattr(msg, name.split()[0])(  # noqa: E731
            **({"delay": v} if name == "nack delay" else {"error": v} if name == "nack error"
               else {})) if name.startswith("nack") else getattr(msg, name.split()[0])(v)
    before = visible_state(fuzz_db)
    try:
        call(fuzz_db, value)
    except liteq.LiteqError:
        assert visible_state(fuzz_db) == before, f"{name}({value!r:.60}) changed the database"


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return value if isinstance(value, str) else repr(value) if isinstance(value, float) \
        else str(value) if not isinstance(value, int) or abs(value) < 10**4000 else "9" * 4400


COMMANDS: dict[str, Callable[[str], list[str]]] = {
    "put payload": lambda v: ["put", "q", v],
    "put delay": lambda v: ["put", "q", "1", "--delay", v],
    "put priority": lambda v: ["put", "q", "1", "--priority", v],
    "put key": lambda v: ["put", "q", "1", "--key", v],
    "put queue": lambda v: ["put", v, "1"],
    "get wait": lambda v: ["get", "q", "--wait", v],
    "ack": lambda v: ["ack", v],
    "show": lambda v: ["show", v],
    "retry": lambda v: ["retry", v],
    "cancel": lambda v: ["cancel", v],
    "job": lambda v: ["job", v],
    "jobs limit": lambda v: ["jobs", "-n", v],
    "peek limit": lambda v: ["peek", "q", "-n", v],
    "dead list": lambda v: ["dead", "list", "q", "-n", v],
    "dead redrive": lambda v: ["dead", "redrive", "q", "-n", v],
    "queue create": lambda v: ["queue", "create", v],
    "queue max-depth": lambda v: ["queue", "config", "q", "--max-depth", v],
    "queue lease": lambda v: ["queue", "config", "q", "--lease", v],
    "queue max-attempts": lambda v: ["queue", "config", "q", "--max-attempts", v],
    "queue retention": lambda v: ["queue", "config", "q", "--retention", v],
    "publish key": lambda v: ["publish", "t", v, "1"],
    "publish priority": lambda v: ["publish", "t", "k", "1", "--priority", v],
    "subscribe pattern": lambda v: ["subscribe", "t", "s", "--pattern", v],
    "subscribe max-depth": lambda v: ["subscribe", "t", "s", "--max-depth", v],
    "schedule every": lambda v: ["schedule", "add", "s", "--every", v, "--queue", "q",
                                 "--payload", "1"],
    "schedule at": lambda v: ["schedule", "add", "s", "--at", v, "--queue", "q", "--payload", "1"],
    "schedule at past": lambda v: ["schedule", "add", "s", "--at", v, "--allow-past", "--queue",
                                   "q", "--payload", "1"],
    "schedule start": lambda v: ["schedule", "add", "s", "--every", "60", "--start", v,
                                 "--queue", "q", "--payload", "1"],
    "schedule cron": lambda v: ["schedule", "add", "s", "--cron", v, "--queue", "q",
                                "--payload", "1"],
    "schedule tz": lambda v: ["schedule", "add", "s", "--cron", "0 3 * * *", "--tz", v,
                              "--queue", "q", "--payload", "1"],
    "schedule misfire-cap": lambda v: ["schedule", "add", "s", "--every", "60", "--queue", "q",
                                       "--payload", "1", "--misfire-cap", v],
    "schedule task": lambda v: ["schedule", "add", "s", "--every", "60", "--task", v],
    "schedule command": lambda v: ["schedule", "add", "s", "--every", "60", "--command", v],
    "schedule next": lambda v: ["schedule", "next", "s0", "-n", v],
    "schedule history": lambda v: ["schedule", "history", "s0", "-n", v],
}


@FUZZ
@given(name=st.sampled_from(sorted(COMMANDS)), value=extremes)
def test_every_cli_command_fed_an_extreme_succeeds_or_says_error_without_a_traceback(
        fuzz_db: liteq.Database, name: str, value: Any) -> None:
    args = ["--db", fuzz_db.path, *COMMANDS[name](_text(value))]
    before = visible_state(fuzz_db)
    result = CliRunner().invoke(cli, args, prog_name="liteq")
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        (name, repr(value)[:60], result.exception)
    if result.exit_code != 0:
        assert result.exit_code in (1, 2), (name, result.exit_code, result.output[-300:])
        assert "Error" in result.output, (name, result.output[-300:])
        assert visible_state(fuzz_db) == before, f"{name} {value!r:.60} changed the database"
