"""Queues, put, back pressure, claims and leases through the storage interface, on every
engine (issue 17, steps B1 + B2): what SQLite does, PostgreSQL must do too.

The first part runs once per engine (``backend``/``open_backend`` from tests/engines.py);
the second part is PostgreSQL-only: real parallel connections in threads and processes,
where SQLite's single writer would hide a race.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from helpers import PATIENCE, FakeClock, leading_columns, whole_index_reads

from liteq.backends.base import Backend
from liteq.backends.records import NewMessage, QueueRecord, State
from liteq.backends.sqlite import default_queue_options
from liteq.errors import LeaseLost, LiteqError, QueueFull

START = 1_000_000.0


def make_queue(b: Backend, name: str = "q", **options: Any) -> QueueRecord:
    return b.create_queue(name, {**default_queue_options(), **options})


def row(payload: bytes, priority: int = 0, run_at: float = START, key: str | None = None,
        rank: bytes | None = None) -> NewMessage:
    return NewMessage(priority, rank, run_at, payload, None, key)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def b(open_backend: Callable[..., Backend], clock: FakeClock) -> Backend:
    return open_backend(clock=clock)


def payloads(rows: list[tuple[Any, ...]]) -> list[bytes]:
    return [r[3] for r in rows]


def test_queue_names_come_in_byte_order_on_every_engine(b: Backend) -> None:
    # SQLite compares text byte by byte; a PostgreSQL database's collation may not.
    for name in ["b", "B", "a", "A_", "a.b"]:
        make_queue(b, name)
    assert b.queue_names() == ["A_", "B", "a", "a.b", "b"]


def states(b: Backend, ids: list[int]) -> list[int | None]:
    out = []
    for mid in ids:
        m = b.message(mid)
        out.append(None if m is None else m.state)
    return out


# -- queues -----------------------------------------------------------------------------


def test_a_queue_is_created_once_and_found_by_name_and_id(b: Backend) -> None:
    q = make_queue(b, "jobs", max_depth=10, lease=5.0)
    assert (q.name, q.max_depth, q.lease) == ("jobs", 10, 5.0)
    assert b.queue_row("jobs") == q
    assert b.queue_row_by_id(q.id) == q
    with pytest.raises(LiteqError, match="already exists"):
        make_queue(b, "jobs")
    again = b.ensure_queue("jobs", default_queue_options(), {})
    assert again == q
    changed = b.ensure_queue("jobs", default_queue_options(), {"max_depth": 3, "lease": 9.0})
    assert (changed.max_depth, changed.lease) == (3, 9.0)
    assert b.ensure_queue("other", default_queue_options(), {}).name == "other"
    assert b.queue_names() == ["jobs", "other"]


def test_deleting_a_queue_deletes_its_messages_and_makes_its_leases_stale(b: Backend) -> None:
    q = make_queue(b)
    b.put(q.id, [row(b"a"), row(b"b")])
    rows, _ = b.claim(q.id, 1, 30.0)
    b.delete_queue(q.id)
    assert b.queue_row("q") is None
    assert b.message(rows[0][0]) is None
    assert b.ack(q.id, [(rows[0][0], rows[0][1])], 0.0) == [rows[0][0]]
    with pytest.raises(LiteqError, match="no longer exists"):
        b.put(q.id, [row(b"c")])
    with pytest.raises(LiteqError, match="no longer exists"):
        b.room(q.id)


def test_deleting_a_subscription_queue_moves_the_subscription_version(b: Backend) -> None:
    meta = f'"{b.schema}".meta' if b.capabilities.engine == "postgres" else "meta"  # type: ignore[attr-defined]
    sql = f"SELECT value FROM {meta} WHERE key = 'subs_version'"
    q = make_queue(b, "billing", topic="orders", pattern="order.#")
    before = b.execute(sql)
    b.delete_queue(q.id)
    after = b.execute(sql)
    assert after and after[0][0] == (before[0][0] + 1 if before else 1)
    assert b.queue_row("billing") is None


# -- put and claim order ------------------------------------------------------------------


def test_claims_come_in_priority_then_due_time_then_id_order(b: Backend, clock: FakeClock) -> None:
    q = make_queue(b)
    b.put(q.id, [row(b"low-late", 0, START - 1), row(b"high", 5, START - 1)])
    b.put(q.id, [row(b"low-early", 0, START - 10)])
    b.put_ready(q.id, 0, b"low-now")
    b.put(q.id, [row(b"high-ranked", 5, START - 1, rank=b"\x01")])
    first, _ = b.claim(q.id, 1, 30.0)
    rest, _ = b.claim(q.id, 10, 30.0)
    assert payloads(first + rest) == [b"high", b"high-ranked", b"low-early", b"low-late", b"low-now"]
    assert b.claim(q.id, 5, 30.0)[0] == []


def test_a_claim_leases_with_one_fresh_token_attempts_and_the_deadline(b: Backend, clock: FakeClock) -> None:
    q = make_queue(b)
    ids = b.put(q.id, [row(b"a"), row(b"b"), row(b"c")])
    rows, until = b.claim(q.id, 2, 30.0)
    assert until == START + 30.0
    assert [r[0] for r in rows] == ids[:2]
    assert rows[0][1] == rows[1][1]  # one token per claim
    assert [r[2] for r in rows] == [1, 1]
    other, _ = b.claim(q.id, 1, 30.0)
    assert other[0][1] != rows[0][1]
    m = b.message(ids[0])
    assert m is not None and (m.state, m.token, m.lease_until) == (State.LEASED, rows[0][1], until)


def test_ack_deletes_or_keeps_done_with_retention(b: Backend, clock: FakeClock) -> None:
    q = make_queue(b)
    ids = b.put(q.id, [row(b"a"), row(b"b"), row(b"c")])
    rows, _ = b.claim(q.id, 3, 30.0)
    assert b.ack(q.id, [(rows[0][0], rows[0][1])], 0.0) == []
    assert b.message(ids[0]) is None
    assert b.ack(q.id, [(r[0], r[1]) for r in rows[1:]], 60.0) == []
    assert states(b, ids) == [None, State.DONE, State.DONE]
    assert b.stats(q.id).depth == 0
    assert b.prune(q.id, START + 1) == 2


def test_put_many_returns_unique_ids_in_the_callers_order(b: Backend) -> None:
    q = make_queue(b)
    ids = b.put(q.id, [row(str(i).encode()) for i in range(50)])
    assert len(set(ids)) == 50 and ids == sorted(ids)
    for i, mid in enumerate(ids):
        m = b.message(mid)
        assert m is not None and m.payload == str(i).encode()
    rows, _ = b.claim(q.id, 50, 30.0)
    assert payloads(rows) == [str(i).encode() for i in range(50)]


@pytest.mark.parametrize("odd", [None, "priority", "rank", "delay", "headers", "all ranked"])
def test_a_batch_stores_each_message_as_given_whichever_statement_puts_it(
    b: Backend, odd: str | None
) -> None:
    """A batch of one priority, due now, without rank or headers takes PostgreSQL's
    one-array statement (SQL_PUT_MANY_PLAIN); one row that differs sends the batch
    through the general one. Either way each message is stored as given."""
    q = make_queue(b)
    rows = [NewMessage(3, None, START, f"m{i}".encode(), None, None) for i in range(6)]
    changed = {"priority": rows[4]._replace(priority=9), "rank": rows[4]._replace(rank=b"r"),
               "delay": rows[4]._replace(run_at=START + 60),
               "headers": rows[4]._replace(headers=b"\xa0")}
    if odd == "all ranked":  # one rank for all: the same in every row, still not plain
        rows = [r._replace(rank=b"r") for r in rows]
    elif odd is not None:
        rows[4] = changed[odd]
    ids = b.put(q.id, rows)
    assert len(set(ids)) == 6 and ids == sorted(ids)
    for mid, r in zip(ids, rows, strict=True):
        m = b.message(mid)
        assert m is not None
        assert (m.payload, m.priority, m.run_at, m.headers) == (
            r.payload, r.priority, r.run_at, r.headers)
        assert m.state == (State.DELAYED if r.run_at > START else State.READY)
    claimed, _ = b.claim(q.id, 6, 30.0)  # the ready ones, with their ranks
    ranks = {c[0]: c[9] for c in claimed}
    assert ranks == {mid: r.rank for mid, r in zip(ids, rows, strict=True) if r.run_at <= START}


def test_a_delayed_message_is_claimed_only_once_due(b: Backend, clock: FakeClock) -> None:
    q = make_queue(b)
    (mid,) = b.put(q.id, [row(b"later", run_at=START + 10)])
    assert b.message(mid).state == State.DELAYED  # type: ignore[union-attr]
    assert b.claim(q.id, 1, 30.0)[0] == []
    assert b.probe(q.id) == (False, START + 10)
    assert b.next_due(q.id) == START + 10
    clock.advance(10)
    rows, _ = b.claim(q.id, 1, 30.0)
    assert payloads(rows) == [b"later"]


# -- leases -------------------------------------------------------------------------------


def test_an_expired_lease_comes_back_with_attempts_and_its_last_attempt_goes_dead(
    b: Backend, clock: FakeClock
) -> None:
    q = make_queue(b, max_attempts=2)
    (mid,) = b.put(q.id, [row(b"x")])
    first, _ = b.claim(q.id, 1, 5.0)
    clock.advance(6)
    assert b.stats(q.id).expired_leases == 1
    second, _ = b.claim(q.id, 1, 5.0)
    assert [(r[0], r[2], r[10]) for r in second] == [(mid, 2, "lease expired")]
    assert second[0][1] != first[0][1]
    with pytest.raises(LeaseLost):
        b.extend(mid, first[0][1], 30.0)
    clock.advance(6)
    b.expire(q.id)
    m = b.message(mid)
    assert m is not None and (m.state, m.error, m.attempts) == (State.DEAD, "lease expired", 2)
    assert b.stats(q.id).dead == 1


def test_a_stale_token_raises_lease_lost_and_changes_nothing(b: Backend, clock: FakeClock) -> None:
    q = make_queue(b)
    ids = b.put(q.id, [row(b"a"), row(b"b")])
    rows, _ = b.claim(q.id, 2, 30.0)
    (mid, token), (mid2, token2) = [(r[0], r[1]) for r in rows]
    before = [b.message(i) for i in ids]
    stale = token + 1000
    assert b.ack(q.id, [(mid, stale)], 0.0) == [mid]
    with pytest.raises(LeaseLost) as err:
        b.retry(q.id, mid, stale, 0.0, "boom")
    assert err.value.ids == [mid]
    with pytest.raises(LeaseLost):
        b.extend(mid, stale, 60.0)
    with pytest.raises(LeaseLost):
        b.fail(q.id, mid, stale, "bad")
    assert b.heartbeat([(mid, stale)], 60.0) == ([mid], [])
    assert b.release(q.id, [(mid, stale)]) == [mid]
    assert [b.message(i) for i in ids] == before
    # A batch with one stale pair: the others are acked, the stale one is reported.
    assert b.ack(q.id, [(mid, token), (mid2, stale)], 0.0) == [mid2]
    assert b.message(mid) is None and b.message(mid2) == before[1]
    assert b.stats(q.id).depth == 1


@pytest.mark.parametrize("verb", ["ack", "retain", "heartbeat", "release"])
def test_an_id_given_twice_with_a_stale_token_first_still_finds_its_live_lease(
    b: Backend, verb: str
) -> None:
    """Pairs are matched whole, not by id: (id, stale) before (id, live) in one call
    finishes the live lease and reports the stale pair's id, as on SQLite (the
    PostgreSQL statements pair a row with its token by its id's place, one statement
    per repetition of an id)."""
    q = make_queue(b)
    (mid,) = b.put(q.id, [row(b"a")])
    (other,) = b.put(q.id, [row(b"b")])
    rows, _ = b.claim(q.id, 2, 30.0)
    token = {r[0]: r[1] for r in rows}
    pairs = [(mid, token[mid] + 1000), (other, token[other]), (mid, token[mid])]
    if verb in ("ack", "retain"):
        assert b.ack(q.id, pairs, 60.0 if verb == "retain" else 0.0) == [mid]
        gone = [b.message(i) for i in (mid, other)]
        expected = State.DONE if verb == "retain" else None
        assert [m and m.state for m in gone] == [expected, expected]
    elif verb == "heartbeat":
        assert b.heartbeat(pairs, 60.0) == ([mid], [])  # the stale pair's id, once
        assert states(b, [mid, other]) == [State.LEASED, State.LEASED]
    else:
        assert b.release(q.id, pairs) == [mid]
        assert states(b, [mid, other]) == [State.READY, State.READY]


def ask_cancel(b: Backend, mid: int) -> None:
    """Set a leased message's cancel flag (request_cancel belongs to the jobs verbs)."""
    if b.capabilities.engine == "postgres":
        b.execute(f'UPDATE "{b.schema}".messages SET cancel = true WHERE id = %s', (mid,))  # type: ignore[attr-defined]
    else:
        b.execute("UPDATE messages SET cancel = 1 WHERE id = ?", (mid,))


