"""The task commands: ``liteq worker``, ``liteq jobs``, ``liteq job``, through click's
CliRunner against real files (the long-running worker is in
``test_worker_processes.py``)."""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

import liteq
from liteq.cli import cli as root
from liteq.cli_base import LiteqGroup
from liteq.cli_worker import job, jobs, worker

pytestmark = pytest.mark.every_engine

# The root group with the task commands attached, without touching the real one.
cli = LiteqGroup(name="liteq", params=list(root.params), callback=root.callback,
                 commands={**root.commands, "worker": worker, "jobs": jobs, "job": job},
                 context_settings=root.context_settings)

APP = """
import liteq

db = liteq.connect({path!r})

@db.task(name="app.double", store_result=True)
def double(x):
    return 2 * x

@db.task(name="app.broken", max_attempts=1)
def broken():
    raise ValueError("it broke")
"""


def run(db_path: str | None, *args: str) -> Result:
    argv = (["--db", db_path] if db_path else []) + list(args)
    return CliRunner().invoke(cli, argv, prog_name="liteq", catch_exceptions=False)


@pytest.fixture
def app(tmp_path: Path, db_target: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A module ``cliapp`` in a fresh directory (the current one), with its database
    (``db_target``: a file, or a PostgreSQL schema)."""
    path = db_target
    (tmp_path / "cliapp.py").write_text(textwrap.dedent(APP.format(path=path)))
    (tmp_path / "nodb.py").write_text("x = 1\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield path
    for name in ("cliapp", "nodb"):
        module = sys.modules.pop(name, None)
        if module is not None and hasattr(module, "db"):
            module.db.close()


def _enqueue(path: str) -> tuple[int, int]:
    import cliapp  # type: ignore[import-not-found]

    return cliapp.double.delay(21).id, cliapp.broken.delay().id


def test_worker_burst_runs_every_due_job_and_exits(app: str) -> None:
    ok, bad = _enqueue(app)
    result = run(None, "worker", "cliapp", "--burst", "--log-level", "error")
    assert result.exit_code == 0, result.output
    db = liteq.connect(app)
    assert db.job(ok).result() == 42
    assert db.job(bad).state == "failed"
    db.close()


def test_jobs_lists_the_newest_jobs_with_their_state_and_error(app: str) -> None:
    ok, bad = _enqueue(app)
    assert run(None, "worker", "cliapp:db", "--burst", "--log-level", "error").exit_code == 0
    result = run(app, "jobs")
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0].split()[:5] == ["ID", "TASK", "QUEUE", "STATE", "ATTEMPTS"]
    assert lines[1].split()[:2] == [str(bad), "app.broken"]
    assert "ValueError: it broke" in lines[1]
    assert lines[2].split()[:2] == [str(ok), "app.double"]
    data = json.loads(run(app, "jobs", "--state", "failed", "--json").output)
    assert [(d["id"], d["state"], d["error"]["type"]) for d in data] == \
        [(bad, "failed", "ValueError")]
    none = run(app, "jobs", "--task", "app.nothing")
    assert none.stdout == "" and "no jobs of task 'app.nothing'" in none.stderr


def test_job_shows_state_attempts_error_with_traceback_and_result(app: str) -> None:
    ok, bad = _enqueue(app)
    assert run(None, "worker", "cliapp", "--burst", "--log-level", "error").exit_code == 0
    shown = run(app, "job", str(bad)).output
    assert "state       failed" in shown
    assert "Traceback (most recent call last):" in shown
    assert 'raise ValueError("it broke")' in shown
    data = json.loads(run(app, "job", str(ok), "--json").output)
    assert (data["state"], data["result"], data["attempts"]) == ("done", 42, 1)


def test_job_waits_for_the_job_to_finish_when_asked(app: str) -> None:
    ok, _bad = _enqueue(app)
    result = run(app, "job", str(ok), "--wait", "50ms", "--json")
    assert json.loads(result.output)["state"] == "queued"


@pytest.mark.parametrize("args, message, code", [
    (["job", "999"], "Error: no job with id 999", 1),
    (["worker", "missing_module"], "Error: cannot import APP module 'missing_module'", 1),
    (["worker", "nodb"], "Error: module 'nodb' has no liteq Database", 1),
    (["worker", "nodb:x"], "Error: nodb:x is an int, not a liteq Database", 2),
    (["worker", "cliapp:nothing"], "Error: 'cliapp' has no attribute 'nothing'", 1),
    (["worker", "a:b:c"], "APP is module or module:attr", 2),
    (["worker", "cliapp", "--pool", "fork"], "Invalid value for '--pool'", 2),
    (["jobs", "--state", "pending"], "Invalid value for '--state'", 2),
])
def test_bad_input_prints_an_error_and_exits_non_zero_without_a_traceback(
        app: str, args: list[str], message: str, code: int) -> None:
    liteq.connect(app).close()
    result = CliRunner().invoke(cli, ["--db", app, *args], prog_name="liteq")
    assert result.exit_code == code, result.output
    assert message in result.output
    assert "Traceback" not in result.output


@pytest.mark.sqlite_only("names the other database by a file next to the app's")
def test_worker_refuses_a_db_option_naming_another_file_than_the_apps(app: str,
                                                                      tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["--db", str(tmp_path / "other.db"), "worker", "cliapp"],
                                prog_name="liteq")
    assert result.exit_code == 1
    assert "APP's database is" in result.output


@pytest.mark.parametrize("command", [worker, jobs, job])
def test_each_task_command_ends_its_help_with_an_example(command: click.Command) -> None:
    help_text = (command.help or "").strip()
    assert "Example" in help_text.split("\n\n")[-1]
