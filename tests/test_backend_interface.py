"""The written storage interface (liteq.backends) matches the SQLite engine behind it.

Issue 17: ``Backend`` lists every verb the domain code calls, and ``SQLiteBackend``
implements each with the same parameters (A3); ``State`` has the stored integers, and
every record's fields are, in order, the columns the engine's statements select.

Column lists are read from the store's public statement text (the ``_..._COLUMNS``
constants are private); the stats row, which has no column names, is checked by
putting messages in known states and reading them back through the record.
"""

from __future__ import annotations

import inspect
import os
import re
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import FakeClock

from liteq.backends import (
    STATE_NAMES,
    STATES,
    Backend,
    ClaimedRow,
    Fire,
    MessageRecord,
    NewMessage,
    QueueRecord,
    QueueStats,
    ResultRecord,
    ScheduleRecord,
    ScheduleRun,
    State,
    Subscriptions,
    Waiter,
)
from liteq.backends.sqlite import SQLiteBackend, default_queue_options, notifier, schema
from liteq.backends.sqlite import sql as S

ABSTRACT = sorted(Backend.__abstractmethods__)


def _shape(fn: Any) -> list[tuple[str, str, Any]]:
    """Parameters as (name, kind, default): what decides whether a call fits."""
    return [
        (p.name, p.kind.name, p.default)
        for p in inspect.signature(fn).parameters.values()
    ]


def _plain(fn: Any) -> str:
    """A signature without annotations, for messages: ``(self, qid, *, force=False)``."""
    sig = inspect.signature(fn)
    empty = inspect.Parameter.empty
    params = [p.replace(annotation=empty) for p in sig.parameters.values()]
    return str(sig.replace(parameters=params, return_annotation=empty))


def _selected(statement: str) -> tuple[str, ...]:
    """The column names a ``SELECT a, b, c FROM ...`` statement selects."""
    match = re.search(r"SELECT\s+(.*?)\s+FROM\s", statement, re.S)
    assert match, f"not a plain SELECT: {statement!r}"
    return tuple(c.strip() for c in match.group(1).split(","))


@pytest.fixture
def store(tmp_path: Any) -> Iterator[SQLiteBackend]:
    s = SQLiteBackend(str(tmp_path / "iface.db"), clock=FakeClock())
    yield s
    s.close()


# -- (a) every verb of Backend exists on the store, with the same parameters ----------

@pytest.mark.parametrize("verb", ABSTRACT)
def test_every_backend_verb_exists_on_the_sqlite_engine_with_the_same_parameters(verb: str) -> None:
    theirs = getattr(SQLiteBackend, verb)
    assert not getattr(theirs, "__isabstractmethod__", False), f"SQLiteBackend has no {verb}()"
    ours = getattr(Backend, verb)
    assert _shape(theirs) == _shape(ours), (
        f"{verb}: Backend takes {_plain(ours)} but SQLiteBackend takes {_plain(theirs)}"
    )


def test_the_sqlite_engine_is_a_backend_with_every_verb(store: SQLiteBackend) -> None:
    assert isinstance(store, Backend)
    assert not SQLiteBackend.__abstractmethods__


def test_the_interface_keeps_sqlite_internals_out() -> None:
    for internal in ("conn", "write", "read", "statement"):
        assert not hasattr(Backend, internal), f"{internal} is SQLite-internal"


@pytest.mark.parametrize("attribute", ["path", "durability", "read_only", "clock", "capabilities"])
def test_every_backend_attribute_exists_on_an_open_engine(store: SQLiteBackend, attribute: str) -> None:
    assert attribute in Backend.__annotations__
    assert hasattr(store, attribute), f"SQLiteBackend has no attribute {attribute}"


def test_the_sqlite_engine_declares_what_it_can_do(store: SQLiteBackend) -> None:
    caps = store.capabilities
    assert (caps.engine, caps.paramstyle, caps.local_file, caps.shared_across_hosts) == (
        "sqlite", "qmark", True, False)
    assert caps.vacuum and caps.checkpoint and caps.integrity_check
    assert caps.wakeup == ("inotify" if notifier.can_watch() else "poll")