def test_a_cancelled_lease_ends_cancelled_on_retry_heartbeat_or_expiry(b: Backend, clock: FakeClock) -> None:
    q = make_queue(b, max_depth=10)
    ids = b.put(q.id, [row(b"a"), row(b"b")])
    rows, _ = b.claim(q.id, 2, 5.0)
    (a, ta), (bb, tb) = [(r[0], r[1]) for r in rows]
    for mid in ids:
        ask_cancel(b, mid)
    assert b.heartbeat([(a, ta), (bb, tb)], 5.0) == ([], [a, bb])
    assert b.retry(q.id, a, ta, 0.0, "stopped") is False
    m = b.message(a)
    assert m is not None and (m.state, m.error) == (State.CANCELLED, "stopped")
    clock.advance(6)
    b.expire(q.id)
    m = b.message(bb)
    assert m is not None and (m.state, m.error) == (State.CANCELLED, "cancelled while running; lease expired")
    assert b.room(q.id) == (0, 10)


def test_retry_extend_heartbeat_and_release_keep_the_lease_rules(b: Backend, clock: FakeClock) -> None:
    q = make_queue(b, max_attempts=2)
    ids = b.put(q.id, [row(b"a"), row(b"b")])
    rows, _ = b.claim(q.id, 2, 30.0)
    (a, ta), (bb, tb) = [(r[0], r[1]) for r in rows]
    assert b.extend(a, ta, 100.0) == START + 100.0
    assert b.heartbeat([(a, ta), (bb, tb)], 50.0) == ([], [])
    assert b.message(bb).lease_until == START + 50.0  # type: ignore[union-attr]
    assert b.retry(q.id, a, ta, 5.0, "try later") is True
    m = b.message(a)
    assert m is not None and (m.state, m.run_at, m.error, m.token) == (State.DELAYED, START + 5, "try later", None)
    assert b.release(q.id, [(bb, tb)]) == []
    m = b.message(bb)
    assert m is not None and (m.state, m.attempts) == (State.READY, 0)
    clock.advance(5)
    again, _ = b.claim(q.id, 2, 30.0)
    assert sorted(r[0] for r in again) == sorted(ids)
    last = {r[0]: r for r in again}[a]
    assert last[2] == 2
    assert b.retry(q.id, a, last[1], 0.0, None) is False  # its last attempt: buried
    m = b.message(a)
    assert m is not None and (m.state, m.error) == (State.DEAD, "gave up after 2 attempts")


