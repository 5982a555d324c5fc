"""What a new user of ``liteq worker`` tripped over (issue 15, items 1-7): APP that
names a task, a mistyped queue, a silent shutdown, arguments that cannot bind,
ambiguous durations in the log, hooks from the command line, and recycling the
process pool's children. CLI through CliRunner; signals and children as real
subprocesses on real files."""

from __future__ import annotations

import importlib
import logging
import os
import re
import signal
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from click.testing import CliRunner, Result
from helpers import file_digest, message_rows
from workerapp_tools import PATIENCE, drain, start_worker, stop, wait_until

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

needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="the process pool needs fork()")


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


# -- 4. arguments that cannot bind ------------------------------------------------------------

def test_enqueueing_arguments_that_do_not_fit_the_signature_raises_and_writes_nothing(
        db: liteq.Database) -> None:
    @db.task(name="fc.send_welcome")
    def send_welcome(user_id: int, lang: str = "en") -> None:
        """Nothing."""

    for call in (lambda: send_welcome.delay(1, 2, 3, 4),
                 lambda: send_welcome.delay(1, langg="de"),
                 lambda: send_welcome.enqueue(kwargs={"lang": "de"}),
                 lambda: send_welcome.enqueue_many([(1,), (1, 2, 3)])):
        with pytest.raises(liteq.InvalidArgument) as exc:
            call()
        assert str(exc.value).startswith("cannot enqueue task fc.send_welcome: ")
        assert "(the signature is fc.send_welcome(user_id, lang='en'))" in \
            str(exc.value)
    assert "too many positional arguments" in _bind_message(send_welcome, (1, 2, 3, 4), {})
    assert db.queues() == []
    assert message_rows(db) == []
    assert send_welcome.delay(7, lang="de").state == "queued"


def _bind_message(task: liteq.Task[..., None], args: tuple[int, ...],
                  kwargs: dict[str, str]) -> str:
    with pytest.raises(liteq.InvalidArgument) as exc:
        task.enqueue(args, kwargs)
    return str(exc.value)


def test_a_job_whose_arguments_no_longer_fit_fails_at_once_without_retries(
        db: liteq.Database) -> None:
    calls: list[object] = []

    @db.task(name="fc.resize", max_attempts=5, backoff=liteq.Backoff(base=0.01, jitter=0))
    def resize(image: str, width: int) -> None:
        calls.append((image, width))

    # Enqueued by an older deploy, whose resize() took a third argument.
    stale = db.queue("default").put({"task": "fc.resize", "args": ["a.png", 10, 20],
                                     "kwargs": {}})
    drain(db)
    job = db.job(stale)
    assert (job.state, job.attempts, calls) == ("failed", 1, [])
    assert job.error is not None and job.error.type == "TypeError"
    assert "the job's arguments do not fit the task: too many positional arguments" in \
        job.error.message
    assert "failed without retrying" in job.error.message


def test_a_type_error_raised_inside_a_task_is_still_retried(db: liteq.Database) -> None:
    # The retry waits 1 s: long enough that the first drain, slow on a loaded machine,
    # ends before the retry is due (with 10 ms it sometimes ran both attempts).
    @db.task(name="fc.fragile", max_attempts=2, backoff=liteq.Backoff(base=1.0, jitter=0))
    def fragile(n: int) -> None:
        raise TypeError("a bug inside the task")

    job = fragile.delay(1)
    drain(db)
    assert (job.state, job.attempts) == ("retrying", 1)
    wait_until(lambda: drain(db) and job.state == "failed", what="the second attempt")
    assert job.attempts == 2
    assert job.error is not None and job.error.message == "a bug inside the task"


# -- 5. which duration is which in the log ----------------------------------------------------

def test_the_log_of_a_retried_job_names_its_run_time_and_its_retry_delay(
        db: liteq.Database, caplog: pytest.LogCaptureFixture) -> None:
    @db.task(name="fc.flaky", max_attempts=3, backoff=liteq.Backoff(base=0.25, jitter=0))
    def flaky() -> None:
        raise ValueError("not yet")

    job = flaky.delay()
    with caplog.at_level(logging.DEBUG, logger="liteq.worker"):
        drain(db)
    lines = [r.getMessage() for r in caplog.records if getattr(r, "job_id", None) == job.id]
    assert lines[1] == (f"job {job.id} fc.flaky attempt 1 of 3 failed: ValueError: not yet; "
                        f"next attempt in 0.25 s (retry delay)")
    assert re.fullmatch(rf"job {job.id} fc\.flaky retrying \(run time [0-9.]+ ms\)", lines[2])


