"""A file or schema from before ``_V_OBS`` (issue 21, part 2) opens migrated: its
per-minute history is rolled up into hours, its results rows get a worker column
(None), its task messages enter the task index, and new attempts are recorded."""

from __future__ import annotations

from pathlib import Path

import apsw
import pytest
from conftest_pg import require_psycopg
from workerapp_tools import drain

import liteq
from liteq import browse
from liteq.codec import encode

_TASK = encode({"task": "old.resize", "args": [1], "kwargs": {}}, 2**62)


def _check_migrated(db: liteq.Database, qid: int) -> None:
    sums = db.backend.history_sums(28_000_020, 60, qid)
    assert [(s.start, s.put, s.acked) for s in sums] == [(28_000_020, 7, 4), (28_000_080, 2, 0)]
    q = db.queue("old")
    assert [m.payload["task"] for m in browse.page(q, "ready", task="old.resize").messages] \
        == ["old.resize"]
    info = db.job(9).info()
    assert info.task == "old.task"
    assert db.backend.result(9).worker is None  # type: ignore[union-attr]
    calls: list[int] = []

    @db.task(name="old.resize", queue="old", backoff=liteq.Backoff(base=0, jitter=0))
    def resize(n: int) -> None:
        calls.append(n)
        if len(calls) == 1:
            raise ValueError("once")

    drain(db, queues=["old"])
    assert [a.outcome for a in db.backend.attempts(8)] == ["retried", "done"]


@pytest.mark.sqlite_only("a hand-built SQLite file of the schema before _V_OBS")
def test_a_file_from_before_the_attempts_opens_migrated_with_its_history_rolled_up(
        tmp_path: Path) -> None:
    from liteq.backends.sqlite.schema import _V_OBS, MIGRATIONS

    before = MIGRATIONS.index(_V_OBS)  # the version just before _V_OBS
    path = str(tmp_path / "old.db")
    conn = apsw.Connection(path)
    conn.execute("PRAGMA journal_mode=WAL")
    for m in MIGRATIONS[:before]:
        conn.execute(m)
    conn.execute("INSERT INTO queues (id, name, lease, max_attempts, retention, backoff_base, "
                 "backoff_factor, backoff_max, backoff_jitter, created_at) "
                 "VALUES (1, 'old', 30, 5, 0, 1, 2, 300, 0, 1.0)")
    conn.execute("INSERT INTO messages (id, qid, state, run_at, payload, enqueued_at) "
                 "VALUES (8, 1, 0, 0, ?, 0)", (_TASK,))
    conn.execute("INSERT INTO results (id, task, state, finished_at) VALUES (9, 'old.task', 3, 1.0)")
    for minute, put, acked in ((28_000_020, 5, 4), (28_000_079, 2, 0), (28_000_080, 2, 0)):
        conn.execute("INSERT INTO history (qid, minute, task, put, acked) VALUES (1, ?, '', ?, ?)",
                     (minute, put, acked))
    conn.execute("PRAGMA application_id = 0x4C495451")
    conn.execute(f"PRAGMA user_version = {before}")
    conn.close()
    db = liteq.connect(path)
    try:
        assert db.execute("PRAGMA user_version") == [(len(MIGRATIONS),)]
        _check_migrated(db, 1)
    finally:
        db.close()


@pytest.mark.postgres
def test_a_schema_from_before_the_attempts_opens_migrated_with_its_history_rolled_up(
        pg_url: str, pg_schema: str) -> None:
    psycopg = require_psycopg()
    from dbsql import pg_schema_before

    from liteq.backends.postgres.schema import _V_OBS, qualify

    with psycopg.connect(pg_url, autocommit=True) as conn:
        pg_schema_before(conn, pg_schema, _V_OBS)
        run = lambda sql, *p: conn.execute(qualify(sql, pg_schema), p)  # noqa: E731
        run("INSERT INTO {s}.queues (id, name, lease, max_attempts, retention, backoff_base, "
            "backoff_factor, backoff_max, backoff_jitter, created_at) "
            "VALUES (1, 'old', 30, 5, 0, 1, 2, 300, 0, 1.0)")
        run("INSERT INTO {s}.messages (id, qid, state, run_at, payload, enqueued_at) "
            "VALUES (8, 1, 0, 0, %s, 0)", _TASK)
        run("INSERT INTO {s}.results (id, task, state, finished_at) "
            "VALUES (9, 'old.task', 3, 1.0)")
        for minute, put, acked in ((28_000_020, 5, 4), (28_000_079, 2, 0), (28_000_080, 2, 0)):
            run("INSERT INTO {s}.history (qid, minute, task, put, acked) "
                "VALUES (1, %s, '', %s, %s)", minute, put, acked)
    db = liteq.connect(pg_url, schema=pg_schema)
    try:
        _check_migrated(db, 1)
    finally:
        db.close()


@pytest.mark.postgres
def test_two_transactions_failing_messages_of_two_queues_in_opposite_orders_both_commit(
        pg_url: str, pg_schema: str) -> None:
    """Each failure counts in its queue's history row; two transactions that fail
    messages of two queues in opposite orders would deadlock on those rows. A count is
    statistics: the one that loses gives its count up, never its transaction."""
    import threading

    url = f"{pg_url}?schema={pg_schema}" if "?" not in pg_url else f"{pg_url}&schema={pg_schema}"
    dbs = [liteq.connect(url), liteq.connect(url)]
    try:
        for name in ("q1", "q2"):
            dbs[0].queue(name, max_attempts=1).put_many([1, 2])
        held = [{name: d.queue(name).get() for name in ("q1", "q2")} for d in dbs]
        barrier = threading.Barrier(2, timeout=30)
        errors: list[BaseException] = []

        def fail_in_order(k: int, order: tuple[str, str]) -> None:
            try:
                with dbs[k].transaction():
                    held[k][order[0]].fail("first")  # type: ignore[union-attr]
                    barrier.wait()
                    held[k][order[1]].fail("second")  # type: ignore[union-attr]
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=fail_in_order, args=(0, ("q1", "q2"))),
                   threading.Thread(target=fail_in_order, args=(1, ("q2", "q1")))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == []
        for name in ("q1", "q2"):
            assert dbs[0].queue(name).stats()["dead"] == 2
        dead = sum(r.dead for r in dbs[0].backend.history(0) if r.task == "")
        assert 3 <= dead <= 4  # the transaction that lost the race gave one count up
    finally:
        for d in dbs:
            d.close()