def test_the_backend_cannot_be_built_without_its_verbs() -> None:
    with pytest.raises(TypeError, match="abstract"):
        Backend()  # type: ignore[abstract]


def test_the_sqlite_waiter_has_every_member_of_the_waiter_protocol(store: SQLiteBackend) -> None:
    waiter = store.waiter()
    try:
        assert isinstance(waiter, notifier.Waiter)
        assert isinstance(waiter.fd, int)
        for member in ("arm", "wait", "found", "close"):
            ours, theirs = getattr(Waiter, member), getattr(notifier.Waiter, member)
            assert _shape(theirs) == _shape(ours), (
                f"Waiter.{member}: the protocol takes {_plain(ours)}, "
                f"notifier.Waiter takes {_plain(theirs)}"
            )
    finally:
        waiter.close()


# -- (b) State is what the store stores -------------------------------------------------

def test_state_values_equal_the_stored_state_integers() -> None:
    stored = (schema.READY, schema.DELAYED, schema.LEASED, schema.DONE, schema.DEAD,
              schema.CANCELLED)
    assert tuple(State) == stored
    assert [s.name for s in State] == ["READY", "DELAYED", "LEASED", "DONE", "DEAD", "CANCELLED"]


def test_state_names_equal_the_names_users_see() -> None:
    assert STATES == schema.STATES
    assert STATE_NAMES == schema.STATE_NAMES
    assert all(isinstance(v, State) for v in STATES.values())


# -- (c) each record's fields are the columns its statements select ---------------------

@pytest.mark.parametrize("record, statements", [
    (QueueRecord, [S.SQL_QUEUE_BY_NAME, S.SQL_QUEUE_BY_ID, S.SQL_SUBSCRIPTIONS]),
    (MessageRecord, [S.SQL_MESSAGE, S.SQL_PEEK, S.SQL_PEEK_ALL, S.SQL_JOB_MESSAGES]),
    (ResultRecord, [S.SQL_RESULT_GET]),
    (ScheduleRecord, [S.SQL_SCHEDULE_GET, S.SQL_SCHEDULE_ALL, S.SQL_SCHEDULE_DUE]),
    (ScheduleRun, [S.SQL_RUNS]),
], ids=["QueueRecord", "MessageRecord", "ResultRecord", "ScheduleRecord", "ScheduleRun"])
def test_each_record_has_the_columns_its_statements_select(record: Any, statements: list[str]) -> None:
    for statement in statements:
        assert record._fields == _selected(statement), statement


def test_a_claimed_row_has_the_claim_columns() -> None:
    assert ClaimedRow._fields == tuple(c.strip() for c in S.CLAIM_COLUMNS.split(","))


@pytest.mark.parametrize("record, table", [
    (QueueRecord, "queues"), (MessageRecord, "messages"), (ResultRecord, "results"),
    (ScheduleRecord, "schedules"),
], ids=["queues", "messages", "results", "schedules"])
def test_each_record_names_only_columns_the_current_schema_has(
    store: SQLiteBackend, record: Any, table: str
) -> None:
    columns = {r[1] for r in store.execute(f"PRAGMA table_info({table})")}
    assert set(record._fields) <= columns, set(record._fields) - columns
    # queues also keep counters (depth, totals) and created_at; messages the workflow
    # flag ``wf`` (derived: the job has rows in wf_edges, issue 20); results a parent's
    # success kept for its edges (``wf_value``, read through the edges: WfEdge)
    derived = {"messages": {"wf"}, "results": {"wf_value"}}.get(table, set())
    if table != "queues":
        assert set(record._fields) == columns - derived, columns - set(record._fields)