def test_fail_buries_in_the_dead_letter_queue_as_ready_with_the_reason(b: Backend) -> None:
    q = make_queue(b, dead_letter="graveyard")
    (mid,) = b.put(q.id, [row(b"x", key="k")])
    rows, _ = b.claim(q.id, 1, 30.0)
    b.fail(q.id, mid, rows[0][1], "undecodable payload")
    dl = b.queue_row("graveyard")
    assert dl is not None
    m = b.message(mid)
    assert m is not None
    assert (m.qid, m.state, m.error, m.origin, m.attempts, m.key) == (
        dl.id, State.READY, "undecodable payload", "q", 0, None)
    assert b.stats(q.id).depth == 0
    assert b.stats(dl.id).depth == 1
    rows, _ = b.claim(dl.id, 1, 30.0)
    assert rows[0][0] == mid and rows[0][11] == "q"


# -- dedup keys and back pressure -------------------------------------------------------


def test_a_key_returns_the_unfinished_holders_id_and_frees_when_it_finishes(b: Backend) -> None:
    q = make_queue(b)
    first = b.put(q.id, [row(b"a", key="k"), row(b"b", key="k"), row(b"c")])
    assert first[0] == first[1] != first[2]
    assert b.put(q.id, [row(b"again", key="k")]) == [first[0]]
    rows, _ = b.claim(q.id, 1, 30.0)
    assert b.put(q.id, [row(b"leased", key="k")]) == [first[0]]
    b.ack(q.id, [(rows[0][0], rows[0][1])], 0.0)
    (new,) = b.put(q.id, [row(b"new", key="k")])
    assert new != first[0]
    assert b.stats(q.id).depth == 2


def test_a_full_queue_refuses_a_put_or_a_batch_and_writes_nothing(b: Backend) -> None:
    q = make_queue(b, max_depth=3)
    b.put(q.id, [row(b"a"), row(b"b")])
    with pytest.raises(QueueFull) as err:
        b.put(q.id, [row(b"c"), row(b"d")])
    assert (err.value.depth, err.value.max_depth, err.value.extra) == (2, 3, 2)
    assert b.room(q.id) == (2, 3)
    b.put_ready(q.id, 0, b"c")
    with pytest.raises(QueueFull):
        b.put_ready(q.id, 0, b"e")
    with pytest.raises(QueueFull):
        b.put(q.id, [row(b"e", key="new")])
    assert [m.payload for m in b.peek(q.id, None, 10)] == [b"a", b"b", b"c"]
    rows, _ = b.claim(q.id, 1, 30.0)
    b.ack(q.id, [(rows[0][0], rows[0][1])], 0.0)
    assert b.room(q.id) == (2, 3)
    b.put(q.id, [row(b"d", key="k")])
    assert b.put(q.id, [row(b"d2", key="k")]) == b.put(q.id, [row(b"d3", key="k")])
    assert b.stats(q.id).depth == 3
    b.put(q.id, [row(b"forced")], force=True)
    assert b.room(q.id) == (4, 3)


