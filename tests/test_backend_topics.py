"""Topics through the storage interface, on every engine (issue 17, step B4): what
SQLite does, PostgreSQL must do too.

The first part runs once per engine (``backend``/``open_backend`` from tests/engines.py);
the second part is PostgreSQL-only: publishers, subscribers and unsubscribers on real
parallel connections, where SQLite's single writer would hide a race.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from helpers import PATIENCE, FakeClock

from liteq.backends.base import Backend
from liteq.backends.records import NewMessage, QueueRecord, StaleRoutes
from liteq.errors import InvalidArgument, QueueFull
from liteq.options import default_columns

START = 1_000_000.0


def row(payload: bytes, key: str | None = None) -> NewMessage:
    return NewMessage(0, None, START, payload, None, key)


def sub(b: Backend, name: str, topic: str = "orders", pattern: str = "#", **updates: Any) -> QueueRecord:
    return b.subscribe(topic, f"{topic}:{name}", pattern, default_columns(), updates)


def publish(b: Backend, topic: str, payload: bytes, key: str | None = None) -> int:
    """Publish *payload* to every subscription of *topic*, routing again while the
    subscription set moves (what ``Topic.publish`` does)."""
    for _ in range(10_000):
        version, subs = b.subscriptions(topic)
        try:
            return b.publish(version, {s.id: [row(payload, key)] for s in subs})
        except StaleRoutes:
            continue
    raise AssertionError("the subscription set never stood still")


def payloads(b: Backend, qid: int) -> list[bytes]:
    return sorted(m.payload for m in b.peek(qid, None, 100_000))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def b(open_backend: Callable[..., Backend], clock: FakeClock) -> Backend:
    return open_backend(clock=clock)


# -- subscriptions ------------------------------------------------------------------------


def test_subscribing_makes_a_queue_with_the_topic_and_pattern_and_lists_it(b: Backend) -> None:
    assert b.subscriptions("orders") == (0, [])
    assert b.topics() == []
    eu = sub(b, "eu", pattern="order.*.eu", max_depth=5)
    us = sub(b, "us", pattern="order.#")
    other = sub(b, "all", topic="audit")
    assert (eu.name, eu.topic, eu.pattern, eu.max_depth) == ("orders:eu", "orders", "order.*.eu", 5)
    assert b.queue_row("orders:eu") == eu
    version, subs = b.subscriptions("orders")
    assert [s.name for s in subs] == ["orders:eu", "orders:us"]
    assert subs == [eu, us]
    assert version == b.subs_version() > 0
    assert b.topics() == ["audit", "orders"]
    assert b.subscriptions("audit").queues == [other]
    assert b.room(eu.id) == (0, 5)


def test_subscribing_again_updates_the_pattern_and_options_and_keeps_the_messages(b: Backend) -> None:
    first = sub(b, "eu", pattern="a.#")
    version = b.subs_version()
    b.publish(version, {first.id: [row(b"kept")]})
    again = sub(b, "eu", pattern="b.*", max_depth=3, lease=7.0)
    assert again.id == first.id
    assert (again.pattern, again.max_depth, again.lease) == ("b.*", 3, 7.0)
    assert b.subs_version() > version
    assert payloads(b, again.id) == [b"kept"]
    assert b.room(again.id) == (1, 3)


def test_subscribe_refuses_a_plain_queue_or_another_topics_subscription_and_changes_nothing(
    b: Backend,
) -> None:
    plain = b.ensure_queue("orders:plain", default_columns(), {})
    audit = sub(b, "x", topic="audit")
    version = b.subs_version()
    with pytest.raises(InvalidArgument, match="not a subscription of topic 'orders'"):
        sub(b, "plain", pattern="a.b")
    with pytest.raises(InvalidArgument, match="not a subscription of topic 'orders'"):
        b.subscribe("orders", "audit:x", "a.b", default_columns(), {})
    assert b.queue_row("orders:plain") == plain
    assert b.queue_row("audit:x") == audit
    assert b.subs_version() == version
    assert b.topics() == ["audit"]


def test_unsubscribing_deletes_the_queue_and_its_messages_and_moves_the_version(b: Backend) -> None:
    s = sub(b, "eu")
    keep = sub(b, "us")
    b.publish(b.subs_version(), {s.id: [row(b"a"), row(b"b")], keep.id: [row(b"c")]})
    version = b.subs_version()
    b.unsubscribe(s.id)
    assert b.subs_version() > version
    assert b.queue_row("orders:eu") is None
    assert b.peek(s.id, None, 10) == []
    assert b.subscriptions("orders").queues == [keep]
    assert payloads(b, keep.id) == [b"c"]
    assert b.integrity_check() == ["ok"]


def test_a_temporary_subscription_is_renewed_and_dropped_with_its_messages_once_expired(
    b: Backend, clock: FakeClock
) -> None:
    tail = sub(b, "tail", expires_at=START + 30)
    durable = sub(b, "durable")
    b.publish(b.subs_version(), {tail.id: [row(b"t")], durable.id: [row(b"d")]})
    version = b.subs_version()
    clock.advance(20)
    assert b.drop_expired_subscriptions() == 0
    assert b.subs_version() == version  # nothing expired: nothing moved
    assert b.touch_subscription(tail.id, START + 60) is True
    clock.advance(20)  # 40 s: past the first lease, inside the renewed one
    assert b.drop_expired_subscriptions() == 0
    clock.advance(30)
    assert b.drop_expired_subscriptions() == 1
    assert b.subs_version() > version
    assert b.queue_row("orders:tail") is None
    assert b.peek(tail.id, None, 10) == []
    assert b.subscriptions("orders").queues == [durable]
    assert b.touch_subscription(tail.id, START + 200) is False
    assert b.drop_expired_subscriptions() == 0


# -- publish ------------------------------------------------------------------------------


def test_publish_puts_each_subscriptions_rows_and_counts_the_ids(b: Backend) -> None:
    eu, us = sub(b, "eu"), sub(b, "us")
    n = b.publish(b.subs_version(), {eu.id: [row(b"1"), row(b"2")], us.id: [row(b"1")]})
    assert n == 3
    assert payloads(b, eu.id) == [b"1", b"2"]
    assert payloads(b, us.id) == [b"1"]
    assert b.stats(eu.id).ready == 2 and b.room(eu.id) == (2, None)
    rows, _ = b.claim(us.id, 10, 30.0)
    assert [r[3] for r in rows] == [b"1"]


def test_publish_keeps_dedup_keys_per_subscription(b: Backend) -> None:
    eu, us = sub(b, "eu"), sub(b, "us")
    version = b.subs_version()
    b.publish(version, {eu.id: [row(b"first", key="k")], us.id: [row(b"first", key="k")]})
    assert b.publish(version, {eu.id: [row(b"again", key="k")], us.id: [row(b"x", key="j")]}) == 2
    assert payloads(b, eu.id) == [b"first"]
    assert payloads(b, us.id) == [b"first", b"x"]


def test_publish_with_a_moved_version_raises_stale_routes_and_writes_nothing(b: Backend) -> None:
    eu = sub(b, "eu")
    version = b.subs_version()
    sub(b, "us")
    with pytest.raises(StaleRoutes):
        b.publish(version, {eu.id: [row(b"x")]})
    assert payloads(b, eu.id) == []
    assert b.room(eu.id) == (0, None)


def test_publish_to_a_full_subscription_names_it_and_writes_nothing_anywhere(b: Backend) -> None:
    roomy = sub(b, "a-roomy", max_depth=10)
    full = sub(b, "b-full", max_depth=1)
    version = b.subs_version()
    b.publish(version, {full.id: [row(b"fills")]})
    with pytest.raises(QueueFull, match="orders:b-full") as caught:
        b.publish(version, {roomy.id: [row(b"x"), row(b"y")], full.id: [row(b"z")]})
    assert caught.value.queue == "orders:b-full"
    assert payloads(b, roomy.id) == [] and b.room(roomy.id) == (0, 10)
    assert payloads(b, full.id) == [b"fills"] and b.room(full.id) == (1, 1)


def test_publish_inside_an_application_transaction_commits_or_rolls_back_with_it(
    b: Backend,
) -> None:
    eu = sub(b, "eu")
    version = b.subs_version()
    with pytest.raises(RuntimeError):
        with b.transaction():
            b.publish(version, {eu.id: [row(b"gone")]})
            raise RuntimeError
    with b.transaction():
        b.publish(version, {eu.id: [row(b"kept")]})
    assert payloads(b, eu.id) == [b"kept"]
    assert b.stats(eu.id).ready == 1


def test_deleting_a_subscription_queue_makes_a_publish_routed_before_it_stale(b: Backend) -> None:
    eu, us = sub(b, "eu"), sub(b, "us")
    version = b.subs_version()
    b.delete_queue(eu.id)
    with pytest.raises(StaleRoutes):
        b.publish(version, {eu.id: [row(b"x")], us.id: [row(b"x")]})
    assert payloads(b, us.id) == []


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


def _run_threads(fns: list[Callable[[], None]]) -> None:
    """Run each fn in its own thread, released together; re-raise the first error."""
    barrier = threading.Barrier(len(fns))
    errors: list[BaseException] = []

    def run(fn: Callable[[], None]) -> None:
        barrier.wait(PATIENCE)
        try:
            fn()
        except BaseException as exc:  # reported below, not swallowed
            errors.append(exc)

    ts = [threading.Thread(target=run, args=(fn,)) for fn in fns]
    for t in ts:
        t.start()
    for t in ts:
        t.join(PATIENCE)
    assert not any(t.is_alive() for t in ts), "a thread did not finish"
    if errors:
        raise errors[0]


def _orphans(b: Any, schema: str) -> int:
    rows = b.execute(
        f'SELECT count(*) FROM "{schema}".messages m WHERE NOT EXISTS '
        f'(SELECT 1 FROM "{schema}".queues q WHERE q.id = m.qid)'
    )
    return int(rows[0][0])


@pytest.mark.postgres
def test_pg_subscribers_racing_publishers_get_exactly_the_publishes_after_them_and_no_orphans(
    pg: Callable[..., Any], pg_schema: str
) -> None:
    b = pg()
    steady = sub(b, "steady")
    published: list[tuple[float, float, bytes]] = []  # (called, returned, payload)
    lives: list[tuple[float, float, QueueRecord]] = []  # subscribe (called, returned, row)
    lock = threading.Lock()
    churning = [2]  # churners still running: publishers go on until both are done

    def publisher(p: int) -> Callable[[], None]:
        def run() -> None:
            i = 0
            while churning[0] or i < 20:
                payload = f"{p}-{i}".encode()
                t0 = time.monotonic()
                publish(b, "orders", payload)
                with lock:
                    published.append((t0, time.monotonic(), payload))
                i += 1
        return run

    def churner(c: int) -> Callable[[], None]:
        def run() -> None:
            try:
                for n in range(20):
                    t0 = time.monotonic()
                    s = sub(b, f"churn-{c}-{n}")
                    with lock:
                        lives.append((t0, time.monotonic(), s))
                    if n % 2 == 0:  # every other one goes again, some with messages in it
                        b.unsubscribe(s.id)
                    elif n % 3 == 0:
                        b.delete_queue(s.id)
                    # Publishers re-route after every change: leave them room to commit
                    # (under nonstop changes a publisher can keep finding its routes stale).
                    time.sleep(0.02)
            finally:
                with lock:
                    churning[0] -= 1
        return run

    _run_threads([publisher(0), publisher(1), publisher(2), churner(0), churner(1)])
    assert _orphans(b, pg_schema) == 0
    assert b.integrity_check() == ["ok"]
    everything = sorted(p for _, _, p in published)
    assert payloads(b, steady.id) == everything  # every publish, exactly once
    survivors = 0
    for called, returned, s in lives:
        if b.queue_row(s.name) is None:
            continue
        survivors += 1
        got = payloads(b, s.id)
        assert len(got) == len(set(got)), s.name
        after = {p for t0, _, p in published if t0 > returned}  # began after it existed
        before = {p for _, t1, p in published if t1 < called}  # done before it began
        assert after <= set(got), s.name
        assert not (before & set(got)), s.name
        assert b.room(s.id) == (len(got), None)
    assert survivors > 0


@pytest.mark.postgres
def test_pg_two_publishers_fan_out_exactly_once_each(pg: Callable[..., Any]) -> None:
    b = pg()
    subs = [sub(b, f"s{i}", max_depth=1000) for i in range(5)]
    other = pg()  # a second process's connections, as another host would have

    def publisher(backend: Any, p: int) -> Callable[[], None]:
        def run() -> None:
            for i in range(100):
                assert publish(backend, "orders", f"{p}-{i}".encode()) == len(subs)
        return run

    _run_threads([publisher(b, 0), publisher(other, 1)])
    expected = sorted(f"{p}-{i}".encode() for p in range(2) for i in range(100))
    for s in subs:
        assert payloads(b, s.id) == expected
        assert b.room(s.id) == (200, 1000)
        assert b.stats(s.id).ready == 200


@pytest.mark.postgres
def test_pg_unsubscribe_racing_delete_queue_of_one_subscription_never_deadlocks(
    pg: Callable[..., Any],
) -> None:
    b = pg()
    for i in range(15):
        s = sub(b, f"twice-{i}")
        b.publish(b.subs_version(), {s.id: [row(b"x")]})
        # Both take the topic's lock before the queue row: one waits, then finds it gone.
        qid = s.id
        _run_threads([lambda: b.unsubscribe(qid), lambda: b.delete_queue(qid)])  # noqa: B023
        assert b.queue_row(s.name) is None
    assert b.integrity_check() == ["ok"]


@pytest.mark.postgres
def test_pg_droppers_racing_drop_each_expired_subscription_once(pg: Callable[..., Any]) -> None:
    clock = FakeClock(START)
    b = pg(clock=clock)
    for i in range(12):
        s = sub(b, f"tail-{i}", topic=f"t{i % 3}", expires_at=START + 10)
        b.publish(b.subs_version(), {s.id: [row(b"x")]})
    kept = sub(b, "kept", expires_at=START + 100)
    clock.advance(20)
    dropped: list[int] = []
    _run_threads([lambda: dropped.append(b.drop_expired_subscriptions()) for _ in range(4)])
    assert sum(dropped) == 12
    assert b.topics() == ["orders"]
    assert b.subscriptions("orders").queues == [kept]
    assert b.integrity_check() == ["ok"]

