"""The jobs verbs of the storage interface on every engine (issue 17, step B3): results
rows, jobs listings, released leases and cancellation.

The shared tests take ``backend``/``open_backend`` (``tests/engines.py``) and run on
SQLite and PostgreSQL alike: what one engine answers, the other must, down to the types
in the records. Tests that need messages create them with ``backend.put``/``claim``. The
PostgreSQL-only tests at the end set rows up with SQL and race real connections against
each other.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from liteq.backends import MessageRecord, NewMessage, ResultRecord, State
from liteq.backends.base import Backend
from liteq.backends.sqlite import default_queue_options
from liteq.errors import LiteqError

# -- helpers ---------------------------------------------------------------------------


def _queue(backend: Backend, **options: Any) -> int:
    """A queue's id (default options, overridden by *options*)."""
    return int(backend.ensure_queue("jobs", {**default_queue_options(), **options}, {}).id)


def _put(backend: Backend, qid: int, *, delay: float = 0.0, payload: bytes = b"\xa0") -> int:
    """Put one message (delayed by *delay* seconds); its id."""
    row = NewMessage(0, None, backend.clock() + delay, payload, None, None)
    return int(backend.put(qid, [row])[0])


def _claim(backend: Backend, qid: int, n: int = 1) -> list[tuple[int, int]]:
    """Claim up to *n* messages; their ``(id, token)``."""
    rows, _ = backend.claim(qid, n, 30.0)
    return [(row[0], row[1]) for row in rows]


def _row(mid: int, **fields: Any) -> tuple[Any, ...]:
    """A results row as the worker writes it (plain tuple, ResultRecord order)."""
    base = ResultRecord(id=mid, task="send", state=State.DONE, value=b"\x01", error=None,
                        attempts=1, finished_at=1000.5, expires_at=None, queue="emails",
                        call=b"\xa3call", enqueued_at=990.25, started_at=999.0, duration=1.5)
    return tuple(base._replace(**fields))


def _types(record: tuple[Any, ...]) -> list[str]:
    return [type(v).__name__ for v in record]


# -- results rows, no messages needed ----------------------------------------------------


def test_a_saved_results_row_reads_back_as_the_same_record_with_the_same_types(backend: Backend) -> None:
    row = _row(7, finished_at=1000, enqueued_at=990, started_at=999, duration=2,
               state=int(State.DEAD), error="boom", value=None, worker="h:1:ab")
    backend.save_results([row])
    got = backend.result(7)
    assert got == ResultRecord(7, "send", State.DEAD, None, "boom", 1, 1000.0, None, "emails",
                               b"\xa3call", 990.0, 999.0, 2.0, "h:1:ab")
    # Times are floats and bytes are bytes on every engine, even when ints were given.
    assert _types(got) == ["int", "str", "int", "NoneType", "str", "int", "float", "NoneType",
                           "str", "bytes", "float", "float", "float", "str"]
    # A row without its worker (a job cancelled before it ran) stores None.
    backend.save_results([tuple(_row(8))[:-1]])
    got8 = backend.result(8)
    assert got8 is not None and got8.worker is None


def test_the_history_columns_may_all_be_empty(backend: Backend) -> None:
    backend.save_results([_row(3, queue=None, call=None, enqueued_at=None, started_at=None,
                               duration=None, task=None)])
    assert backend.result(3) == ResultRecord(3, None, State.DONE, b"\x01", None, 1, 1000.5,
                                             None, None, None, None, None, None)


def test_the_result_of_an_unknown_job_is_none(backend: Backend) -> None:
    assert backend.result(12345) is None


def test_saving_a_results_row_again_replaces_every_column(backend: Backend) -> None:
    backend.save_results([_row(5)])
    backend.save_results([_row(5, state=int(State.CANCELLED), value=None, error="cancelled",
                               attempts=3, expires_at=2000.0, queue="other", duration=None)])
    assert backend.result(5) == ResultRecord._make(
        _row(5, state=State.CANCELLED, value=None, error="cancelled", attempts=3,
             expires_at=2000.0, queue="other", duration=None))


