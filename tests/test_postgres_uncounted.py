"""A PostgreSQL queue without max_depth keeps no depth counter (issue 17): its puts and
acks write no ``depth_stripes`` row; giving it a max_depth while producers put on many
connections counts it exactly and never lets it past the bound; its figures are those
of a counted queue. Against a real server; stripe writes are read from the server's
own table statistics, flushed on demand."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest_pg import require_psycopg
from dbsql import pg_schema_before

import liteq
from liteq.errors import QueueFull
from liteq.scheduler import Scheduler

psycopg = require_psycopg()

from liteq.backends.postgres.schema import MIGRATIONS, qualify  # noqa: E402

PATIENCE = 120.0


@pytest.fixture
def db(pg_url: str, pg_schema: str) -> Iterator[liteq.Database]:
    d = liteq.connect(f"{pg_url}?schema={pg_schema}")
    yield d
    d.close()


def stripe_writes(db: liteq.Database) -> int:
    """Rows inserted, updated or deleted in this schema's depth_stripes so far, by every
    session that reported; this session's own counts are flushed first (a backend
    reports them when it goes idle, at most once a second unless forced)."""
    db.execute("SELECT pg_stat_force_next_flush()")
    (row,) = db.execute(
        "SELECT n_tup_ins + n_tup_upd + n_tup_del FROM pg_stat_user_tables WHERE relid = %s::regclass",
        (f'"{db.backend.schema}".depth_stripes',),
    )
    return int(row[0])


def stripes_of(db: liteq.Database, q: liteq.Queue) -> int:
    schema = db.backend.schema
    return int(db.execute(f'SELECT count(*) FROM "{schema}".depth_stripes WHERE qid = %s',
                          (q.id,))[0][0])


def unfinished(db: liteq.Database, q: liteq.Queue) -> int:
    schema = db.backend.schema
    return int(db.execute(f'SELECT count(*) FROM "{schema}".messages WHERE qid = %s AND state < 3',
                          (q.id,))[0][0])


def every_verb_that_counts(db: liteq.Database, q: liteq.Queue) -> None:
    """Put (one, a batch, with a key, delayed), claim and ack (one, a batch), nack,
    fail, redrive, cancel, purge of a state: paths that reserve or release depth on a
    counted queue (the_other_endings has the rest)."""
    q.put("one")
    q.put_many(["a", "b", "c"])
    q.put("keyed", key="k")
    q.put("keyed again", key="k")  # the holder's id: nothing new
    q.put("later", delay=3600)
    m = q.get()
    assert m is not None
    m.ack()
    batch = q.get_many(2)
    q.ack_many(batch)
    m = q.get()
    assert m is not None
    m.nack()
    m = q.get()
    assert m is not None
    m.fail("broken")
    q.redrive()
    late = q.peek(1, state="delayed")[0]
    assert db.cancel(late.id)
    q.put_many(["x", "y"])
    q.purge(state="ready")


@pytest.mark.postgres
def test_an_unbounded_queues_puts_and_acks_write_no_stripe_row(db: liteq.Database) -> None:
    free = db.queue("free")
    before = stripe_writes(db)
    every_verb_that_counts(db, free)
    assert stripe_writes(db) == before
    assert stripes_of(db, free) == 0
    # The same verbs on a counted queue do write stripes: the measure sees them.
    counted = db.queue("counted", count_depth=True)
    before = stripe_writes(db)
    every_verb_that_counts(db, counted)
    assert stripe_writes(db) > before
    assert stripes_of(db, counted) == 16
    assert db.backend.integrity_check() == ["ok"]


def the_other_endings(db: liteq.Database, name: str) -> liteq.Queue:
    """Acks kept as done (retention), a lease that runs out on the last attempt (buried
    by maintenance), a cancellation asked of a leased job, a purge of everything."""
    kept = db.queue(f"{name}-kept", retention=60)
    kept.put_many([1, 2, 3])
    kept.ack_many(kept.get_many(2))
    short = db.queue(f"{name}-short", lease=0.1, max_attempts=1)
    short.put("slow")
    assert short.get() is not None
    time.sleep(0.3)
    short.expire()
    assert short.stats()["dead"] == 1
    short.put("running")
    running = short.get()
    assert running is not None and db.request_cancel(running.id) == "requested"
    short.put("waiting")
    assert db.request_cancel(short.peek(1)[0].id) == "cancelled"
    kept.purge()
    return kept


@pytest.mark.postgres
def test_retention_expiry_cancellation_and_purge_of_unbounded_queues_write_no_stripe_row(
    db: liteq.Database,
) -> None:
    before = stripe_writes(db)
    the_other_endings(db, "free")
    assert stripe_writes(db) == before
    db.queue("counted-kept", count_depth=True)
    db.queue("counted-short", count_depth=True)
    before = stripe_writes(db)
    the_other_endings(db, "counted")
    assert stripe_writes(db) > before
    for name in ("counted-kept", "counted-short"):
        q = db.queue(name)
        assert db.backend.room(q.id)[0] == unfinished(db, q)


@pytest.mark.postgres
def test_dead_letters_schedules_and_publishes_into_unbounded_queues_write_no_stripe_row(
    db: liteq.Database,
) -> None:
    q = db.queue("work", dead_letter="graveyard", max_attempts=1)
    topic = db.topic("events")
    subs = [topic.subscribe(f"s{i}", pattern="#") for i in range(3)]
    before = stripe_writes(db)
    q.put("doomed")
    m = q.get()
    assert m is not None
    m.fail("no")  # moved to graveyard, a forced reservation there
    graveyard = db.queue("graveyard")
    assert len(graveyard) == 1
    topic.publish({"n": 1}, key="a.b")
    topic.publish({"n": 2}, key="a.b")
    db.schedule("tick", at=time.time() - 1, queue="work", payload="tick")
    assert len(Scheduler(db).tick()) == 1
    assert stripe_writes(db) == before
    assert [len(s) for s in subs] == [2, 2, 2]
    assert len(q) == 1 and q.stats()["ready"] == 1 and len(graveyard) == 1


@pytest.mark.postgres
def test_stats_room_and_len_of_an_uncounted_queue_equal_a_counted_ones(db: liteq.Database) -> None:
    free = db.queue("free")
    counted = db.queue("counted", count_depth=True)
    bounded = db.queue("bounded", max_depth=1000)
    for q in (free, counted, bounded):
        every_verb_that_counts(db, q)
        q.put_many(["p", "q", "r"])
        leased = q.get()
        assert leased is not None

    def figures(q: liteq.Queue) -> dict[str, Any]:
        st = q.stats()
        for key in ("queue", "max_depth", "oldest_ready_age"):
            st.pop(key, None)
        return {**st, "len": len(q), "room": db.backend.room(q.id)[0]}

    assert figures(free) == figures(counted) == figures(bounded)
    assert figures(free)["depth"] == unfinished(db, free) > 0
    assert stripes_of(db, free) == 0


@pytest.mark.postgres
def test_a_max_depth_given_to_an_unbounded_queue_counts_what_it_holds_and_bounds_it(
    db: liteq.Database,
) -> None:
    q = db.queue("grow")
    q.put_many(list(range(7)))
    leased = q.get()
    assert leased is not None and stripes_of(db, q) == 0
    q = db.queue("grow", max_depth=8)
    assert stripes_of(db, q) == 16 and db.backend.room(q.id) == (7, 8)
    q.put("eighth")
    with pytest.raises(QueueFull):
        q.put("ninth")
    leased.ack()
    q.put("fits again")
    assert db.backend.room(q.id) == (8, 8) == (unfinished(db, q), 8)
    # Removing the bound keeps the counter (the flag is never cleared): exact still.
    q = db.queue("grow", max_depth=None)
    q.put_many(list(range(5)))
    assert db.backend.room(q.id) == (13, None) and stripes_of(db, q) == 16
    assert q.stats()["depth"] == 13 == unfinished(db, q)


@pytest.mark.postgres
def test_a_producer_that_put_while_unbounded_is_bounded_by_another_connections_max_depth(
    db: liteq.Database, pg_url: str, pg_schema: str,
) -> None:
    """Its puts went by the plain insert (the queue uncounted); the bound set elsewhere
    turns the queue counted, which that insert checks in its statement: the next put
    reserves on a stripe, and the bound holds exactly."""
    q = db.queue("later")
    q.put("while unbounded")
    assert q.id not in db.backend.seen_counted
    other = liteq.connect(pg_url, schema=pg_schema)
    try:
        other.queue("later", max_depth=3)
    finally:
        other.close()
    q.put("second")
    assert q.id in db.backend.seen_counted
    q.put("third")
    with pytest.raises(QueueFull):
        q.put("fourth")
    assert db.backend.room(q.id) == (3, 3) == (unfinished(db, q), 3)


@pytest.mark.postgres
@pytest.mark.parametrize("bound", [None, 10])
def test_a_batch_ack_with_a_stale_token_acks_the_others_and_releases_exactly_their_depth(
    db: liteq.Database, bound: int | None,
) -> None:
    """The batch ack beside the single ack's plain delete: the stale one is reported,
    the others acked, and a bounded queue's depth released by exactly their number,
    also once the single ack has found the queue counted (the second round)."""
    q = db.queue(f"batch{bound}", max_depth=bound)
    for round_ in range(2):  # the second round with what the first learnt
        q.put_many(["a", "b", "c"])
        a, b, c = q.get_many(3)
        a.ack()
        with pytest.raises(liteq.LeaseLost) as info:
            q.ack_many([a, b, c])
        assert info.value.ids == [a.id], round_
        assert unfinished(db, q) == 0
        assert db.backend.room(q.id) == (0, bound)
    assert (q.id in db.backend.seen_counted) is (bound is not None)


def _producer(url: str, schema: str, name: str, i: int, go: threading.Event,
              stop: threading.Event, out: list[Any]) -> None:
    """Put on a connection of its own until *stop*: single puts, batches of two (the
    one-statement batch) and keyed puts (the full path), counting refusals."""
    db = liteq.connect(url, schema=schema)
    try:
        q = db.queue(name)
        go.wait()
        refused = n = 0
        while not stop.is_set():
            try:
                if n % 3 == 0:
                    q.put(n)
                elif n % 3 == 1:
                    q.put_many([n, n])
                else:
                    q.put(n, key=f"{i}-{n}")
            except QueueFull:
                refused += 1
                time.sleep(0.001)
            n += 1
        out[i] = refused
    except Exception as exc:  # reported to the test, not a hang
        out[i] = exc
    finally:
        db.close()


@pytest.mark.postgres
@pytest.mark.parametrize("round_", range(3))
def test_switching_to_counted_while_eight_connections_put_never_overshoots_and_counts_exactly(
    pg_url: str, pg_schema: str, round_: int,
) -> None:
    bound = 60
    db = liteq.connect(pg_url, schema=pg_schema)
    name = f"race{round_}"
    q = db.queue(name)
    go, stop, switched = threading.Event(), threading.Event(), threading.Event()
    out: list[Any] = [None] * 8
    producers = [threading.Thread(target=_producer, args=(pg_url, pg_schema, name, i, go, stop, out))
                 for i in range(8)]
    seen: list[int] = []

    def sample() -> None:  # the unfinished rows, as a reader of its own sees them
        reader = liteq.connect(pg_url, schema=pg_schema)
        try:
            while not stop.is_set():
                if switched.is_set():
                    seen.append(unfinished(reader, q))
        finally:
            reader.close()

    def consume() -> None:  # acks now and then, so producers race for the room made
        c = liteq.connect(pg_url, schema=pg_schema)
        try:
            cq = c.queue(name)
            while not stop.is_set():
                cq.ack_many(cq.get_many(3))
                time.sleep(0.005)
        finally:
            c.close()

    helpers = [threading.Thread(target=sample), threading.Thread(target=consume)]
    try:
        for t in producers + helpers:
            t.start()
        go.set()
        # Switch while they put, once some rows went in without a counter.
        deadline = time.monotonic() + PATIENCE
        while unfinished(db, q) < 15 and time.monotonic() < deadline:
            time.sleep(0.0005)
        db.queue(name, max_depth=bound)
        switched.set()
        time.sleep(1.5)
    finally:
        stop.set()
        for t in producers + helpers:
            t.join(PATIENCE)
    try:
        assert all(isinstance(r, int) for r in out), out
        assert any(r > 0 for r in out)  # the bound was met
        # Puts that went in while the switch waited for its lock may leave the queue
        # past the bound (it had none then): refused until acks bring it below, never
        # past it from then on.
        below = next((i for i, n in enumerate(seen) if n <= bound), None)
        assert below is not None and max(seen[below:]) <= bound
        count = unfinished(db, q)
        assert db.backend.room(q.id) == (count, bound)
        assert db.queue(name).stats()["depth"] == count <= bound
        assert db.backend.integrity_check() == ["ok"]
    finally:
        db.close()


@pytest.mark.postgres
def test_an_old_schema_migrates_its_unbounded_queues_to_uncounted_and_keeps_the_bounded_ones(
    pg_url: str, pg_schema: str,
) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        before = pg_schema_before(conn, pg_schema, next(
            m for m in MIGRATIONS if "ADD COLUMN IF NOT EXISTS counted" in m))
        # Every queue was counted then: each has its stripes.
        for name, bound in (("plain", None), ("bounded", 10), ("tallied", None)):
            (qid,) = conn.execute(qualify(
                "INSERT INTO {s}.queues (name, max_depth, count_depth, lease, max_attempts, "
                "retention, backoff_base, backoff_factor, backoff_max, backoff_jitter, created_at) "
                "VALUES (%s, %s, %s, 30, 5, 0, 1, 2, 300, 0.1, 1.0) RETURNING id", pg_schema),
                (name, bound, name == "tallied")).fetchone()
            conn.execute(qualify(
                "INSERT INTO {s}.messages (qid, state, priority, run_at, payload, enqueued_at) "
                "SELECT %s, 0, 0, 1.0, '\\xf6'::bytea, 1.0 FROM generate_series(1, 3)", pg_schema),
                (qid,))
            conn.execute(qualify(
                "INSERT INTO {s}.depth_stripes (qid, stripe, cap, used) "
                "SELECT %s, g, CASE WHEN %s::bigint IS NULL THEN NULL WHEN g < 10 THEN 1 ELSE 0 END, "
                "CASE WHEN g < 3 THEN 1 ELSE 0 END FROM generate_series(0, 15) g", pg_schema),
                (qid, bound))
    db = liteq.connect(pg_url, schema=pg_schema)
    try:
        assert db.backend.migrated == list(range(before + 1, len(MIGRATIONS) + 1))
        flags = dict(db.execute(f'SELECT name, counted FROM "{pg_schema}".queues'))
        assert flags == {"plain": False, "bounded": True, "tallied": True}
        plain, bounded, tallied = (db.queue(n) for n in ("plain", "bounded", "tallied"))
        assert (stripes_of(db, plain), stripes_of(db, bounded), stripes_of(db, tallied)) == (0, 16, 16)
        for q in (plain, bounded, tallied):
            q.put("more")
            assert len(q) == 4 == unfinished(db, q)
        assert db.backend.integrity_check() == ["ok"]
    finally:
        db.close()


@pytest.mark.postgres
def test_a_switch_waiting_for_a_long_transaction_lets_other_producers_through(
    pg_url: str, pg_schema: str,
) -> None:
    db = liteq.connect(pg_url, schema=pg_schema)
    holder = liteq.connect(pg_url, schema=pg_schema)
    other = liteq.connect(pg_url, schema=pg_schema)
    try:
        q = db.queue("slow")
        elsewhere = other.queue("elsewhere")
        done = threading.Event()
        errors: list[BaseException] = []

        def switch() -> None:
            try:
                db.queue("slow", max_depth=5)
            except BaseException as exc:  # reported to the test
                errors.append(exc)
            done.set()

        with holder.transaction():
            holder.queue("slow").put("held")  # holds its lock on messages until commit
            t = threading.Thread(target=switch)
            t.start()
            time.sleep(0.3)
            assert not done.is_set()  # the switch waits for the transaction...
            started = time.monotonic()
            for i in range(20):  # ...but not every other producer behind it
                elsewhere.put(i)
            assert time.monotonic() - started < 5.0  # each waits at most one try (50 ms)
            assert not done.is_set()
        t.join(PATIENCE)
        assert done.is_set() and not errors
        assert db.backend.room(q.id) == (1, 5) and len(elsewhere) == 20
    finally:
        for d in (db, holder, other):
            d.close()
