"""The schedule commands: ``liteq schedule add|list|next|pause|resume|rm|run|history``,
through click's CliRunner against real files (``liteq scheduler`` runs in real
processes in ``test_scheduler_processes.py``)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from dbsql import missing_words, sql
from helpers import file_digest

import liteq
from liteq.cli import cli as root
from liteq.cli_base import LiteqGroup
from liteq.cli_schedule import schedule_group, scheduler

pytestmark = pytest.mark.every_engine

# The root group with the schedule commands attached, without touching the real one.
cli = LiteqGroup(name="liteq", params=list(root.params), callback=root.callback,
                 commands={**root.commands, "schedule": schedule_group, "scheduler": scheduler},
                 context_settings=root.context_settings)


def run(path: str, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--db", path, *args], prog_name="liteq",
                              catch_exceptions=False)


def ok(path: str, *args: str) -> Result:
    result = run(path, *args)
    assert result.exit_code == 0, result.output
    return result


def at(text: str) -> float:
    return __import__("datetime").datetime.fromisoformat(text).timestamp()


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tables as on a 200-column terminal (none of their columns is cut)."""
    monkeypatch.setenv("COLUMNS", "200")


@pytest.fixture
def new_york() -> Iterator[None]:
    """This process's local time zone is America/New_York for the test."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = "America/New_York"
    time.tzset()
    yield
    if old is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = old
    time.tzset()


def test_add_then_list_and_next_show_fire_times_in_local_time_utc_and_the_schedules_zone(
        db_target: str, new_york: None) -> None:
    path = db_target
    # 2035-10-28 is the last Sunday of October: Berlin falls back from CEST to CET.
    out = ok(path, "schedule", "add", "nightly", "--cron", "30 2 * * *", "--tz",
             "Europe/Berlin", "--start", "2035-10-27T12:00:00+02:00", "--task", "app.report",
             "--args", "[1]", "--kwargs", '{"full": true}', "--queue", "default").output
    assert "schedule 'nightly' saved: At 02:30 every day (Europe/Berlin)" in out
    assert "app.report(1, full=true) on queue 'default'" in out
    assert "next: 2035-10-27 20:30:00 EDT  (2035-10-28 00:30:00 UTC)" in out

    listing = ok(path, "schedule", "list").output
    header, row = listing.splitlines()
    for title in ("NAME", "TIMING", "DESCRIPTION", "NEXT (LOCAL)", "NEXT (UTC)", "TARGET"):
        assert title in header
    for cell in ("nightly", "active", "30 2 * * * (Europe/Berlin)", "At 02:30 every day",
                 "2035-10-27 20:30:00 EDT", "2035-10-28 00:30:00 UTC", "app.report(1, full=true)"):
        assert cell in row

    table = ok(path, "schedule", "next", "nightly", "-n", "2").output.splitlines()
    assert table[0].split() == ["#", "LOCAL", "UTC", "Europe/Berlin", "IN"]
    assert "2035-10-27 20:30:00 EDT  2035-10-28 00:30:00 UTC  2035-10-28 02:30:00 CEST" in table[1]
    assert "2035-10-28 21:30:00 EDT  2035-10-29 01:30:00 UTC  2035-10-29 02:30:00 CET" in table[2]
    data = json.loads(ok(path, "schedule", "next", "nightly", "-n", "2", "--json").output)
    assert [r["at"] for r in data] == [at("2035-10-28T02:30:00+02:00"),
                                       at("2035-10-29T02:30:00+01:00")]

    [item] = json.loads(ok(path, "schedule", "list", "--json").output)
    assert item["description"] == "At 02:30 every day (Europe/Berlin)"
    assert item["payload"] == {"task": "app.report", "args": [1], "kwargs": {"full": True}}
    assert item["next_run_at"] == at("2035-10-28T02:30:00+02:00")
    assert item["next_utc"] == "2035-10-28 00:30:00 UTC"


def test_run_history_pause_resume_and_rm(db_target: str) -> None:
    path = db_target
    ok(path, "schedule", "add", "ping", "--every", "1h", "--queue", "pings",
       "--payload", '{"ping": 1}')
    assert "schedule 'ping' fired: job 1 on queue 'pings'" in ok(path, "schedule", "run",
                                                                  "ping").output
    history = ok(path, "schedule", "history", "ping").output.splitlines()
    assert history[0].split()[-3:] == ["LATE", "JOB", "STATE"]
    assert history[1].split()[-2:] == ["1", "queued"]
    [fire] = json.loads(ok(path, "schedule", "history", "ping", "--json").output)
    assert fire["job_id"] == 1 and fire["state"] == "queued"

    assert "schedule 'ping' paused" in ok(path, "schedule", "pause", "ping").output
    assert json.loads(ok(path, "schedule", "list", "--json").output)[0]["state"] == "paused"
    assert "resumed; next fire" in ok(path, "schedule", "resume", "ping").output
    assert json.loads(ok(path, "schedule", "list", "--json").output)[0]["state"] == "active"

    assert "schedule 'ping' deleted" in ok(path, "schedule", "rm", "ping").output
    assert run(path, "schedule", "list").stderr.startswith("no schedules")
    gone = run(path, "schedule", "rm", "ping")
    assert gone.exit_code == 1 and "Error: no schedule named 'ping'" in gone.stderr
    with liteq.connect(path) as db:
        assert [m.payload for m in db.queue("pings").peek()] == [{"ping": 1}]


def test_a_command_schedule_goes_to_the_shell_queue(db_target: str) -> None:
    path = db_target
    ok(path, "schedule", "add", "backup", "--cron", "@daily", "--command", "backup.sh --full",
       "--misfire", "skip")
    [item] = json.loads(ok(path, "schedule", "list", "--json").output)
    assert item["queue"] == "shell" and item["command"] == "backup.sh --full"
    assert item["misfire"] == "skip" and item["description"] == "At 00:00 every day (UTC)"
    assert "$ backup.sh --full" in ok(path, "schedule", "list").output


BAD_ADD = [
    (["--cron", "61 * * * *", "--task", "t"], "Invalid value for '--cron': cron expression"),
    (["--cron", "* * *", "--task", "t"], "Invalid value for '--cron'"),
    (["--cron", "0 3 * * *", "--tz", "Mars/Olympus", "--task", "t"],
     "Invalid value for '--tz': tz 'Mars/Olympus' is not a known time zone"),
    (["--at", "soon", "--task", "t"], "Invalid value for '--at'"),
    (["--every", "0", "--task", "t"], "Invalid value for '--every'"),
    (["--every", "5", "--tz", "UTC", "--task", "t"], "tz applies to cron and at"),
    (["--every", "5", "--cron", "* * * * *", "--task", "t"], "exactly one of --cron, --every"),
    (["--task", "t"], "exactly one of --cron, --every, --at"),
    (["--every", "5"], "exactly one of --task, --payload"),
    (["--every", "5", "--task", "t", "--command", "ls"], "exactly one of --task"),
    (["--every", "5", "--payload", "1"], "--payload needs --queue"),
    (["--every", "5", "--queue", "q", "--payload", "{nope"], "--payload is not valid JSON"),
    (["--every", "5", "--task", "t", "--args", "1"], "must be a JSON list"),
    (["--every", "5", "--task", "t", "--args", "[1"], "--args is not valid JSON"),
    (["--every", "5", "--task", "t", "--kwargs", "[]"], "must be a JSON object"),
    (["--every", "5", "--command", "ls", "--args", "[]"], "--args and --kwargs go with --task"),
    (["--every", "5", "--task", "t", "--misfire", "never"], "Invalid value for '--misfire'"),
    (["--every", "5", "--queue", "bad queue", "--payload", "1"], "Invalid value for '--queue'"),
]


@pytest.mark.parametrize("args,message", BAD_ADD, ids=[m for _, m in BAD_ADD])
@pytest.mark.sqlite_only("checks that no file is created")
def test_a_bad_schedule_is_refused_with_exit_2_and_nothing_is_written(
        tmp_path: Path, args: list[str], message: str) -> None:
    path = str(tmp_path / "s.db")
    result = run(path, "schedule", "add", "x", *args)
    assert result.exit_code == 2, result.output
    assert "Error: " in result.stderr and message in result.stderr
    assert "Traceback" not in result.output
    assert not os.path.exists(path), "no database file was made"

    ok(path, "schedule", "add", "x", "--every", "60", "--queue", "q", "--payload", "1")
    before = file_digest(path)
    assert run(path, "schedule", "add", "x", *args).exit_code == 2
    assert file_digest(path) == before, "the file was not touched"


def test_a_bad_schedule_name_is_refused_with_exit_2(db_target: str) -> None:
    result = run(db_target, "schedule", "add", "no spaces", "--every", "5",
                 "--task", "t")
    assert result.exit_code == 2 and "schedule name must be" in result.stderr


def test_commands_on_a_missing_schedule_or_file_say_so_with_exit_1(db_target: str) -> None:
    path = db_target
    missing = run(path, "schedule", "list")
    assert missing.exit_code == 1 and missing_words(path) in missing.stderr
    assert run(path, "scheduler").exit_code == 1
    ok(path, "schedule", "add", "x", "--every", "60", "--queue", "q", "--payload", "1")
    for command in ("next", "pause", "resume", "rm", "run", "history"):
        result = run(path, "schedule", command, "ghost")
        assert result.exit_code == 1, command
        assert result.stderr.startswith("Error: no schedule named 'ghost'"), command


def test_the_demo_step_fires_an_every_second_schedule_a_few_times(
        db_target: str, capsys: pytest.CaptureFixture[str]) -> None:
    from liteq.cli_demo import DemoRun
    from liteq.cli_schedule import schedule_demo

    with liteq.connect(db_target) as db:
        schedule_demo(DemoRun(db=db, path=db.path, messages=0))
        out = capsys.readouterr().out
        runs = sql(db, "SELECT fire_at, job_id FROM schedule_runs WHERE schedule = 'demo.tick' "
                   "ORDER BY fire_at")
        assert len(runs) >= 3
        assert [b[0] - a[0] for a, b in zip(runs, runs[1:], strict=False)] == [1.0] * (len(runs) - 1)
        assert len(db.queue("demo-schedule")) == len(runs)
    assert "Schedules: an every-second schedule fires 3 times" in out
    assert out.count("fired for ") == 3
    assert "schedule history demo.tick" in out