# -- 2. a served queue that does not exist --------------------------------------------------

def test_a_served_queue_that_does_not_exist_and_no_task_uses_is_warned_about_and_not_created(
        app: str) -> None:
    result = invoke("worker", "fcapp", "-Q", "typoq,default", "--burst")
    assert result.exit_code == 0, result.output
    assert ("queue 'typoq' does not exist and no task of this app uses it (their queues: "
            "default); it is served once something is put on it: is the name right?"
            in result.stderr)
    assert "'default' does not exist" not in result.stderr
    db = liteq.connect(app)
    assert db.queues() == ["default"]  # the tasks' queue is created, the typo is not
    db.close()


def test_a_worker_serves_a_missing_queue_once_it_appears_and_renews_its_leases(
        db: liteq.Database) -> None:
    runs: list[int] = []

    @db.task(name="fc.slow_double", store_result=True)
    def slow_double(x: int) -> int:
        runs.append(x)
        time.sleep(1.0)  # longer than the queue's lease: the heartbeat must renew it
        return 2 * x

    w = liteq.Worker(db, ["later"], concurrency=2, install_signals=False, summary_interval=0)
    thread = threading.Thread(target=w.run)
    thread.start()
    try:
        time.sleep(0.3)  # the consumers have looked for it, and are waiting
        assert not db.has_queue("later")
        db.queue("later", lease=0.3)
        job = slow_double.enqueue([21], queue="later")
        assert job.result(wait=PATIENCE) == 42
    finally:
        w.stop()
        thread.join(PATIENCE)
    assert (runs, job.attempts) == ([21], 1)
    assert db.queues() == ["later"]


# -- 3. what a stop signal does, said at once; the tasks served, named -----------------------

@pytest.fixture
def workerapp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The worker tests' app (``tests/workerapp.py``) on a fresh file."""
    monkeypatch.setenv("LITEQ_DB", str(tmp_path / "w.db"))
    import workerapp as module

    module = importlib.reload(module)
    yield module
    module.db.close()


@needs_fork
@pytest.mark.parametrize("pool", ["thread", "process"])
def test_the_first_stop_signal_says_at_once_what_runs_how_long_it_may_and_how_to_stop_now(
        workerapp: ModuleType, tmp_path: Path, pool: str) -> None:
    db = workerapp.db
    job = workerapp.sleepy.delay("long", 60.0, 0.01)  # 60 s the first time it runs
    log = tmp_path / "worker.log"
    w = start_worker(db.path, "--pool", pool, "-c", "2", "--grace", "45s", log=log)
    wait_until(lambda: db.execute("SELECT count(*) FROM starts")[0][0] == 1, what="the start")
    banner = log.read_text()
    assert ("tasks=app.base,app.die,app.forever,app.noop,app.record,app.sleepy,app.touch,"
            "app.whoami db=") in banner
    w.send_signal(signal.SIGTERM)
    said = ("SIGTERM received: stopping; 1 job running may finish within 45 s (the grace "
            "period), then they are released for another worker; send SIGTERM or SIGINT "
            "again to stop now")
    wait_until(lambda: said in log.read_text(), what="the stop to be announced")
    assert w.poll() is None and job.state == "running"  # said while the job still runs
    assert stop(w, signal.SIGINT) == 0
    assert "SIGINT again: stopping now; 1 job running released for another worker" in \
        log.read_text()
    assert (job.state, db.execute("SELECT count(*) FROM finishes")[0][0]) == ("queued", 0)


# -- 6. hooks from the command line -----------------------------------------------------------

HOOKS = """
import liteq

seen = []

class Recorder(liteq.Hook):
    def on_worker_start(self, worker):
        seen.append(("start", type(self).__name__))

    def after_job(self, job, outcome):
        seen.append((job.task, outcome.state))

class Second(Recorder):
    pass

class NotAHook:
    pass

class NeedsArgs(liteq.Hook):
    def __init__(self, url):
        self.url = url
"""


@pytest.fixture
def hooks_module(app: str, tmp_path: Path) -> Iterator[None]:
    (tmp_path / "fchooks.py").write_text(textwrap.dedent(HOOKS))
    yield
    sys.modules.pop("fchooks", None)