def test_many_rows_are_saved_in_one_call_and_the_last_row_of_an_id_wins(backend: Backend) -> None:
    backend.save_results([_row(1), _row(2, error="first"), _row(3), _row(2, error="last")])
    assert [backend.result(i) for i in (1, 2, 3)] == [
        ResultRecord._make(_row(1)), ResultRecord._make(_row(2, error="last")),
        ResultRecord._make(_row(3))]


def test_a_batch_of_many_rows_saves_every_row_and_the_last_of_an_id_wins(backend: Backend) -> None:
    # 151 rows: written in several statements on SQLite (64, 64, 16, 4, 2, 1 rows), with
    # id 3 again in the last one.
    rows = [_row(i, error=f"e{i}") for i in range(1, 151)] + [_row(3, error="again")]
    backend.save_results(rows)
    assert [backend.result(i) for i in range(1, 151)] == [
        ResultRecord._make(_row(i, error="again" if i == 3 else f"e{i}")) for i in range(1, 151)]
    assert backend.result(151) is None


def test_saving_nothing_writes_nothing(backend: Backend) -> None:
    backend.save_results([])
    assert backend.orphan_results(None, 2**62, 10) == []


def test_a_batch_with_one_bad_row_writes_none_of_them(backend: Backend) -> None:
    with pytest.raises(LiteqError):
        backend.save_results([_row(1), _row(2, state=None)])  # state is required
    assert backend.result(1) is None and backend.result(2) is None


def test_results_saved_in_a_transaction_that_rolls_back_are_gone(backend: Backend) -> None:
    with pytest.raises(RuntimeError):
        with backend.transaction():
            backend.save_results([_row(1), _row(2)])
            assert backend.result(1) is not None  # visible inside the transaction
            raise RuntimeError("the application's error")
    assert backend.result(1) is None and backend.result(2) is None
    with backend.transaction():
        backend.save_results([_row(1)])
    assert backend.result(1) == ResultRecord._make(_row(1))


def test_prune_results_deletes_only_rows_expired_before_the_time_given(backend: Backend) -> None:
    backend.save_results([_row(1, expires_at=100.0), _row(2, expires_at=200.0),
                          _row(3, expires_at=None), _row(4, expires_at=99.5)])
    assert backend.prune_results(150.0) == 2
    assert [backend.result(i) is not None for i in (1, 2, 3, 4)] == [False, True, True, False]
    assert backend.prune_results(150.0) == 0
    assert backend.prune_results(1e12) == 1  # never row 3: no expiry means kept for ever
    assert backend.result(3) is not None


def test_orphan_results_pages_newest_first_below_an_id(backend: Backend) -> None:
    backend.save_results([_row(i) for i in range(1, 8)])
    assert [r.id for r in backend.orphan_results(None, 2**62, 3)] == [7, 6, 5]
    assert [r.id for r in backend.orphan_results(None, 5, 3)] == [4, 3, 2]
    assert [r.id for r in backend.orphan_results(None, 2, 3)] == [1]
    assert backend.orphan_results(None, 1, 3) == []
    assert backend.orphan_results(None, 2**62, 1) == [ResultRecord._make(_row(7))]


def test_orphan_results_filter_by_state_queue_and_task_together(backend: Backend) -> None:
    backend.save_results([
        _row(1, state=int(State.DEAD)),
        _row(2, state=int(State.DEAD), queue="other"),
        _row(3, state=int(State.DEAD), task="other"),
        _row(4),
        _row(5, state=int(State.DEAD)),
    ])
    ids = lambda **kw: [r.id for r in backend.orphan_results(kw.pop("state", None), 100, 10, **kw)]  # noqa: E731
    assert ids(state=int(State.DEAD)) == [5, 3, 2, 1]
    assert ids(queue="emails") == [5, 4, 3, 1]
    assert ids(task="send") == [5, 4, 2, 1]
    assert ids(state=int(State.DEAD), queue="emails", task="send") == [5, 1]
    assert ids(state=int(State.CANCELLED)) == []


