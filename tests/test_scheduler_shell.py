"""Shell commands as schedule targets: ``run_shell`` records the exit code and the
tail of the output; the ``liteq.shell`` task runs only where it was registered (a
worker started with ``--allow-shell``), and a failing command is retried like any task."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from helpers import PATIENCE, wait_until

import liteq
from liteq.scheduler import (
    SHELL_QUEUE,
    SHELL_TASK,
    CommandFailed,
    register_shell_task,
    run_shell,
    schedule,
)
from liteq.worker import Worker

pytestmark = pytest.mark.every_engine


def test_run_shell_records_the_exit_code_and_the_output_of_stdout_and_stderr() -> None:
    result = run_shell("echo out; echo err >&2; exit 3")
    assert result["exit_code"] == 3
    assert result["output_tail"] == "out\nerr\n"
    assert result["timed_out"] is False and result["duration"] >= 0
    assert run_shell("true")["exit_code"] == 0


def test_run_shell_keeps_only_the_tail_of_a_long_output() -> None:
    result = run_shell("seq 1 100000", tail=100)
    assert len(result["output_tail"]) == 100
    assert result["output_tail"].endswith("99999\n100000\n")


def test_run_shell_kills_the_whole_command_past_its_timeout() -> None:
    result = run_shell("echo started; sleep 30 & sleep 30; echo never", timeout=0.3)
    assert result["timed_out"] is True
    assert result["exit_code"] < 0  # killed by a signal
    assert result["output_tail"] == "started\n"


def test_run_shell_waits_for_a_command_that_closed_its_output() -> None:
    assert run_shell("exec >/dev/null 2>&1; sleep 0.2; exit 4")["exit_code"] == 4


def test_command_failed_names_the_exit_code_and_carries_the_output() -> None:
    exc = CommandFailed(run_shell("echo disk full; exit 7"))
    assert str(exc).startswith("command exited with code 7: echo disk full; exit 7")
    assert "disk full" in str(exc) and exc.exit_code == 7


@contextmanager
def running_worker(db: liteq.Database, queues: list[str]) -> Iterator[Worker]:
    worker = Worker(db, queues, concurrency=1, install_signals=False, summary_interval=0)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        worker.stop()
        thread.join(PATIENCE)


def test_a_scheduled_command_runs_on_a_shell_worker_and_its_result_is_recorded(
        db: liteq.Database, tmp_path: Path) -> None:
    register_shell_task(db)
    s = schedule(db, "hello", every=3600, command=f"echo hello; pwd > {tmp_path / 'ran'}")
    assert s.queue == SHELL_QUEUE
    job = s.run_now()
    with running_worker(db, [SHELL_QUEUE]):
        result = job.result(wait=PATIENCE)
    assert result["exit_code"] == 0 and result["output_tail"] == "hello\n"
    assert (tmp_path / "ran").exists()


def test_a_failing_command_is_retried_like_any_task_and_fails_with_its_exit_code(
        db: liteq.Database, tmp_path: Path) -> None:
    register_shell_task(db, max_attempts=3, backoff=liteq.Backoff(base=0.01, jitter=0))
    log = tmp_path / "runs"
    s = schedule(db, "flaky", every=3600, command=f"echo try >> {log}; echo boom >&2; exit 7")
    job = s.run_now()
    with running_worker(db, [SHELL_QUEUE]):
        wait_until(lambda: job.state == "failed", what="the job to fail")
    assert log.read_text() == "try\n" * 3  # run three times
    info = job.info()
    assert info.attempts == 3 and info.task == SHELL_TASK
    assert info.error is not None and info.error.type == "liteq.scheduler.CommandFailed"
    assert "exited with code 7" in info.error.message and "boom" in info.error.message


def test_without_allow_shell_a_worker_never_runs_a_command(
        db: liteq.Database, tmp_path: Path) -> None:
    db.queue(SHELL_QUEUE, max_attempts=1)
    marker = tmp_path / "ran"
    job = schedule(db, "sneaky", every=3600, command=f"touch {marker}").run_now()
    with running_worker(db, [SHELL_QUEUE]):  # no register_shell_task: no --allow-shell
        wait_until(lambda: job.state == "failed", what="the job to fail")
    assert not marker.exists()
    assert str(job.error).startswith(f"unknown task {SHELL_TASK!r}")


@pytest.mark.parametrize("queue", ["default", "nightly-ops"])
def test_a_command_schedule_can_go_to_another_queue(db: liteq.Database, queue: str) -> None:
    task = register_shell_task(db, queue=queue)
    assert task.name == SHELL_TASK and task.queue == queue
    assert schedule(db, "c", every=60, command="true", queue=queue).queue == queue
