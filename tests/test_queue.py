"""The core queue's guarantees, one connection at a time (plus a blocked producer
thread): back pressure, the outbox transaction, ordering, delays, leases, fencing,
dead letters, and the administration verbs."""

from __future__ import annotations

import datetime
import decimal
import queue as stdlib_queue
import threading

import pytest
from dbsql import app_table, sql
from helpers import PATIENCE, counts, message_rows, queue_rows

import liteq

pytestmark = pytest.mark.every_engine

# --- back pressure ---------------------------------------------------------------------


def test_a_put_at_max_depth_raises_queue_full_and_writes_nothing(db) -> None:
    q = db.queue("bp", max_depth=3)
    ids = [q.put(i) for i in range(3)]
    before_stats, before_rows, before_queues = counts(q), message_rows(db), queue_rows(db)

    with pytest.raises(liteq.QueueFull) as info:
        q.put("one too many")

    err = info.value
    assert (err.queue, err.depth, err.max_depth) == ("bp", 3, 3)
    assert isinstance(err, stdlib_queue.Full)
    assert isinstance(err, liteq.LiteqError)
    assert "'bp' is full" in str(err) and "max_depth 3" in str(err)
    assert counts(q) == before_stats
    assert message_rows(db) == before_rows
    assert queue_rows(db) == before_queues
    assert [m.id for m in q.peek(10)] == ids


def test_code_that_catches_the_standard_librarys_queue_full_catches_queue_full(db) -> None:
    q = db.queue("bp", max_depth=1)
    q.put("a")
    try:
        q.put("b")
    except stdlib_queue.Full:
        pass
    else:  # pragma: no cover - the assertion is the point
        pytest.fail("QueueFull was not raised as queue.Full")
    assert len(q) == 1


def test_a_blocked_put_goes_through_once_a_consumer_acks(db) -> None:
    q = db.queue("bp", max_depth=2)
    q.put("a")
    q.put("b")
    result: dict[str, object] = {}

    def producer() -> None:
        try:
            result["id"] = q.put("c", block=True, timeout=PATIENCE)
        except BaseException as exc:  # reported below
            result["error"] = exc

    thread = threading.Thread(target=producer)
    thread.start()
    msg = q.get()
    assert msg is not None and msg.payload == "a"
    msg.ack()
    thread.join(PATIENCE)

    assert not thread.is_alive(), "the blocked put never went through"
    assert "error" not in result, result.get("error")
    assert [m.payload for m in q.peek(10)] == ["b", "c"]
    assert q.stats()["depth"] == 2


def test_a_blocked_put_raises_queue_full_after_its_timeout_when_nobody_acks(db) -> None:
    q = db.queue("bp", max_depth=1)
    q.put("a")
    before = message_rows(db)
    result: dict[str, object] = {}

    def producer() -> None:
        try:
            result["id"] = q.put("b", block=True, timeout=0.3)
        except BaseException as exc:
            result["error"] = exc

    thread = threading.Thread(target=producer)
    thread.start()
    thread.join(PATIENCE)

    assert not thread.is_alive()
    assert isinstance(result.get("error"), liteq.QueueFull)
    assert message_rows(db) == before


def test_a_put_many_that_does_not_fit_fails_whole_and_writes_nothing(db) -> None:
    q = db.queue("bp", max_depth=3)
    q.put("first")
    before_rows, before_queues = message_rows(db), queue_rows(db)

    with pytest.raises(liteq.QueueFull) as info:
        q.put_many(["a", "b", "c"])
    assert (info.value.depth, info.value.max_depth, info.value.extra) == (1, 3, 3)
    with pytest.raises(liteq.QueueFull):  # can never fit: no point in waiting
        q.put_many(["a", "b", "c", "d"], block=True, timeout=PATIENCE)

    assert message_rows(db) == before_rows
    assert queue_rows(db) == before_queues
    assert q.put_many(["a", "b"]) and q.stats()["depth"] == 3


