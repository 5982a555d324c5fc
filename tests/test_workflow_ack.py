"""The member's ack (issue 20): a parent's success is counted by the ack that writes it,
set-wise, not by a trigger per edge (migration ``_V_WFACK`` on both engines). What must
hold: a database migrated with workflows half done finishes them (the counters mean what
they meant), and every path that writes a success still counts it exactly once.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import dbsql
import pytest
from helpers import explained, leading_columns, whole_index_reads
from workerapp_tools import drain

import liteq
from liteq import codec, workflow
from liteq.backends import State
from liteq.backends.postgres import workflow_sql as pg_sql
from liteq.backends.sqlite import workflow_sql as sqlite_sql
from liteq.errors import LiteqError
from liteq.running import JobContext, outcome_row
from liteq.workflow import chord, group

pytestmark = pytest.mark.every_engine


def _tasks(db: liteq.Database, calls: list[Any]) -> tuple[Any, Any]:
    @db.task(name="member")
    def member(i: int) -> int:
        return i * 10

    @db.task(name="callback", store_result=True)
    def callback(results: list[int]) -> int:
        calls.append(results)
        return len(results)

    return member, callback


def _wf(db: liteq.Database, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
    """*sql* (``?`` placeholders) on the workflow tables, which dbsql does not qualify."""
    if dbsql.is_postgres(db):
        schema = db.backend.schema  # type: ignore[attr-defined]
        for table in ("wf_edges", "wf_jobs"):
            sql = sql.replace(f" {table} ", f' "{schema}".{table} ')
    return dbsql.sql(db, sql, params)


def _downgrade(db: liteq.Database) -> None:
    """Put back the workflow triggers of the migration before ``_V_WFACK`` and mark the
    database one version older, as a file or schema of the previous release is."""
    if dbsql.is_postgres(db):
        from liteq.backends.postgres.schema import MIGRATIONS, qualify

        old = pg_sql.WORKFLOW_SCHEMA
        start = old.index("CREATE FUNCTION {s}.wf_end()")
        end = old.index("CREATE TRIGGER wf_end ")
        settle = old.index("CREATE FUNCTION {s}.wf_settle()")
        settle_end = old.index("CREATE TRIGGER wf_settle ")
        schema = db.backend.schema  # type: ignore[attr-defined]
        for text in (old[start:end], old[settle:settle_end]):
            db.execute(qualify(text.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION"),
                               schema))
        # _V_WFONE dropped the statement trigger: back, as the previous releases had it.
        trigger = old[settle_end:old.index("EXECUTE FUNCTION {s}.wf_settle();", settle_end)]
        db.execute(qualify("DROP TRIGGER IF EXISTS wf_settle ON {s}.wf_edges", schema))
        db.execute(qualify(trigger + "EXECUTE FUNCTION {s}.wf_settle()", schema))
        db.execute(qualify("DROP FUNCTION {s}.wf_done(bigint[], bytea[], text)", schema))
        db.execute(qualify("DROP FUNCTION {s}.wf_among(bigint[])", schema))
        # _V_WFACK's version and every later one (they run again on the next open).
        db.execute(qualify("DELETE FROM {s}.migrations WHERE version > %s", schema),
                   (MIGRATIONS.index(pg_sql.WFACK_SCHEMA),))
    else:
        from liteq.backends.sqlite.schema import MIGRATIONS

        old = sqlite_sql.WORKFLOW_SCHEMA
        conn = db.connection
        for name in ("wf_end", "wf_end_done", "wf_rearm", "wf_settle", "wf_block", "wf_unsettle"):
            conn.execute(f"DROP TRIGGER {name}")
        conn.execute(old[old.index("-- A parent ends:"):])
        # _V_WFACK's version and every later one (they run again on the next open): the
        # ids migration after it makes its trigger and view again, _V_WFKEEP its column.
        conn.execute("DROP TRIGGER msg_top")
        conn.execute("DROP VIEW msg_tombstone")
        conn.execute("ALTER TABLE results DROP COLUMN wf_value")  # _V_WFKEEP's
        conn.execute(f"PRAGMA user_version = {MIGRATIONS.index(sqlite_sql.WFACK_SCHEMA)}")


def test_a_released_child_is_found_by_id_not_among_every_waiting_job(db) -> None:
    """Acking a parent releases its waiting child by the child's id. On PostgreSQL the
    functions that do it kept plans (PL/pgSQL's, generic after five calls) that read
    msg_delayed from WAITING_AT on, every waiting job of every queue, for each release;
    auto_explain shows every plan of the session, nested ones included."""
    if not dbsql.is_postgres(db):
        pytest.skip("reads PostgreSQL's plans")
    member, callback = _tasks(db, [])
    parents = [member.enqueue([i]) for i in range(12)]
    kids = [callback.s().enqueue(depends_on=[p]) for p in parents]
    conn = db.connection
    plans = explained(db)
    q = db.queue("default")
    for _ in parents:  # one by one: a function's plan is generic from its sixth call
        (m,) = q.get_many(1)
        m.ack()
    assert any("wf_" in p for p in plans), plans  # the release's own statements were seen
    leading = leading_columns(conn, db.backend.schema)  # type: ignore[attr-defined]
    found = [r for p in plans for r in whole_index_reads(p.splitlines(), leading)]
    assert found == [], "\n".join(found)
    assert [k.state for k in kids] == ["queued"] * 12  # each released by its parent


def _old_ack(db: liteq.Database, msgs: list[Any]) -> None:
    """The worker's ack as the previous release made it: the DELETE, then one UPDATE of
    the parent's edges (whose triggers counted the success)."""
    q = msgs[0].owner
    with db.transaction():
        assert not db.backend.ack(q.id, [(m.id, m.token) for m in msgs], 0)
        for m in msgs:
            _wf(db, "UPDATE wf_edges SET value = ?, outcome = 'done' WHERE parent = ?",
                      (codec.encode(m.payload["args"][0] * 10, 2**20), m.id))


def test_a_chord_half_acked_before_the_migration_calls_back_once_after_it(db_target) -> None:
    calls: list[Any] = []
    db = liteq.connect(db_target)
    try:
        member, callback = _tasks(db, calls)
        cb = chord(group(member.s(i) for i in range(10)), callback.s()).delay()
        _downgrade(db)
        q = db.queue("default")
        first = q.get_many(4)
        assert [m.payload["task"] for m in first] == ["member"] * 4
        _old_ack(db, first)  # counted by the previous release's triggers
        assert _wf(db, "SELECT unmet FROM wf_jobs WHERE id = ?", (cb.id,)) == [(6,)]
    finally:
        db.close()

    db = liteq.connect(db_target)  # migrated now
    try:
        member, callback = _tasks(db, calls)
        drain(db)
        assert calls == [[i * 10 for i in range(10)]]
        assert cb.result() == 10
        assert _wf(db, "SELECT unmet FROM wf_jobs WHERE id = ?", (cb.id,)) == [(0,)]
    finally:
        db.close()


@pytest.mark.parametrize("results_rows", [False, True], ids=["edges", "results-rows"])
def test_a_batch_ack_counts_each_childs_parents_once_whatever_their_mix(
        db, results_rows: bool) -> None:
    """One ack transaction of parents with one, two and no dependents among them, and
    two parents of the same child: every counter goes down by its own parents only.
    *results_rows*: as the worker acks, the results rows written first (where SQLite
    keeps the results for the edges)."""
    calls: list[Any] = []
    member, _callback = _tasks(db, calls)

    @db.task(name="note", store_result=True)
    def note(name: str) -> str:
        calls.append(name)
        return name

    a, b, c, plain = (member.enqueue([i]) for i in (1, 2, 3, 4))
    both = note.enqueue(["both"], depends_on=[a, b])  # two parents in the same batch
    one = note.enqueue(["one"], depends_on=[c])
    other = note.enqueue(["other"], depends_on=[c, plain])  # plain: acked later
    q = db.queue("default")
    msgs = q.get_many(10)
    assert sorted(m.id for m in msgs) == sorted(j.id for j in (a, b, c, plain))
    batch = [m for m in msgs if m.id != plain.id]
    with db.transaction():
        assert not db.backend.ack(q.id, [(m.id, m.token) for m in batch], 0)
        _results_first(db, batch, results_rows)
        workflow.record(db, [(m.id, m.payload["args"][0]) for m in batch], results_rows)
    unmet = dict(_wf(db, "SELECT id, unmet FROM wf_jobs WHERE id IN (?, ?, ?)",
                           (both.id, one.id, other.id)))
    assert unmet == {both.id: 0, one.id: 0, other.id: 1}
    assert (both.state, one.state, other.state) == ("queued", "queued", "waiting")
    assert [e.value for e in both.edges()[0]] == [codec.encode(1, 99),
                                                 codec.encode(2, 99)]
    (rest,) = [m for m in msgs if m.id == plain.id]
    with db.transaction():
        assert not db.backend.ack(q.id, [(rest.id, rest.token)], 0)
        _results_first(db, [rest], results_rows)
        workflow.record(db, [(rest.id, 4)], results_rows)
    assert other.state == "queued"
    drain(db)
    assert sorted(calls) == ["both", "one", "other"]


@pytest.mark.parametrize("results_rows", [False, True], ids=["edges", "results-rows"])
def test_one_ack_of_retained_and_deleted_parents_gives_each_child_its_results_once(
        db, results_rows: bool) -> None:
    """A worker's flush acks the jobs of every queue it serves in one transaction: here a
    queue that keeps finished jobs (its acks settle the edges by trigger) and one that
    deletes them (settled by the ack's own statements). Each child counts each parent
    once and gets every result."""
    calls: list[Any] = []

    @db.task(name="value", queue="kept")
    def value(i: int) -> int:
        return i

    @db.task(name="collect", store_result=True)
    def collect(results: list[int]) -> list[int]:
        calls.append(results)
        return results

    db.queue("kept", retention=3600)
    kept = [value.s(i) for i in (1, 2)]
    gone = [value.s(i).set(queue="default") for i in (3, 4)]
    first = chord(group([kept[0], gone[0]]), collect.s()).delay()
    second = chord(group([kept[1], gone[1]]), collect.s()).delay()
    claimed = db.queue("kept").get_many(10) + db.queue("default").get_many(10)
    assert sorted(m.payload["args"][0] for m in claimed) == [1, 2, 3, 4]
    with db.transaction():
        for name in ("kept", "default"):
            q = db.queue(name)
            mine = [m for m in claimed if m.owner.name == name]
            assert not db.backend.ack(q.id, [(m.id, m.token) for m in mine],
                                      q.config.retention)
        _results_first(db, claimed, results_rows)
        workflow.record(db, [(m.id, m.payload["args"][0]) for m in claimed], results_rows)
    assert first.state == "queued" and second.state == "queued"
    assert _wf(db, "SELECT unmet FROM wf_jobs WHERE id IN (?, ?)",
               (first.id, second.id)) == [(0,), (0,)]  # counted once, not twice
    drain(db)
    assert sorted(calls) == [[1, 3], [2, 4]]
    assert (first.result(), second.result()) == ([1, 3], [2, 4])


@pytest.mark.parametrize("results_rows", [False, True], ids=["edges", "results-rows"])
def test_acks_one_by_one_count_each_child_once_and_release_it_at_its_last_parent(
        db, results_rows: bool) -> None:
    """The one-job ack (its own path on both engines): parents with one and with two
    children, a retained parent, and a child waiting for four parents, acked one
    transaction each.
    Each counter goes down once per parent; each child is released by its last parent
    alone, with every result in order."""
    calls: list[Any] = []
    member, _callback = _tasks(db, calls)

    @db.task(name="collect", queue="kept", store_result=True)
    def collect(results: list[int]) -> list[int]:
        calls.append(results)
        return results

    db.queue("kept", retention=3600)
    a, b, d = member.enqueue([1]), member.enqueue([2]), member.enqueue([4])
    c = member.enqueue([3], queue="kept")  # retained: its ack settles by trigger
    three = collect.s().enqueue(depends_on=[a, b, c, d])  # d: its only child
    after_a = collect.s().enqueue(depends_on=[a, b])  # a and b have two children each
    q, kept = db.queue("default"), db.queue("kept")
    claimed = {m.id: m for m in q.get_many(10) + kept.get_many(10)}
    assert sorted(claimed) == sorted([a.id, b.id, c.id, d.id])
    for job, waiting in ((d, [three, after_a]), (b, [three, after_a]), (a, [three]), (c, [])):
        m = claimed[job.id]
        with db.transaction():
            assert not db.backend.ack(m.owner.id, [(m.id, m.token)], m.owner.config.retention)
            _results_first(db, [m], results_rows)
            workflow.record(db, [(m.id, m.payload["args"][0] * 10)], results_rows)
        assert [j.state for j in waiting] == ["waiting"] * len(waiting)
    assert (three.state, after_a.state) == ("queued", "queued")
    assert _wf(db, "SELECT unmet FROM wf_jobs WHERE id IN (?, ?)",
               (three.id, after_a.id)) == [(0,), (0,)]
    drain(db)
    assert sorted(calls) == [[10, 20], [10, 20, 30, 40]]


@pytest.mark.parametrize("retention", [0.0, 3600.0])
def test_a_dependent_enqueued_while_its_parent_is_being_acked_is_released(
    db, retention: float
) -> None:
    """``depends_on=[p]`` while p's ack is in flight (its row deleted, or kept as done
    with retention; its results row written; not yet committed): the new child must see
    p's ending, whichever commits first. On PostgreSQL the link waits for the ack's row
    lock; it must then read p as ended, not as the running job it saw before the wait
    (the child waited forever)."""
    calls: list[Any] = []
    member, callback = _tasks(db, calls)
    db.queue("default", retention=retention)
    parent = member.enqueue([7])
    (m,) = db.queue("default").get_many(1)
    linked: list[Any] = []
    with db.transaction():
        assert not db.backend.ack(m.owner.id, [(m.id, m.token)], m.owner.config.retention)
        workflow.record(db, [(m.id, 70)])
        db.backend.save_results([_done_row(db, m, 70)])
        linker = threading.Thread(target=lambda: linked.append(
            callback.s().enqueue(depends_on=[parent])))
        linker.start()
        linker.join(0.5)  # blocked on the ack's lock (either engine), or done already
    linker.join(30)
    assert not linker.is_alive()
    (child,) = linked
    assert child.state == "queued"
    drain(db)
    assert calls == [70]


def _results_first(db: liteq.Database, msgs: list[Any], results_rows: bool) -> None:
    """If *results_rows*: the results rows the worker's ack writes before it settles the
    dependents, with no stored value (a task's default), so that a result read from
    anywhere but where the ack kept it would be None."""
    if results_rows:
        db.backend.save_results([_done_row(db, m, None) for m in msgs])


def _done_row(db: liteq.Database, m: Any, value: Any) -> tuple[Any, ...]:
    """The results row the worker's ack writes for *m* (a success)."""
    ctx = JobContext(db, m.id, m.payload["task"], m.owner.name, m.attempts, 5,
                     m.payload["args"], {}, m.enqueued_at)
    return outcome_row(ctx, State.DONE, attempts=m.attempts, now=time.time(), ttl=3600.0,
                       value=None if value is None else codec.encode(value), duration=0.0)


@pytest.mark.parametrize(("size", "each"), [(1, False), (3, False), (1, True), (3, True)])
def test_edges_moved_between_the_acks_lookup_and_its_settling_are_settled_by_key(
        db, size: int, each: bool) -> None:
    """PostgreSQL's ack settles the edges at the rows its lookup read them from (their
    ctid); a row that moved in between (here: this transaction updated it, as a retained
    ack's trigger would) is settled by key instead. A chord of one member takes the
    one-parent statement, of three the set-wise one; *each*: each member alone, as the
    worker acking one job per transaction (one statement looks up and settles). Each
    member counted once, the callback released with every result."""
    calls: list[Any] = []
    member, callback = _tasks(db, calls)
    cb = chord(group(member.s(i) for i in range(size)), callback.s()).delay()
    q = db.queue("default")
    msgs = sorted(q.get_many(10), key=lambda m: m.id)
    assert len(msgs) == size
    with db.transaction():
        assert not db.backend.ack(q.id, [(m.id, m.token) for m in msgs], 0)
        found = db.backend.wf_parents_among([m.id for m in msgs])
        assert found == {m.id: [cb.id] for m in msgs}
        _wf(db, "UPDATE wf_edges SET pos = pos WHERE parent = ?", (msgs[-1].id,))
        values = [(m.id, codec.encode(m.payload["args"][0] * 10, 2**20)) for m in msgs]
        if each:
            for mid, value in values:
                db.backend.wf_done_one(mid, lambda value=value: value)
        else:
            db.backend.wf_done(values, found)
    assert _wf(db, "SELECT outcome, count(*) FROM wf_edges WHERE child = ? GROUP BY outcome",
               (cb.id,)) == [("done", size)]
    assert _wf(db, "SELECT unmet FROM wf_jobs WHERE id = ?", (cb.id,)) == [(0,)]
    assert cb.state == "queued"
    drain(db)
    assert calls == [[i * 10 for i in range(size)]]


@pytest.mark.parametrize("size", [10, 40_000, 70_000], ids=["small", "large", "larger"])
@pytest.mark.parametrize("each", [False, True], ids=["flush", "one-by-one"])
def test_a_flush_of_members_and_plain_jobs_gives_every_result_whatever_its_size(
        db, size: int, each: bool) -> None:
    """The worker's flush: one transaction acks chord members and plain jobs, writes their
    results rows, then settles (``workflow.record``); *each*: one job per transaction.
    PostgreSQL sends the results with its lookup up to 64 KiB in all, else looks up first
    and sends only the parents': the callback gets each member's result in order either
    way, and a plain job's result goes nowhere."""
    calls: list[Any] = []

    @db.task(name="sized")
    def sized(i: int) -> str:
        return str(i) * size

    @db.task(name="collect", store_result=True)
    def collect(results: list[str]) -> int:
        calls.append(results)
        return len(results)

    cb = chord(group(sized.s(i) for i in range(1, 4)), collect.s()).delay()
    plain = [sized.enqueue([i]) for i in (7, 8)]
    q = db.queue("default")
    msgs = q.get_many(10)
    assert len(msgs) == 5
    for part in ([[m] for m in msgs] if each else [msgs]):
        with db.transaction():
            assert not db.backend.ack(q.id, [(m.id, m.token) for m in part], 0)
            _results_first(db, part, True)
            workflow.record(db, [(m.id, str(m.payload["args"][0]) * size) for m in part],
                            True)
    assert cb.state == "queued"
    assert [j.state for j in plain] == ["done", "done"]
    drain(db)
    assert calls == [[str(i) * size for i in range(1, 4)]]


def test_a_flush_that_says_it_wrote_results_rows_it_did_not_write_changes_nothing(db) -> None:
    """SQLite keeps a worker-acked parent's result in the results row the flush wrote
    (``results_rows=True``); a batch whose caller did not write them breaks that
    contract: it raises, and the transaction rolls back with nothing counted (no
    callback released early, no ack lost). PostgreSQL keeps results on the edges, so
    the flag changes nothing there and the same batch settles."""
    calls: list[Any] = []
    member, _callback = _tasks(db, calls)
    cb = chord(group(member.s(i) for i in range(3)), _callback.s()).delay()
    q = db.queue("default")
    msgs = q.get_many(10)
    assert len(msgs) == 3
    if not dbsql.is_postgres(db):
        with pytest.raises(LiteqError, match="no results row"), db.transaction():
            assert not db.backend.ack(q.id, [(m.id, m.token) for m in msgs], 0)
            workflow.record(db, [(m.id, m.payload["args"][0]) for m in msgs], True)
        assert cb.state == "waiting"
        assert _wf(db, "SELECT unmet FROM wf_jobs WHERE id = ?", (cb.id,)) == [(3,)]
        assert q.stats()["leased"] == 3  # the acks rolled back with it
    with db.transaction():
        assert not db.backend.ack(q.id, [(m.id, m.token) for m in msgs], 0)
        _results_first(db, msgs, True)
        workflow.record(db, [(m.id, m.payload["args"][0]) for m in msgs], True)
    drain(db)
    assert calls == [[0, 1, 2]]
