"""The hot statements on PostgreSQL (``liteq/backends/postgres/hot.py``): a put, a claim
of one and an ack of one go through libpq's prepared-statement calls instead of
psycopg's cursor. They must read and fail exactly as the cursor would, fall back to it
for what they cannot send, and leave the connection usable whatever happens."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from conftest_pg import require_psycopg

import liteq
from liteq.backends.postgres import hot as hot_sql
from liteq.errors import StorageError

psycopg = require_psycopg()

pytestmark = pytest.mark.postgres


@pytest.fixture
def db(pg_url: str, pg_schema: str) -> Iterator[liteq.Database]:
    d = liteq.connect(f"{pg_url}?schema={pg_schema}")
    yield d
    d.close()


def _conns(db: liteq.Database) -> Any:
    return db.backend.conns  # type: ignore[attr-defined]


def _prepared(db: liteq.Database) -> set[str]:
    """The names of the statements prepared on this thread's connection."""
    return {r[0] for r in db.execute("SELECT name FROM pg_prepared_statements")}


SQL_TYPES = ("SELECT %(i)s::bigint, %(f)s::float8, %(b)s::bytea, %(t)s::text, NULL::text,"
             " %(flag)s::boolean, (%(i)s %% 1000)::integer, 17 %% 5, %(i)s = %(i)s")


def test_hot_rows_are_the_cursors_rows_for_every_type_it_reads(db: liteq.Database) -> None:
    conns = _conns(db)
    for params in ({"i": 7, "f": 0.1, "b": b"\x00\xffpay", "t": "é\u2603", "flag": True},
                   {"i": -2**63, "f": -1e300, "b": b"", "t": "", "flag": False}):
        want = conns.statement(SQL_TYPES, params, binary=True)
        got = conns.hot(SQL_TYPES, params)
        assert got == want
        assert [type(v) for v in got[0]] == [type(v) for v in want[0]]
    # It did take the hot path: the statement is prepared under hot.py's name.
    assert hot_sql.compiled(SQL_TYPES).name.decode() in _prepared(db)


def test_a_call_hot_cannot_send_takes_the_cursor_with_the_same_result(
        db: liteq.Database) -> None:
    conns = _conns(db)
    sql = "SELECT %(x)s::float8 * 2"
    assert conns.hot(sql, {"x": 1.5}) == [(3.0,)]  # prepared with a float parameter
    assert conns.hot(sql, {"x": 2}) == [(4.0,)]  # an int now: through the cursor
    assert conns.hot(sql, {"x": None}) == [(None,)]  # NULL: through the cursor
    first_none = "SELECT coalesce(%(x)s::bigint, -1)"
    assert conns.hot(first_none, {"x": None}) == [(-1,)]  # no type to fix: the cursor
    assert conns.hot(first_none, {"x": 5}) == [(5,)]  # fixed now, and prepared
    assert hot_sql.compiled(first_none).name.decode() in _prepared(db)


def test_a_result_column_hot_cannot_decode_sends_the_statement_through_the_cursor(
        db: liteq.Database) -> None:
    conns = _conns(db)
    sql = "SELECT %(n)s::bigint::numeric / 4, to_timestamp(%(n)s)"
    want = conns.statement(sql, {"n": 10}, binary=True)
    assert conns.hot(sql, {"n": 10}) == want
    assert conns.hot(sql, {"n": 10}) == want
    name = hot_sql.compiled(sql).name.decode()
    assert name not in _prepared(db)  # prepared to look, then let go


def test_statements_deallocated_by_the_application_are_prepared_again(
        db: liteq.Database) -> None:
    q = db.queue("jobs")
    q.put(1)
    assert any(n.startswith("liteq_hot_") for n in _prepared(db))
    db.execute("DEALLOCATE ALL")
    q.put(2)  # the put's statement is gone from the session: prepared again, not failed
    msg = q.get()
    assert msg is not None and msg.payload == 1
    msg.ack()
    assert [m.payload for m in q.peek(10)] == [2]


def test_an_sql_error_on_the_hot_path_is_the_error_the_cursor_gives_and_changes_nothing(
        db: liteq.Database) -> None:
    conns = _conns(db)
    db.execute("CREATE TABLE hot_t (id bigint PRIMARY KEY)")
    sql = "INSERT INTO hot_t (id) VALUES (%(id)s) RETURNING id"
    assert conns.hot(sql, {"id": 1}) == [(1,)]
    with pytest.raises(StorageError) as hot_err:
        conns.hot(sql, {"id": 1})
    with pytest.raises(StorageError) as cursor_err:
        conns.statement(sql, {"id": 1})
    assert "SQLSTATE 23505" in str(hot_err.value)
    assert str(hot_err.value) == str(cursor_err.value)  # the same diagnostics, not the raw text
    assert db.execute("SELECT count(*) FROM hot_t") == [(1,)]
    assert conns.hot(sql, {"id": 2}) == [(2,)]  # the connection is usable after it