def test_queue_stats_fields_follow_the_stats_row(store: SQLiteBackend) -> None:
    qid = store.ensure_queue("q", {**default_queue_options(), "max_depth": 10}, {})[0]
    now = store.clock()
    store.put(qid, [NewMessage(0, None, now, b"\xa0", None, None)] * 2)  # ready
    store.put(qid, [NewMessage(0, None, now + 60, b"\xa0", None, None)])  # delayed
    rows, _ = store.claim(qid, 1, 30.0)
    stats = QueueStats._make(store.stats(qid))
    assert (stats.ready, stats.delayed, stats.leased) == (1, 1, 1)
    assert (stats.done, stats.dead, stats.cancelled, stats.expired_leases) == (0, 0, 0, 0)
    assert (stats.depth, stats.max_depth) == (3, 10)
    assert stats.oldest_ready_at == now
    assert (stats.enqueued, stats.finished) == (3, 0)
    assert len(QueueStats._fields) == len(store.stats(qid))


def test_a_new_message_is_the_row_put_takes_and_reads_back_in_place(store: SQLiteBackend) -> None:
    qid = store.ensure_queue("q", default_queue_options(), {})[0]
    new = NewMessage(priority=3, rank=b"r", run_at=store.clock() + 5, payload=b"\x01",
                     headers=b"\xa0", key="k")
    (mid,) = store.put(qid, [new])
    got = store.message(mid)
    assert got is not None
    message = MessageRecord._make(got)
    assert (message.priority, message.rank, message.run_at, message.payload, message.headers,
            message.key) == tuple(new)
    assert message.state == State.DELAYED


def test_a_claim_returns_rows_in_claimed_row_order(store: SQLiteBackend) -> None:
    qid = store.ensure_queue("q", default_queue_options(), {})[0]
    (mid,) = store.put(qid, [NewMessage(7, None, store.clock(), b"\x02", None, "k")])
    for n in (1, 2):  # the single claim and the batch claim take different paths
        rows, _ = store.claim(qid, n, 30.0)
        claimed = ClaimedRow._make(rows[0])
        assert (claimed.id, claimed.priority, claimed.payload, claimed.key) == (mid, 7, b"\x02", "k")
        assert claimed.token == store.message(mid)[11]  # type: ignore[index]
        assert claimed.attempts == 1  # release() gives the first claim's attempt back
        store.release(qid, [(mid, claimed.token)])


def test_subscriptions_are_a_version_and_queue_records(store: SQLiteBackend) -> None:
    store.subscribe("t", "sub", "a.*", default_queue_options(), {})
    subs = Subscriptions._make(store.subscriptions("t"))
    assert subs.version == store.subs_version() == 1
    assert [QueueRecord._make(q).pattern for q in subs.queues] == ["a.*"]


def test_a_fire_is_what_a_schedule_tick_returns(store: SQLiteBackend) -> None:
    now = store.clock()
    store.schedule_upsert({
        "name": "s", "kind": "every", "spec": "60", "tz": None, "target": "queue",
        "queue": "q", "payload": b"\xa0", "misfire": "skip", "misfire_cap": 1,
        "next_run_at": now,
    })
    fired = store.schedule_tick(lambda rec, at: ([at] if rec.next_run_at == at else [], at + 60))
    (fire,) = fired
    assert isinstance(fire, Fire) and (fire.schedule, fire.fire_at) == ("s", now)
    assert store.message(fire.job_id) is not None
    stored = store.schedule("s")
    assert stored is not None and stored.last_job_id == fire.job_id


def _schedule(**changes: Any) -> dict[str, Any]:
    return {"name": "s", "kind": "every", "spec": "60", "tz": None, "target": "queue",
            "queue": "q", "payload": b"\xa0", "misfire": "skip", "misfire_cap": 1,
            "next_run_at": 1000.0, **changes}