@pytest.mark.parametrize("max_depth", [None, 1000], ids=["uncounted", "counted"])
def test_put_many_returns_each_payloads_id_in_order_and_keeps_its_priority(
    db, max_depth
) -> None:
    q = db.queue("many", max_depth=max_depth)
    payloads = [{"n": i} for i in range(150)] + ["text", b"bytes", [1, [2]], {"nested": {"a": 1}}]
    low = q.put_many(payloads)
    high = q.put_many([{"urgent": 1}, {"urgent": 2}], priority=5)

    assert len(set(low + high)) == len(payloads) + 2
    got = q.get_many(len(payloads) + 2)
    assert [m.id for m in got] == high + low  # priority first, then in order
    assert [m.payload for m in got] == [{"urgent": 1}, {"urgent": 2}, *payloads]
    assert q.stats()["depth"] == len(payloads) + 2


@pytest.mark.parametrize("max_depth", [None, 1000], ids=["uncounted", "counted"])
def test_put_many_with_headers_or_a_delay_keeps_them_on_every_message_in_order(
    db, max_depth
) -> None:
    """The batch that is not the common one (headers, a delay): one statement of
    per-row columns, each message with its own payload and the shared options."""
    q = db.queue("many-options", max_depth=max_depth)
    payloads = [{"n": i} for i in range(120)] + [None, b"\x00\\'", "text"]
    ids = q.put_many(payloads, headers={"trace": "t-1"}, priority=3)
    later = q.put_many([{"later": 1}, {"later": 2}], delay=60)

    got = q.get_many(len(payloads) + 2)
    assert [m.id for m in got] == ids  # the delayed two are not due
    assert [m.payload for m in got] == payloads
    assert all(m.headers == {"trace": "t-1"} and m.priority == 3 for m in got)
    assert [m.payload for m in q.peek(10, state="delayed")] == [{"later": 1}, {"later": 2}]
    assert [m.id for m in q.peek(10, state="delayed")] == later
    assert q.stats()["depth"] == len(payloads) + 2  # leased and delayed


def test_a_bound_set_by_another_connection_holds_for_a_queue_object_made_before_it(
    db, db_target
) -> None:
    # The Queue object caches its options for a second; the put's own transaction
    # must still see the new max_depth (the one-statement put checks it there).
    q = db.queue("late")
    assert q.max_depth is None
    q.put("before the bound")
    other = liteq.connect(db_target)
    try:
        other.queue("late", max_depth=2)
    finally:
        other.close()

    q.put("fits")
    before = message_rows(db)
    with pytest.raises(liteq.QueueFull) as info:
        q.put("one too many")
    assert (info.value.depth, info.value.max_depth) == (2, 2)
    assert message_rows(db) == before
    msg = q.get()
    assert msg is not None
    msg.ack()
    q.put("room again")
    assert q.stats()["depth"] == 2


def test_a_put_with_the_key_of_an_unfinished_message_returns_its_id_even_at_max_depth(db) -> None:
    q = db.queue("dedup", max_depth=2)
    first = q.put("order 7", key="order-7")
    q.put("other")
    before = message_rows(db)

    assert q.put("order 7 again", key="order-7") == first
    assert message_rows(db) == before
    assert [m.payload for m in q.peek(10)] == ["order 7", "other"]


def test_a_dedup_key_is_free_again_once_its_message_is_finished(db) -> None:
    q = db.queue("dedup")
    first = q.put("a", key="k")
    msg = q.get()
    assert msg is not None and msg.id == first
    assert q.put("again while leased", key="k") == first
    msg.ack()

    second = q.put("b", key="k")
    assert second != first
    assert [m.payload for m in q.peek(10)] == ["b"]


def test_depth_counts_ready_delayed_and_leased_messages_but_not_dead_ones(clocked_db) -> None:
    q = clocked_db.queue("depth", max_attempts=1)
    q.put("ready")
    q.put("delayed", delay=60)
    q.put("to lease")
    q.put("to kill")
    leased = q.get()
    dead = q.get()
    assert leased is not None and dead is not None
    dead.fail("no")

    stats = q.stats()
    assert (stats["ready"], stats["delayed"], stats["leased"], stats["dead"]) == (1, 1, 1, 1)
    assert stats["depth"] == len(q) == 3


# --- the outbox: the application's SQL and the queue in one transaction ------------------


def _make_orders_table(db: liteq.Database) -> None:
    app_table(db, "orders", "total REAL NOT NULL")


