"""Schedules through the Python API, against real files: timing (cron with time zones
and DST, every, at), misfire policies with an injected clock, definitions refused at
the edge with nothing written, pause/resume/run_now/history."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import Counter

import pytest
from dbsql import sql
from helpers import PATIENCE, FakeClock, wait_until

import liteq
from liteq import codec
from liteq.scheduler import (
    SHELL_QUEUE,
    SHELL_TASK,
    Scheduler,
    schedule,
    schedules,
    unschedule,
)

pytestmark = pytest.mark.every_engine


def iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat()


def at(text: str) -> float:
    """Epoch seconds of a hand-written ISO 8601 time with its UTC offset."""
    return dt.datetime.fromisoformat(text).timestamp()


def schedule_rows(db: liteq.Database) -> list[tuple[object, ...]]:
    return sql(db, "SELECT * FROM schedules ORDER BY id")


def fired(db: liteq.Database, name: str) -> list[float]:
    return [r[0] for r in sql(db,
        "SELECT fire_at FROM schedule_runs WHERE schedule = ? ORDER BY fire_at", (name,))]


# -- next fire times: cron expressions and time zones, DST days included -----------------
#
# Expected values are written by hand from the calendar and the DST rules of each zone
# (EU: last Sunday of March 02:00 CET -> 03:00 CEST, last Sunday of October 03:00 CEST
# -> 02:00 CET; US: second Sunday of March 02:00 EST -> 03:00 EDT, first Sunday of
# November 02:00 EDT -> 01:00 EST; Sydney: first Sunday of October 02:00 AEST -> 03:00
# AEDT, first Sunday of April 03:00 AEDT -> 02:00 AEST), and cron's (Debian's) rule: a
# job at a fixed local time that falls in the spring-forward gap runs when the gap ends,
# one in the repeated hour runs once (the first time); a job with a wildcard minute or
# hour follows real elapsed time.

NEXT_TIMES = [
    ("30 2 * * *", "Europe/Berlin", "2024-03-30T12:00:00+01:00",  # spring forward
     ["2024-03-31T03:00:00+02:00", "2024-04-01T02:30:00+02:00", "2024-04-02T02:30:00+02:00"]),
    ("30 2 * * *", "Europe/Berlin", "2024-10-26T12:00:00+02:00",  # fall back: once
     ["2024-10-27T02:30:00+02:00", "2024-10-28T02:30:00+01:00"]),
    ("30 * * * *", "Europe/Berlin", "2024-03-31T00:45:00+01:00",  # no 02:30 that day
     ["2024-03-31T01:30:00+01:00", "2024-03-31T03:30:00+02:00", "2024-03-31T04:30:00+02:00"]),
    ("30 * * * *", "Europe/Berlin", "2024-10-27T01:45:00+02:00",  # 02:30 twice
     ["2024-10-27T02:30:00+02:00", "2024-10-27T02:30:00+01:00", "2024-10-27T03:30:00+01:00"]),
    ("0 */6 * * *", "Europe/Berlin", "2024-03-30T20:00:00+01:00",
     ["2024-03-31T00:00:00+01:00", "2024-03-31T06:00:00+02:00", "2024-03-31T12:00:00+02:00"]),
    ("@daily", "Europe/Berlin", "2024-10-26T12:00:00+02:00",
     ["2024-10-27T00:00:00+02:00", "2024-10-28T00:00:00+01:00"]),
    ("0 2 * * *", "America/New_York", "2024-03-09T12:00:00-05:00",  # 02:00 does not exist
     ["2024-03-10T03:00:00-04:00", "2024-03-11T02:00:00-04:00"]),
    ("0 1 * * *", "America/New_York", "2024-11-02T12:00:00-04:00",  # 01:00 twice: once
     ["2024-11-03T01:00:00-04:00", "2024-11-04T01:00:00-05:00"]),
    ("*/30 1 * * *", "America/New_York", "2024-11-03T00:50:00-04:00",  # both 01:xx hours
     ["2024-11-03T01:00:00-04:00", "2024-11-03T01:30:00-04:00", "2024-11-03T01:00:00-05:00",
      "2024-11-03T01:30:00-05:00", "2024-11-04T01:00:00-05:00"]),
    ("0 9 * * MON-FRI", "America/New_York", "2024-03-08T10:00:00-05:00",  # a Friday
     ["2024-03-11T09:00:00-04:00", "2024-03-12T09:00:00-04:00"]),
    ("30 2 * * *", "Australia/Sydney", "2024-10-05T12:00:00+10:00",
     ["2024-10-06T03:00:00+11:00", "2024-10-07T02:30:00+11:00"]),
    ("30 2 * * *", "Australia/Sydney", "2024-04-06T12:00:00+11:00",
     ["2024-04-07T02:30:00+11:00", "2024-04-08T02:30:00+10:00"]),
    ("0 12 * * *", "Asia/Kolkata", "2024-06-01T00:00:00+00:00",
     ["2024-06-01T12:00:00+05:30", "2024-06-02T12:00:00+05:30"]),
    ("0 0 L * *", "UTC", "2024-01-31T00:00:00+00:00",  # last day of the month
     ["2024-02-29T00:00:00+00:00", "2024-03-31T00:00:00+00:00", "2024-04-30T00:00:00+00:00"]),
    ("*/20 * * * * *", "UTC", "2024-01-01T00:00:00+00:00",  # seconds first
     ["2024-01-01T00:00:20+00:00", "2024-01-01T00:00:40+00:00", "2024-01-01T00:01:00+00:00"]),
    ("0 0 29 2 *", "UTC", "2025-01-01T00:00:00+00:00",
     ["2028-02-29T00:00:00+00:00", "2032-02-29T00:00:00+00:00"]),
    ("0 10 * * SUN#1", "UTC", "2024-01-01T00:00:00+00:00",
     ["2024-01-07T10:00:00+00:00", "2024-02-04T10:00:00+00:00"]),
    ("15 10 1 * MON", "UTC", "2024-04-25T00:00:00+00:00",  # day of month OR weekday
     ["2024-04-29T10:15:00+00:00", "2024-05-01T10:15:00+00:00", "2024-05-06T10:15:00+00:00"]),
]


@pytest.mark.parametrize("expr,tz,after,expected", NEXT_TIMES,
                         ids=[f"{e} {z} after {a}" for e, z, a, _ in NEXT_TIMES])
def test_next_fire_times_match_the_calendar_including_dst_days(
        db_target: str, expr: str, tz: str, after: str, expected: list[str]) -> None:
    with liteq.connect(db_target, clock=lambda: at(after)) as db:
        s = schedule(db, "s", cron=expr, tz=tz, queue="q", payload=None)
        got = s.next(len(expected))
        assert [iso(d.timestamp()) for d in got] == [iso(at(e)) for e in expected]
        assert s.next_run_at == at(expected[0])
        # in the schedule's own zone, with the offset written above
        assert [d.isoformat() for d in got] == expected


def test_a_cron_schedule_fires_once_on_each_day_across_a_fall_back_night(db_target: str) -> None:
    clock = FakeClock(at("2024-10-25T12:00:00+02:00"))
    with liteq.connect(db_target, clock=clock) as db:
        schedule(db, "night", cron="30 2 * * *", tz="Europe/Berlin", queue="q", payload="x")
        scheduler = Scheduler(db)
        for _ in range(4):
            nxt = sql(db, "SELECT next_run_at FROM schedules")[0][0]
            clock.now = nxt
            assert len(scheduler.tick()) == 1
            clock.advance(1800)  # the scheduler keeps ticking through the repeated hour
            assert scheduler.tick() == []
        assert fired(db, "night") == [at("2024-10-26T02:30:00+02:00"),
                                      at("2024-10-27T02:30:00+02:00"),
                                      at("2024-10-28T02:30:00+01:00"),
                                      at("2024-10-29T02:30:00+01:00")]


def test_describe_uses_cronsims_explanation_and_plain_words_for_every_and_at(
        db: liteq.Database) -> None:
    s = schedule(db, "a", cron="0 3 * * *", tz="Europe/Berlin", task="app.report")
    assert s.description == "At 03:00 every day (Europe/Berlin)"
    assert schedule(db, "b", every=300, task="t").description == "every 5 minutes"
    assert schedule(db, "c", every=1.5, task="t").description == "every 1.5 seconds"
    c = schedule(db, "d", at="2030-01-01T09:00:00+01:00", task="t")
    assert c.description == "once, at 2030-01-01T09:00:00+01:00"
    e = schedule(db, "e", at="2030-01-01T09:00", tz="America/New_York", task="t")
    assert e.description == "once, at 2030-01-01T09:00:00-05:00"
    assert e.next_run_at == at("2030-01-01T14:00:00+00:00")


# -- misfire policies, with an injected clock ---------------------------------------------

def test_a_scheduler_down_for_ten_intervals_fires_0_skip_1_once_10_all(clocked_db, clock) -> None:
    db, t0 = clocked_db, clock.now
    for policy in ("skip", "once", "all"):
        schedule(db, policy, every=10, queue="ticks", payload=policy, misfire=policy)
    scheduler = Scheduler(db)
    clock.advance(10)
    assert Counter(f.schedule for f in scheduler.tick()) == {"skip": 1, "once": 1, "all": 1}

    clock.advance(10 * 10 + 7)  # down: t0+20 ... t0+110 were due; back 7 s after the last
    fires = scheduler.tick()
    by = Counter(f.schedule for f in fires)
    assert (by["skip"], by["once"], by["all"]) == (0, 1, 10)
    assert [f.fire_at for f in fires if f.schedule == "once"] == [t0 + 110]
    assert sorted(f.fire_at for f in fires if f.schedule == "all") == \
        [t0 + 10 * k for k in range(2, 12)]
    for s in schedules(db):
        assert s.next_run_at == t0 + 120, "each goes on with its next future time"

    clock.advance(3)  # back to normal: each fires on time again
    assert Counter(f.schedule for f in scheduler.tick()) == {"skip": 1, "once": 1, "all": 1}
    # the queue holds exactly what schedule_runs recorded, each with its own key
    msgs = db.queue("ticks").peek(100)
    runs = sql(db, "SELECT schedule, fire_at, job_id FROM schedule_runs")
    assert len(msgs) == len(runs) == 3 + 11 + 3
    assert sorted(m.id for m in msgs) == sorted(r[2] for r in runs)
    assert {m.key for m in msgs} == {f"schedule:{r[0]}:{r[1]!r}" for r in runs}
    assert Counter(m.payload for m in msgs) == {"skip": 2, "once": 3, "all": 12}


def test_a_cron_schedule_down_for_ten_minutes_fires_0_skip_1_once_10_all(clocked_db, clock) -> None:
    db = clocked_db
    for policy in ("skip", "once", "all"):
        schedule(db, policy, cron="* * * * *", queue="ticks", payload=policy, misfire=policy)
    first = sql(db, "SELECT next_run_at FROM schedules")[0][0]
    assert first % 60 == 0 and 0 < first - clock.now <= 60
    scheduler = Scheduler(db)
    clock.now = first
    assert len(scheduler.tick()) == 3
    clock.advance(10 * 60 + 40)  # ten minutes missed, back 40 s after the last
    by = Counter(f.schedule for f in scheduler.tick())
    assert (by["skip"], by["once"], by["all"]) == (0, 1, 10)
    assert sorted(fired(db, "all")) == [first + 60 * k for k in range(11)]
    assert fired(db, "once") == [first, first + 600]


def test_misfire_all_fires_only_the_latest_cap_fires(clocked_db, clock) -> None:
    db, t0 = clocked_db, clock.now
    schedule(db, "capped", every=10, queue="q", payload=1, misfire="all", misfire_cap=4)
    clock.advance(10 * 10 + 5)
    fires = Scheduler(db).tick()
    assert [f.fire_at for f in fires] == [t0 + 70, t0 + 80, t0 + 90, t0 + 100]


def test_a_fire_a_little_late_is_on_time_even_for_skip(clocked_db, clock) -> None:
    db, t0 = clocked_db, clock.now
    schedule(db, "hourly", every=3600, queue="q", payload=1, misfire="skip")
    schedule(db, "tens", every=10, queue="q", payload=1, misfire="skip")
    clock.advance(3600 + 59)  # 59 s late: within the 60 s grace
    names = [f.schedule for f in Scheduler(db).tick()]
    assert "hourly" in names  # tens: its latest fire is 9 s late, over half its 10 s period
    assert "tens" not in names
    clock.now = t0 + 2 * 3600 + 61  # 61 s late: a misfire, skipped
    assert "hourly" not in [f.schedule for f in Scheduler(db).tick()]


def test_a_per_second_schedule_down_for_a_day_catches_up_without_walking_every_second(
        clocked_db, clock) -> None:
    db = clocked_db
    for policy in ("skip", "once", "all"):
        schedule(db, policy, cron="* * * * * *", queue="q", payload=policy, misfire=policy,
                 misfire_cap=100)
    clock.advance(86400 + 0.5)
    now = clock.now
    by = Counter(f.schedule for f in Scheduler(db).tick())
    assert (by["skip"], by["once"], by["all"]) == (1, 1, 100)  # the latest is 0.5 s late
    assert fired(db, "all") == [float(int(now) - k) for k in range(99, -1, -1)]
    assert {s.next_run_at for s in schedules(db)} == {float(int(now) + 1)}


def test_an_at_schedule_fires_once_and_declaring_it_again_does_not_fire_it_again(
        clocked_db, clock) -> None:
    db, t0 = clocked_db, clock.now
    s = schedule(db, "launch", at=t0 + 30, queue="q", payload="go")
    scheduler = Scheduler(db)
    assert scheduler.tick() == []
    clock.advance(45)
    assert [f.fire_at for f in scheduler.tick()] == [t0 + 30]
    assert s.refresh().state == "finished" and s.next_run_at is None
    clock.advance(3600)
    schedule(db, "launch", at=t0 + 30, queue="q", payload="go")  # the app starts again
    assert scheduler.tick() == []
    assert len(db.queue("q")) == 1


def test_declaring_a_schedule_again_keeps_its_next_fire_so_a_restart_misses_nothing(
        clocked_db, clock) -> None:
    db, t0 = clocked_db, clock.now
    schedule(db, "job", every=10, task="app.job")
    clock.advance(35)  # the app was down; on start it declares its schedules again
    s = schedule(db, "job", every=10, task="app.job", args=[2], misfire="all")
    assert s.next_run_at == t0 + 10 and s.args == [2]
    assert [f.fire_at for f in Scheduler(db).tick()] == [t0 + 10, t0 + 20, t0 + 30]
    s = schedule(db, "job", every=20, task="app.job")  # a new timing starts over
    assert s.next_run_at == clock.now + 20


def test_every_with_a_start_in_the_past_keeps_to_its_grid(clocked_db, clock) -> None:
    t0 = clock.now
    s = schedule(clocked_db, "grid", every=60, start=t0 - 3600 + 15, queue="q", payload=1)
    assert s.next_run_at == t0 + 15
    on_the_hour = 280 * 3600.0  # 1_008_000, 8000 s after t0
    later = schedule(clocked_db, "later", cron="0 * * * *", start=on_the_hour, queue="q",
                     payload=1)
    assert later.next_run_at == on_the_hour  # a fire at start counts; none before it
    after = schedule(clocked_db, "after", cron="0 * * * *", start=on_the_hour + 1, queue="q",
                     payload=1)
    assert after.next_run_at == on_the_hour + 3600


def test_any_number_of_schedulers_on_one_clock_enqueue_each_fire_once(
        db_target: str, clock: FakeClock) -> None:
    path = db_target
    dbs = [liteq.connect(path, clock=clock) for _ in range(4)]
    schedule(dbs[0], "fast", every=1, queue="q", payload=1, misfire="all")
    schedule(dbs[0], "cron", cron="* * * * * *", queue="q", payload=2, misfire="all")
    barrier = threading.Barrier(4)
    stop = threading.Event()

    def loop(db: liteq.Database) -> None:
        scheduler = Scheduler(db)
        barrier.wait()
        while not stop.is_set():
            scheduler.tick()
            time.sleep(0.001)

    threads = [threading.Thread(target=loop, args=(db,)) for db in dbs]
    for t in threads:
        t.start()
    t0 = clock.now
    for _ in range(60):
        clock.advance(0.5)
        wait_until(lambda: dbs[0].backend.next_schedule_due() > clock.now, what="catch-up")
    stop.set()
    for t in threads:
        t.join(PATIENCE)
    assert fired(dbs[0], "fast") == [t0 + k for k in range(1, 31)]
    assert fired(dbs[0], "cron") == [t0 + k for k in range(1, 31)]
    assert len(dbs[0].queue("q")) == 60
    for db in dbs:
        db.close()


# -- definitions refused at the edge, nothing written -------------------------------------

BAD = [
    (dict(cron="61 * * * *", task="t"), "cron expression '61 * * * *' is invalid"),
    (dict(cron="* * *", task="t"), "cron expression"),
    (dict(cron="every day", task="t"), "cron expression"),
    (dict(cron="", task="t"), "cron expression"),
    (dict(cron="0 0 30 2 *", task="t"), "cron expression"),
    (dict(cron="0 3 * * *", tz="Mars/Olympus", task="t"), "tz 'Mars/Olympus'"),
    (dict(cron="0 3 * * *", tz="../../etc/passwd", task="t"), "tz"),
    (dict(cron="0 3 * * *", tz="", task="t"), "tz"),
    (dict(at="2030-01-01T09:00", tz="Not/AZone", task="t"), "tz"),
    (dict(at="next tuesday", task="t"), "at 'next tuesday' is not an ISO 8601 time"),
    (dict(every=10, tz="UTC", task="t"), "tz applies to cron and at"),
    (dict(every=0, task="t"), "every must be"),
    (dict(every=-5, task="t"), "every must be"),
    (dict(every=float("nan"), task="t"), "every must be"),
    (dict(cron="* * * * *", every=5, task="t"), "exactly one of cron=, every= or at="),
    (dict(task="t"), "exactly one of cron=, every= or at="),
    (dict(every=5), "exactly one target"),
    (dict(every=5, task="t", command="ls"), "exactly one target"),
    (dict(every=5, payload=1), "needs queue="),
    (dict(every=5, queue="q"), "exactly one target"),
    (dict(every=5, command="ls", args=[1]), "args= and kwargs= go with a task"),
    (dict(every=5, task="t", args="1"), "args must be a list"),
    (dict(every=5, task="t", kwargs={1: 2}), "kwargs must be a dict with str keys"),
    (dict(every=5, command="  "), "command must be"),
    (dict(every=5, task="t", misfire="sometimes"), "misfire must be one of skip, once, all"),
    (dict(every=5, task="t", misfire="all", misfire_cap=0), "misfire_cap"),
    (dict(every=5, at=1.0, task="t"), "exactly one of"),
]


@pytest.mark.parametrize("kwargs,message", BAD, ids=[m for _, m in BAD])
def test_a_bad_definition_raises_schedule_error_naming_the_field_and_writes_nothing(
        db: liteq.Database, kwargs: dict[str, object], message: str) -> None:
    schedule(db, "keep", cron="0 3 * * *", tz="Europe/Berlin", task="app.keep")
    before = schedule_rows(db)
    with pytest.raises(liteq.ScheduleError) as err:
        schedule(db, "new", **kwargs)  # type: ignore[arg-type]
    assert message in str(err.value)
    with pytest.raises(liteq.ScheduleError):
        schedule(db, "keep", **kwargs)  # type: ignore[arg-type]
    assert schedule_rows(db) == before
    assert sql(db, "SELECT count(*) FROM messages")[0][0] == 0


def test_bad_names_and_payloads_are_refused_and_nothing_is_written(db: liteq.Database) -> None:
    with pytest.raises(liteq.InvalidArgument, match="schedule name"):
        schedule(db, "no spaces", every=5, task="t")
    with pytest.raises(liteq.InvalidArgument, match="queue name"):
        schedule(db, "ok", every=5, queue="bad queue", payload=1)
    with pytest.raises(liteq.SerializationError):
        schedule(db, "ok", every=5, queue="q", payload=object())
    assert schedule_rows(db) == []
    with pytest.raises(liteq.ScheduleError, match="no schedule named 'ghost'"):
        schedule(db, "ghost")


# -- targets, and what a schedule can do --------------------------------------------------

def test_targets_enqueue_a_task_call_a_payload_or_a_shell_command(db: liteq.Database) -> None:
    @db.task(name="app.mail", queue="emails")
    def mail(to: str) -> None: ...

    by_task = schedule(db, "a", every=60, task=mail, args=["x@y.z"], kwargs={"urgent": True})
    by_name = schedule(db, "b", every=60, task="app.mail")
    unknown = schedule(db, "c", every=60, task="elsewhere.job")
    moved = schedule(db, "d", every=60, task="app.mail", queue="other")
    raw = schedule(db, "e", every=60, queue="raw", payload={"k": [1, b"\x00"]})
    shell = schedule(db, "f", every=60, command="backup.sh --full")
    assert [s.queue for s in (by_task, by_name, unknown, moved, raw, shell)] == \
        ["emails", "emails", "default", "other", "raw", SHELL_QUEUE]
    assert by_task.payload == {"task": "app.mail", "args": ["x@y.z"], "kwargs": {"urgent": True}}
    assert raw.payload == {"k": [1, b"\x00"]}
    assert shell.payload == {"task": SHELL_TASK, "args": ["backup.sh --full"], "kwargs": {}}
    assert shell.command == "backup.sh --full" and by_task.task == "app.mail"
    job = by_task.run_now()
    assert job.task == "app.mail" and job.state == "queued"
    msg = db.message(job.id)
    assert msg is not None and msg.queue == "emails" and msg.payload == by_task.payload
    assert codec.decode(codec.encode(raw.payload)) == raw.payload


def test_pause_stops_fires_resume_goes_on_from_now_and_run_now_fires_anyway(
        clocked_db, clock) -> None:
    db, t0 = clocked_db, clock.now
    s = schedule(db, "p", every=10, queue="q", payload=1)
    s.pause()
    assert s.paused and s.state == "paused"
    scheduler = Scheduler(db)
    clock.advance(55)
    assert scheduler.tick() == []
    assert [d.timestamp() for d in s.next(2)] == [t0 + 60, t0 + 70]  # once resumed now
    job = s.run_now()
    assert s.history()[0].job_id == job.id and s.history()[0].fire_at == t0 + 55
    s.resume()
    assert s.state == "active" and s.next_run_at == t0 + 60  # the fires while paused are gone
    clock.advance(5)
    assert [f.fire_at for f in scheduler.tick()] == [t0 + 60]
    runs = s.history()
    assert [r.fire_at for r in runs] == [t0 + 60, t0 + 55]  # newest first
    assert all(r.late == 0 for r in runs)
    assert unschedule(db, "p") is True and unschedule(db, "p") is False
    assert sql(db, "SELECT count(*) FROM schedule_runs")[0][0] == 0
    assert len(db.queue("q")) == 2  # what it enqueued stays


def test_a_scheduler_thread_fires_on_the_real_clock_and_stops_when_asked(
        db: liteq.Database) -> None:
    s = schedule(db, "quick", every=1, queue="q", payload=1, misfire="all")
    scheduler = Scheduler(db, interval=0.5)
    thread = threading.Thread(target=scheduler.run)
    thread.start()
    try:
        wait_until(lambda: len(s.history(5)) >= 2, what="two fires")
    finally:
        scheduler.stop()
        thread.join(PATIENCE)
    assert not thread.is_alive()
    times = sorted(r.fire_at for r in s.history(100))
    assert [round(b - a, 6) for a, b in zip(times, times[1:], strict=False)] == \
        [1.0] * (len(times) - 1)


def test_run_now_at_an_instant_that_already_fired_enqueues_nothing_more(clocked_db, clock) -> None:
    s = schedule(clocked_db, "t", every=10, queue="q", payload=1)
    clock.advance(10)
    assert len(Scheduler(clocked_db).tick()) == 1
    with pytest.raises(liteq.ScheduleError, match="already fired at this instant"):
        s.run_now()
    assert len(clocked_db.queue("q")) == 1
    unschedule(clocked_db, "t")
    with pytest.raises(liteq.ScheduleError, match="no schedule named 't'"):
        s.run_now()
