"""The schedule verbs of the storage interface on every engine (issue 17, step B3):
schedule rows, their history, and the tick that fires each (schedule, fire time) once.

The shared tests take ``open_backend`` (``tests/engines.py``) with a clock the test moves,
and run on SQLite and PostgreSQL alike. The PostgreSQL-only tests at the end race real
connections: several schedulers with no leader, a tick holding rows, a delete waiting.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from helpers import FakeClock

from liteq.backends import ScheduleRecord, ScheduleRun, State
from liteq.backends.base import Backend

START = 1_000_000.0

# -- helpers ---------------------------------------------------------------------------


def _values(name: str = "nightly", **fields: Any) -> dict[str, Any]:
    """The values ``schedule_upsert`` takes: an interval schedule onto queue "reports"."""
    base = {"name": name, "kind": "every", "spec": "60", "tz": None, "target": "queue",
            "queue": "reports", "payload": b"\xa1apayload", "misfire": "skip",
            "misfire_cap": 1, "next_run_at": START + 60}
    return {**base, **fields}


def every(rec: ScheduleRecord, now: float) -> tuple[list[float], float | None]:
    """A plan for tests: every fire of interval ``spec`` in [next_run_at, now]."""
    first, step = rec.next_run_at, float(rec.spec)
    if first is None or first > now:
        return [], first
    k = math.floor((now - first) / step)
    return [first + i * step for i in range(k + 1)], first + (k + 1) * step


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def b(open_backend: Callable[..., Backend], clock: FakeClock) -> Backend:
    return open_backend(clock=clock)


def _messages(backend: Backend, queue: str) -> list[Any]:
    row = backend.queue_row(queue)
    return [] if row is None else backend.peek(row.id, None, 100)


# -- rows ------------------------------------------------------------------------------


def test_an_upserted_schedule_reads_back_enabled_with_the_same_values_and_types(b: Backend) -> None:
    made = b.schedule_upsert(_values(next_run_at=int(START + 60), misfire_cap=3))
    assert made == b.schedule("nightly")
    assert (made.name, made.kind, made.spec, made.tz, made.target, made.queue, made.payload,
            made.misfire, made.misfire_cap) == ("nightly", "every", "60", None, "queue",
                                                "reports", b"\xa1apayload", "skip", 3)
    assert made.enabled
    assert made.next_run_at == START + 60 and isinstance(made.next_run_at, float)
    assert (made.last_run_at, made.last_job_id) == (None, None)
    assert made.created_at == made.updated_at == START
    assert b.schedule("other") is None


def test_schedules_are_listed_by_name_in_byte_order(b: Backend) -> None:
    for name in ("b", "a", "B", "a_b"):
        b.schedule_upsert(_values(name))
    assert [s.name for s in b.schedules()] == ["B", "a", "a_b", "b"]


def test_replacing_a_schedule_with_the_same_timing_keeps_its_planned_next_fire(
        b: Backend, clock: FakeClock) -> None:
    first = b.schedule_upsert(_values(tz="Europe/Berlin"))
    clock.advance(5)
    again = b.schedule_upsert(_values(tz="Europe/Berlin", next_run_at=START + 999,
                                      payload=b"\xa0", queue="other"))
    assert again.next_run_at == START + 60
    assert (again.id, again.created_at, again.updated_at) == (first.id, START, START + 5)
    assert (again.payload, again.queue) == (b"\xa0", "other")


@pytest.mark.parametrize("change", [{"spec": "30"}, {"kind": "at"}, {"tz": "UTC"}])
def test_replacing_a_schedule_with_new_timing_takes_the_new_next_fire(
        b: Backend, change: dict[str, Any]) -> None:
    b.schedule_upsert(_values())
    assert b.schedule_upsert(_values(next_run_at=START + 30, **change)).next_run_at == START + 30


def test_replacing_a_paused_schedule_keeps_it_paused(b: Backend) -> None:
    b.schedule_upsert(_values())
    assert b.schedule_enable("nightly", False, None)
    assert not b.schedule_upsert(_values(spec="30")).enabled


def test_pausing_and_resuming_may_move_the_next_fire_and_an_unknown_name_is_false(
        b: Backend, clock: FakeClock) -> None:
    b.schedule_upsert(_values())
    clock.advance(1)
    assert b.schedule_enable("nightly", False, None)
    paused = b.schedule("nightly")
    assert paused is not None and not paused.enabled and paused.next_run_at == START + 60
    assert paused.updated_at == START + 1
    assert b.schedule_enable("nightly", True, START + 120)
    resumed = b.schedule("nightly")
    assert resumed is not None and resumed.enabled and resumed.next_run_at == START + 120
    assert not b.schedule_enable("missing", True, None)


def test_next_schedule_due_is_the_earliest_enabled_next_fire(b: Backend) -> None:
    assert b.next_schedule_due() == math.inf
    b.schedule_upsert(_values("a", next_run_at=START + 50))
    b.schedule_upsert(_values("b", next_run_at=START + 70))
    b.schedule_upsert(_values("done", next_run_at=None))
    assert b.next_schedule_due() == START + 50
    b.schedule_enable("a", False, None)
    assert b.next_schedule_due() == START + 70


def test_deleting_a_schedule_deletes_its_history_but_not_what_it_enqueued(
        b: Backend, clock: FakeClock) -> None:
    b.schedule_upsert(_values())
    clock.advance(60)
    assert len(b.schedule_tick(every)) == 1
    assert b.schedule_delete("nightly")
    assert b.schedule("nightly") is None
    assert b.schedule_runs("nightly", 10) == []
    assert len(_messages(b, "reports")) == 1
    assert not b.schedule_delete("nightly")


# -- the tick --------------------------------------------------------------------------


def test_a_due_schedule_fires_once_into_a_queue_created_for_it(b: Backend, clock: FakeClock) -> None:
    b.schedule_upsert(_values())
    assert b.schedule_tick(every) == []  # not due yet
    clock.advance(60)
    (fire,) = b.schedule_tick(every)
    assert (fire.schedule, fire.fire_at) == ("nightly", START + 60)
    (msg,) = _messages(b, "reports")
    assert (msg.id, msg.payload, msg.key, msg.state) == (
        fire.job_id, b"\xa1apayload", f"schedule:nightly:{START + 60!r}", State.READY)
    after = b.schedule("nightly")
    assert after is not None
    assert (after.next_run_at, after.last_run_at, after.last_job_id) == (
        START + 120, START + 60, fire.job_id)
    assert b.schedule_runs("nightly", 10) == [ScheduleRun(START + 60, START + 60, fire.job_id)]
    assert b.schedule_tick(every) == []  # a second tick at the same time fires nothing
    assert b.queue_row("reports") is not None
    assert b.queue_row("reports").max_depth is None  # type: ignore[union-attr]


def test_missed_fires_are_all_enqueued_in_order_and_the_history_is_newest_first(
        b: Backend, clock: FakeClock) -> None:
    b.schedule_upsert(_values())
    clock.advance(60 * 3 + 10)
    fires = b.schedule_tick(every)
    assert [f.fire_at for f in fires] == [START + 60, START + 120, START + 180]
    assert len({f.job_id for f in fires}) == 3
    runs = b.schedule_runs("nightly", 2)
    assert [r.fire_at for r in runs] == [START + 180, START + 120]
    assert all(r.late == START + 190 - r.fire_at for r in runs)


def test_a_fire_time_already_recorded_is_never_enqueued_again(b: Backend, clock: FakeClock) -> None:
    b.schedule_upsert(_values())
    clock.advance(60)

    def stuck(rec: ScheduleRecord, now: float) -> tuple[list[float], float | None]:
        return [START + 60], rec.next_run_at  # a plan that never advances

    assert len(b.schedule_tick(stuck)) == 1
    assert b.schedule_tick(stuck) == []
    assert len(_messages(b, "reports")) == 1


def test_paused_schedules_do_not_fire(b: Backend, clock: FakeClock) -> None:
    b.schedule_upsert(_values())
    b.schedule_enable("nightly", False, None)
    clock.advance(600)
    assert b.schedule_tick(every) == []


def test_running_one_schedule_now_fires_at_now_and_keeps_its_next_fire(
        b: Backend, clock: FakeClock) -> None:
    b.schedule_upsert(_values())
    b.schedule_upsert(_values("other", next_run_at=START))
    clock.advance(7)
    (fire,) = b.schedule_tick(every, only="nightly", fire_now=True)
    assert (fire.schedule, fire.fire_at) == ("nightly", START + 7)
    assert b.schedule("nightly").next_run_at == START + 60  # type: ignore[union-attr]
    assert b.schedule_tick(every, only="missing", fire_now=True) == []


def test_a_tick_bounded_by_rows_takes_the_earliest_due_and_leaves_the_rest_due(
        b: Backend, clock: FakeClock) -> None:
    for i, name in enumerate(["c", "a", "b"]):
        b.schedule_upsert(_values(name, next_run_at=START + 10 + i))
    clock.advance(60)
    assert [f.schedule for f in b.schedule_tick(every, limits=(2, 100, 60.0))] == ["c", "a"]
    assert [f.schedule for f in b.schedule_tick(every, limits=(2, 100, 60.0))] == ["b"]


def test_a_tick_bounded_by_fires_stops_after_the_schedule_that_reached_it(
        b: Backend, clock: FakeClock) -> None:
    b.schedule_upsert(_values("a", next_run_at=START + 1, spec="10"))
    b.schedule_upsert(_values("b", next_run_at=START + 2, spec="10"))
    clock.advance(30)
    fires = b.schedule_tick(every, limits=(10, 2, 60.0))
    assert [f.schedule for f in fires] == ["a", "a", "a"]  # the one at hand is finished
    assert b.next_schedule_due() == START + 2
    assert [f.schedule for f in b.schedule_tick(every, limits=(10, 2, 60.0))] == ["b"] * 3


def test_a_tick_in_a_transaction_that_rolls_back_fires_nothing(b: Backend, clock: FakeClock) -> None:
    b.schedule_upsert(_values())
    clock.advance(60)
    with pytest.raises(RuntimeError), b.transaction():
        assert len(b.schedule_tick(every)) == 1
        raise RuntimeError("the application's block fails")
    assert b.schedule_runs("nightly", 10) == []
    assert b.next_schedule_due() == START + 60
    assert len(b.schedule_tick(every)) == 1


def test_pruning_keeps_each_schedules_newest_runs(b: Backend, clock: FakeClock) -> None:
    b.schedule_upsert(_values("a", spec="10", next_run_at=START + 10))
    b.schedule_upsert(_values("b", spec="10", next_run_at=START + 10))
    clock.advance(50)
    assert len(b.schedule_tick(every)) == 10
    assert b.prune_schedule_runs(keep=2) == 6
    assert [r.fire_at for r in b.schedule_runs("a", 10)] == [START + 50, START + 40]
    clock.advance(100)
    assert b.prune_schedule_runs(keep=10, older_than=60) == 4
    assert b.prune_schedule_runs() == 0


# -- PostgreSQL only: several schedulers, no leader ---------------------------------------


@pytest.fixture
def pg(pg_url: str, pg_schema: str) -> Any:
    """A factory of PostgresBackends on this test's schema (each its own connections)."""
    from conftest_pg import require_psycopg

    require_psycopg()
    from liteq.backends.postgres import PostgresBackend

    opened: list[Any] = []

    def opener(**options: Any) -> Any:
        opened.append(PostgresBackend(pg_url, schema=pg_schema, **options))
        return opened[-1]

    yield opener
    for one in reversed(opened):
        one.close()