def test_an_exception_inside_a_transaction_leaves_neither_the_app_row_nor_the_message(db) -> None:
    _make_orders_table(db)
    q = db.queue("emails")

    with pytest.raises(RuntimeError, match="payment declined"):
        with db.transaction():
            sql(db, "INSERT INTO orders (total) VALUES (?)", (42.0,))
            q.put({"order_total": 42.0})
            raise RuntimeError("payment declined")

    assert sql(db, "SELECT count(*) FROM orders") == [(0,)]
    assert q.stats()["ready"] == 0 and q.stats()["depth"] == 0
    assert message_rows(db) == []


def test_a_transaction_that_succeeds_commits_the_app_row_and_the_message_together(
    db, db_target
) -> None:
    _make_orders_table(db)
    q = db.queue("emails")

    with db.transaction():
        sql(db, "INSERT INTO orders (total) VALUES (?)", (42.0,))
        q.put({"order_total": 42.0})

    other = liteq.connect(db_target)  # a second connection sees both
    assert sql(other, "SELECT total FROM orders") == [(42.0,)]
    msg = other.queue("emails").get()
    assert msg is not None and msg.payload == {"order_total": 42.0}
    other.close()


def test_an_ack_inside_a_transaction_that_rolls_back_leaves_the_message_leased(db) -> None:
    _make_orders_table(db)
    q = db.queue("jobs")
    q.put("job")
    msg = q.get()
    assert msg is not None

    with pytest.raises(RuntimeError):
        with db.transaction():
            sql(db, "INSERT INTO orders (total) VALUES (1.0)")
            msg.ack()
            raise RuntimeError("the effect failed")

    row = db.message(msg.id)
    assert row is not None and row.state == "leased" and row.token == msg.token
    assert sql(db, "SELECT count(*) FROM orders") == [(0,)]
    assert q.stats()["depth"] == 1
    db.ack(msg.receipt)  # the lease is still good: the real ack succeeds
    assert db.message(msg.id) is None


def test_an_ack_and_the_apps_effect_commit_together(db) -> None:
    _make_orders_table(db)
    q = db.queue("jobs")
    q.put({"total": 9.5})
    msg = q.get()
    assert msg is not None

    with db.transaction():
        sql(db, "INSERT INTO orders (total) VALUES (?)", (msg.payload["total"],))
        msg.ack()

    assert sql(db, "SELECT total FROM orders") == [(9.5,)]
    assert db.message(msg.id) is None and q.stats()["depth"] == 0


# --- order and delay -------------------------------------------------------------------


def test_messages_come_out_by_priority_then_first_in_first_out(db) -> None:
    q = db.queue("order")
    q.put("low-1", priority=0)
    q.put("high-1", priority=5)
    q.put("low-2", priority=0)
    q.put("mid-1", priority=2)
    q.put("high-2", priority=5)
    q.put("negative", priority=-1)
    q.put("mid-2", priority=2)
    expected = ["high-1", "high-2", "mid-1", "mid-2", "low-1", "low-2", "negative"]

    assert [m.payload for m in q.peek(10)] == expected
    first_three = q.get_many(3)
    assert [m.payload for m in first_three] == expected[:3]
    rest = []
    while (msg := q.get()) is not None:
        rest.append(msg.payload)
    assert rest == expected[3:]


def test_a_delayed_message_is_not_claimable_until_it_is_due(clocked_db, clock) -> None:
    q = clocked_db.queue("later")
    later = q.put("later", delay=10, priority=9)
    now = q.put("now")

    first = q.get()
    assert first is not None and first.id == now  # a delayed message never blocks a due one
    assert q.get() is None
    assert q.stats()["delayed"] == 1
    clock.advance(9)
    assert q.get() is None
    clock.advance(1)
    msg = q.get()
    assert msg is not None and msg.id == later and msg.attempts == 1


def test_a_batch_claim_topped_up_by_due_delayed_messages_hands_them_out_in_queue_order(
    clocked_db, clock
) -> None:
    # A batch claim that comes up short promotes due delayed messages and claims again
    # in the same transaction: the two parts are merged into the queue's order.
    q = clocked_db.queue("topped")
    assert q.get() is None  # a claim: the queue counts as maintained for 50 ms
    ready = q.put_many(["ready-1", "ready-2"])
    delayed = [q.put("soon-1", delay=0.005, priority=5), q.put("soon-2", delay=0.005, priority=5)]
    clock.advance(0.01)  # due, and still within the 50 ms

    msgs = q.get_many(10)

    assert [m.id for m in msgs] == delayed + ready
    assert {m.attempts for m in msgs} == {1}
    if clocked_db.backend.capabilities.engine == "sqlite":
        # SQLite's batch claim shares one token (one transaction: ack_many deletes a
        # claim's messages with one statement). PostgreSQL's top-up is a second claim
        # statement with a token of its own: fencing needs a fresh token per claim only.
        assert len({m.token for m in msgs}) == 1
    assert q.stats()["leased"] == 4
    q.ack_many(msgs)
    assert q.stats()["depth"] == 0


