"""The Django task backend in a real Django project (tests/djangoproject.py): views
through Django's test Client, real ``manage.py liteq_worker`` processes, on every engine."""

from __future__ import annotations

import datetime as dt
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("django")

from djangoproject import PATIENCE, running_worker, start_worker, worker_env  # noqa: E402

pytestmark = pytest.mark.every_engine


def wait_for(predicate: Any, what: str) -> None:
    deadline = time.monotonic() + PATIENCE
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def finished(task: Any, result_id: str) -> Any:
    """Wait for the result to finish; return it."""
    holder: list[Any] = []

    def done() -> bool:
        holder[:] = [task.get_result(result_id)]
        return bool(holder[0].is_finished)

    wait_for(done, f"result {result_id} to finish")
    return holder[0]


def test_a_view_enqueues_and_a_manage_py_worker_runs_it_to_successful(
        django_project: Path, django_target: str, tmp_path: Path) -> None:
    from django.test import Client
    from shop import tasks

    signals = tmp_path / "signals.log"
    response = Client().get("/add", {"a": 2, "b": 3})
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "READY"
    result_id = body["id"]
    assert tasks.add.get_result(result_id).status == "READY"
    with running_worker(django_project, django_target, "--burst", SIGNAL_LOG=str(signals)) as proc:
        assert proc.wait(PATIENCE) == 0
    result = tasks.add.get_result(result_id)
    assert result.status == "SUCCESSFUL"
    assert result.return_value == 5
    assert result.attempts == 1
    assert result.enqueued_at <= result.started_at <= result.finished_at
    assert result.errors == []
    [worker] = result.worker_ids  # the worker liteq recorded, not "unrecorded"
    assert worker != "unrecorded" and f":{proc.pid}" in worker, worker
    assert Client().get(f"/result/{result_id}").json() == {"status": "SUCCESSFUL", "value": 5}
    assert signals.read_text().splitlines() == [
        f"started {result_id} RUNNING 1", f"finished {result_id} SUCCESSFUL 1"]


def test_a_failing_task_ends_failed_with_its_traceback_after_its_retries(
        django_project: Path, django_target: str, tmp_path: Path) -> None:
    from shop import tasks

    signals = tmp_path / "signals.log"
    result = tasks.explode.enqueue("card declined")
    with running_worker(django_project, django_target, SIGNAL_LOG=str(signals)):
        failed = finished(tasks.explode, result.id)
    assert failed.status == "FAILED"
    assert failed.attempts == 3  # max_attempts of the project's OPTIONS
    assert "unrecorded" not in failed.worker_ids
    assert len(failed.errors) == 3  # every attempt's error, oldest first
    error = failed.errors[-1]
    assert all(e.exception_class is ValueError for e in failed.errors)
    assert error.exception_class is ValueError
    assert error.traceback.startswith("Traceback (most recent call last):")
    assert "raise ValueError(message)" in error.traceback
    assert error.traceback.rstrip().endswith("ValueError: card declined")
    with pytest.raises(ValueError, match="failed"):
        failed.return_value  # noqa: B018
    # Retried attempts are not finished: one task_finished, at the end.
    lines = signals.read_text().splitlines()
    assert lines.count(f"started {result.id} RUNNING 1") == 1
    assert [line for line in lines if line.startswith("finished")] == [
        f"finished {result.id} FAILED 3"]


def test_run_after_is_honoured(django_project: Path, django_target: str) -> None:
    from django.utils import timezone
    from shop import tasks

    run_after = timezone.now() + dt.timedelta(seconds=1.5)
    result = tasks.add.using(run_after=run_after).enqueue(1, 1)
    with running_worker(django_project, django_target):
        assert tasks.add.get_result(result.id).status == "READY"
        done = finished(tasks.add, result.id)
    assert done.return_value == 2
    assert done.started_at >= run_after


def test_higher_priority_runs_first(django_project: Path, django_target: str,
                                    tmp_path: Path) -> None:
    from shop import tasks

    log = tmp_path / "order.log"
    for priority in (-10, 50, 0, 100, -100, 7):
        tasks.record.using(priority=priority).enqueue(str(log), str(priority))
    with running_worker(django_project, django_target, "--burst", "--concurrency", "1") as proc:
        assert proc.wait(PATIENCE) == 0
    assert log.read_text().split() == ["100", "50", "7", "0", "-10", "-100"]


def test_enqueue_on_commit_enqueues_nothing_when_the_view_transaction_rolls_back(
        django_project: Path, django_target: str) -> None:
    from django.test import Client

    from liteq.contrib.django.registry import database

    client = Client(raise_request_exception=False)
    assert client.get("/add-then-fail").status_code == 500
    db = database(django_target)
    assert not db.has_queue("default") or len(db.queue("default")) == 0
    # The same enqueue in a transaction that commits is written at the commit.
    body = client.get("/add-in-transaction").json()
    assert body["inside"] == "pending"
    assert body["after"] != "pending"
    assert len(db.queue("default")) == 1
    assert db.job(int(body["after"])).state == "queued"


def test_validate_task_refuses_a_function_that_is_not_module_level(
        django_project: Path, django_target: str) -> None:
    from liteq.contrib.django.api import InvalidTask
    from liteq.contrib.django.backend import LiteqTask

    def inner() -> None:
        pass

    with pytest.raises(InvalidTask, match="module level"):
        LiteqTask(func=inner)


def test_a_worker_killed_mid_task_leaves_the_task_to_be_run_again(
        django_project: Path, django_target: str, tmp_path: Path) -> None:
    from shop import tasks

    from liteq.contrib.django.registry import database

    database(django_target).queue("default", lease=1.0)  # a short lease: quick recovery
    marker = tmp_path / "started"
    result = tasks.slow_first_time.enqueue(str(marker))
    first = start_worker(django_project, django_target, "--concurrency", "1")
    try:
        wait_for(marker.exists, "the first attempt to start")
        assert tasks.slow_first_time.get_result(result.id).status == "RUNNING"
        first.send_signal(signal.SIGKILL)
        first.wait(PATIENCE)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    with running_worker(django_project, django_target, "--concurrency", "1"):
        done = finished(tasks.slow_first_time, result.id)
    assert done.status == "SUCCESSFUL"
    assert done.return_value == 2  # the second attempt ran it to the end
    assert done.attempts == 2


def test_liteq_worker_given_a_settings_module_runs_its_tasks_and_fires_its_schedules(
        django_project: Path, django_target: str, tmp_path: Path) -> None:
    import json

    from shop import tasks

    from liteq.contrib.django.registry import database

    result = tasks.add.enqueue(20, 22)
    log = tmp_path / "ticks.log"
    schedules = {"tick": {"task": "shop.tasks.record", "every": 1,
                          "args": [str(log), "tick"]}}
    proc = subprocess.Popen(
        [sys.executable, "-m", "liteq", "worker", "--django-settings", "mysite.settings",
         "--scheduler", "--grace", "0", "--summary-interval", "0"],
        cwd=django_project, env=worker_env(django_target,
                                           LITEQ_DJANGO_SCHEDULES=json.dumps(schedules)),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert finished(tasks.add, result.id).return_value == 42
        wait_for(lambda: log.exists() and "tick" in log.read_text(), "a scheduled run")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=PATIENCE)
    assert proc.returncode == 0, err.decode()
    [schedule] = database(django_target).schedules()
    assert (schedule.name, schedule.task, schedule.queue) == ("tick", "shop.tasks.record",
                                                             "default")