def test_after_a_forced_put_past_max_depth_puts_are_refused_until_the_depth_is_below_it(
    b: Backend,
) -> None:
    q = make_queue(b, max_depth=3)
    b.put(q.id, [row(b"a"), row(b"b"), row(b"c")])
    b.put(q.id, [row(b"dead letter"), row(b"redriven")], force=True)
    assert b.room(q.id) == (5, 3)
    for expected in (4, 3):
        rows, _ = b.claim(q.id, 1, 30.0)
        b.ack(q.id, [(rows[0][0], rows[0][1])], 0.0)
        assert b.room(q.id) == (expected, 3)
        with pytest.raises(QueueFull):
            b.put_ready(q.id, 0, b"no room")
        with pytest.raises(QueueFull):
            b.put(q.id, [row(b"no room")])
    rows, _ = b.claim(q.id, 1, 30.0)
    b.ack(q.id, [(rows[0][0], rows[0][1])], 0.0)
    b.put_ready(q.id, 0, b"fits")
    with pytest.raises(QueueFull):
        b.put_ready(q.id, 0, b"no room")
    assert b.room(q.id) == (3, 3)


def test_raising_max_depth_makes_room_and_lowering_it_refuses(b: Backend) -> None:
    q = make_queue(b, max_depth=2)
    b.put(q.id, [row(b"a"), row(b"b")])
    b.ensure_queue("q", default_queue_options(), {"max_depth": 5})
    b.put(q.id, [row(b"c"), row(b"d"), row(b"e")])
    b.ensure_queue("q", default_queue_options(), {"max_depth": 1})
    with pytest.raises(QueueFull):
        b.put_ready(q.id, 0, b"f")
    b.ensure_queue("q", default_queue_options(), {"max_depth": None})
    b.put_ready(q.id, 0, b"f")
    assert b.room(q.id) == (6, None)


# -- administration -----------------------------------------------------------------------


def test_stats_count_every_state(b: Backend, clock: FakeClock) -> None:
    q = make_queue(b, max_depth=100)
    ids = b.put(q.id, [row(b"r1", run_at=START - 5), row(b"r2"), row(b"d", run_at=START + 50),
                       row(b"l"), row(b"x"), row(b"c")])
    rows, _ = b.claim(q.id, 2, 30.0)
    b.fail(q.id, rows[1][0], rows[1][1], "bad")
    assert b.cancel(ids[5]) is True
    s = b.stats(q.id)
    assert (s.ready, s.delayed, s.leased, s.done, s.dead, s.cancelled) == (2, 1, 1, 0, 1, 1)
    assert (s.depth, s.max_depth, s.expired_leases) == (4, 100, 0)
    assert s.oldest_ready_at == START
    assert b.room(q.id) == (4, 100)


def test_peek_shows_messages_in_claim_order_and_changes_nothing(b: Backend) -> None:
    q = make_queue(b)
    ids = b.put(q.id, [row(b"a"), row(b"b", priority=3), row(b"c", run_at=START + 10)])
    ready = b.peek(q.id, State.READY, 10)
    assert [m.payload for m in ready] == [b"b", b"a"]
    assert [m.id for m in b.peek(q.id, None, 2)] == ids[:2]
    assert [m.payload for m in b.peek(q.id, State.DELAYED, 10)] == [b"c"]
    assert b.stats(q.id).ready == 2 and b.stats(q.id).leased == 0


def test_redrive_revives_dead_messages_oldest_first_and_drops_a_held_key(b: Backend) -> None:
    q = make_queue(b, max_depth=10)
    ids = b.put(q.id, [row(b"a", key="k"), row(b"b"), row(b"c")])
    rows, _ = b.claim(q.id, 3, 30.0)
    for r in rows:
        b.fail(q.id, r[0], r[1], "bad")
    b.put(q.id, [row(b"holder", key="k")])
    assert b.redrive(q.id, 2) == 2
    assert states(b, ids) == [State.READY, State.READY, State.DEAD]
    m = b.message(ids[0])
    assert m is not None and (m.key, m.attempts) == (None, 0)
    assert b.stats(q.id).depth == 3
    assert b.retry_finished(ids[2]) is True
    assert b.retry_finished(ids[2]) is False
    assert b.stats(q.id).depth == 4


def test_cancel_takes_only_ready_or_delayed_messages(b: Backend) -> None:
    q = make_queue(b, max_depth=5)
    ids = b.put(q.id, [row(b"a"), row(b"b", run_at=START + 60), row(b"c")])
    b.claim(q.id, 1, 30.0)
    assert [b.cancel(i) for i in ids] == [False, True, True]
    assert b.cancel(ids[1]) is False
    assert states(b, ids) == [State.LEASED, State.CANCELLED, State.CANCELLED]
    assert b.room(q.id) == (1, 5)


def test_purge_deletes_by_state_or_all_and_the_depth_follows(b: Backend) -> None:
    q = make_queue(b, max_depth=10)
    b.put(q.id, [row(b"a"), row(b"b"), row(b"c"), row(b"d", run_at=START + 5)])
    rows, _ = b.claim(q.id, 1, 30.0)
    b.fail(q.id, rows[0][0], rows[0][1], "bad")
    assert b.purge(q.id, State.DEAD) == 1
    assert b.room(q.id) == (3, 10)
    assert b.purge(q.id, State.READY) == 2
    assert b.room(q.id) == (1, 10)
    assert b.purge(q.id, None) == 1
    assert b.room(q.id) == (0, 10)
    b.put(q.id, [row(str(i).encode()) for i in range(10)])