def test_the_merge_of_a_topped_up_batch_claim_orders_ranks_as_sql_does(clocked_db, clock) -> None:
    # ORDER BY rank puts NULL (no rank) before b"": the Python merge must agree.
    q = clocked_db.queue("ranked")
    assert q.get() is None  # maintained for 50 ms
    ranked = q.put("empty rank", rank=b"")
    unranked = q.put("no rank", delay=0.005)
    clock.advance(0.01)

    msgs = q.get_many(10)

    assert [m.id for m in msgs] == [unranked, ranked]
    assert q.stats()["leased"] == 2
    q.ack_many(msgs)


# --- leases, fencing, dead letters ------------------------------------------------------


def test_an_expired_lease_makes_the_message_claimable_again_with_attempts_incremented(
    clocked_db, clock
) -> None:
    q = clocked_db.queue("lease", lease=10)
    mid = q.put("x")
    first = q.get()
    assert first is not None and first.attempts == 1
    clock.advance(9)
    assert q.get() is None  # still leased: nobody else may hold it

    clock.advance(1)
    second = q.get()
    assert second is not None and second.id == mid
    assert second.attempts == 2 and second.token != first.token
    with pytest.raises(liteq.LeaseLost):
        first.ack()
    second.ack()
    assert clocked_db.message(mid) is None


def test_after_max_attempts_expired_leases_the_message_goes_dead_with_lease_expired(
    clocked_db, clock
) -> None:
    q = clocked_db.queue("lease", lease=10, max_attempts=2)
    mid = q.put("x")
    for attempt in (1, 2):
        msg = q.get()
        assert msg is not None and msg.attempts == attempt
        clock.advance(10)

    assert q.get() is None
    dead = q.peek(10, state="dead")
    assert [m.id for m in dead] == [mid]
    assert dead[0].error == "lease expired" and dead[0].attempts == 2
    assert q.stats()["dead"] == 1 and q.stats()["depth"] == 0


def test_extend_keeps_a_message_from_expiring(clocked_db, clock) -> None:
    q = clocked_db.queue("lease", lease=10)
    q.put("x")
    msg = q.get()
    assert msg is not None
    clock.advance(8)
    msg.extend(10)
    assert msg.lease_until == clock() + 10

    clock.advance(8)  # 16 s after the claim: past the original lease
    assert q.get() is None
    msg.ack()
    assert q.stats()["depth"] == 0


def test_nack_gives_the_message_back_and_past_max_attempts_sends_it_dead_with_the_error(
    clocked_db, clock
) -> None:
    q = clocked_db.queue("retry", max_attempts=2)
    mid = q.put("x")
    msg = q.get()
    assert msg is not None
    msg.nack(delay=5, error="boom 1")
    assert q.get() is None and q.stats()["delayed"] == 1
    clock.advance(5)

    again = q.get()
    assert again is not None and again.id == mid and again.attempts == 2
    assert again.error == "boom 1"
    again.nack(error="boom 2")

    assert q.get() is None
    dead = q.peek(10, state="dead")
    assert [(m.id, m.error) for m in dead] == [(mid, "boom 2")]


def test_fail_sends_a_message_dead_at_once_with_the_reason(db) -> None:
    q = db.queue("fail", max_attempts=5)
    mid = q.put("x")
    msg = q.get()
    assert msg is not None
    msg.fail("cannot ever work")
    dead = q.peek(10, state="dead")
    assert [(m.id, m.error, m.attempts) for m in dead] == [(mid, "cannot ever work", 1)]
    assert q.get() is None and q.stats()["depth"] == 0


