"""No input makes a transaction unbounded (issue 16 item 1, issue 15 item 11).

Intervals below the floor and ``at`` times in the past are refused at the edge;
and a scheduler fed the worst rows one can write by hand (tiny and broken
intervals, huge misfire caps, years of missed per-second cron fires, thousands
of them) still lets another process write within a second, and makes progress.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from dbsql import sql
from helpers import PATIENCE, wait_until

import liteq
from liteq.cli import cli
from liteq.scheduler import MIN_EVERY, Scheduler

pytestmark = pytest.mark.every_engine


@pytest.mark.parametrize("every", [1e-15, 0.001, 0.5, MIN_EVERY - 1e-9])
def test_an_interval_below_the_floor_is_refused_and_nothing_is_written(db, every) -> None:
    with pytest.raises(liteq.ScheduleError, match="every must be a number of seconds from 1"):
        db.schedule("t", every=every, queue="x", payload=1)
    assert db.schedules() == []


def test_an_interval_at_the_floor_is_accepted(db) -> None:
    assert db.schedule("t", every=MIN_EVERY, queue="x", payload=1).spec == "1.0"


def test_the_cli_refuses_every_below_one_second_with_a_usage_error(db, db_target) -> None:
    result = CliRunner().invoke(cli, ["--db", db_target, "schedule", "add", "t", "--every",
                                      "0.001", "--queue", "x", "--payload", "1"],
                                prog_name="liteq")
    assert result.exit_code == 2, result.output
    assert "Error" in result.output and "--every" in result.output
    assert "from 1 to" in result.output
    assert db.schedules() == [] and db.queues() == []


def test_an_at_in_the_past_is_refused_unless_allow_past(clocked_db, clock) -> None:
    db = clocked_db
    with pytest.raises(liteq.ScheduleError, match="in the past.*allow_past=True"):
        db.schedule("t", at=clock.now - 3600, queue="x", payload=1)
    assert db.schedules() == []
    s = db.schedule("t", at=clock.now - 3600, queue="x", payload=1, allow_past=True)
    assert s.next_run_at == clock.now - 3600
    assert [f.fire_at for f in Scheduler(db).tick()] == [clock.now - 3600]  # misfire "once"


def test_an_at_less_than_the_misfire_grace_ago_counts_as_now(clocked_db, clock) -> None:
    s = clocked_db.schedule("t", at=clock.now - 30, queue="x", payload=1)
    assert s.next_run_at == clock.now - 30


def test_the_cli_refuses_an_at_in_the_past_and_accepts_it_with_allow_past(db, db_target) -> None:
    args = ["--db", db_target, "schedule", "add", "t", "--at", "2001-01-01T00:00:00Z",
            "--queue", "x", "--payload", "1"]
    result = CliRunner().invoke(cli, args, prog_name="liteq")
    assert result.exit_code == 2, result.output
    assert "in the past" in result.output and "--allow-past" in result.output
    assert db.schedules() == [] and db.queues() == []
    result = CliRunner().invoke(cli, [*args, "--allow-past"], prog_name="liteq")
    assert result.exit_code == 0, result.output


def _write_worst_schedules(db: liteq.Database) -> None:
    """Rows the API refuses, written as an old version or a hand could write them."""
    now = time.time()
    db.schedule("seed", every=60, queue="bounded", payload="x")
    worst = [
        # (kind, spec, misfire, misfire_cap, next_run_at)
        ("every", "1e-15", "all", 2**62, now - 10 * 365 * 86400),
        ("every", "1e-300", "once", 1, now - 10 * 365 * 86400),
        ("every", "5e-324", "skip", 1, 0.0),
        ("every", "nan", "all", 2**62, now - 1),
        ("every", "-1", "all", 2**62, now - 1),
        ("every", "inf", "all", 2**62, now - 1),
        ("cron", "* * * * * *", "all", 2**62, now - 5 * 365 * 86400),
        ("cron", "* * * * * *", "skip", 2**62, now - 5 * 365 * 86400),
    ]
    with db.transaction():
        for copy in range(300):
            for i, (kind, spec, misfire, cap, next_run_at) in enumerate(worst):
                db.execute(
                    "INSERT INTO schedules (name, kind, spec, tz, target, queue, payload, "
                    "misfire, misfire_cap, next_run_at, created_at, updated_at) "
                    "SELECT ?, ?, ?, 'UTC', target, queue, payload, ?, ?, ?, ?, ? "
                    "FROM schedules WHERE name = 'seed'",
                    (f"worst-{copy}-{i}", kind, spec, misfire, cap, next_run_at, now, now))


@pytest.mark.sqlite_only("the write lock held too long is SQLite's one writer lock")
def test_a_scheduler_fed_the_worst_rows_lets_another_process_write_within_a_second(
        tmp_path: Path) -> None:
    path = str(tmp_path / "s.db")
    db = liteq.connect(path)
    _write_worst_schedules(db)
    log = tmp_path / "scheduler.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "liteq", "--db", path, "scheduler"],
                                stdout=out, stderr=out, env=dict(os.environ))
    writer = liteq.connect(path, busy_timeout=1.0)
    try:
        wait_until(lambda: db.queue("bounded").stats()["ready"] > 0, timeout=PATIENCE,
                   what="the scheduler's first fires")
        q = writer.queue("other")
        deadline = time.monotonic() + 4.0
        puts = 0
        while time.monotonic() < deadline:
            q.put(puts)  # DatabaseBusy if the write lock stayed taken for 1 s
            puts += 1
            time.sleep(0.02)
        assert proc.poll() is None, log.read_text()
        # ... and the scheduler keeps going through the rows, tick after tick.
        fired = db.execute("SELECT count(*) FROM schedule_runs")[0][0]
        wait_until(lambda: db.execute("SELECT count(*) FROM schedule_runs")[0][0] > fired,
                   timeout=PATIENCE, what="more fires")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(PATIENCE)
        writer.close()
        db.close()
    assert len(liteq.connect(path).queue("other")) == puts


@pytest.mark.sqlite_only("MAINTAIN_ROWS bounds SQLite's write transaction in a claim")
def test_a_claim_settles_at_most_maintain_rows_due_messages_and_the_next_claims_the_rest(
        clocked_db, clock) -> None:
    from liteq.backends.sqlite.base import MAINTAIN_ROWS

    q = clocked_db.queue("q", lease=30)
    total = 2 * MAINTAIN_ROWS + 500
    q.put_many(range(total), delay=10)
    clock.advance(10)  # all of them fall due at once
    assert q.get() is not None
    stats = q.stats()
    assert (stats["ready"] + stats["leased"], stats["delayed"]) == (MAINTAIN_ROWS, total - MAINTAIN_ROWS)
    # The next claim settles the next MAINTAIN_ROWS first (it knows some were left).
    assert len(q.get_many(total)) == 2 * MAINTAIN_ROWS - 1
    assert q.stats()["delayed"] == 500
    q.expire()  # in as many bounded transactions as it takes
    assert q.stats()["delayed"] == 0
    assert len(q.get_many(total)) == 500
    clock.advance(31)  # every lease runs out at once
    q.get()
    assert q.stats()["expired_leases"] == total - MAINTAIN_ROWS


def test_a_stored_interval_below_the_floor_is_shown_resumed_and_planned_at_one_second(
        clocked_db, clock) -> None:
    db = clocked_db
    db.schedule("tiny", every=60, queue="q", payload=1)
    sql(db, "UPDATE schedules SET spec = '1e-15', next_run_at = ? WHERE name = 'tiny'",
        (clock.now - 1e6,))
    s = db.schedule("tiny").pause().resume()  # resume walks the grid forward from its start
    assert s.next_run_at is not None and clock.now <= s.next_run_at <= clock.now + MIN_EVERY
    times = [d.timestamp() for d in s.next(3)]
    assert [round(b - a, 6) for a, b in zip(times, times[1:], strict=False)] == [MIN_EVERY] * 2
    clock.advance(10)
    assert len(Scheduler(db).tick()) == 1  # misfire "once": one fire for the ten missed
