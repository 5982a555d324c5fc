"""The outbox on the application's own PostgreSQL connection (issue 17): ``connection=``
on put, put_many, publish, Task.enqueue and Job.cancel runs liteq's statements inside
the application's psycopg transaction, so its rows and its jobs commit together.

Against a real server (``tests/conftest_pg.py``); each test gets its own liteq schema
and its own application table.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from conftest_pg import require_psycopg
from helpers import PATIENCE

psycopg = require_psycopg()

import liteq  # noqa: E402
from liteq.backends.postgres.notifier import channel_for  # noqa: E402
from liteq.errors import (  # noqa: E402
    DatabaseBusy,
    InvalidArgument,
    LiteqError,
    QueueFull,
    StorageError,
)

pytestmark = pytest.mark.postgres


@pytest.fixture
def db(pg_url: str, pg_schema: str) -> Iterator[liteq.Database]:
    d = liteq.connect(pg_url, schema=pg_schema, busy_timeout=0.5)
    yield d
    d.close()


@pytest.fixture
def app(pg_url: str) -> Iterator[Any]:
    """The application's own connection: psycopg's defaults (not autocommit)."""
    conn = psycopg.connect(pg_url)
    yield conn
    conn.close()


@pytest.fixture
def orders(pg_url: str, pg_schema: str) -> str:
    """The application's table (in the public schema, beside liteq's)."""
    name = f"orders_{pg_schema}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {name} (id int PRIMARY KEY)")
    return name


def _count(pg_url: str, table: str) -> int:
    """Rows of *table* as another session sees them (committed ones only)."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    return int(row[0])


def _counts(q: liteq.Queue) -> dict[str, Any]:
    st = q.stats()
    return {k: st[k] for k in ("ready", "delayed", "leased", "dead", "depth", "max_depth")}


# -- commit together, roll back together ------------------------------------------------


def test_a_put_on_the_applications_connection_is_seen_only_when_the_application_commits(
    db: liteq.Database, app: Any, orders: str, pg_url: str
) -> None:
    q = db.queue("emails")
    app.execute(f"INSERT INTO {orders} VALUES (1)")
    mid = q.put({"order": 1}, connection=app)
    assert q.get() is None and _count(pg_url, orders) == 0  # neither, until the commit
    assert app.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
    app.commit()
    msg = q.get()
    assert msg is not None and msg.id == mid and msg.payload == {"order": 1}
    assert _count(pg_url, orders) == 1


def test_the_first_statement_on_a_non_autocommit_connection_may_be_the_put_and_the_application_still_commits_it(
    db: liteq.Database, app: Any, orders: str, pg_url: str
) -> None:
    q = db.queue("emails")
    for _ in range(2):  # a fresh connection, then one liteq has already checked
        q.put("first", connection=app)  # psycopg begins the application's transaction
        app.execute(f"INSERT INTO {orders} VALUES (1)")
        assert q.get() is None
        app.rollback()
        assert q.get() is None and _count(pg_url, orders) == 0 and len(q) == 0


def test_the_applications_rollback_leaves_neither_its_row_nor_the_job_and_the_queue_as_it_was(
    db: liteq.Database, app: Any, orders: str, pg_url: str
) -> None:
    q = db.queue("emails", max_depth=3)
    q.put("before")
    before = _counts(q)
    with pytest.raises(RuntimeError), app.transaction():
        app.execute(f"INSERT INTO {orders} VALUES (1)")
        q.put("a", connection=app)
        q.put("b", delay=60, key="k", headers={"h": 1}, connection=app)
        raise RuntimeError("the request failed")
    assert _count(pg_url, orders) == 0
    assert _counts(q) == before
    assert [m.payload for m in q.peek(10, state=None)] == ["before"]
    q.put_many(["c", "d"])  # the room the rolled-back puts held is free again: 3 of 3
    with pytest.raises(QueueFull):
        q.put("e")


def test_max_depth_stays_exact_while_the_applications_transaction_holds_its_room(
    db: liteq.Database, app: Any
) -> None:
    q = db.queue("bounded", max_depth=1)
    q.put("x", connection=app)  # uncommitted: the room is held, not free
    with pytest.raises((QueueFull, DatabaseBusy)):
        q.put("y")  # never both: waits for the application's outcome, up to busy_timeout
    app.commit()
    with pytest.raises(QueueFull):
        q.put("y")
    assert _counts(q)["depth"] == 1 and q.get() is not None


def test_a_put_on_an_idle_autocommit_connection_commits_on_its_own(
    db: liteq.Database, pg_url: str
) -> None:
    q = db.queue("emails")
    with psycopg.connect(pg_url, autocommit=True) as conn:
        mid = q.put("now", connection=conn)
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        msg = q.get()
        assert msg is not None and msg.id == mid
        with conn.transaction():  # an autocommit connection's own transaction block
            q.put("later", connection=conn)
            assert q.get() is None
        assert q.get() is not None