def test_a_dead_letter_queue_receives_the_message_as_ready_with_origin_and_error(db) -> None:
    q = db.queue("work", max_attempts=1, dead_letter="work.dead")
    mid = q.put({"job": 1})
    msg = q.get()
    assert msg is not None
    msg.nack(error="kaput")

    assert q.stats()["dead"] == 0 and q.stats()["depth"] == 0
    dlq = db.queue("work.dead")
    assert dlq.stats()["ready"] == 1 and dlq.stats()["depth"] == 1
    moved = dlq.get()
    assert moved is not None
    assert (moved.id, moved.payload, moved.origin, moved.error) == (mid, {"job": 1}, "work", "kaput")
    assert moved.attempts == 1


def test_redrive_makes_dead_messages_ready_again_with_attempts_reset(db) -> None:
    q = db.queue("redrive", max_attempts=1)
    ids = q.put_many(["a", "b"])
    for msg in q.get_many(2):
        msg.fail("bad")
    assert q.stats()["dead"] == 2 and q.stats()["depth"] == 0

    assert q.redrive() == 2
    stats = q.stats()
    assert (stats["ready"], stats["dead"], stats["depth"]) == (2, 0, 2)
    again = q.get_many(2)
    assert [(m.id, m.attempts) for m in again] == [(ids[0], 1), (ids[1], 1)]


def test_purge_deletes_messages_and_frees_their_depth(db) -> None:
    q = db.queue("purge", max_depth=3)
    q.put_many(["a", "b", "c"])
    leased = q.get()
    assert leased is not None

    assert q.purge("ready") == 2
    assert q.stats()["depth"] == 1 and q.stats()["leased"] == 1
    assert q.purge() == 1
    assert q.stats()["depth"] == 0 and message_rows(db) == []
    assert len(q.put_many(["d", "e", "f"])) == 3  # the room really was freed
    with pytest.raises(liteq.LeaseLost):
        leased.ack()


def test_peek_reads_messages_without_claiming_them(db) -> None:
    q = db.queue("peek")
    ids = q.put_many(["a", "b"])
    seen = q.peek(10)
    assert [(m.id, m.state, m.attempts) for m in seen] == [(ids[0], "ready", 0), (ids[1], "ready", 0)]
    assert q.stats()["leased"] == 0

    msg = q.get()
    assert msg is not None and msg.id == ids[0] and msg.attempts == 1


def test_retention_keeps_done_messages_until_prune_removes_them(clocked_db, clock) -> None:
    q = clocked_db.queue("kept", retention=60)
    mid = q.put("x")
    msg = q.get()
    assert msg is not None
    msg.ack()

    assert q.stats()["done"] == 1 and q.stats()["depth"] == 0
    done = q.peek(10, state="done")
    assert [m.id for m in done] == [mid] and done[0].finished_at == clock()
    assert q.prune() == 0  # not older than the retention yet
    clock.advance(61)
    assert q.prune() == 1
    assert q.stats()["done"] == 0 and clocked_db.message(mid) is None


def test_ack_many_acks_current_messages_and_reports_stale_ones_without_changing_them(
    clocked_db, clock
) -> None:
    q = clocked_db.queue("many", lease=10)
    q.put_many(["a", "b", "c"])
    a, b, c = q.get_many(3)
    b.extend(100)
    clock.advance(10)
    q.expire()  # a and c: leases ran out and were released
    retaken = q.get()
    assert retaken is not None and retaken.id == a.id
    before = message_rows(clocked_db)

    with pytest.raises(liteq.LeaseLost) as info:
        q.ack_many([a, b, c])

    assert sorted(info.value.ids) == [a.id, c.id]
    assert message_rows(clocked_db) == [r for r in before if r[0] != b.id]
    assert q.stats()["depth"] == 2
    retaken.ack()

@pytest.mark.parametrize("retention", [0, 60])
def test_ack_many_finishes_messages_of_several_claims_and_more_than_one_statement_holds(
    db, retention
) -> None:
    # A batch ack is one statement per claim and per 500 ids (sql_ack_many).
    q = db.queue("chunks", retention=retention, count_depth=True)
    q.put_many(list(range(1300)))
    first = q.get_many(1201)
    second = q.get_many(99)
    assert len({m.token for m in first}) == 1 and first[0].token != second[0].token

    q.ack_many(second[:50] + first + second[50:])

    stats = q.stats()
    assert stats["depth"] == 0 and stats["leased"] == 0
    assert stats["done"] == (1300 if retention else 0)
    assert q.get() is None