def test_a_job_with_neither_message_nor_results_reads_as_two_nones(backend: Backend) -> None:
    assert backend.job(99) == (None, None)


def test_a_job_whose_message_is_gone_reads_as_its_results_row(backend: Backend) -> None:
    backend.save_results([_row(4)])
    assert backend.job(4) == (None, ResultRecord._make(_row(4)))


def test_job_messages_of_an_empty_store_is_empty(backend: Backend) -> None:
    assert backend.job_messages([State.READY, State.LEASED], 2**62, 10) == []
    assert backend.job_messages([], 2**62, 10) == []


def test_cancelling_an_unknown_job_says_finished_and_asks_nothing(backend: Backend) -> None:
    assert backend.request_cancel(424242) == "finished"
    assert backend.cancel_requested(424242) is False


def test_releasing_leases_nobody_holds_returns_them_all_as_stale(backend: Backend) -> None:
    assert backend.release(1, []) == []
    assert backend.release(1, [(11, 1), (12, 2)]) == [11, 12]


# -- with messages (put and claim) ---------------------------------------------------------


def test_cancelling_a_ready_job_cancels_it_and_frees_its_place_in_the_queue(backend: Backend) -> None:
    qid = _queue(backend, max_depth=2)
    mid = _put(backend, qid)
    _put(backend, qid)
    assert backend.room(qid) == (2, 2)
    before = backend.clock()
    assert backend.request_cancel(mid) == "cancelled"
    message = backend.message(mid)
    assert message is not None and message.state == State.CANCELLED
    assert message.finished_at is not None and message.finished_at >= before
    assert message.cancel == 0
    assert backend.room(qid) == (1, 2)
    assert backend.request_cancel(mid) == "finished"  # only once
    assert backend.room(qid) == (1, 2)


def test_cancelling_a_delayed_job_cancels_it(backend: Backend) -> None:
    qid = _queue(backend)
    mid = _put(backend, qid, delay=3600)
    assert backend.request_cancel(mid) == "cancelled"
    assert backend.job(mid)[0].state == State.CANCELLED  # type: ignore[union-attr]
    assert _claim(backend, qid) == []


def test_cancelling_a_running_job_sets_a_flag_that_survives_reopening(
    open_backend: Callable[..., Backend],
) -> None:
    backend = open_backend()
    qid = _queue(backend)
    mid = _put(backend, qid)
    ((_, token),) = _claim(backend, qid)
    assert backend.cancel_requested(mid) is False
    assert backend.request_cancel(mid) == "requested"
    backend.close()
    again = open_backend()  # a restarted worker or another process
    assert again.cancel_requested(mid) is True
    message = again.message(mid)
    assert message is not None and message.state == State.LEASED and message.token == token
    assert message.cancel
    assert again.request_cancel(mid) == "requested"  # asking twice changes nothing


def test_cancelling_a_finished_job_says_finished(backend: Backend) -> None:
    qid = _queue(backend)
    mid = _put(backend, qid)
    ((_, token),) = _claim(backend, qid)
    assert backend.ack(qid, [(mid, token)], 0.0) == []
    assert backend.request_cancel(mid) == "finished"
    assert backend.cancel_requested(mid) is False


def test_release_gives_leases_back_ready_without_counting_the_attempt(backend: Backend) -> None:
    qid = _queue(backend)
    first, second = _put(backend, qid), _put(backend, qid)
    run_at = backend.message(first).run_at  # type: ignore[union-attr]
    claimed = _claim(backend, qid, 2)
    assert sorted(m for m, _ in claimed) == [first, second]
    assert backend.release(qid, claimed) == []
    for mid in (first, second):
        message = backend.message(mid)
        assert message is not None
        assert (message.state, message.attempts, message.token, message.lease_until) == (
            State.READY, 0, None, None)
    assert backend.message(first).run_at == run_at  # type: ignore[union-attr]
    assert sorted(m for m, _ in _claim(backend, qid, 2)) == [first, second]