def test_a_put_inside_a_rolled_back_transaction_leaves_nothing(b: Backend) -> None:
    q = make_queue(b, max_depth=2)
    with pytest.raises(RuntimeError), b.transaction():
        b.put(q.id, [row(b"a"), row(b"b")])
        raise RuntimeError
    assert b.room(q.id) == (0, 2)
    b.put(q.id, [row(b"a"), row(b"b")])


def test_verbs_inside_a_transaction_join_it_and_a_refused_put_leaves_it_usable(b: Backend) -> None:
    q = make_queue(b, max_depth=12)
    with b.transaction():
        for i in range(10):  # past psycopg's prepare threshold
            b.put_ready(q.id, 0, str(i).encode())
        with pytest.raises(QueueFull):
            b.put(q.id, [row(b"x"), row(b"y"), row(b"z")])
        rows, _ = b.claim(q.id, 1, 30.0)
        assert b.ack(q.id, [(rows[0][0], rows[0][1])], 0.0) == []
        with pytest.raises(LeaseLost):
            b.extend(rows[0][0], rows[0][1], 10.0)
        b.put(q.id, [row(b"x"), row(b"y")])
    assert b.room(q.id) == (11, 12)
    with pytest.raises(RuntimeError), b.transaction():
        rows, _ = b.claim(q.id, 5, 30.0)
        b.ack(q.id, [(r[0], r[1]) for r in rows], 0.0)
        raise RuntimeError
    assert b.room(q.id) == (11, 12) and b.stats(q.id).ready == 11


# == PostgreSQL only: real parallel connections =========================================


@pytest.fixture
def pg(pg_url: str, pg_schema: str) -> Callable[..., Any]:
    from conftest_pg import require_psycopg

    require_psycopg()
    from liteq.backends.postgres import PostgresBackend

    opened: list[Any] = []

    def opener(**options: Any) -> Any:
        opened.append(PostgresBackend(pg_url, schema=pg_schema, **options))
        return opened[-1]

    yield opener
    for x in opened:
        x.close()