@pytest.mark.parametrize("retention", [0, 60])
def test_ack_many_with_a_stale_message_of_a_batch_claim_changes_only_the_current_ones(
    clocked_db, clock, retention
) -> None:
    q = clocked_db.queue("mixed", lease=10, retention=retention)
    q.put_many(["a", "b", "c", "d"])
    a, b = q.get_many(2)
    clock.advance(5)
    c, d = q.get_many(2)
    clock.advance(6)  # a and b ran out; c and d hold
    q.expire()
    again = q.get_many(2)
    assert {m.id for m in again} == {a.id, b.id}

    with pytest.raises(liteq.LeaseLost) as info:
        q.ack_many([a, c, b, d])

    assert sorted(info.value.ids) == sorted([a.id, b.id])
    assert q.stats()["leased"] == 2  # the new holders of a and b keep their leases
    q.ack_many(again)
    assert q.stats()["depth"] == 0


@pytest.mark.parametrize("retention", [0, 60])
def test_ack_many_given_the_same_message_twice_acks_it_once_without_a_lease_lost(
    db, retention
) -> None:
    q = db.queue("twice", retention=retention, count_depth=True)
    q.put_many(["a", "b"])
    a, b = q.get_many(2)

    q.ack_many([a, b, a])

    assert q.stats()["depth"] == 0
    assert q.stats()["done"] == (2 if retention else 0)
    assert q.get() is None



# --- the context manager, durability settings, payloads -----------------------------------


def test_the_context_manager_acks_on_success(db) -> None:
    q = db.queue("ctx")
    mid = q.put("x")
    with q.get() as msg:
        assert msg.payload == "x"
    assert db.message(mid) is None and q.stats()["depth"] == 0


def test_the_context_manager_nacks_on_an_exception(db) -> None:
    q = db.queue("ctx")
    mid = q.put("x")
    with pytest.raises(RuntimeError, match="handler broke"):
        with q.get() as msg:
            raise RuntimeError("handler broke")
    assert msg.id == mid
    back = db.message(mid)
    assert back is not None and back.state in ("ready", "delayed")
    assert back.attempts == 1 and "RuntimeError: handler broke" in (back.error or "")
    assert q.stats()["leased"] == 0 and q.stats()["depth"] == 1


@pytest.mark.sqlite_only("PRAGMA synchronous is SQLite's own setting")
@pytest.mark.parametrize(("durability", "synchronous"), [("normal", 1), ("full", 2)])
def test_durability_sets_synchronous_on_every_connection(db_path, durability, synchronous) -> None:
    database = liteq.connect(db_path, durability=durability)
    assert database.durability == durability
    assert database.execute("PRAGMA synchronous") == [(synchronous,)]
    seen: list[object] = []
    thread = threading.Thread(target=lambda: seen.append(database.execute("PRAGMA synchronous")))
    thread.start()
    thread.join(PATIENCE)
    assert seen == [[(synchronous,)]]
    database.close()


def test_payloads_and_headers_round_trip_with_their_types(db) -> None:
    payload = {
        "bytes": b"\x00\xff",
        "when": datetime.datetime(2024, 5, 1, 12, 30, tzinfo=datetime.UTC),
        "amount": decimal.Decimal("12.30"),
        "tags": {"a", "b"},
        "nested": [1, 2.5, None, True, "é"],
    }
    q = db.queue("types")
    q.put(payload, headers={"trace": "abc"})
    msg = q.get()
    assert msg is not None
    assert msg.payload == payload and msg.headers == {"trace": "abc"}


def test_a_committed_message_is_there_after_the_database_is_closed_and_reopened(
    db_target,
) -> None:
    first = liteq.connect(db_target)
    mid = first.queue("durable", max_depth=10, lease=7).put("kept")
    first.close()

    second = liteq.connect(db_target)
    q = second.queue("durable")
    assert (q.config.max_depth, q.config.lease) == (10, 7.0)
    msg = q.get()
    assert msg is not None and (msg.id, msg.payload) == (mid, "kept")
    second.close()


def test_a_queue_full_caught_inside_a_transaction_leaves_the_rest_of_it_to_commit(db) -> None:
    _make_orders_table(db)
    q = db.queue("bp", max_depth=1)
    q.put("already here")

    with db.transaction():
        sql(db, "INSERT INTO orders (total) VALUES (1.0)")
        with pytest.raises(liteq.QueueFull):
            q.put("no room")
        sql(db, "INSERT INTO orders (total) VALUES (2.0)")

    assert sql(db, "SELECT total FROM orders ORDER BY id") == [(1.0,), (2.0,)]
    assert [m.payload for m in q.peek(10)] == ["already here"]
    assert q.stats()["depth"] == 1


