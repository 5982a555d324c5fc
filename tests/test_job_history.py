"""A finished job keeps its history (queue, call, attempts, start, finish, duration)
with its outcome for as long as the outcome is kept; ``liteq jobs`` filters find it,
and ``liteq job N`` shows it all, after the message itself is gone."""

from __future__ import annotations

import json
from pathlib import Path

import apsw
import pytest
from click.testing import CliRunner, Result
from dbsql import sql

import liteq
from liteq.backends.sqlite.schema import MIGRATIONS, SCHEMA_VERSION
from liteq.cli import cli as root
from liteq.cli_base import LiteqGroup
from liteq.cli_worker import job, jobs
from liteq.task import list_jobs
from liteq.worker import Worker

pytestmark = pytest.mark.every_engine

cli = LiteqGroup(name="liteq", params=list(root.params), callback=root.callback,
                 commands={**root.commands, "jobs": jobs, "job": job},
                 context_settings=root.context_settings)


def run(db_target: str, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--db", db_target, *args], prog_name="liteq",
                              catch_exceptions=False)


def _run_jobs(db: liteq.Database, queues: list[str]) -> None:
    Worker(db, queues=queues, concurrency=1, burst=True, install_signals=False,
           summary_interval=0).run()


def _slow_app(db: liteq.Database) -> tuple[int, int, int]:
    @db.task(name="app.add", queue="slow", store_result=True)
    def add(a: int, b: int = 0) -> int:
        return a + b

    @db.task(name="app.boom", queue="slow", max_attempts=1)
    def boom(why: str) -> None:
        raise ValueError(why)

    @db.task(name="app.other", queue="fast")
    def other() -> None:
        pass

    ok, bad, fast = add.delay(2, b=3).id, boom.delay("no").id, other.delay().id
    _run_jobs(db, ["slow", "fast"])
    return ok, bad, fast


def test_a_done_job_keeps_its_queue_call_attempts_and_times_after_its_message_is_gone(
        db: liteq.Database) -> None:
    ok, _bad, _fast = _slow_app(db)
    assert sql(db, "SELECT count(*) FROM messages WHERE id = ?", (ok,)) == [(0,)]
    info = db.job(ok).info()
    assert (info.state, info.task, info.queue, info.args, info.kwargs, info.attempts) == \
        ("done", "app.add", "slow", [2], {"b": 3}, 1)
    assert info.enqueued_at is not None and info.started_at is not None
    assert info.finished_at is not None and info.duration is not None
    assert info.enqueued_at <= info.started_at <= info.finished_at
    assert info.duration >= 0


def test_jobs_filters_by_queue_and_task_find_finished_jobs(db_target: str,
                                                           db: liteq.Database) -> None:
    ok, bad, fast = _slow_app(db)
    data = json.loads(run(db_target, "jobs", "-q", "slow", "--json").output)
    assert [(d["id"], d["state"]) for d in data] == [(bad, "failed"), (ok, "done")]
    data = json.loads(run(db_target, "jobs", "-q", "slow", "--state", "done", "--json").output)
    assert [d["id"] for d in data] == [ok]
    data = json.loads(run(db_target, "jobs", "-q", "fast", "-t", "app.other", "--json").output)
    assert [(d["id"], d["queue"]) for d in data] == [(fast, "fast")]
    assert json.loads(run(db_target, "jobs", "-q", "fast", "-t", "app.add", "--json").output) == []
    table = run(db_target, "jobs", "-q", "slow").output.splitlines()
    assert "TOOK" in table[0].split() and table[2].split()[:4] == [str(ok), "app.add", "slow", "done"]
    assert table[2].split()[7].endswith("s"), table[2]  # after "0.1s ago"


def test_job_shows_queue_call_start_finish_and_duration_of_a_done_job(
        db_target: str, db: liteq.Database) -> None:
    ok, _bad, _fast = _slow_app(db)
    shown = run(db_target, "job", str(ok)).output
    fields = dict(line.split(None, 1) for line in shown.splitlines() if " " in line.strip())
    assert fields["queue"].strip() == "slow"
    assert fields["call"].strip() == '(2, b=3)'
    for label in ("enqueued", "started", "finished", "duration"):
        assert fields[label].strip() != "-", shown
    data = json.loads(run(db_target, "job", str(ok), "--json").output)
    assert (data["queue"], data["args"], data["kwargs"], data["result"]) == \
        ("slow", [2], {"b": 3}, 5)
    assert data["started_at"] is not None and data["duration"] is not None


def test_a_job_cancelled_before_it_ran_keeps_its_queue_and_call(db: liteq.Database) -> None:
    @db.task(name="app.later", queue="later")
    def later(x: int) -> None:
        pass

    handle = later.delay(7)
    assert handle.cancel() == "cancelled"
    db.queue("later").purge(state="cancelled")  # the message goes; the outcome stays
    info = handle.info()
    assert (info.state, info.queue, info.args, info.started_at) == \
        ("cancelled", "later", [7], None)


def test_jobs_accepts_dead_for_failed_and_its_help_names_the_canonical_one(
        db_target: str, db: liteq.Database) -> None:
    _ok, bad, _fast = _slow_app(db)
    dead = json.loads(run(db_target, "jobs", "--state", "dead", "--json").output)
    failed = json.loads(run(db_target, "jobs", "--state", "failed", "--json").output)
    assert [d["id"] for d in dead] == [d["id"] for d in failed] == [bad]
    assert "'failed' is the canonical name" in " ".join(run(db_target, "jobs", "--help").output.split())
    assert [i.id for i in list_jobs(db, state="dead")] == [bad]


@pytest.mark.sqlite_only("a hand-built file of SQLite schema version 1")
def test_a_file_of_schema_version_1_opens_migrated_and_keeps_its_results(tmp_path: Path) -> None:
    path = str(tmp_path / "old.db")
    conn = apsw.Connection(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(MIGRATIONS[0])
    conn.execute("INSERT INTO results (id, task, state, finished_at) VALUES (9, 'old.task', 3, 1.0)")
    conn.execute("PRAGMA application_id = 0x4C495451")
    conn.execute("PRAGMA user_version = 1")
    conn.close()
    db = liteq.connect(path)
    try:
        assert db.execute("PRAGMA user_version") == [(SCHEMA_VERSION,)]
        info = db.job(9).info()
        assert (info.task, info.state, info.queue, info.args, info.duration) == \
            ("old.task", "done", None, None, None)
        assert json.loads(run(path, "job", "9", "--json").output)["task"] == "old.task"
    finally:
        db.close()