def _wait_until_blocked(pg_admin: Any, b: Any) -> None:
    """Return once another session of *b*'s database waits for a lock."""
    (db,), = b.execute("SELECT current_database()")
    while not pg_admin.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'",
        (db,),
    ).fetchone()[0]:
        time.sleep(0.01)


@pytest.mark.postgres
def test_three_schedulers_ticking_together_fire_every_time_exactly_once(pg: Any) -> None:
    step, names = 0.05, [f"s{i}" for i in range(8)]
    setup = pg()
    start = setup.clock() + 0.2
    for i, name in enumerate(names):
        setup.schedule_upsert(_values(name, spec=str(step), next_run_at=start,
                                      queue=f"q{i % 3}"))
    barrier = threading.Barrier(3)
    fired: list[list[Any]] = [[], [], []]
    errors: list[BaseException] = []

    def scheduler(n: int) -> None:
        mine = pg()
        try:
            barrier.wait()
            until = time.monotonic() + 3.0
            while time.monotonic() < until:
                fired[n].extend(mine.schedule_tick(every, limits=(3, 50, 1.0)))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=scheduler, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    every_fire = [(f.schedule, f.fire_at) for part in fired for f in part]
    assert len(every_fire) == len(set(every_fire))  # no fire twice
    assert all(part for part in fired)  # no leader: each scheduler fired some
    for name in names:
        row = setup.schedule(name)
        runs = sorted(r.fire_at for r in setup.schedule_runs(name, 10_000))
        assert runs == sorted(t for s, t in every_fire if s == name)
        # None missing: every step from the first to the last planned one.
        assert runs[0] == start and row.next_run_at == pytest.approx(runs[-1] + step)
        assert len(runs) == round((runs[-1] - start) / step) + 1 >= 20
    jobs = [int(m.id) for q in ("q0", "q1", "q2") for m in _messages_all(setup, q)]
    assert sorted(jobs) == sorted(f.job_id for part in fired for f in part)


