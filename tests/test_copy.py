"""``liteq copy SRC DST`` (issue 17): a database moves between SQLite files and
PostgreSQL schemas with every row, id, state, lease, result and schedule kept,
consistently and resumably. Real files under tmp_path, a real PostgreSQL server
(tests/conftest_pg.py), the CLI through CliRunner, workers and kills as subprocesses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import pytest
from click.testing import CliRunner, Result
from helpers import wait_until

import liteq
from liteq.backends import open_backend
from liteq.backends.tables import COPY_TABLES
from liteq.cli import cli
from liteq.compat import PriorityQueue
from liteq.copy import CopyRefused, copy_database
from liteq.workflow import chain, chord, group

APP = textwrap.dedent('''
    import liteq

    db = liteq.connect()  # $LITEQ_DB


    @db.task(name="copy.add", store_result=True)
    def add(a, b):
        return a + b
''')


def run(*args: str) -> Result:
    """``liteq ARGS`` through CliRunner (exceptions propagate)."""
    return CliRunner().invoke(cli, list(args), prog_name="liteq", catch_exceptions=False)


def build_source(path: str) -> dict[str, int]:
    """A SQLite database with every kind of row; the ids a test looks at later."""
    db = liteq.connect(path)
    q = db.queue("emails", max_depth=10, retention=3600, max_attempts=3, lease=600)
    ids = {
        "keyed": q.put({"to": "a"}, key="k1", priority=5, headers={"trace": "t1"}),
        "plain": q.put(b"\x00bytes"),
        "delayed": q.put("later", delay=3600),
    }
    for name in ("leased", "done", "dead"):
        ids[name] = q.put(name)
    for msg in q.get_many(10):
        if msg.id == ids["leased"]:
            continue  # stays leased (600 s)
        if msg.id == ids["done"]:
            msg.ack()  # kept DONE by retention
        elif msg.id == ids["dead"]:
            msg.fail("broken")
        else:
            msg.nack()  # back to ready, one attempt counted
    ids["cancelled"] = q.put("never")
    assert q.cancel(ids["cancelled"])
    orders = db.topic("orders")
    orders.subscribe("billing", pattern="order.*.eu", max_depth=100)
    orders.subscribe("audit", pattern="#")
    orders.publish({"id": 7}, key="order.created.eu")
    pq = PriorityQueue(path=path, name="ranked")
    for item in (3, 1, 2):
        pq.put(item)
    db.schedule("nightly", cron="0 3 * * *", tz="Europe/Berlin", queue="emails", payload="n")
    db.schedule("often", every=60, queue="emails", payload="o")
    db.close()
    assert run("--db", path, "schedule", "run", "often").exit_code == 0
    # A finished job with its stored result, and two jobs left to run.
    db = liteq.connect(path)
    add = db.task(name="copy.add", store_result=True)(lambda a, b: a + b)
    ids["job_done"] = add.delay(1, 2).id
    tries: list[int] = []

    @db.task(name="copy.flaky", backoff=liteq.Backoff(base=0, jitter=0))
    def flaky() -> int:
        tries.append(1)
        if len(tries) == 1:
            raise ValueError("first try fails")  # an attempts row (issue 21)
        return len(tries)

    ids["job_retried"] = flaky.delay().id
    worker = liteq.Worker(db, ["default"], burst=True, install_signals=False,
                          summary_interval=0)
    worker.run()
    assert db.job(ids["job_done"]).result() == 3
    ids["job_a"] = add.delay(20, 22).id
    ids["job_b"] = add.delay(2, 3).id
    # A workflow (issue 20): a step waiting for another, on a queue of its own.
    ids["wf_tail"] = chain(add.s(1, 2).set(queue="flow"), add.s(3).set(queue="flow")).delay().id
    held = db.queue("held")  # paused (issue 19): the flag travels with the queue
    held.put("waits")
    held.pause()
    # Flow control (issue 19): a queue's rate limit, a task's limits and its jobs.
    db.queue("limited", rate_limit="7/s")
    capped = db.task(name="copy.capped", queue="limited", max_concurrency=1,
                     concurrency_key=lambda user: f"user:{user}")(lambda user: None)
    ids["capped"] = capped.delay(7).id
    capped.delay(7)
    scratch = db.queue("scratch")
    scratch.put("gone")
    scratch.get().ack()  # the highest id ever issued is no longer in any table
    db.close()
    return ids


def export_all(target: str) -> dict[str, Any]:
    """Every row of every copied table, and the counters, through the export verbs."""
    backend = open_backend(target, read_only=True, create=False)
    try:
        with backend.copy_snapshot():
            out: dict[str, Any] = {t: backend.export_rows(t, 0, 10**6) for t in COPY_TABLES}
            counters = backend.export_counters()
        out["message_id"] = counters.message_id
        out["subs_version"] = counters.subs_version
        return out
    finally:
        backend.close()


def public_view(target: str) -> dict[str, Any]:
    """What the public API shows: every queue's stats and messages, topics, schedules,
    and job outcomes."""
    db = liteq.connect(target, read_only=True, create=False)
    try:
        view: dict[str, Any] = {"topics": db.topics(), "queues": {}}
        for name in db.queues():
            stats = db.queue(name).stats()
            stats = {k: v for k, v in stats.items() if "rate" not in k and "age" not in k}
            messages = db.queue(name).peek(100, state=None)
            view["queues"][name] = (stats, [(m.id, m.state, m.payload, m.headers, m.key,
                                             m.priority, m.attempts) for m in messages])
        view["schedules"] = [(s.name, s.next_run_at, s.enabled) for s in db.schedules()]
        return view
    finally:
        db.close()


@pytest.fixture
def pg_target(pg_url: str, pg_schema: str) -> str:
    """A PostgreSQL URL naming a fresh schema."""
    parts = urlsplit(pg_url)
    query = "&".join(q for q in (parts.query, urlencode({"schema": pg_schema})) if q)
    return urlunsplit(parts._replace(query=query))


@pytest.fixture(params=["sqlite", "postgres"])
def dst_target(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """A fresh destination on each engine."""
    if request.param == "sqlite":
        return str(tmp_path / "dst.db")
    return str(request.getfixturevalue("pg_target"))


@pytest.fixture
def source(tmp_path: Any) -> tuple[str, dict[str, int]]:
    path = str(tmp_path / "src.db")
    return path, build_source(path)


# -- a whole copy reads back equal ---------------------------------------------------------


def test_every_kind_of_row_copied_to_postgresql_and_back_to_a_new_file_reads_back_equal(
    source: tuple[str, dict[str, int]], pg_target: str, tmp_path: Any
) -> None:
    src, _ids = source
    back = str(tmp_path / "back.db")
    assert run("copy", src, pg_target, "--force").exit_code == 0
    result = run("copy", pg_target, back, "--force")
    assert result.exit_code == 0, result.output
    original = export_all(src)
    assert export_all(pg_target) == original
    assert export_all(back) == original
    assert public_view(pg_target) == public_view(src) == public_view(back)
    assert all(original[t] for t in COPY_TABLES)  # every table had rows to copy
    assert public_view(back)["queues"]["held"][0]["paused"] is True
    limited = liteq.connect(back)
    try:  # the limits hold on the copy: one job of the key at a time, at most 7/s
        assert str(limited.queue("limited").config.rate_limit) == "7/s"
        assert [m.id for m in limited.queue("limited").get_many(5)] == [_ids["capped"]]
        assert [f[:2] for f in limited.backend.flows()] == [("copy.capped", 1)]
    finally:
        limited.close()


def test_a_sqlite_file_copied_to_another_reads_back_equal(
    source: tuple[str, dict[str, int]], tmp_path: Any
) -> None:
    src, ids = source
    dst = str(tmp_path / "copy.db")
    result = run("copy", src, dst, "--force")
    assert result.exit_code == 0, result.output
    assert "messages" in result.output and "Done:" in result.output
    assert export_all(dst) == export_all(src)
    assert public_view(dst) == public_view(src)
    db = liteq.connect(dst)
    leased = db.message(ids["leased"])
    assert leased is not None and leased.state == "leased" and leased.attempts == 1
    db.close()


# -- the destination works afterwards ------------------------------------------------------


def test_after_a_copy_a_worker_on_the_destination_runs_the_copied_jobs(
    source: tuple[str, dict[str, int]], dst_target: str, tmp_path: Any
) -> None:
    src, ids = source
    assert run("copy", src, dst_target, "--force").exit_code == 0
    (tmp_path / "copyapp.py").write_text(APP)
    env = {**os.environ, "LITEQ_DB": dst_target,
           "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run(
        [sys.executable, "-m", "liteq", "worker", "copyapp", "--burst", "--queues", "default",
         "--log-level", "error"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    db = liteq.connect(dst_target)
    assert db.job(ids["job_a"]).result() == 42
    assert db.job(ids["job_b"]).result() == 5
    assert db.job(ids["job_done"]).result() == 3  # the copied result
    db.close()


def test_after_a_copy_puts_get_fresh_ids_and_a_bounded_queue_still_refuses_at_max_depth(
    source: tuple[str, dict[str, int]], dst_target: str
) -> None:
    src, _ids = source
    assert run("copy", src, dst_target, "--force").exit_code == 0
    highest = export_all(src)["message_id"]
    assert highest > max(row.id for row in export_all(dst_target)["messages"])
    db = liteq.connect(dst_target)
    q = db.queue("emails")
    depth = q.stats()["ready"] + q.stats()["delayed"] + q.stats()["leased"]
    new_ids = [q.put(n) for n in range(10 - depth)]
    assert min(new_ids) > highest
    with pytest.raises(liteq.QueueFull):
        q.put("one too many")
    msg = q.get()
    assert msg is not None  # a fresh claim works beside the copied lease
    msg.ack()
    db.close()


# -- resumable ----------------------------------------------------------------------------


class Interrupted(Exception):
    """Stands for a crash after some chunks."""


def test_a_copy_that_fails_after_chunk_n_resumes_to_an_identical_result(
    tmp_path: Any, dst_target: str
) -> None:
    src = str(tmp_path / "big.db")
    db = liteq.connect(src)
    q = db.queue("bulk", max_depth=1000)
    q.put_many(list(range(500)))
    db.close()
    chunks = []

    def crash_after_three(table: str, read: int, total: int) -> None:
        chunks.append(table)
        if table == "messages" and chunks.count("messages") == 3:
            raise Interrupted

    with pytest.raises(Interrupted):
        copy_database(src, dst_target, chunk_rows=50, on_progress=crash_after_three)
    half = export_all(dst_target)
    assert len(half["messages"]) == 150
    report = copy_database(src, dst_target, chunk_rows=50)
    assert report.status == "resumed"
    messages = next(t for t in report.tables if t.table == "messages")
    assert (messages.resumed_after, messages.copied) == (half["messages"][-1].id, 350)
    assert export_all(dst_target) == export_all(src)
    db = liteq.connect(dst_target)
    assert len(db.queue("bulk")) == 500
    db.close()


def test_a_copy_killed_midway_and_run_again_has_every_row_exactly_once(tmp_path: Any) -> None:
    src, dst = str(tmp_path / "src.db"), str(tmp_path / "dst.db")
    db = liteq.connect(src)
    db.queue("bulk").put_many(list(range(20_000)))
    db.close()
    proc = subprocess.Popen([sys.executable, "-m", "liteq", "copy", src, dst, "--chunk", "10"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def some_chunks_committed() -> bool:
        if not os.path.exists(dst):
            return False
        try:
            marks = open_backend(dst, read_only=True, create=False)
        except liteq.LiteqError:
            return False
        try:
            return marks.copy_marks().get("messages", 0) >= 100
        finally:
            marks.close()

    wait_until(some_chunks_committed, what="the copy to commit some chunks")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    partial = len(export_all(dst)["messages"])
    assert 0 < partial < 20_000
    result = run("copy", src, dst)
    assert result.exit_code == 0, result.output
    assert "resuming" in result.output
    assert export_all(dst) == export_all(src)


# -- refusals -----------------------------------------------------------------------------


def test_leased_messages_are_refused_without_force_and_nothing_is_written(
    source: tuple[str, dict[str, int]], tmp_path: Any
) -> None:
    src, _ids = source
    dst = str(tmp_path / "dst.db")
    result = CliRunner().invoke(cli, ["copy", src, dst])
    assert result.exit_code == 1
    assert result.output.startswith("Error: 1 messages") and "--force" in result.output
    assert result.output.count("\n") == 1 and "Traceback" not in result.output
    assert not os.path.exists(dst)


@pytest.mark.parametrize("case", ["same", "missing", "unreachable", "newer"])
def test_bad_input_is_one_error_line_and_writes_nothing(
    case: str, source: tuple[str, dict[str, int]], tmp_path: Any
) -> None:
    src, _ids = source
    dst = str(tmp_path / "dst.db")
    if case == "same":
        args = [src, os.path.relpath(src)]
    elif case == "missing":
        args = [str(tmp_path / "nope.db"), dst]
    elif case == "unreachable":
        args = [src, "postgresql://nobody@127.0.0.1:1/none"]
    else:
        db = liteq.connect(dst)
        db.close()
        db = liteq.connect(dst)
        db.execute("PRAGMA user_version = 99")
        db.close()
    before = open(dst, "rb").read() if case == "newer" else None
    if case == "newer":
        args = [src, dst]
    result = CliRunner().invoke(cli, ["copy", *args, "--force"])
    assert result.exit_code == 1, result.output
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1
    if case == "newer":
        assert "schema version 99" in result.output
        assert open(dst, "rb").read() == before
    else:
        assert not os.path.exists(dst)


def test_a_destination_with_other_liteq_data_is_refused(
    source: tuple[str, dict[str, int]], tmp_path: Any
) -> None:
    src, _ids = source
    dst = str(tmp_path / "busy.db")
    db = liteq.connect(dst)
    db.queue("mine").put("x")
    db.close()
    with pytest.raises(CopyRefused, match="already holds liteq data"):
        copy_database(src, dst, force=True)
    assert [r.name for r in export_all(dst)["queues"]] == ["mine"]


def test_a_copy_of_another_source_into_a_half_copied_destination_is_refused(
    source: tuple[str, dict[str, int]], tmp_path: Any
) -> None:
    src, _ids = source
    other = str(tmp_path / "other.db")
    liteq.connect(other).queue("x").put(1)
    dst = str(tmp_path / "dst.db")
    copy_database(other, dst)
    with pytest.raises(CopyRefused, match="another database"):
        copy_database(src, dst, force=True)


def test_a_source_that_changed_since_the_interrupted_copy_is_refused(tmp_path: Any) -> None:
    src, dst = str(tmp_path / "src.db"), str(tmp_path / "dst.db")
    db = liteq.connect(src)
    db.queue("bulk").put_many(list(range(100)))

    def crash(table: str, read: int, total: int) -> None:
        if table == "messages":
            raise Interrupted

    with pytest.raises(Interrupted):
        copy_database(src, dst, chunk_rows=10, on_progress=crash)
    db.queue("bulk").put("one more")
    db.close()
    with pytest.raises(CopyRefused, match="source changed"):
        copy_database(src, dst)


def test_a_dry_run_reports_the_rows_and_writes_nothing(
    source: tuple[str, dict[str, int]], tmp_path: Any
) -> None:
    src, _ids = source
    dst = str(tmp_path / "dst.db")
    result = run("copy", src, dst, "--dry-run")
    assert result.exit_code == 0, result.output
    assert "Dry run" in result.output and "needs --force" in result.output
    assert not os.path.exists(dst)


def test_tables_limits_the_copy_and_messages_need_their_queues(
    source: tuple[str, dict[str, int]], tmp_path: Any
) -> None:
    src, _ids = source
    dst = str(tmp_path / "dst.db")
    bad = CliRunner().invoke(cli, ["copy", src, dst, "--tables", "messages"])
    assert bad.exit_code == 1 and "need their queues" in bad.output
    assert run("copy", src, dst, "--tables", "schedules,queues").exit_code == 0
    copied = export_all(dst)
    assert copied["schedules"] == export_all(src)["schedules"]
    assert copied["messages"] == [] and copied["queues"]


def test_writes_to_the_source_during_a_copy_do_not_reach_the_destination(
    tmp_path: Any, dst_target: str
) -> None:
    src = str(tmp_path / "live.db")
    db = liteq.connect(src)
    q = db.queue("bulk", max_depth=1000)
    q.put_many(list(range(300)))
    before = export_all(src)

    def write_meanwhile(table: str, read: int, total: int) -> None:
        if table == "messages" and read == 100:
            q.put_many(["late"] * 5)
            for msg in q.get_many(3):
                msg.ack()
            db.queue("newcomer").put(1)

    copy_database(src, dst_target, chunk_rows=100, on_progress=write_meanwhile)
    db.close()
    assert export_all(dst_target) == before
    assert export_all(src) != before


# -- workflows (issue 20) ------------------------------------------------------------------


def workflow_tasks(db: liteq.Database) -> dict[str, Any]:
    """The tasks of the workflow copy tests, registered on *db*."""

    @db.task(name="copy.wf.add", store_result=True)
    def add(x: int, y: int = 1) -> int:
        return x + y

    @db.task(name="copy.wf.collect", store_result=True)
    def collect(*values: Any) -> list[Any]:
        return list(values)

    @db.task(name="copy.wf.boom", max_attempts=1)
    def boom() -> None:
        raise RuntimeError("boom")

    return {"add": add, "collect": collect, "boom": boom}


def test_a_workflow_half_done_when_copied_finishes_on_the_destination_with_its_results(
    tmp_path: Any, dst_target: str
) -> None:
    src = str(tmp_path / "wf.db")
    db = liteq.connect(src)
    t = workflow_tasks(db)
    add, collect, boom = t["add"], t["collect"], t["boom"]
    now, later = {"queue": "now"}, {"queue": "later"}
    # A chain whose first step runs on the source, its second on the destination.
    tail = chain(add.s(1).set(**now), add.s(10).set(**later)).delay()
    # A chord with two members done on the source, two left.
    members = [add.s(i).set(**(now if i < 2 else later)) for i in range(4)]
    callback = chord(group(members), collect.s().set(**later)).delay()
    # A parent that fails on the destination: its dependent must be cancelled there (the
    # copied job's `wf` flag is what makes its ending settle the edge).
    orphan = chain(boom.s().set(**later), add.s().set(**later)).delay()
    liteq.Worker(db, ["now"], burst=True, install_signals=False, summary_interval=0).run()
    # The chain's tail is released (it reads its input from the copied edge).
    assert tail.state == "queued" and callback.state == "waiting"
    db.close()

    assert run("copy", src, dst_target).exit_code == 0
    if dst_target.startswith("postgresql"):  # and back to a new file: the same rows
        back = str(tmp_path / "back.db")
        assert run("copy", dst_target, back).exit_code == 0
        assert export_all(back) == export_all(src)
    copied = export_all(dst_target)
    assert copied["wf_edges"] and copied == export_all(src)

    dst = liteq.connect(dst_target)
    workflow_tasks(dst)
    liteq.Worker(dst, ["now", "later"], burst=True, install_signals=False,
                 summary_interval=0).run()
    assert dst.job(tail.id).result() == 12
    assert dst.job(callback.id).result() == [[1, 2, 3, 4]]
    assert dst.job(orphan.id).state == "cancelled"
    dst.close()


def test_the_workflow_tables_are_copied_together_with_their_messages(
    source: tuple[str, dict[str, int]], tmp_path: Any
) -> None:
    src, _ids = source
    dst = str(tmp_path / "dst.db")
    bad = CliRunner().invoke(cli, ["copy", src, dst, "--tables", "queues,messages,wf_jobs"])
    assert bad.exit_code == 1 and "go together with their messages" in bad.output
    assert not os.path.exists(dst)


def test_a_copy_to_postgresql_counts_only_the_queues_with_max_depth_or_count_depth(
    source: tuple[str, dict[str, int]], pg_target: str
) -> None:
    src, _ids = source
    assert run("copy", src, pg_target, "--force").exit_code == 0
    db = liteq.connect(pg_target)
    try:
        schema = db.backend.schema  # type: ignore[attr-defined]
        rows = db.execute(
            f'SELECT q.id, q.max_depth IS NOT NULL OR q.count_depth, q.counted, '
            f'(SELECT count(*) FROM "{schema}".depth_stripes d WHERE d.qid = q.id), '
            f'(SELECT count(*) FROM "{schema}".messages m WHERE m.qid = q.id AND m.state < 3) '
            f'FROM "{schema}".queues q')
        assert any(r[1] for r in rows) and any(not r[1] for r in rows)
        for qid, bounded, counted, stripes, unfinished in rows:
            assert counted == bounded and stripes == (16 if bounded else 0)
            assert db.backend.room(qid)[0] == unfinished  # type: ignore[attr-defined]
    finally:
        db.close()