def test_release_with_a_stale_token_changes_nothing_and_names_the_id(backend: Backend) -> None:
    qid = _queue(backend)
    first, second = _put(backend, qid), _put(backend, qid)
    claimed = dict(_claim(backend, qid, 2))
    before = backend.message(second)
    stale = [(first, claimed[first]), (second, claimed[second] + 1)]
    assert backend.release(qid, stale) == [second]
    assert backend.message(second) == before
    assert backend.message(first).state == State.READY  # type: ignore[union-attr]
    assert backend.release(qid, [(first, claimed[first])]) == [first]  # not leased any more


def test_a_job_reads_as_its_message_while_it_runs(backend: Backend) -> None:
    qid = _queue(backend)
    mid = _put(backend, qid)
    _claim(backend, qid)
    message, result = backend.job(mid)
    assert result is None
    assert message == backend.message(mid) and isinstance(message, MessageRecord)
    assert message.state == State.LEASED


def test_job_messages_page_by_state_newest_first(backend: Backend) -> None:
    qid = _queue(backend)
    ids = [_put(backend, qid) for _ in range(4)]
    delayed = _put(backend, qid, delay=3600)
    (leased, _), = _claim(backend, qid)
    assert leased == ids[0]
    ready = [State.READY]
    assert [m.id for m in backend.job_messages(ready, 2**62, 10)] == ids[:0:-1]
    assert [m.id for m in backend.job_messages(ready, ids[3], 1)] == [ids[2]]
    both = [State.LEASED, State.DELAYED]
    assert [m.id for m in backend.job_messages(both, 2**62, 10)] == [delayed, leased]
    assert backend.job_messages(both, 2**62, 10)[0] == backend.message(delayed)


def test_orphan_results_leave_out_jobs_whose_message_is_still_there(backend: Backend) -> None:
    qid = _queue(backend, retention=3600.0)
    mid = _put(backend, qid)
    backend.save_results([_row(mid), _row(mid + 1000)])
    assert [r.id for r in backend.orphan_results(None, 2**62, 10)] == [mid + 1000]


# -- PostgreSQL only: the same records as SQLite, and races between real connections -----


@pytest.fixture
def pg(pg_url: str, pg_schema: str) -> Any:
    """A PostgresBackend on this test's schema, and a factory for more on it."""
    from conftest_pg import require_psycopg

    require_psycopg()
    from liteq.backends.postgres import PostgresBackend

    opened: list[Any] = []

    def opener(**options: Any) -> Any:
        opened.append(PostgresBackend(pg_url, schema=pg_schema, **options))
        return opened[-1]

    yield opener
    for b in reversed(opened):
        b.close()


def _sql(b: Any, sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
    return b.execute(sql.replace("{s}", f'"{b.schema}"'), params)


def _pg_queue(b: Any, stripes: list[tuple[int, int]] = ()) -> int:  # type: ignore[assignment]
    """A queue made with SQL; *stripes* ``(cap, used)`` make it a counted one."""
    (qid,), = _sql(b, """
        INSERT INTO {s}.queues (name, max_depth, lease, max_attempts, retention, backoff_base,
            backoff_factor, backoff_max, backoff_jitter, created_at)
        VALUES ('jobs', %s, 30, 5, 0, 1, 2, 60, 0, 0) RETURNING id""",
        (sum(cap for cap, _ in stripes) or None,))
    for n, (cap, used) in enumerate(stripes):
        _sql(b, "INSERT INTO {s}.depth_stripes (qid, stripe, cap, used) VALUES (%s, %s, %s, %s)",
             (qid, n, cap, used))
    return int(qid)


def _pg_message(b: Any, qid: int, state: State, token: int | None = None) -> int:
    (mid,), = _sql(b, """
        INSERT INTO {s}.messages (qid, state, run_at, payload, enqueued_at, token, lease_until,
            attempts)
        VALUES (%s, %s, 0, '\\xa0', 0, %s, %s, %s) RETURNING id""",
        (qid, int(state), token, None if token is None else 1e12, int(token is not None)))
    return int(mid)


def _used(b: Any, qid: int) -> int:
    return int(_sql(b, "SELECT coalesce(sum(used), 0) FROM {s}.depth_stripes WHERE qid = %s",
                    (qid,))[0][0])


def _state(b: Any, mid: int) -> tuple[int, bool]:
    (row,) = _sql(b, "SELECT state, cancel FROM {s}.messages WHERE id = %s", (mid,))
    return int(row[0]), bool(row[1])


def _wait_until_blocked(pg_admin: Any, b: Any) -> None:
    """Return once another session of *b*'s database waits for a lock (no time limit
    but the test run's: the race below must be set up, not guessed by a sleep)."""
    (db,), = _sql(b, "SELECT current_database()")
    while not pg_admin.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'",
        (db,),
    ).fetchone()[0]:
        time.sleep(0.01)


