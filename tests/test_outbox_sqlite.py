"""``connection=`` on SQLite (issue 17, the outbox on the application's connection): the
SQLite outbox is ``db.transaction()`` with ``db.execute()``; ``connection=`` takes only
liteq's own connection of this thread (``db.connection``, a no-op) and refuses any other,
since another connection to the file cannot share liteq's transaction.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import apsw
import pytest
from helpers import PATIENCE

import liteq
from liteq.errors import InvalidArgument


@pytest.fixture
def db(tmp_path: Path) -> Any:
    d = liteq.connect(tmp_path / "q.db")
    yield d
    d.close()


def test_liteqs_own_connection_is_taken_and_the_put_joins_db_transaction(db: liteq.Database) -> None:
    q = db.queue("emails")
    db.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY)")
    with pytest.raises(RuntimeError), db.transaction():
        db.execute("INSERT INTO orders VALUES (1)")
        q.put("x", connection=db.connection)
        q.put_many(["y", "z"], connection=db.connection)
        raise RuntimeError("roll back")
    assert len(q) == 0 and db.execute("SELECT count(*) FROM orders") == [(0,)]
    with db.transaction():
        db.execute("INSERT INTO orders VALUES (1)")
        mid = q.put("x", connection=db.connection)
    msg = q.get()
    assert msg is not None and msg.id == mid
    assert db.execute("SELECT count(*) FROM orders") == [(1,)]


def test_another_connection_to_the_same_file_is_refused_naming_the_sqlite_outbox(
    db: liteq.Database, tmp_path: Path
) -> None:
    q = db.queue("emails")
    topic = db.topic("orders")
    topic.subscribe("all")

    @db.task(queue="mail")
    def send(order: int) -> None: ...

    job = send.delay(1)
    others = [apsw.Connection(str(tmp_path / "q.db")), sqlite3.connect(tmp_path / "q.db"), "q.db"]
    says = r"db\.execute\(\) inside 'with db\.transaction\(\):'"
    for other in others:
        with pytest.raises(InvalidArgument, match=says):
            q.put("x", connection=other)
        with pytest.raises(InvalidArgument, match=says):
            q.put_many(["x"], connection=other)
        with pytest.raises(InvalidArgument, match=says):
            topic.publish("x", key="order.new", connection=other)
        with pytest.raises(InvalidArgument, match=says):
            send.enqueue((2,), connection=other)
        with pytest.raises(InvalidArgument, match=says):
            job.cancel(connection=other)
    others[0].close()
    others[1].close()
    assert len(q) == 0 and len(topic.subscription("all")) == 0
    assert len(db.queue("mail")) == 1 and job.state == "queued"


def test_liteqs_connection_of_another_thread_is_refused(db: liteq.Database) -> None:
    theirs: list[Any] = []
    t = threading.Thread(target=lambda: theirs.append(db.connection))
    t.start()
    t.join(PATIENCE)
    with pytest.raises(InvalidArgument, match="this thread"):
        db.queue("emails").put("x", connection=theirs[0])
    assert len(db.queue("emails")) == 0