def test_a_failed_put_leaves_the_applications_transaction_usable(
    db: liteq.Database, app: Any, orders: str, pg_url: str
) -> None:
    q = db.queue("bounded", max_depth=1)
    q.put("full")
    app.execute(f"INSERT INTO {orders} VALUES (1)")
    with pytest.raises(QueueFull):
        q.put("x", connection=app)
    app.execute(f"INSERT INTO {orders} VALUES (2)")  # not an aborted transaction
    app.commit()
    assert _count(pg_url, orders) == 2 and _counts(q)["ready"] == 1


# -- wake-ups follow the commit -----------------------------------------------------------


def test_a_consumer_waiting_in_get_is_woken_by_the_applications_commit_not_before(
    db: liteq.Database, app: Any, pg_url: str, pg_schema: str
) -> None:
    q = db.queue("emails")
    listen = psycopg.connect(pg_url, autocommit=True)
    listen.execute(f'LISTEN "{channel_for(pg_schema)}"')
    got: list[Any] = []
    waiting = threading.Event()

    def consume() -> None:
        waiting.set()
        got.append(q.get(wait=PATIENCE))

    t = threading.Thread(target=consume)
    t.start()
    try:
        assert waiting.wait(PATIENCE)
        mid = q.put("job", connection=app)
        # Uncommitted: no notification reaches a listener, and the consumer waits on.
        assert list(listen.notifies(timeout=0.5, stop_after=1)) == []
        assert t.is_alive() and got == []
        app.commit()
        notes = list(listen.notifies(timeout=PATIENCE, stop_after=1))
        assert [n.payload for n in notes] == [str(q.id)]
        t.join(PATIENCE)
        assert got and got[0] is not None and got[0].id == mid
    finally:
        app.rollback()
        t.join(PATIENCE)
        listen.close()


# -- put_many, publish, tasks and cancel: all or nothing with the application -------------


def test_put_many_on_the_applications_connection_commits_or_rolls_back_as_a_whole(
    db: liteq.Database, app: Any
) -> None:
    q = db.queue("batch")
    q.put_many(["a", "b", "c"], connection=app)
    app.rollback()
    assert len(q) == 0 and q.get() is None
    ids = q.put_many(["a", "b", "c"], connection=app)
    app.commit()
    assert [m.id for m in q.get_many(10)] == ids


def test_publish_on_the_applications_connection_delivers_everywhere_at_its_commit_or_nowhere(
    db: liteq.Database, app: Any, orders: str, pg_url: str
) -> None:
    topic = db.topic("orders")
    eu = topic.subscribe("eu", pattern="order.*.eu")
    audit = topic.subscribe("audit", pattern="#", max_depth=2)
    assert topic.publish({"id": 1}, key="order.created.eu", connection=app) == 2
    app.rollback()
    assert len(eu) == 0 and len(audit) == 0
    audit.put("old")
    audit.put("older")  # audit is full now
    app.execute(f"INSERT INTO {orders} VALUES (1)")
    with pytest.raises(QueueFull):
        topic.publish({"id": 1}, key="order.created.eu", connection=app)
    app.commit()  # the order, and no delivery anywhere
    assert _count(pg_url, orders) == 1 and len(eu) == 0 and len(audit) == 2
    audit.purge()
    assert topic.publish_many([("order.created.eu", 2), ("order.paid.us", 3)], connection=app) == 3
    assert len(eu) == 0 and len(audit) == 0
    app.commit()
    assert [m.payload for m in eu.get_many(10)] == [2]
    assert sorted(m.payload for m in audit.get_many(10)) == [2, 3]


def test_a_task_enqueued_on_the_applications_connection_commits_with_its_row(
    db: liteq.Database, app: Any, orders: str, pg_url: str
) -> None:
    @db.task(queue="mail")
    def send(order: int) -> None: ...

    app.execute(f"INSERT INTO {orders} VALUES (7)")
    job = send.enqueue((7,), connection=app)
    assert db.queue("mail").get() is None
    app.commit()
    assert job.state == "queued"
    jobs = send.enqueue_many([(8,), (9,)], connection=app)
    app.rollback()
    assert all(db.message(j.id) is None for j in jobs) and len(db.queue("mail")) == 1


def test_a_job_cancelled_on_the_applications_connection_stays_queued_until_the_commit(
    db: liteq.Database, app: Any
) -> None:
    @db.task(queue="mail")
    def send(order: int) -> None: ...

    job = send.delay(1)
    assert job.cancel(connection=app) == "cancelled"
    assert job.state == "queued"  # not committed yet
    app.rollback()
    assert job.state == "queued"
    assert job.cancel(connection=app) == "cancelled"
    app.commit()
    assert job.state == "cancelled"


# -- the application's session is left as it was -----------------------------------------