def _in_thread(call: Callable[[], Any]) -> Callable[[], Any]:
    """Start *call* in a thread; the returned function joins it and gives its result."""
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(call()))
    thread.start()

    def result() -> Any:
        thread.join()
        return out[0]

    return result


@pytest.mark.postgres
def test_results_rows_read_back_identically_on_sqlite_and_postgresql(pg: Any, tmp_path: Any) -> None:
    from liteq.backends.sqlite import SQLiteBackend

    lite = SQLiteBackend(str(tmp_path / "same.db"))
    post = pg()
    rows = [_row(1, finished_at=5, duration=0), _row(2, state=State.CANCELLED, value=None),
            _row(3, expires_at=50.0, task=None, call=None), _row(2, error="last wins")]
    try:
        for b in (lite, post):
            b.save_results(rows)
        for mid in (1, 2, 3, 4):
            assert lite.result(mid) == post.result(mid)
            assert _types(lite.result(mid) or ()) == _types(post.result(mid) or ())
            assert lite.job(mid) == post.job(mid)
        assert lite.orphan_results(None, 10, 10) == post.orphan_results(None, 10, 10)
        assert lite.prune_results(100.0) == post.prune_results(100.0) == 1
    finally:
        lite.close()


@pytest.mark.postgres
def test_a_cancel_racing_a_release_waits_for_it_and_then_cancels(pg: Any, pg_admin: Any) -> None:
    holder, canceller = pg(), pg()
    qid = _pg_queue(holder, [(10, 1)])
    mid = _pg_message(holder, qid, State.LEASED, token=77)
    with holder.transaction():
        assert holder.release(qid, [(mid, 77)]) == []
        answer = _in_thread(lambda: canceller.request_cancel(mid))
        _wait_until_blocked(pg_admin, holder)
    # Deciding from the row it saw first, the cancel would have said "requested" to a
    # worker that is gone, or "finished" for a message still waiting to run.
    assert answer() == "cancelled"
    assert _state(holder, mid) == (State.CANCELLED, False)
    assert _used(holder, qid) == 0


@pytest.mark.postgres
def test_a_cancel_racing_a_claim_waits_for_it_and_then_asks_the_holder(pg: Any, pg_admin: Any) -> None:
    claimer, canceller = pg(), pg()
    qid = _pg_queue(claimer, [(10, 1)])
    mid = _pg_message(claimer, qid, State.READY)
    with claimer.transaction():
        _sql(claimer, "UPDATE {s}.messages SET state = 2, token = 5, lease_until = 1e12 "
                      "WHERE id = %s", (mid,))
        answer = _in_thread(lambda: canceller.request_cancel(mid))
        _wait_until_blocked(pg_admin, claimer)
    assert answer() == "requested"
    assert _state(claimer, mid) == (State.LEASED, True)
    assert canceller.cancel_requested(mid) is True
    assert _used(claimer, qid) == 1  # still running: still counted