def _messages_all(b: Any, queue: str) -> list[Any]:
    row = b.queue_row(queue)
    return b.peek(row.id, None, 100_000)


@pytest.mark.postgres
def test_a_tick_skips_a_schedule_another_tick_holds_instead_of_waiting(pg: Any) -> None:
    clock = FakeClock(START)
    a, b = pg(clock=clock), pg(clock=clock, busy_timeout=5.0)
    a.schedule_upsert(_values("held", next_run_at=START))
    a.schedule_upsert(_values("free", next_run_at=START))
    with a.transaction():
        a.execute(f'SELECT 1 FROM "{a.schema}".schedules WHERE name = %s FOR UPDATE', ("held",))
        assert [f.schedule for f in b.schedule_tick(every)] == ["free"]
    assert [f.schedule for f in b.schedule_tick(every)] == ["held"]


@pytest.mark.postgres
def test_deleting_a_schedule_a_tick_holds_waits_and_deletes_the_history_it_wrote(
        pg: Any, pg_admin: Any) -> None:
    clock = FakeClock(START)
    a, b = pg(clock=clock), pg(clock=clock)
    a.schedule_upsert(_values(next_run_at=START))
    result: list[bool] = []
    with a.transaction():
        assert len(a.schedule_tick(every)) == 1
        deleter = threading.Thread(target=lambda: result.append(b.schedule_delete("nightly")))
        deleter.start()
        _wait_until_blocked(pg_admin, a)
    deleter.join()
    assert result == [True]
    assert a.schedule_runs("nightly", 10) == []


@pytest.mark.postgres
def test_concurrent_upserts_with_unchanged_timing_never_move_the_next_fire(pg: Any) -> None:
    first = pg()
    first.schedule_upsert(_values())
    barrier = threading.Barrier(4)

    def replace(n: int) -> None:
        mine = pg()
        barrier.wait()
        for i in range(20):
            mine.schedule_upsert(_values(next_run_at=START + 1000 + n * 100 + i))

    threads = [threading.Thread(target=replace, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert first.schedule("nightly").next_run_at == START + 60
