"""An id is handed out once (issue 23): a job handle, half of a receipt, the key of
results, wf_jobs and wf_edges. On SQLite, ``messages`` has no AUTOINCREMENT since
``_V_IDS``: a new row gets ``max(id) + 1``, and a *tombstone* row (qid 0, in no index)
keeps the id of a deleted newest message, so that max(id) never goes down. These tests
delete the newest message every way there is (ack, batch ack, purge, prune, dead-letter
purge, queue deletion, reopen, migration, copy) and check that the next id is new, and
that the tombstone is never seen, counted or copied."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import apsw
import pytest
from dbsql import is_postgres
from webclient import served, table_rows
from workerapp_tools import drain

import liteq
from liteq import job as jobs
from liteq.backends import open_backend
from liteq.copy import copy_database

pytestmark = pytest.mark.every_engine


def _tombstones(db: liteq.Database) -> list[tuple[int, ...]]:
    """SQLite's tombstone rows (none on PostgreSQL, whose sequence never goes back)."""
    if is_postgres(db):
        return []
    return [tuple(r) for r in db.execute("SELECT id, qid, state FROM messages WHERE qid = 0")]


def test_a_put_after_the_newest_message_was_acked_gets_a_new_id(db: liteq.Database) -> None:
    q = db.queue("q")
    first = q.put("a")
    q.get().ack()  # type: ignore[union-attr]
    seen = [first]
    for n in range(30):  # a consumer that keeps up: every ack deletes the newest row
        seen.append(q.put(n))
        msg = q.get()
        assert msg is not None and msg.id == seen[-1]
        msg.ack()
    assert seen == sorted(set(seen))
    assert q.put("b") > seen[-1]
    assert len(_tombstones(db)) <= 1


def test_a_put_after_a_batch_ack_of_the_newest_messages_gets_a_new_id(db: liteq.Database) -> None:
    q = db.queue("q")
    ids = q.put_many(list(range(100)))
    q.ack_many(q.get_many(100))
    again = q.put_many(["x", "y"])
    assert min(again) > max(ids)
    q.ack_many(q.get_many(2))
    assert q.put("z") > max(again)
    assert q.stats()["ready"] == 1
    assert len(_tombstones(db)) <= 1


def test_a_put_after_a_purge_of_every_message_gets_a_new_id(db: liteq.Database) -> None:
    q = db.queue("q")
    other = db.queue("other")
    low = other.put("older, stays")
    ids = q.put_many(list(range(10)))
    q.get_many(3)  # leased ones go too
    assert q.purge() == 10
    assert q.put("new") > max(ids)
    assert [m.id for m in other.peek(10, state=None)] == [low]
    assert other.purge() == 1
    q.purge()
    assert q.put("newer") > max(ids) + 1
    assert len(_tombstones(db)) <= 1


def test_a_put_after_the_newest_finished_messages_were_pruned_or_purged_gets_a_new_id(
        clocked_db: liteq.Database, clock: Any) -> None:
    db = clocked_db
    kept = db.queue("kept", retention=60)
    top = kept.put("done soon")
    kept.get().ack()  # type: ignore[union-attr]  # DONE, kept for 60 s
    clock.advance(120)
    kept.prune()
    assert kept.peek(10, state=None) == []
    assert kept.put("after prune") > top
    dying = db.queue("dying", max_attempts=1)
    dead = dying.put("fails")
    dying.get().fail("broken")  # type: ignore[union-attr]
    assert dying.purge(state="dead") == 1
    assert dying.put("after dead purge") > dead


def test_a_put_after_the_newest_message_s_queue_was_deleted_gets_a_new_id(
        db: liteq.Database) -> None:
    top = db.queue("gone").put("x")
    db.delete_queue("gone")
    assert db.queue("next").put("y") > top


def test_an_id_is_not_handed_out_again_after_reopening(db_target: str) -> None:
    db = liteq.connect(db_target)
    q = db.queue("q")
    ids = q.put_many(["a", "b", "c"])
    q.ack_many(q.get_many(3))
    db.close()
    db = liteq.connect(db_target)
    try:
        assert db.queue("q").put("d") > max(ids)
    finally:
        db.close()