def test_replacing_a_schedule_with_the_same_timing_keeps_its_planned_next_fire(
    store: SQLiteBackend,
) -> None:
    # Decided inside the upsert, not by the caller reading first: a second writer
    # replacing the schedule at the same moment cannot reset the plan.
    store.schedule_upsert(_schedule())
    kept = store.schedule_upsert(_schedule(next_run_at=5000.0, queue="other", misfire="all"))
    assert (kept.next_run_at, kept.queue, kept.misfire) == (1000.0, "other", "all")
    for change in ({"spec": "30"}, {"tz": "Europe/Berlin"}, {"kind": "cron", "spec": "* * * * *"}):
        store.schedule_upsert(_schedule())  # back to the first timing (plan kept)
        replaced = store.schedule_upsert(_schedule(next_run_at=7000.0, **change))
        assert replaced.next_run_at == 7000.0, change


# -- (d) the verbs the SQLite engine added for the interface ------------------------------

def test_reads_off_the_hot_path_return_records(store: SQLiteBackend) -> None:
    queue = store.ensure_queue("q", default_queue_options(), {})
    assert isinstance(queue, QueueRecord) and queue.name == "q"
    assert store.queue_row("q") == store.queue_row_by_id(queue.id) == queue
    (mid,) = store.put(queue.id, [NewMessage(0, None, store.clock(), b"\xa0", None, None)])
    message = store.message(mid)
    assert isinstance(message, MessageRecord) and message.state == State.READY
    assert store.peek(queue.id, None, 10) == [message]
    assert isinstance(store.stats(queue.id), QueueStats)
    assert store.job_messages([State.READY], mid + 1, 10) == [message]


def test_the_hot_path_keeps_plain_tuples(store: SQLiteBackend) -> None:
    qid = store.ensure_queue("q", default_queue_options(), {}).id
    store.put_ready(qid, 0, b"\xa0")
    rows, _ = store.claim(qid, 1, 30.0)
    assert type(rows[0]) is tuple


def test_a_job_is_its_message_and_its_result_read_together(store: SQLiteBackend) -> None:
    qid = store.ensure_queue("q", default_queue_options(), {}).id
    mid = store.put_ready(qid, 0, b"\xa0")
    message, result = store.job(mid)
    assert message is not None and message.id == mid and result is None
    (row,), _ = store.claim(qid, 1, 30.0)
    now = store.clock()
    with store.transaction():
        store.ack(qid, [(mid, row[1])], 0.0)
        store.save_results([(mid, "t", State.DONE, b"\xa0", None, 1, now, None, "q", None,
                             now, now, 0.0)])
    message, result = store.job(mid)
    assert message is None and isinstance(result, ResultRecord)
    assert (result.id, result.state) == (mid, State.DONE)
    assert store.job(mid + 1) == (None, None)


def test_the_connection_is_this_threads_and_the_one_execute_uses(store: SQLiteBackend) -> None:
    conn = store.connection()
    assert store.connection() is conn
    with store.transaction():
        store.execute("CREATE TABLE app (x)")
        assert conn.in_transaction
    others: list[Any] = []
    thread = threading.Thread(target=lambda: others.append(store.connection()))
    thread.start()
    thread.join()
    assert others[0] is not conn


def test_storage_size_is_the_real_file_and_its_wal(tmp_path: Any) -> None:
    real = tmp_path / "real.db"
    link = tmp_path / "link.db"
    link.symlink_to(real)
    engine = SQLiteBackend(str(link))
    try:
        qid = engine.ensure_queue("q", default_queue_options(), {}).id
        for _ in range(50):
            engine.put_ready(qid, 0, b"\xa0" * 1000)
        wal = os.path.getsize(str(real) + "-wal")
        assert wal > 0
        assert engine.storage_size() == os.path.getsize(real) + wal
    finally:
        engine.close()


def test_a_waiter_wakes_when_another_connection_commits(store: SQLiteBackend) -> None:
    if not store.capabilities.wakeup == "inotify":
        pytest.skip("polling waiters are woken by time, not by commits")
    qid = store.ensure_queue("q", default_queue_options(), {}).id
    waiter = store.waiter()
    try:
        waiter.arm()
        other = SQLiteBackend(store.path)
        try:
            other.put_ready(qid, 0, b"\xa0")
        finally:
            other.close()
        assert waiter.wait(5.0)
    finally:
        waiter.close()
