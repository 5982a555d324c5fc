"""``liteq schedule add --task``: the task's own queue (found with ``--app``), or
``--queue``; a name that cannot be a task's is refused; next fire times are not
printed twice when local time is UTC."""

from __future__ import annotations

import json
import os
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from helpers import file_digest

import liteq
from liteq.cli import cli as root
from liteq.cli_base import LiteqGroup
from liteq.cli_schedule import schedule_group

cli = LiteqGroup(name="liteq", params=list(root.params), callback=root.callback,
                 commands={**root.commands, "schedule": schedule_group},
                 context_settings=root.context_settings)

APP = """
import liteq

db = liteq.connect({path!r})

@db.task(name="app.report", queue="reports")
def report(n=0):
    return n
"""


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), prog_name="liteq", catch_exceptions=False)


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A module ``schedapp_cli`` in the current directory, with its database's path."""
    path = str(tmp_path / "app.db")
    (tmp_path / "schedapp_cli.py").write_text(textwrap.dedent(APP.format(path=path)))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("LITEQ_DB", raising=False)
    yield path
    module = sys.modules.pop("schedapp_cli", None)
    if module is not None:
        module.db.close()


@pytest.fixture
def utc_local_time() -> Iterator[None]:
    old = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if old is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = old
    time.tzset()


def test_a_task_schedule_with_app_goes_to_the_tasks_own_queue(app: str) -> None:
    result = run("schedule", "add", "nightly", "--cron", "0 3 * * *", "--task", "app.report",
                 "--app", "schedapp_cli", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["queue"] == "reports"
    db = liteq.connect(app)
    try:
        (s,) = db.schedules()
        assert (s.name, s.queue, s.task) == ("nightly", "reports", "app.report")
    finally:
        db.close()


def test_a_task_schedule_with_app_and_queue_goes_to_the_queue_given(app: str) -> None:
    result = run("schedule", "add", "nightly", "--every", "60", "--task", "app.report",
                 "--app", "schedapp_cli:db", "--queue", "elsewhere", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["queue"] == "elsewhere"


def test_a_task_schedule_without_app_or_queue_is_refused_and_writes_nothing(
        tmp_path: Path) -> None:
    path = str(tmp_path / "s.db")
    result = run("--db", path, "schedule", "add", "nightly", "--every", "60",
                 "--task", "app.report")
    assert result.exit_code == 2
    assert "Error: --task app.report needs --app MODULE[:DB]" in result.stderr
    assert "or --queue QUEUE" in result.stderr
    assert not os.path.exists(path)


def test_a_task_the_app_does_not_have_is_refused_naming_its_tasks(app: str) -> None:
    liteq.connect(app).close()
    before = file_digest(app)
    result = run("schedule", "add", "nightly", "--every", "60", "--task", "app.reprot",
                 "--app", "schedapp_cli")
    assert result.exit_code == 2
    assert "schedapp_cli has no task named 'app.reprot' (its tasks: app.report)" in result.stderr
    assert "Traceback" not in result.output
    assert file_digest(app) == before


def test_app_naming_another_database_than_db_is_refused(app: str, tmp_path: Path) -> None:
    other = str(tmp_path / "other.db")
    result = run("--db", other, "schedule", "add", "nightly", "--every", "60",
                 "--task", "app.report", "--app", "schedapp_cli")
    assert result.exit_code == 1
    assert "--app's database is" in result.stderr and not os.path.exists(other)


@pytest.mark.parametrize("name, message", [
    ("", "is not a task name"),
    ("app report", "is not a task name"),
    ("x" * 201, "is not a task name"),
    ("tasks:report", "tasks are named module.function (e.g. tasks.report)"),
])
def test_a_task_option_that_is_not_a_task_name_is_refused(tmp_path: Path, name: str,
                                                          message: str) -> None:
    path = str(tmp_path / "s.db")
    result = run("--db", path, "schedule", "add", "x", "--every", "60", "--task", name,
                 "--queue", "q")
    assert result.exit_code == 2, result.output
    assert "Invalid value for '--task'" in result.stderr and message in result.stderr
    assert not os.path.exists(path)


def test_app_goes_only_with_task(tmp_path: Path) -> None:
    result = run("--db", str(tmp_path / "s.db"), "schedule", "add", "x", "--every", "60",
                 "--queue", "q", "--payload", "1", "--app", "schedapp_cli")
    assert result.exit_code == 2 and "--app goes with --task" in result.stderr


def test_schedule_add_prints_each_next_fire_once_when_local_time_is_utc(
        tmp_path: Path, utc_local_time: None) -> None:
    result = run("--db", str(tmp_path / "s.db"), "schedule", "add", "x", "--cron", "0 3 * * *",
                 "--queue", "q", "--payload", "1")
    assert result.exit_code == 0, result.output
    nexts = [line for line in result.output.splitlines() if "next:" in line]
    assert len(nexts) == 3
    for line in nexts:
        assert line.count("UTC") == 1, line