# --- more dead-letter and administration paths ----------------------------------------


def test_an_expired_last_lease_moves_the_message_to_the_dead_letter_queue(clocked_db, clock) -> None:
    q = clocked_db.queue("work", lease=10, max_attempts=1, dead_letter="work.dead")
    mid = q.put("x")
    assert q.get() is not None
    clock.advance(10)
    q.expire()

    moved = clocked_db.message(mid)
    assert moved is not None
    assert (moved.queue, moved.state, moved.origin, moved.error) == (
        "work.dead", "ready", "work", "lease expired")
    assert q.stats()["depth"] == 0 and clocked_db.queue("work.dead").stats()["depth"] == 1


def test_redrive_with_a_limit_brings_back_only_that_many_oldest_first(db) -> None:
    q = db.queue("redrive", max_attempts=1)
    ids = q.put_many(["a", "b", "c"])
    for msg in q.get_many(3):
        msg.fail("bad")

    assert q.redrive(limit=2) == 2
    assert [m.id for m in q.peek(10)] == ids[:2]
    assert [m.id for m in q.peek(10, state="dead")] == ids[2:]
    assert q.stats()["depth"] == 2


def test_purging_dead_messages_does_not_change_the_depth(db) -> None:
    q = db.queue("purge", max_attempts=1)
    q.put_many(["a", "b"])
    msg = q.get()
    assert msg is not None
    msg.fail("bad")
    assert q.purge("dead") == 1
    assert q.stats()["depth"] == 1 and q.stats()["ready"] == 1


def test_cancel_takes_a_waiting_message_out_and_retry_brings_it_back(db) -> None:
    q = db.queue("cancel", max_depth=2)
    first = q.put("first")
    waiting = q.put("waiting")
    leased = q.get()
    assert leased is not None and leased.id == first

    assert db.cancel(waiting) is True
    assert db.cancel(first) is False  # leased: not cancellable
    assert db.message(waiting).state == "cancelled"  # type: ignore[union-attr]
    assert q.stats()["depth"] == 1 and q.stats()["cancelled"] == 1

    assert db.retry(waiting) is True
    assert db.message(waiting).state == "ready"  # type: ignore[union-attr]
    assert q.stats()["depth"] == 2
    assert db.retry(waiting) is False  # already ready


def test_redrive_works_when_a_new_message_holds_the_dead_messages_dedup_key(db) -> None:
    q = db.queue("keys", max_attempts=1)
    old = q.put("old", key="order-7")
    msg = q.get()
    assert msg is not None
    msg.fail("bad")
    new = q.put("new", key="order-7")  # the key is free: the old one is dead
    assert new != old

    assert q.redrive() == 1

    assert sorted(m.id for m in q.peek(10)) == [old, new]
    assert q.stats()["dead"] == 0 and q.stats()["depth"] == 2


def test_redrive_works_when_two_dead_messages_share_a_dedup_key(db) -> None:
    q = db.queue("keys", max_attempts=1)
    for payload in ("first", "second"):
        q.put(payload, key="same")
        msg = q.get()
        assert msg is not None
        msg.fail("bad")
    assert q.stats()["dead"] == 2

    revived = q.redrive()

    assert revived == 2 and q.stats()["dead"] == 0 and q.stats()["depth"] == 2


def test_retry_of_a_cancelled_message_works_when_a_new_message_holds_its_dedup_key(db) -> None:
    q = db.queue("keys")
    old = q.put("old", key="k")
    assert db.cancel(old)
    new = q.put("new", key="k")

    assert db.retry(old) is True

    assert sorted(m.id for m in q.peek(10)) == [old, new]


def test_a_message_names_the_queue_it_came_from_by_object_and_id(db) -> None:
    q = db.queue("origin")
    q.put_many([1, 2])
    claimed = q.get()
    (peeked,) = q.peek(1)
    found = db.message(peeked.id)
    for msg in (claimed, peeked, found):
        assert msg is not None and msg.owner is q and msg.queue_id == q.id