@pytest.mark.postgres
def test_of_many_concurrent_cancels_one_cancels_and_the_depth_drops_once(pg: Any) -> None:
    b = pg()
    qid = _pg_queue(b, [(4, 2), (4, 2)])
    mid = _pg_message(b, qid, State.READY)
    barrier = threading.Barrier(8)
    answers: list[str] = []

    def cancel() -> None:
        barrier.wait()
        answers.append(b.request_cancel(mid))  # each thread: its own connection

    threads = [threading.Thread(target=cancel) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(answers) == ["cancelled"] + ["finished"] * 7
    assert _used(b, qid) == 3


@pytest.mark.postgres
def test_a_cancel_frees_depth_on_a_stripe_nobody_holds_without_waiting(pg: Any) -> None:
    holder = pg()
    canceller = pg(busy_timeout=2.0)  # a wait for the held stripe would raise DatabaseBusy
    qid = _pg_queue(holder, [(2, 1), (2, 1)])
    mid = _pg_message(holder, qid, State.READY)
    with holder.transaction():
        _sql(holder, "SELECT used FROM {s}.depth_stripes WHERE qid = %s AND stripe = 0 FOR UPDATE",
             (qid,))
        assert canceller.request_cancel(mid) == "cancelled"
    rows = _sql(holder, "SELECT stripe, used FROM {s}.depth_stripes WHERE qid = %s ORDER BY stripe",
                (qid,))
    assert rows == [(0, 1), (1, 0)]


@pytest.mark.postgres
def test_releasing_a_lease_another_claim_took_meanwhile_changes_nothing(pg: Any, pg_admin: Any) -> None:
    first, second = pg(), pg()
    qid = _pg_queue(first)
    mid = _pg_message(first, qid, State.LEASED, token=1)
    with second.transaction():  # the lease expired and another worker claims it
        _sql(second, "UPDATE {s}.messages SET token = 2, attempts = 2 WHERE id = %s", (mid,))
        lost = _in_thread(lambda: first.release(qid, [(mid, 1)]))
        _wait_until_blocked(pg_admin, first)
    assert lost() == [mid]
    assert _sql(first, "SELECT state, token, attempts FROM {s}.messages WHERE id = %s",
                (mid,)) == [(State.LEASED, 2, 2)]


@pytest.mark.postgres
def test_release_on_postgresql_gives_leases_back_without_counting_the_attempt(pg: Any) -> None:
    b = pg()
    qid = _pg_queue(b)
    first, second = _pg_message(b, qid, State.LEASED, token=9), _pg_message(b, qid, State.LEASED, token=9)
    # One statement for the whole batch; the item given twice finds its lease gone.
    assert b.release(qid, [(first, 9), (second, 9), (first, 9), (second, 8)]) == [first, second]
    for mid in (first, second):
        message = b.job(mid)[0]
        assert message is not None
        assert (message.state, message.attempts, message.token, message.lease_until,
                message.run_at) == (State.READY, 0, None, None, 0.0)


@pytest.mark.postgres
def test_a_cancel_request_on_postgresql_is_seen_by_every_later_connection(pg: Any) -> None:
    first = pg()
    qid = _pg_queue(first)
    mid = _pg_message(first, qid, State.LEASED, token=3)
    assert first.request_cancel(mid) == "requested"
    first.close()
    again = pg()  # a restarted worker
    assert again.cancel_requested(mid) is True
    assert again.job_messages([State.LEASED], 2**62, 5)[0].cancel is True


@pytest.mark.postgres
def test_job_messages_on_postgresql_page_by_state_newest_first(pg: Any) -> None:
    b = pg()
    qid = _pg_queue(b)
    ready = [_pg_message(b, qid, State.READY) for _ in range(3)]
    leased = _pg_message(b, qid, State.LEASED, token=4)
    assert [m.id for m in b.job_messages([State.READY], 2**62, 10)] == ready[::-1]
    assert [m.id for m in b.job_messages([State.READY, State.LEASED], ready[2], 2)] == ready[1::-1]
    assert [m.id for m in b.job_messages([State.LEASED, State.DELAYED], 2**62, 10)] == [leased]
    (message,) = b.job_messages([State.LEASED], 2**62, 10)
    assert b.job(leased) == (message, None)
    assert _types(message) == ["int", "int", "int", "int", "float", "bytes", "NoneType",
                               "NoneType", "int", "float", "float", "int", "NoneType",
                               "NoneType", "NoneType", "NoneType", "bool",
                               "NoneType", "NoneType"]  # flow, flow_key (issue 19)