def test_random_puts_acks_purges_and_prunes_never_hand_out_an_id_twice(
        clocked_db: liteq.Database, clock: Any) -> None:
    db = clocked_db
    rnd = random.Random(23)
    queues = [db.queue("a"), db.queue("b", retention=5), db.queue("c", max_attempts=1)]
    issued: list[int] = []
    for _ in range(300):
        q = rnd.choice(queues)
        step = rnd.random()
        if step < 0.45:
            new = [q.put(rnd.random())] if rnd.random() < 0.7 else q.put_many([1, 2, 3])
            assert min(new) > max(issued, default=0)
            issued.extend(new)
        elif step < 0.75:
            msgs = q.get_many(rnd.choice([1, 1, 2, 5]))
            for msg in msgs:
                msg.fail("no") if q.name == "c" and rnd.random() < 0.5 else msg.ack()
        elif step < 0.85:
            clock.advance(rnd.choice([1, 10]))
            q.prune()
        elif step < 0.9:
            q.purge(state=rnd.choice([None, "ready", "dead"]))
        assert len(_tombstones(db)) <= 1
    assert issued == sorted(set(issued))


def test_the_tombstone_is_not_a_message_anywhere(db: liteq.Database) -> None:
    q = db.queue("q")
    q.put("stays")
    top = q.put("acked")
    q.get()  # "stays" is leased
    msg = q.get()
    assert msg is not None and msg.id == top
    msg.ack()
    assert db.message(top) is None
    stats = q.stats()
    assert (stats["ready"], stats["leased"], stats["done"], stats["dead"]) == (0, 1, 0, 0)
    assert [m.payload for m in q.peek(10, state=None)] == ["stays"]
    assert db.queues() == ["q"]
    with served(db) as client:
        assert client.get(f"/message/{top}").status == 404
        overview = table_rows(client.get("/").text, "queues")
        assert [(row[0].split()[0], row[1:6]) for row in overview] == [
            ("q", ["0", "0", "1", "0", "0"])]
        shown = table_rows(client.get("/queue/q?state=leased").text, "messages")
        assert [int(row[0]) for row in shown] == [top - 1]


def test_a_job_acked_last_keeps_its_result_and_is_listed_as_done(db: liteq.Database) -> None:
    @db.task(name="ids.add", queue="math", store_result=True)
    def add(a: int, b: int) -> int:
        return a + b

    job = add.delay(2, 3)
    drain(db, queues=["math"])
    assert db.message(job.id) is None
    assert db.job(job.id).state == "done" and db.job(job.id).result() == 5
    listed = jobs.list_jobs(db, state="done")
    assert [info.id for info in listed] == [job.id]


@pytest.mark.sqlite_only("the tombstone is SQLite's")
def test_there_is_at_most_one_tombstone_and_it_is_in_no_index(db: liteq.Database) -> None:
    q = db.queue("q")
    for n in range(5):
        q.put(n)
        q.get().ack()  # type: ignore[union-attr]
    assert _tombstones(db) == [(5, 0, -1)]
    for index in ("msg_ready", "msg_delayed", "msg_leased", "msg_finished", "msg_key",
                  "msg_flow_leased", "msg_task"):
        rows = db.execute(f"SELECT count(*) FROM messages INDEXED BY {index} WHERE qid = 0 "
                          f"AND {_index_where(db, index)}")
        assert rows == [(0,)], index
    assert db.integrity_check() == ["ok"]


def _index_where(db: liteq.Database, index: str) -> str:
    sql = db.execute("SELECT sql FROM sqlite_schema WHERE name = ?", (index,))[0][0]
    return sql[sql.index(" WHERE ") + len(" WHERE "):]


