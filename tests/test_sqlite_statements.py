"""liteq's SQL statements on SQLite: prepared once, then run without being prepared again.

SQLite re-prepares a cached statement at its next run when a value bound to it may
change the plan: a bound parameter in ``WHERE qid = ?`` next to a partial index, or
in ``LIMIT ?``, marks the statement so (issue 23 measured 5.7 against 0.9 µs for the
claim's first step). Preparing calls the authorizer once per table, column and
action, so a statement run a second time with no authorizer call was not prepared
again. Every statement of ``liteq.backends.sqlite.sql`` is checked, on a file as
liteq makes it and on one with ``ANALYZE`` statistics.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import apsw
import pytest

import liteq
from liteq.backends.sqlite import sql as S

# Values for named parameters, by name (anything not listed is a number).
_TEXT = {"name", "key", "error", "reason", "topic", "pattern", "tz", "spec", "kind",
         "queue", "task", "dead_letter", "misfire", "origin", "state_name"}
_BLOB = {"payload", "headers", "rank", "value", "call"}

# Positional statements: the values they take.
_POSITIONAL: dict[str, tuple[Any, ...]] = {
    "SQL_QUEUE_BY_NAME": ("q",),
    "SQL_QUEUE_BY_ID": (1,),
    "SQL_QUEUE_DELETE": (99,),
    "SQL_DEPTH": (1,),
    "SQL_TOTALS": (1, 1, 1),
    "SQL_INSERT": (1, 0, 0, None, 1.0, b"x", None, None, 1.0),
    "SQL_INSERT_UNCOUNTED": (1, 0, 1.0, b"x"),
    "SQL_FIND_KEY": (1, "k"),
    "SQL_NEXT_READY": (1,),
    "SQL_CLAIM_ONE": (1, 2.0),
    "SQL_CLAIM_NEXT": (1, 30.0),
    "SQL_INSERT_UNCOUNTED_MANY": (1, 0, 1.0, 1.0, apsw.carray((b"x", b"y"))),
    "SQL_ACK_DELETE": (1, 2),
    "SQL_ACK_UNCOUNTED": (1, 2),
    "SQL_ACK_LEAF": (1, 2),
    "SQL_ACK_DELETE_WF": (1, 2),
    "SQL_ACK_RETAIN": (1.0, 1, 2),
    "SQL_FINISHED_ROW": (1,),
    "SQL_MESSAGE": (1,),
    "SQL_RESULT_GET": (1,),
    "SQL_RELEASE_LEASE": (1, 2),
    "SQL_RESULT_PRUNE": (1.0,),
    "SQL_CANCEL_LEASED": (1,),
    "SQL_CANCEL_FLAG": (1,),
    "SQL_SCHEDULE_GET": ("s",),
    "SQL_SCHEDULE_DELETE": ("s",),
    "SQL_SCHEDULE_DUE": (1.0, 10),
    "SQL_RUN_INSERT": (1, 1.0, 1.0),
    "SQL_RUN_JOB": (1, 1, 1.0),
    "SQL_RUNS": (1, 10),
    "SQL_RUNS_DELETE": (1,),
    "SQL_SUBSCRIPTIONS": ("t",),
    "SQL_EXPIRED_SUBS": (1.0,),
    "SQL_RESULT_PUT": (1, "t", 1, b"x", None, 1, 1.0, None, "q", b"x", 1.0, 1.0, 0.1, "h:1:ab"),
    "SQL_SET_PAUSED": (1, 1),
    "SQL_FLOWS": (1.0,),
    "SQL_QUEUE_LIMITS": (1,),
    "SQL_QUEUE_LIMITED": (1,),
    "SQL_FLOW_INSERT": ("t", 1, 1.0, 1.0),
}


def _params(name: str, sql: str) -> Any:
    if name in _POSITIONAL:
        return _POSITIONAL[name]
    named = set(re.findall(r"[:@$]([A-Za-z_]\w*)", sql))
    if "?" in sql and not named:
        raise AssertionError(f"{name}: give its positional values in _POSITIONAL")
    return {k: "x" if k in _TEXT else b"x" if k in _BLOB else 1 for k in named}


def _statements() -> Iterator[tuple[str, str, Any]]:
    for name in sorted(dir(S)):
        sql = getattr(S, name)
        if not name.startswith("SQL_") or not isinstance(sql, str) or "{" in sql:
            continue  # templates ({marks}, {where}) are formatted by their verbs
        yield name, sql, _params(name, sql)
    for n in (1, 3):
        yield f"sql_claim_ids({n})", S.sql_claim_ids(n), (1, 2.0, *range(1, n + 1))
        yield f"sql_ack_many({n}, False)", S.sql_ack_many(n, False), (*range(1, n + 1), 2)
        yield f"sql_ack_many({n}, True)", S.sql_ack_many(n, True), (1.0, *range(1, n + 1), 2)


STATEMENTS = list(_statements())

#: Statements whose plan depends on a bound value on purpose: which partial index
#: serves ``state = :state`` is known only from the state's value, so SQLite plans
#: them again for each value (they are not on a per-message path).
PLANNED_PER_VALUE = {
    "SQL_PEEK": "the partial index for state = :state is chosen by its value",
    "SQL_PURGE_STATE": "the partial index for state = :state is chosen by its value",
}


@pytest.fixture(params=["fresh", "analyzed"])
def conn(request, db_path) -> Iterator[Any]:
    """A liteq file with messages in every state, as made (no statistics), and after
    ``ANALYZE`` (sqlite_stat1 and sqlite_stat4 filled, as an application may do)."""
    db = liteq.connect(db_path)
    q = db.queue("q", dead_letter="dlq")
    db.queue("other", max_depth=100)
    q.put_many([{"i": i} for i in range(20)])
    q.put({"late": 1}, delay=3600)
    q.put({"k": 1}, key="k")
    q.get_many(3)
    q.get().fail("poison")
    db.schedule("s", every=60, queue="q", payload={})
    if request.param == "analyzed":
        db.execute("ANALYZE")
    yield db.connection
    db.close()


def _preparations(conn: Any, sql: str, params: Any) -> list[int]:
    """Authorizer calls during each of two runs of *sql* (in a transaction rolled back)."""
    calls = [0]

    def authorizer(*_: Any) -> int:
        calls[0] += 1
        return apsw.SQLITE_OK

    cur = conn.cursor()
    cur.execute("BEGIN IMMEDIATE")
    conn.authorizer = authorizer
    try:
        counts = []
        for _ in range(2):
            calls[0] = 0
            cur.execute(sql, params).fetchall()
            counts.append(calls[0])
        return counts
    finally:
        conn.authorizer = None
        cur.execute("ROLLBACK")


@pytest.mark.parametrize(("name", "sql", "params"), STATEMENTS, ids=[s[0] for s in STATEMENTS])
def test_a_statement_run_a_second_time_is_not_prepared_again(conn, name, sql, params) -> None:
    if name in PLANNED_PER_VALUE:
        pytest.skip(PLANNED_PER_VALUE[name])
    first, second = _preparations(conn, sql, params)
    assert first > 0, f"{name}: the first run should prepare it (the check sees nothing)"
    assert second == 0, f"{name}: re-prepared on its second run ({second} authorizer calls)"


def _statements_run(db: liteq.Database, action: Any) -> list[str]:
    """The SQL statements *action* runs on this thread's connection (BEGIN and COMMIT
    included), each once it is warm."""
    action()
    ran: list[str] = []

    def trace(_cursor: Any, sql: str, _bindings: Any) -> bool:
        ran.append(" ".join(sql.split())[:60])
        return True

    conn = db.connection
    conn.exec_trace = trace
    try:
        action()
    finally:
        conn.exec_trace = None
    return ran


def test_a_put_many_of_plain_messages_into_an_unbounded_queue_is_one_statement(db_path) -> None:
    db = liteq.connect(db_path)
    q = db.queue("q")

    ran = _statements_run(db, lambda: q.put_many([{"i": i} for i in range(100)]))

    assert len(ran) == 1, ran
    db.close()


def test_a_put_many_returns_each_messages_id_in_the_order_given(db_path) -> None:
    db = liteq.connect(db_path)
    q = db.queue("q")
    q.put("before")
    q.get().ack()

    ids = q.put_many([{"i": i} for i in range(1000)])

    assert ids == list(range(ids[0], ids[0] + 1000))
    got = {m.id: m.payload for m in q.get_many(1000)}
    assert [got[mid] for mid in ids] == [{"i": i} for i in range(1000)]
    db.close()


def test_a_get_right_after_another_is_one_statement_and_its_ack_another(db_path) -> None:
    db = liteq.connect(db_path)
    q = db.queue("q")
    q.put_many(["a", "b", "c"])
    assert q.get() is not None  # the queue is maintained now (for MAINTAIN_EVERY)

    ran = _statements_run(db, lambda: q.get().ack())

    assert len(ran) == 2, ran
    db.close()


def test_maintaining_a_queue_with_no_delayed_message_due_updates_nothing(db_path) -> None:
    db = liteq.connect(db_path)
    q = db.queue("q")
    q.put_many([{"i": i} for i in range(10)])
    q.put("later", delay=3600)
    q.get()

    ran = _statements_run(db, lambda: db.backend.expire(q.id))

    assert [s for s in ran if s.startswith("UPDATE")] == [], ran
    db.close()
