"""Opening database files: a brand-new file opened by many processes at once gets one
schema, and an existing file keeps what it holds."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import threading
from collections.abc import Iterator

import apsw
import pytest
from helpers import PATIENCE, open_new_file_at_once

import liteq
from liteq.backends.sqlite.base import PAGE_SIZE
from liteq.backends.sqlite.schema import APPLICATION_ID, SCHEMA_VERSION

EXPECTED_TABLES = {"queues", "messages", "meta"}


def _schema_objects(path: str) -> list[tuple[str, str]]:
    conn = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READONLY)
    rows = conn.execute(
        "SELECT type, name FROM sqlite_schema WHERE name NOT LIKE 'sqlite_%' ORDER BY name"
    ).fetchall()
    conn.close()
    return [tuple(r) for r in rows]


def test_ten_processes_opening_a_new_file_at_once_all_succeed_with_one_schema(tmp_path) -> None:
    reference = str(tmp_path / "reference.db")
    liteq.connect(reference).close()
    ctx = mp.get_context("fork")
    for round_ in range(3):
        folder = tmp_path / f"round{round_}"
        folder.mkdir()
        path = str(folder / "new.db")
        barrier = ctx.Barrier(10)
        procs = [
            ctx.Process(target=open_new_file_at_once, args=(path, barrier, i, str(folder)))
            for i in range(10)
        ]
        for p in procs:
            p.start()
        for p in procs:
            p.join(PATIENCE)
        results = []
        for i in range(10):
            with open(folder / f"open-{i}.json") as f:
                results.append(json.load(f))
        failures = [r for r in results if r != "ok"]
        assert failures == [], "\n".join(failures)
        assert [p.exitcode for p in procs] == [0] * 10

        db = liteq.connect(path)
        assert db.execute("PRAGMA user_version") == [(SCHEMA_VERSION,)]
        assert db.execute("PRAGMA application_id") == [(APPLICATION_ID,)]
        objects = _schema_objects(path)
        assert objects == _schema_objects(reference)
        tables = [name for kind, name in objects if kind == "table"]
        assert all(tables.count(name) == 1 for name in EXPECTED_TABLES), tables
        assert db.queues() == ["opened"]
        assert sorted(m.payload for m in db.queue("opened").peek(20)) == list(range(10))
        assert db.integrity_check() == ["ok"]
        db.close()


@pytest.fixture
def commit_schema_after_first_header_read(db_path) -> Iterator[dict[str, object]]:
    """Interleave deterministically: right after liteq's connection reads the file's
    application_id, if it is not inside a transaction (so nothing pins its view of
    the file), another connection in another thread creates the schema.

    Real SQLite on both sides; apsw's connection hook and statement tracer only choose
    the moment, as a scheduler could.
    """
    state: dict[str, object] = {"armed": True, "fired": False}

    def tracer(cursor: apsw.Cursor, sql: str, bindings: object) -> bool:
        if not state["armed"]:
            return True
        if "application_id" in sql:
            state["after_app_id"] = True
            return True
        if state.get("after_app_id"):
            state["armed"] = False
            if not cursor.connection.in_transaction:
                state["fired"] = True
                other = threading.Thread(target=lambda: liteq.connect(db_path).close())
                other.start()
                other.join(10.0)  # nothing of ours holds a lock: it finishes at once
                state["thread"] = other
        return True

    def hook(conn: apsw.Connection) -> None:
        if state["armed"]:
            conn.exec_trace = tracer

    apsw.connection_hooks.append(hook)
    try:
        yield state
    finally:
        apsw.connection_hooks.remove(hook)
        thread = state.get("thread")
        if isinstance(thread, threading.Thread):
            thread.join(PATIENCE)


def test_a_schema_committed_between_header_reads_is_not_taken_for_another_applications(
    db_path, commit_schema_after_first_header_read
) -> None:
    # Found as a bug (three autocommit reads: about 3% of 10-process opens failed with
    # "a SQLite database of another application"); fixed by reading in one transaction.
    db = liteq.connect(db_path)
    db.queue("q").put("x")
    assert db.execute("PRAGMA user_version") == [(SCHEMA_VERSION,)]
    db.close()


def test_a_new_file_is_in_wal_mode_with_liteqs_page_size_marked_and_at_the_current_schema(db_path) -> None:
    db = liteq.connect(db_path)
    assert db.execute("PRAGMA journal_mode") == [("wal",)]
    assert db.execute("PRAGMA application_id") == [(APPLICATION_ID,)]
    assert db.execute("PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert db.execute("PRAGMA page_size") == [(PAGE_SIZE,)]
    tables = {name for kind, name in _schema_objects(db_path) if kind == "table"}
    assert EXPECTED_TABLES <= tables
    db.close()


def test_reopening_a_file_keeps_its_schema_queues_and_messages_and_changes_no_version(
    db_path,
) -> None:
    db = liteq.connect(db_path)
    db.queue("a", max_depth=4).put_many([1, 2])
    db.queue("b").put("x", delay=3600)
    db.close()
    objects = _schema_objects(db_path)

    for _ in range(3):
        again = liteq.connect(db_path)
        assert again.queues() == ["a", "b"]
        assert again.queue("a").stats()["ready"] == 2
        assert again.queue("b").stats()["delayed"] == 1
        again.close()
    assert _schema_objects(db_path) == objects


def test_connect_uses_liteq_db_from_the_environment_when_no_path_is_given(
    tmp_path, monkeypatch
) -> None:
    path = tmp_path / "from-env.db"
    monkeypatch.setenv("LITEQ_DB", str(path))
    db = liteq.connect()
    assert db.path == str(path)
    db.queue("q").put(1)
    db.close()
    assert os.path.exists(path)
