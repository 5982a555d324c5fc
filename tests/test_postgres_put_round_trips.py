"""The common put on PostgreSQL: one statement, one round trip, even when it wakes
consumers (the NOTIFY is folded into it). Round trips are counted on the wire with
libpq's own trace of liteq's connection (each ends in a ReadyForQuery from the server);
nothing is timed."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest_pg import require_psycopg

import liteq

psycopg = require_psycopg()


@pytest.fixture
def db(pg_url: str, pg_schema: str) -> Iterator[liteq.Database]:
    d = liteq.connect(f"{pg_url}?schema={pg_schema}")
    yield d
    d.close()


def traced(conn: Any, action: Any) -> list[str]:
    """libpq's trace of *conn* while *action()* ran, a line per protocol message."""
    with tempfile.TemporaryFile("w+") as trace:
        conn.pgconn.trace(trace.fileno())
        try:
            action()
        finally:
            conn.pgconn.untrace()
        trace.seek(0)
        return trace.readlines()


def round_trips(conn: Any, action: Any) -> int:
    """How many times the server said ReadyForQuery while *action()* ran on *conn*."""
    return _round_trips(traced(conn, action))


def _round_trips(lines: list[str]) -> int:
    return sum(1 for line in lines if "\tReadyForQuery\t" in line)


def _statements(lines: list[str]) -> int:
    """Statements the client sent: simple queries and extended-protocol executions,
    pipelined or not (a pipeline is one round trip, but the server still parses, plans
    and runs each statement in it)."""
    return sum(1 for line in lines
               if "\tF\t" in line and ("\tExecute\t" in line or "\tQuery\t" in line))


def test_a_put_that_wakes_consumers_is_one_round_trip_and_its_notify_arrives(
    db: liteq.Database, pg_url: str
) -> None:
    q = db.queue("jobs")
    q.put("first")  # the queue's first put (and notification) is behind us
    time.sleep(0.01)  # past the throttle's 1 ms window: the next put notifies again
    with psycopg.connect(pg_url, autocommit=True) as watch:
        watch.execute(f'LISTEN "{db.backend.wake_channel}"')
        trips = round_trips(db.connection, lambda: q.put("second"))
        got = [n.payload for n in watch.notifies(timeout=2.0, stop_after=1)]
    assert trips == 1  # before: BEGIN, the put, pg_notify, COMMIT
    assert got == [str(q.id)]
    assert [m.payload for m in q.get_many(5)] == ["first", "second"]


def test_a_put_refused_by_a_full_queue_notifies_no_one(db: liteq.Database, pg_url: str) -> None:
    q = db.queue("small", max_depth=1)
    q.put("fills it")
    time.sleep(0.01)
    with psycopg.connect(pg_url, autocommit=True) as watch:
        watch.execute(f'LISTEN "{db.backend.wake_channel}"')
        with pytest.raises(liteq.QueueFull):
            q.put("no room")
        assert [n.payload for n in watch.notifies(timeout=0.3)] == []
    assert q.stats()["ready"] == 1


def test_a_batch_put_that_wakes_consumers_is_one_statement_and_its_notify_arrives_once(
    db: liteq.Database, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every put notifies (the throttle's leading edge, each time): the NOTIFY is folded
    # into the batch's statement, sent by its first row only.
    monkeypatch.setattr(db.backend, "notify_wanted", lambda qid: True)
    q = db.queue("batches")
    with psycopg.connect(pg_url, autocommit=True) as watch:
        watch.execute(f'LISTEN "{db.backend.wake_channel}"')
        lines = traced(db.connection, lambda: q.put_many(["a", "b", "c"]))
        got = [n.payload for n in watch.notifies(timeout=2.0, stop_after=1)]
        got += [n.payload for n in watch.notifies(timeout=0.3)]
        # A batch refused by back pressure inserts nothing and wakes no one.
        small = db.queue("small-batches", max_depth=4)
        small.put_many([1, 2])
        list(watch.notifies(timeout=0.3))
        with pytest.raises(liteq.QueueFull):
            small.put_many([3, 4, 5])
        assert [n.payload for n in watch.notifies(timeout=0.3)] == []
    assert _round_trips(lines) == 1
    assert _statements(lines) == 1  # before: BEGIN, the batch, pg_notify, COMMIT
    assert got == [str(q.id)]  # one notification for the batch, not one per row
    assert [m.payload for m in q.get_many(10)] == ["a", "b", "c"]
    assert small.stats()["ready"] == 2


def test_a_batch_ack_is_one_round_trip_and_frees_its_room(db: liteq.Database) -> None:
    q = db.queue("bounded", max_depth=10)
    q.put_many(list(range(10)))
    msgs = q.get_many(10)
    with pytest.raises(liteq.QueueFull):
        q.put("no room yet")
    stale = msgs[0].token
    trips = round_trips(db.connection, lambda: q.ack_many(msgs[1:]))
    assert trips == 1  # before: BEGIN, the DELETE, the depth release, COMMIT
    assert q.stats()["depth"] == 1
    q.put_many(list(range(9)))  # the nine acked made room for nine, no more
    with pytest.raises(liteq.QueueFull):
        q.put("one too many")
    msgs[0].token = stale + 10**6  # a stale token acks nothing and releases nothing
    with pytest.raises(liteq.LeaseLost):
        q.ack_many([msgs[0]])
    assert q.stats()["depth"] == 10