@pytest.mark.sqlite_only("a hand-built SQLite file of the schema before _V_IDS")
def test_a_file_from_before_ids_keeps_every_id_it_handed_out(tmp_path: Path) -> None:
    from liteq.backends.sqlite.schema import _V_IDS, MIGRATIONS

    before = MIGRATIONS.index(_V_IDS)
    path = str(tmp_path / "old.db")
    conn = apsw.Connection(path)
    conn.execute("PRAGMA journal_mode=WAL")
    for m in MIGRATIONS[:before]:
        conn.execute(m)
    conn.execute("INSERT INTO queues (id, name, lease, max_attempts, retention, backoff_base, "
                 "backoff_factor, backoff_max, backoff_jitter, created_at) "
                 "VALUES (1, 'old', 30, 5, 0, 1, 2, 300, 0, 1.0)")
    for mid in range(1, 8):
        conn.execute("INSERT INTO messages (qid, state, priority, run_at, payload, key, "
                     "enqueued_at) VALUES (1, 0, ?, 0, ?, ?, 0)",
                     (mid % 2, liteq.codec.encode(f"m{mid}"), f"k{mid}"))
    conn.execute("DELETE FROM messages WHERE id >= 5")  # the newest ones were acked
    assert conn.execute("SELECT seq FROM sqlite_sequence").fetchall() == [(7,)]
    names = _schema_on_messages(conn)
    conn.execute("PRAGMA application_id = 0x4C495451")
    conn.execute(f"PRAGMA user_version = {before}")
    conn.close()
    db = liteq.connect(path)
    try:
        assert db.execute("PRAGMA user_version") == [(len(MIGRATIONS),)]
        assert "AUTOINCREMENT" not in db.execute(
            "SELECT sql FROM sqlite_schema WHERE name = 'messages'")[0][0]
        assert _schema_on_messages(db.connection) == sorted([*names, "msg_top"])
        assert _tombstones(db) == [(7, 0, -1)]
        q = db.queue("old")
        assert [m.payload for m in q.peek(10, state="ready")] == ["m1", "m3", "m2", "m4"]
        assert q.put("new") == 8
        assert q.put("dup", key="k2") == 2  # the dedup index came across
        for _ in range(5):
            q.get().ack()  # type: ignore[union-attr]
        assert q.put("newer") == 9
        assert _tombstones(db) == [(8, 0, -1)]
        assert db.integrity_check() == ["ok"]
    finally:
        db.close()


@pytest.mark.sqlite_only("a hand-built SQLite file of the schema before _V_IDS")
def test_a_file_from_before_ids_whose_newest_message_is_there_gets_no_tombstone(
        tmp_path: Path) -> None:
    from liteq.backends.sqlite.schema import _V_IDS, MIGRATIONS

    path = str(tmp_path / "old.db")
    conn = apsw.Connection(path)
    for m in MIGRATIONS[:MIGRATIONS.index(_V_IDS)]:
        conn.execute(m)
    conn.execute(f"PRAGMA user_version = {MIGRATIONS.index(_V_IDS)}")
    conn.execute("PRAGMA application_id = 0x4C495451")
    conn.close()
    db = liteq.connect(path)
    try:
        q = db.queue("q")
        assert q.put("first") == 1
        assert _tombstones(db) == []
    finally:
        db.close()


def _schema_on_messages(conn: Any) -> list[str]:
    """The indexes, triggers and views on (or of) messages, by name."""
    return [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_schema WHERE tbl_name = 'messages' AND type IN "
        "('index', 'trigger') AND name NOT LIKE 'sqlite_%' ORDER BY name").fetchall()]


@pytest.mark.sqlite_only("a SQLite source with a tombstone")
@pytest.mark.parametrize("dest", ["sqlite", "postgres"])
def test_a_copy_leaves_the_tombstone_behind_and_the_destination_hands_out_new_ids(
        tmp_path: Path, dest: str, request: pytest.FixtureRequest) -> None:
    src = str(tmp_path / "src.db")
    db = liteq.connect(src)
    q = db.queue("q")
    keep = q.put("kept")
    top = q.put_many(["a", "b"])[-1]
    q.get()
    q.ack_many(q.get_many(2))
    db.close()
    if dest == "sqlite":
        dst = str(tmp_path / "dst.db")
    else:
        dst = request.getfixturevalue("pg_target")
    report = copy_database(src, dst, force=True)
    assert {t.table: t.rows for t in report.tables}["messages"] == 1
    backend = open_backend(dst, read_only=True, create=False)
    try:
        with backend.copy_snapshot():
            assert [r.id for r in backend.export_rows("messages", 0, 100)] == [keep]
            assert backend.export_extent("messages") == (1, keep)
            assert backend.export_counters().message_id == top
    finally:
        backend.close()
    db = liteq.connect(dst)
    try:
        assert db.queue("q").put("new") == top + 1
    finally:
        db.close()


@pytest.fixture
def pg_target(pg_url: str, pg_schema: str) -> str:
    """A PostgreSQL URL naming a fresh schema."""
    from urllib.parse import urlencode, urlsplit, urlunsplit

    parts = urlsplit(pg_url)
    query = "&".join(x for x in (parts.query, urlencode({"schema": pg_schema})) if x)
    return urlunsplit(parts._replace(query=query))