def test_inside_a_transaction_the_hot_verbs_join_it_and_roll_back_with_it(
        db: liteq.Database) -> None:
    q = db.queue("jobs")
    q.put("kept")
    with pytest.raises(RuntimeError), db.transaction():
        q.put("rolled back")
        msg = q.get()
        assert msg is not None
        msg.ack()
        raise RuntimeError("the application fails")
    assert [m.payload for m in q.peek(10)] == ["kept"]


def test_an_interrupt_while_a_hot_statement_waits_drops_the_connection_and_the_next_works(
        db: liteq.Database, pg_url: str, pg_schema: str) -> None:
    """A signal handler's KeyboardInterrupt landing while the hot path waits for the
    server: the statement is in flight, so the connection cannot be reused; the next
    verb opens another. Whether the interrupted put committed is unknown (as with the
    cursor); the queue stays consistent either way."""
    q = db.queue("jobs")
    q.put("before")
    fired: list[bool] = []

    def hook(frame: Any, event: str, arg: Any) -> None:
        if (not fired and event == "c_return" and getattr(arg, "__name__", "") == "poll"
                and frame.f_code.co_name == "_wait" and frame.f_back is not None
                and frame.f_back.f_code.co_name == "run"
                and frame.f_code.co_filename == hot_sql.__file__):
            fired.append(True)
            raise KeyboardInterrupt

    conn_before = _conns(db).get()
    sys.setprofile(hook)
    try:
        with pytest.raises(KeyboardInterrupt):
            q.put("interrupted")
    finally:
        sys.setprofile(None)
    assert fired, "the hook never fired: hot.run no longer waits in hot._wait()'s poll()"
    assert conn_before.closed
    q.put("after")
    with liteq.connect(f"{pg_url}?schema={pg_schema}") as other:
        got = [m.payload for m in other.queue("jobs").peek(10)]
    assert got[0] == "before" and got[-1] == "after" and set(got) <= {
        "before", "interrupted", "after"}
    assert db.queue("jobs").stats()["ready"] == len(got)


def test_a_process_with_more_than_1024_files_open_keeps_its_connection(
        db: liteq.Database) -> None:
    """``select()`` refuses a descriptor past 1023: the waits use ``poll()``. Before, the
    idle-connection check failed there and every call opened a new session."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"this process may open at most {hard} files")
    if soft != resource.RLIM_INFINITY and soft < 1200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1200, hard))
    fds: list[int] = []
    try:
        db.close()  # its sessions' descriptors free: taken below, so the next is past 1023
        while len(fds) < 1100:
            fds.append(os.open(os.devnull, os.O_RDONLY))
        q = db.queue("jobs")
        pid = db.execute("SELECT pg_backend_pid()")[0][0]
        assert _conns(db).get().pgconn.socket > 1023
        for i in range(3):
            q.put(i)
            msg = q.get()
            assert msg is not None and msg.payload == i
            msg.ack()
        assert db.execute("SELECT pg_backend_pid()")[0][0] == pid  # the same session
    finally:
        for fd in fds:
            os.close(fd)
        if soft != resource.RLIM_INFINITY and soft < 1200:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_text_reads_back_whatever_client_encoding_the_url_asks_for(
        pg_url: str, pg_schema: str) -> None:
    """liteq's sessions are UTF8 whatever the URL or the environment says (the hot path
    reads and sends UTF-8)."""
    with liteq.connect(f"{pg_url}?schema={pg_schema}&client_encoding=LATIN1") as d:
        q = d.queue("jobs")
        q.put("x", key="clé ☃")
        msg = q.get()
        assert msg is not None and msg.key == "clé ☃" and msg.payload == "x"
        msg.ack()
        assert d.execute("SHOW client_encoding") == [("UTF8",)]


def test_every_text_gets_its_own_statement_name_and_the_same_text_the_same() -> None:
    a, b = hot_sql.compiled("SELECT %(x)s::bigint"), hot_sql.compiled("SELECT %(x)s::float8")
    assert a.name != b.name
    assert hot_sql.compiled("SELECT %(x)s::bigint").name == a.name
    assert hot_sql.HotStatement(b"n", "SELECT %(x)s::bigint").name == b"n"


def test_a_statement_prepared_but_not_noted_is_taken_as_prepared(db: liteq.Database) -> None:
    """An interrupt landing just after ``PQprepare`` returned leaves the statement on the
    server without liteq knowing: the next call's prepare meets "already exists"
    (42P05), which is this very statement (its name is a hash of its text)."""
    q = db.queue("jobs")
    q.put(1)
    local = _conns(db)._local
    assert local.hot_names
    local.hot_names.clear()  # as if the interrupt came before the name was noted
    q.put(2)
    assert [m.payload for m in q.peek(10)] == [1, 2]