def _drain(url: str, schema: str, qid: int, out: Any, threads: int) -> None:
    from liteq.backends.postgres import PostgresBackend

    backend = PostgresBackend(url, schema=schema)

    def consume() -> None:
        got: list[int] = []
        idle = 0
        while idle < 20:
            rows, _ = backend.claim(qid, 7, 30.0)
            if not rows:
                idle += 1
                time.sleep(0.01)
                continue
            idle = 0
            got.extend(r[0] for r in rows)
            lost = backend.ack(qid, [(r[0], r[1]) for r in rows[:3]], 0.0)
            for r in rows[3:]:
                lost += backend.ack(qid, [(r[0], r[1])], 0.0)
            assert not lost
        out.put(got)

    ts = [threading.Thread(target=consume) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    backend.close()


@pytest.mark.postgres
def test_pg_four_processes_of_two_threads_drain_5000_messages_each_exactly_once(
    pg: Callable[..., Any], pg_url: str, pg_schema: str
) -> None:
    b = pg()
    q = make_queue(b, "work", max_depth=5000)
    ids = []
    for i in range(0, 5000, 500):
        ids += b.put(q.id, [row(str(n).encode(), priority=n % 3, run_at=0.0) for n in range(i, i + 500)])
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    procs = [ctx.Process(target=_drain, args=(pg_url, pg_schema, q.id, out, 2)) for _ in range(4)]
    for p in procs:
        p.start()
    got: list[int] = []
    for _ in range(8):
        got += out.get(timeout=PATIENCE)
    for p in procs:
        p.join(PATIENCE)
        assert p.exitcode == 0
    assert len(got) == 5000 and sorted(got) == sorted(ids)
    assert b.stats(q.id).depth == 0 and b.room(q.id) == (0, 5000)
    assert b.execute(f'SELECT count(*) FROM "{pg_schema}".messages')[0][0] == 0


def _produce(url: str, schema: str, qid: int, n: int, out: Any) -> None:
    from liteq.backends.postgres import PostgresBackend

    backend = PostgresBackend(url, schema=schema)
    ok = full = 0
    try:
        for i in range(n):
            try:
                if i % 3 == 0:
                    backend.put(qid, [row(b"x", run_at=0.0), row(b"y", run_at=0.0)])
                    ok += 2
                elif i % 3 == 1:
                    backend.put(qid, [row(b"k", run_at=0.0, key=f"{os.getpid()}-{i}")])
                    ok += 1
                else:
                    backend.put_ready(qid, 0, b"z")
                    ok += 1
            except QueueFull:
                full += 1
    except Exception as exc:  # reported to the test (say a deadlock), not a hang
        out.put(repr(exc))
        return
    backend.close()
    out.put((ok, full))


@pytest.mark.postgres
def test_pg_four_producer_processes_never_push_a_queue_past_max_depth_nor_deadlock(
    pg: Callable[..., Any], pg_url: str, pg_schema: str
) -> None:
    b = pg()
    q = make_queue(b, "bounded", max_depth=150)
    seen: list[int] = []
    stop = threading.Event()
    sql = f'SELECT count(*) FROM "{pg_schema}".messages WHERE qid = %s AND state < 3'

    def sample() -> None:
        reader = pg()
        while not stop.is_set():
            seen.append(reader.execute(sql, (q.id,))[0][0])

    def consume() -> None:  # makes room now and then, so producers race for it
        c = pg()
        while not stop.is_set():
            rows, _ = c.claim(q.id, 5, 30.0)
            c.ack(q.id, [(r[0], r[1]) for r in rows], 0.0)
            time.sleep(0.02)

    threads = [threading.Thread(target=sample), threading.Thread(target=consume)]
    for t in threads:
        t.start()
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    procs = [ctx.Process(target=_produce, args=(pg_url, pg_schema, q.id, 300, out)) for _ in range(4)]
    for p in procs:
        p.start()
    results = [out.get(timeout=PATIENCE) for _ in procs]
    for p in procs:
        p.join(PATIENCE)
    stop.set()
    for t in threads:
        t.join()
    assert all(isinstance(r, tuple) for r in results), results
    assert all(full for _, full in results)  # the bound was met
    assert seen and max(seen) <= 150
    final = b.execute(sql, (q.id,))[0][0]
    assert final <= 150 and b.room(q.id) == (final, 150)


def _claim_and_hang(url: str, schema: str, qid: int, ready: Any) -> None:
    from liteq.backends.postgres import PostgresBackend

    backend = PostgresBackend(url, schema=schema)
    rows, _ = backend.claim(qid, 3, 2.0)
    ready.put([(r[0], r[1]) for r in rows])
    time.sleep(PATIENCE)


@pytest.mark.postgres
def test_pg_a_sigkilled_consumers_messages_come_back_and_its_late_ack_is_lease_lost(
    pg: Callable[..., Any], pg_url: str, pg_schema: str
) -> None:
    b = pg()
    q = make_queue(b, "crash")
    ids = b.put(q.id, [row(str(i).encode(), run_at=0.0) for i in range(3)])
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Queue()
    p = ctx.Process(target=_claim_and_hang, args=(pg_url, pg_schema, q.id, ready))
    p.start()
    held = ready.get(timeout=PATIENCE)
    os.kill(p.pid, signal.SIGKILL)  # type: ignore[arg-type]
    p.join(PATIENCE)
    assert sorted(m for m, _ in held) == sorted(ids)
    assert b.claim(q.id, 3, 30.0)[0] == []  # still leased by the dead process
    deadline = time.monotonic() + PATIENCE
    rows: list[tuple[Any, ...]] = []
    while len(rows) < 3 and time.monotonic() < deadline:
        time.sleep(0.2)
        more, _ = b.claim(q.id, 3, 30.0)
        rows += more
    assert sorted(r[0] for r in rows) == sorted(ids)
    assert all(r[2] == 2 and r[10] == "lease expired" for r in rows)
    assert b.ack(q.id, held, 0.0) == [m for m, _ in held]  # the dead holder's tokens
    with pytest.raises(LeaseLost):
        b.extend(held[0][0], held[0][1], 10.0)
    assert b.ack(q.id, [(r[0], r[1]) for r in rows], 0.0) == []


@pytest.mark.postgres
def test_pg_a_claim_planned_on_an_empty_table_still_uses_the_ready_index_at_10k_rows(
    pg: Callable[..., Any], pg_schema: str
) -> None:
    """The trap (DESIGN.md): a statement prepared while the table is empty keeps a
    sequential scan. Defences: the batch claim is prepared only with its LIMIT written
    in the text (``get()``'s one-row claim and the batch claim's generic plans hold,
    see the next test), and the claim names ``state = 0`` literally, so even a plan
    made on the empty table with the LIMIT as a parameter matches the partial index
    msg_ready."""
    b = pg()
    q = make_queue(b, "plan")
    for _ in range(8):  # psycopg prepares a statement from its 5th run
        assert b.claim(q.id, 1, 30.0)[0] == []
    # The same statement prepared by hand and run on the empty table past the point
    # where PostgreSQL would switch to a generic plan (the 6th run).
    conn = b.connection()
    text = b.ms.claim.replace("%(qid)s", "$1").replace("%(n)s", "$2").replace("%(until)s", "$3")
    conn.execute(f"PREPARE liteq_claim_plan(bigint, bigint, float8) AS {text}")
    for _ in range(6):
        conn.execute(f"EXECUTE liteq_claim_plan({q.id}, 1, 0)")
    for _ in range(10):
        b.put(q.id, [row(b"x", run_at=0.0)] * 1000)
    assert len(b.claim(q.id, 1, 30.0)[0]) == 1
    plan = "\n".join(r[0] for r in conn.execute(f"EXPLAIN EXECUTE liteq_claim_plan({q.id}, 1, 0)"))
    assert "msg_ready" in plan, plan
    assert "Seq Scan on messages" not in plan, plan
    conn.execute("DEALLOCATE liteq_claim_plan")


@pytest.mark.postgres
@pytest.mark.parametrize("analyzed", [False, True], ids=["never-analyzed", "analyzed-empty"])
def test_pg_every_statement_a_session_prepares_on_an_empty_table_keeps_an_index_plan_at_10k_rows(
    pg: Callable[..., Any], pg_schema: str, analyzed: bool
) -> None:
    """Sessions keep PostgreSQL's generic plans (plan_cache_mode auto, issue 17): every
    statement prepared while the queue was empty must still read the indexes, and no
    index whole, once it holds 10,000 messages (none analyzed since). The batch claim is
    prepared only with its size in the text: with the LIMIT a parameter its generic plan
    is the trap. Analyzed empty (as autovacuum leaves a drained queue), the planner
    prices a sequential scan at nothing: the sessions' enable_seqscan off keeps it out."""
    b = pg()
    q = make_queue(b, "generic")
    b.execute(f"ALTER TABLE {pg_schema}.messages SET (autovacuum_enabled = off)")
    if analyzed:
        b.put(q.id, [row(b"z", run_at=0.0)] * 5)
        rows, _ = b.claim(q.id, 5, 30.0)
        assert b.ack(q.id, [(r[0], r[1]) for r in rows], 0.0) == []
        b.execute(f"VACUUM ANALYZE {pg_schema}.messages")
        assert b.execute(f"SELECT reltuples FROM pg_class WHERE oid = "
                         f"'{pg_schema}.messages'::regclass")[0][0] == 0
    # psycopg prepares a statement at its 6th run; PostgreSQL plans a prepared statement's
    # first 5 executions for their values and may go generic from the 6th: 11 runs at
    # least, for every statement of the loop, whatever maintenance's timing adds.
    for _ in range(12):
        b.put_ready(q.id, 0, b"x")
        rows, _ = b.claim(q.id, 1, 30.0)
        assert b.ack(q.id, [(rows[0][0], rows[0][1])], 0.0) == []
        b.put(q.id, [row(b"y", run_at=0.0)] * 3)
        rows, _ = b.claim(q.id, 3, 30.0)
        assert b.ack(q.id, [(r[0], r[1]) for r in rows], 0.0) == []
        b.probe(q.id)
        b.next_due(q.id)
        b.expire(q.id)  # maintenance: the promotion and, with a lapsed lease, the expiry
        # a lease's other endings and its renewals, each found by id
        b.put_ready(q.id, 0, b"w")
        (mid, token, *_), = b.claim(q.id, 1, 30.0)[0]
        b.extend(mid, token, 10.0)
        assert b.heartbeat([(mid, token)], 10.0) == ([], [])
        assert b.retry(q.id, mid, token, 0.0, "again")
        (mid, token, *_), = b.claim(q.id, 1, 30.0)[0]
        assert b.release(q.id, [(mid, token)]) == []
        (mid, token, *_), = b.claim(q.id, 1, 30.0)[0]
        b.fail(q.id, mid, token, "boom")
        b.put_ready(q.id, 0, b"v")
        (mid, token, *_), = b.claim(q.id, 1, 30.0)[0]
        assert b.ack(q.id, [(mid, token)], 60.0) == []  # retained
        b.put(q.id, [row(b"u", run_at=0.0)] * 2)
        pairs = [(r[0], r[1]) for _ in range(2) for r in b.claim(q.id, 1, 30.0)[0]]
        assert b.ack(q.id, pairs, 0.0) == []  # two claims' tokens in one ack
    for _ in range(10):
        b.put(q.id, [row(b"x", run_at=0.0)] * 1000)
    assert len(b.claim(q.id, 100, 30.0)[0]) == 100  # some leased rows too
    conn = b.connection()
    prepared = conn.execute(
        "SELECT name, statement, cardinality(parameter_types), generic_plans"
        " FROM pg_prepared_statements"
    ).fetchall()
    assert any(g for _, _, _, g in prepared), prepared  # generic plans are in use
    claims = [text for _, text, _, _ in prepared if "WITH c AS MATERIALIZED" in text]
    assert claims and all("LIMIT 3 FOR UPDATE" in text for text in claims), claims
    assert any("WITH p AS MATERIALIZED" in text for _, text, _, _ in prepared)  # maintenance
    # the batch put, its size in its text
    assert any("unnest(" in text and "used + 3" in text for _, text, _, _ in prepared)
    leading = leading_columns(conn, pg_schema)
    conn.execute("SET plan_cache_mode = force_generic_plan")
    try:
        for name, text, nparams, _ in prepared:
            args = f"({', '.join(['NULL'] * nparams)})" if nparams else ""
            plan = [r[0] for r in conn.execute(f"EXPLAIN EXECUTE {name}{args}")]
            assert "Seq Scan on messages" not in "\n".join(plan), f"{text}\n" + "\n".join(plan)
            assert whole_index_reads(plan, leading) == [], f"{text}\n" + "\n".join(plan)
    finally:
        conn.execute("RESET plan_cache_mode")


@pytest.mark.postgres
def test_pg_a_statement_that_can_only_scan_a_table_is_not_compiled_on_every_run(
    pg: Callable[..., Any], pg_schema: str
) -> None:
    """liteq's sessions price sequential scans out (enable_seqscan off), which puts a
    statement that can only scan a table (a trigger's read of workers, a count over
    results) above jit_above_cost by that price alone: PostgreSQL then compiled it on
    every run, 2.6 s for one expiry of 38 leases (a trigger per row). jit is off."""
    b = pg()
    conn = b.connection()
    was = conn.execute("SELECT current_setting('jit')").fetchone()[0]
    conn.execute("SET jit = on")  # pg_jit_available() answers false while jit is off
    available = conn.execute("SELECT pg_jit_available()").fetchone()[0]
    conn.execute(f"SET jit = {was}")
    if not available:
        pytest.skip("this server has no JIT")
    plan = [r[0] for r in b.execute(
        f"EXPLAIN SELECT count(*) FROM {pg_schema}.results WHERE state = 1")]
    assert any("Seq Scan on results" in line for line in plan), plan
    assert not any(line.startswith("JIT") for line in plan), plan


@pytest.mark.postgres
def test_pg_batch_sizes_past_the_prepared_texts_are_sent_with_their_size_as_a_parameter(
    pg: Callable[..., Any],
) -> None:
    """queues.SizedTexts keeps one text per batch size up to its limit; a size past it
    goes with ``n`` as a parameter, unprepared, and puts and claims exactly as many."""
    b = pg()
    q = make_queue(b, "sizes")
    most = b.sized.most
    for n in range(2, most + 12):  # both statements: more sizes than texts
        ids = b.put(q.id, [row(f"{n}:{i}".encode(), run_at=0.0) for i in range(n)])
        assert len(set(ids)) == n
        rows, _ = b.claim(q.id, n, 30.0)
        assert sorted(r[0] for r in rows) == sorted(ids)
        assert b.ack(q.id, [(r[0], r[1]) for r in rows], 0.0) == []
    assert len(b.sized._texts) == most
    assert b.stats(q.id).depth == 0


def _together(n: int, fn: Callable[[int], Any]) -> list[Any]:
    """Run fn(0..n-1) in n threads released at once by a barrier; their results."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = fn(i)
        except Exception as exc:  # reported, not swallowed
            results[i] = exc

    ts = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(PATIENCE)
    return results


@pytest.mark.postgres
def test_pg_producers_racing_with_one_key_all_get_the_one_message(pg: Callable[..., Any]) -> None:
    b = pg()
    q = make_queue(b, "dedup", max_depth=100)
    got = _together(8, lambda i: b.put(q.id, [row(f"{i}".encode(), key="same", run_at=0.0)]))
    assert all(isinstance(g, list) for g in got), got
    assert len({g[0] for g in got}) == 1
    assert b.stats(q.id).ready == 1 and b.room(q.id) == (1, 100)


@pytest.mark.postgres
def test_pg_creators_racing_for_one_name_make_one_queue(pg: Callable[..., Any]) -> None:
    b = pg()
    got = _together(6, lambda i: make_queue(b, "once", max_depth=10))
    made = [g for g in got if isinstance(g, QueueRecord)]
    assert len(made) == 1
    assert all(isinstance(g, LiteqError) and "already exists" in str(g) for g in got if g not in made)
    assert b.room(made[0].id) == (0, 10)


@pytest.mark.postgres
def test_pg_consumers_racing_over_expired_leases_settle_each_once(pg: Callable[..., Any]) -> None:
    clock = FakeClock(START)
    b = pg(clock=clock)
    q = make_queue(b, "lapse", max_depth=500)
    ids = b.put(q.id, [row(str(i).encode()) for i in range(300)])
    assert len(b.claim(q.id, 300, 5.0)[0]) == 300
    clock.advance(10)
    got = _together(6, lambda i: [r for _ in range(100) for r in b.claim(q.id, 10, 30.0)[0]])
    rows = [r for g in got for r in g]
    assert sorted(r[0] for r in rows) == sorted(ids)
    assert {r[2] for r in rows} == {2}
    assert b.room(q.id) == (300, 500)


@pytest.mark.postgres
def test_pg_a_lease_set_before_the_clock_stepped_back_counts_as_expired(
    pg: Callable[..., Any], pg_schema: str
) -> None:
    clock = FakeClock(START)
    b = pg(clock=clock)
    q = make_queue(b, "stepped", lease=30.0)
    (mid,) = b.put(q.id, [row(b"x")])
    b.claim(q.id, 1, 30.0)
    # As if claimed with a clock 2 hours ahead of the one now.
    b.execute(f'UPDATE "{pg_schema}".messages SET lease_until = %s WHERE id = %s',
              (START + 7200.0, mid))
    assert b.stats(q.id).expired_leases == 1
    rows, _ = b.claim(q.id, 1, 30.0)
    assert [r[0] for r in rows] == [mid]


@pytest.mark.postgres
def test_pg_a_claim_promotes_at_most_maintain_rows_and_the_next_claim_the_rest(
    pg: Callable[..., Any]
) -> None:
    from liteq.backends.postgres.messages import MAINTAIN_ROWS

    clock = FakeClock(START)
    b = pg(clock=clock)
    q = make_queue(b, "burst")
    b.put(q.id, [row(b"x", run_at=START + 5)] * (MAINTAIN_ROWS + 500))
    clock.advance(5)
    assert len(b.claim(q.id, 1, 30.0)[0]) == 1
    s = b.stats(q.id)
    assert (s.ready, s.delayed) == (MAINTAIN_ROWS - 1, 500)
    assert len(b.claim(q.id, 1, 30.0)[0]) == 1  # behind: maintains again at once
    s = b.stats(q.id)
    assert (s.ready, s.delayed) == (MAINTAIN_ROWS + 500 - 2, 0)


def _race_puts_acks_and_bound_changes(b: Any, q: QueueRecord, bound: int = 40,
                                      rounds: int = 60) -> list[Any]:
    """Seven threads at once on a bounded queue: one changes max_depth (*bound*, 1.5x,
    2x), others put (pairs with dedup keys, and single ready puts), others claim 4, ack
    2 and retry 2. Each thread's count of refused puts (or its exception)."""
    opts = default_queue_options()

    def work(i: int) -> int:
        refused = 0
        for n in range(rounds):
            try:
                if i == 0:
                    b.ensure_queue(q.name, opts, {"max_depth": bound + (n % 3) * bound // 2})
                elif i % 3 == 1:
                    b.put(q.id, [row(b"a", run_at=0.0), row(b"b", run_at=0.0, key=f"{i}-{n % 7}")])
                elif i % 3 == 2:
                    b.put_ready(q.id, 0, b"c")
                else:
                    rows, _ = b.claim(q.id, 4, 30.0)
                    b.ack(q.id, [(r[0], r[1]) for r in rows[:2]], 0.0)
                    for r in rows[2:]:
                        b.retry(q.id, r[0], r[1], 0.0, "again")
            except QueueFull:
                refused += 1
        return refused

    return _together(7, work)


@pytest.mark.postgres
def test_pg_the_depth_equals_the_unfinished_count_after_racing_puts_acks_and_bound_changes(
    pg: Callable[..., Any], pg_schema: str
) -> None:
    b = pg()
    q = make_queue(b, "racy", max_depth=60)
    got = _race_puts_acks_and_bound_changes(b, q)
    assert all(isinstance(g, int) for g in got), got
    count = b.execute(
        f'SELECT count(*) FROM "{pg_schema}".messages WHERE qid = %s AND state < 3', (q.id,)
    )[0][0]
    depth, max_depth = b.room(q.id)
    assert depth == count == b.stats(q.id).depth
    assert depth <= 80  # the largest bound it had


def _deadlocks(url: str) -> int:
    """The server's count of deadlocks it broke in the current database (read from a
    connection of its own, after the backends that had them reported)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(
            "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
        return int(row[0]) if row else 0


@pytest.mark.postgres
def test_pg_racing_puts_acks_and_bound_changes_never_deadlock(
    pg: Callable[..., Any], pg_url: str
) -> None:
    # A release's SKIP LOCKED pick can keep a stripe locked that it did not update; its
    # fallback used to wait for stripe 0, which slow paths take first: a deadlock about
    # every other round of this race (the server broke it and the verb was retried, so
    # only the server's counter shows it). Four rounds, each on a queue of its own.
    before = _deadlocks(pg_url)
    for r in range(4):
        b = pg()
        q = make_queue(b, f"racy{r}", max_depth=20)
        got = _race_puts_acks_and_bound_changes(b, q, bound=16, rounds=120)
        assert all(isinstance(g, int) for g in got), got
        b.close()  # its sessions end: they report their statistics
    deadline = time.monotonic() + 2.0  # ended sessions' statistics arrive this soon
    while time.monotonic() < deadline and _deadlocks(pg_url) == before:
        time.sleep(0.1)
    assert _deadlocks(pg_url) - before == 0