def test_the_applications_search_path_and_row_factory_are_left_alone(
    db: liteq.Database, pg_url: str
) -> None:
    from psycopg.rows import dict_row

    q = db.queue("emails")
    with psycopg.connect(pg_url, row_factory=dict_row) as conn:
        conn.execute("SET search_path TO pg_catalog")
        conn.commit()
        ids = q.put_many(["a", "b"], connection=conn)
        q.put("c", key="k", connection=conn)
        conn.commit()
        assert conn.execute("SHOW search_path").fetchone() == {"search_path": "pg_catalog"}
    assert [m.id for m in q.get_many(2)] == ids


def test_liteqs_own_connection_of_this_thread_is_taken_as_it_is(db: liteq.Database) -> None:
    q = db.queue("emails")
    with pytest.raises(RuntimeError), db.transaction():
        q.put("x", connection=db.connection)
        raise RuntimeError("roll back")
    assert len(q) == 0
    q.put("y", connection=db.connection)
    assert len(q) == 1


# -- refused connections write nothing ----------------------------------------------------


def test_what_is_not_an_open_psycopg_connection_is_refused_and_nothing_is_written(
    db: liteq.Database, pg_url: str, tmp_path: Any
) -> None:
    import sqlite3

    q = db.queue("emails")
    topic = db.topic("t")
    topic.subscribe("s")
    closed = psycopg.connect(pg_url)
    closed.close()
    other = sqlite3.connect(tmp_path / "x.db")
    for bad, says in [
        (closed, "is closed"),
        ("postgresql://localhost/db", "takes a psycopg 3 Connection"),
        (other, "got sqlite3.Connection"),
    ]:
        with pytest.raises(InvalidArgument, match=says):
            q.put("x", connection=bad)
        with pytest.raises(InvalidArgument, match=says):
            q.put_many(["x"], connection=bad)
        with pytest.raises(InvalidArgument, match=says):
            topic.publish("x", key="k", connection=bad)
    other.close()
    assert len(q) == 0 and len(topic.subscription("s")) == 0


def test_an_async_connection_is_refused_with_what_to_use_instead(
    db: liteq.Database, pg_url: str
) -> None:
    import asyncio

    async def attempt() -> None:
        conn = await psycopg.AsyncConnection.connect(pg_url)
        try:
            with pytest.raises(InvalidArgument, match="sync psycopg.Connection"):
                db.queue("emails").put("x", connection=conn)
        finally:
            await conn.close()

    asyncio.run(attempt())
    assert len(db.queue("emails")) == 0


def test_a_connection_in_an_aborted_transaction_is_refused_until_it_is_rolled_back(
    db: liteq.Database, app: Any
) -> None:
    q = db.queue("emails")
    with pytest.raises(psycopg.errors.DivisionByZero):
        app.execute("SELECT 1 / 0")
    with pytest.raises(StorageError, match=r"roll it back"):
        q.put("x", connection=app)
    app.rollback()
    q.put("x", connection=app)
    app.commit()
    assert len(q) == 1


def test_a_connection_to_another_database_is_refused_and_nothing_is_written(
    db: liteq.Database, pg_server: str, pg_schema: str
) -> None:
    q = db.queue("emails")
    with psycopg.connect(pg_server) as conn:  # the server's "postgres" database
        with pytest.raises(InvalidArgument, match="has no liteq schema"):
            q.put("x", connection=conn)
        conn.rollback()
        # Another database that has a liteq schema of the same name: refused too.
        other = liteq.connect(pg_server, schema=pg_schema)
        try:
            other.queue("emails")
            with pytest.raises(InvalidArgument, match="not the one liteq was opened on|not '"):
                q.put("x", connection=conn)
            assert len(other.queue("emails")) == 0
        finally:
            other.close()
            conn.rollback()
            conn.execute(f'DROP SCHEMA "{pg_schema}" CASCADE')
            conn.commit()
    assert len(q) == 0


def test_liteqs_connection_of_another_thread_is_refused(db: liteq.Database) -> None:
    theirs: list[Any] = []
    t = threading.Thread(target=lambda: theirs.append(db.connection))
    t.start()
    t.join(PATIENCE)
    with pytest.raises(InvalidArgument, match="another thread"):
        db.queue("emails").put("x", connection=theirs[0])
    assert len(db.queue("emails")) == 0


def test_a_lost_application_connection_raises_storage_error_and_liteqs_own_carries_on(
    db: liteq.Database, app: Any, pg_admin: Any
) -> None:
    q = db.queue("emails")
    q.put("checked", connection=app)  # the connection is checked and in a transaction
    pg_admin.execute("SELECT pg_terminate_backend(%s)", (app.info.backend_pid,))
    with pytest.raises(StorageError, match="lost"):
        q.put("x", connection=app)
    q.put("mine")  # on liteq's own connection, as before
    assert [m.payload for m in q.get_many(10)] == ["mine"]


def test_every_refusal_is_a_liteq_error() -> None:
    assert issubclass(InvalidArgument, LiteqError) and issubclass(StorageError, LiteqError)
