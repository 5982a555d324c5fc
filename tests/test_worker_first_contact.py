"""What a new user of ``liteq worker`` tripped over (issue 15, items 1-7): APP that
names a task, a mistyped queue, a silent shutdown, arguments that cannot bind,
ambiguous durations in the log, hooks from the command line, and recycling the
process pool's children. CLI through CliRunner; signals and children as real
subprocesses on real files."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from helpers import file_digest

import liteq
from liteq.cli import cli

APP = """
import liteq

db = liteq.connect({path!r})
ran = []

@db.task(name="fc.nightly_report")
def nightly_report():
    ran.append("nightly_report")
    db.execute("CREATE TABLE IF NOT EXISTS report_ran (x)")

@db.task(name="fc.send_welcome", store_result=True)
def send_welcome(user_id, lang="en"):
    return f"{{lang}}:{{user_id}}"

def make_db():
    ran.append("make_db")
    return db
"""


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), prog_name="liteq")


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A module ``fcapp`` in the current directory; its database file already exists."""
    path = str(tmp_path / "fc.db")
    liteq.connect(path).close()
    (tmp_path / "fcapp.py").write_text(textwrap.dedent(APP.format(path=path)))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield path
    module = sys.modules.pop("fcapp", None)
    if module is not None:
        module.db.close()


# -- 1. APP names the Database, and resolving it calls nothing ------------------------------

@pytest.mark.parametrize("spec, found", [
    ("fcapp:nightly_report", "is a liteq Task (fc.nightly_report), not the Database"),
    ("fcapp:send_welcome", "is a liteq Task (fc.send_welcome), not the Database"),
    ("fcapp:make_db", "is a function, not a liteq Database (APP is never called)"),
    ("fcapp:ran", "is a list, not a liteq Database"),
])
def test_worker_refuses_an_app_that_is_not_a_database_without_calling_it_or_writing(
        app: str, spec: str, found: str) -> None:
    before = file_digest(app)
    result = invoke("worker", spec, "--burst")
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [
        f"Error: {spec} {found}: APP names the Database the tasks are registered on, "
        f"e.g. fcapp:db"]
    assert sys.modules["fcapp"].ran == []
    assert file_digest(app) == before
    db = liteq.connect(app)
    assert db.queues() == [] and db.execute("SELECT count(*) FROM messages") == [(0,)]
    db.close()