def test_worker_attaches_each_hook_given_with_hook(app: str, hooks_module: None) -> None:
    import fcapp  # type: ignore[import-not-found]

    job = fcapp.send_welcome.delay(7)
    result = invoke("worker", "fcapp", "--burst", "--hook", "fchooks:Recorder",
                    "--hook", "fchooks:Second")
    assert result.exit_code == 0, result.output
    assert job.result() == "en:7"
    assert sys.modules["fchooks"].seen == [("start", "Recorder"), ("start", "Second"),
                                           ("fc.send_welcome", "done"),
                                           ("fc.send_welcome", "done")]


@pytest.mark.parametrize("spec, message, code", [
    ("fchooks", "Invalid value for '--hook': a hook is module:HookClass (e.g. "
                "myapp.hooks:Timing), got 'fchooks'", 2),
    ("fchooks:NotAHook", "Error: --hook fchooks:NotAHook is the class NotAHook, not a "
                         "liteq.Hook subclass: a hook is a class that derives from liteq.Hook", 2),
    ("fchooks:seen", "Error: --hook fchooks:seen is a list, not a liteq.Hook subclass", 2),
    ("fchooks:Missing", "Error: 'fchooks' has no attribute 'Missing'", 1),
    ("nosuchhooks:Timing", "Error: cannot import hook module 'nosuchhooks'", 1),
    ("fchooks:NeedsArgs", "Error: --hook fchooks:NeedsArgs: NeedsArgs() raised TypeError: ", 1),
])
def test_worker_refuses_a_bad_hook_with_an_error_before_running_anything(
        app: str, hooks_module: None, spec: str, message: str, code: int) -> None:
    import fcapp

    job = fcapp.send_welcome.delay(7)
    result = invoke("worker", "fcapp", "--burst", "--hook", spec)
    assert result.exit_code == code, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert job.state == "queued"


# -- 7. recycling the process pool's children ---------------------------------------------

def _pids_of(jobs: list[liteq.Job]) -> Counter[int]:
    return Counter(j.result() for j in jobs)


@needs_fork
def test_a_pool_child_is_replaced_after_max_tasks_per_child_jobs_and_no_job_is_lost_or_run_twice(
        workerapp: ModuleType, tmp_path: Path) -> None:
    db = workerapp.db
    whoami = [workerapp.whoami.delay() for _ in range(12)]
    workerapp.record.enqueue_many([(n,) for n in range(30)])  # exactly once each, atomic
    w = start_worker(db.path, "--pool", "process", "-c", "2", "--max-tasks-per-child", "3",
                     "--burst", log=tmp_path / "worker.log")
    assert w.wait(PATIENCE) == 0
    pids = _pids_of(whoami)
    assert max(pids.values()) <= 3 and len(pids) >= 4  # 12 jobs, at most 3 per child
    assert {j.attempts for j in whoami} == {1}
    effects = Counter(n for (n,) in db.execute("SELECT n FROM effects"))
    assert sorted(effects) == list(range(30)) and set(effects.values()) == {1}
    assert db.execute("SELECT max(attempts) FROM results") == [(1,)]
    assert db.queue("default").stats()["depth"] == db.queue("bad").stats()["depth"] == 0
    assert "ran 3 jobs (max_tasks_per_child): replacing it" in (tmp_path / "worker.log").read_text()


@needs_fork
def test_a_pool_child_over_max_memory_per_child_after_a_job_is_replaced(
        workerapp: ModuleType, tmp_path: Path) -> None:
    db = workerapp.db
    whoami = [workerapp.whoami.delay() for _ in range(3)]
    w = start_worker(db.path, "--pool", "process", "-c", "1", "--max-memory-per-child", "1",
                     "--burst", log=tmp_path / "worker.log")
    assert w.wait(PATIENCE) == 0
    assert sorted(_pids_of(whoami).values()) == [1, 1, 1]  # every child is over 1 MB
    assert {j.attempts for j in whoami} == {1}
    assert "(max_memory_per_child 1 MB): replacing it" in (tmp_path / "worker.log").read_text()


@pytest.mark.parametrize("option", ["--max-tasks-per-child", "--max-memory-per-child"])
def test_child_limits_are_refused_with_the_thread_pool(app: str, option: str) -> None:
    result = invoke("worker", "fcapp", option, "5")
    assert result.exit_code == 2
    assert f"Error: {option} replaces child processes: it needs --pool process" in result.output
    assert "fcapp" not in sys.modules  # refused before APP was imported
    with liteq.connect(app) as db:
        with pytest.raises(liteq.InvalidArgument, match="need pool='process'"):
            liteq.Worker(db, max_tasks_per_child=5)
        with pytest.raises(liteq.InvalidArgument, match="max_memory_per_child must be a number"):
            liteq.Worker(db, pool="process", max_memory_per_child=0)
