"""Django's expectations of a task backend, run against ``LiteqBackend``.

Written from the interface of ``django_tasks.backends.base.BaseTaskBackend`` and the
behaviour its own backends' test cases check (flags, enqueue, results and refresh,
async variants, validation, context, signals, checks); the django-tasks 0.12 wheel
ships no tests to run as they are. DESIGN-NOTES.md lists which expectations pass.
Jobs run in an in-process worker here; tests/test_django_backend.py uses real ones.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest

pytest.importorskip("django")

import liteq  # noqa: E402

pytestmark = pytest.mark.every_engine


def run_jobs(queues: list[str] | None = None) -> None:
    """Run every due job in this process (a burst worker), with the backend's hooks."""
    from liteq.contrib.django.worker import prepare

    prepared = prepare("default")
    liteq.Worker(prepared.db, queues or prepared.queues, hooks=prepared.hooks, burst=True,
                 install_signals=False, summary_interval=0).run()


def test_the_backend_supports_defer_async_tasks_get_result_and_priority(
        django_target: str) -> None:
    from liteq.contrib.django.api import task_backends
    from liteq.contrib.django.backend import LiteqBackend

    backend = task_backends["default"]
    assert isinstance(backend, LiteqBackend)
    assert (backend.supports_defer, backend.supports_async_task, backend.supports_get_result,
            backend.supports_priority) == (True, True, True, True)


def test_enqueue_returns_a_ready_result_of_the_call(django_target: str) -> None:
    from shop import tasks

    result = tasks.pair.enqueue((1, 2), b="x")
    assert result.status == "READY"
    assert result.id.isdigit()
    assert result.task is tasks.pair
    assert result.args == [[1, 2]]  # JSON values: tuples become lists
    assert result.kwargs == {"b": "x"}
    assert result.backend == "default"
    assert result.enqueued_at is not None and result.enqueued_at.tzinfo is not None
    assert (result.started_at, result.finished_at, result.errors, result.worker_ids) == (
        None, None, [], [])
    assert not result.is_finished
    with pytest.raises(ValueError, match="not finished"):
        result.return_value  # noqa: B018


def test_a_result_is_read_back_and_refreshed_to_successful_with_json_values(
        django_target: str) -> None:
    from shop import tasks

    result = tasks.pair.enqueue(1, 2)
    again = tasks.pair.get_result(result.id)
    assert (again.id, again.status, again.args) == (result.id, "READY", [1, 2])
    run_jobs()
    result.refresh()
    assert result.status == "SUCCESSFUL"
    assert result.is_finished
    assert result.return_value == [1, {"b": 2}]  # the tuple came back as JSON: a list
    assert result.attempts == 1
    assert result.started_at == result.last_attempted_at
    assert result.enqueued_at <= result.started_at <= result.finished_at


def test_aenqueue_aget_result_and_arefresh_work_from_async_code(django_target: str) -> None:
    from shop import tasks

    async def enqueue() -> Any:
        return await tasks.add.aenqueue(1, 2)

    result = asyncio.run(enqueue())
    run_jobs()

    async def read() -> Any:
        found = await tasks.add.aget_result(result.id)
        await result.arefresh()
        return found

    found = asyncio.run(read())
    assert found.status == result.status == "SUCCESSFUL"
    assert found.return_value == 3


def test_an_async_task_runs_to_its_value(django_target: str) -> None:
    from shop import tasks

    result = tasks.add_async.enqueue(20, 22)
    run_jobs()
    assert tasks.add_async.get_result(result.id).return_value == 42


def test_a_task_that_takes_context_sees_its_result_and_attempt(django_target: str) -> None:
    from shop import tasks

    result = tasks.whoami.enqueue()
    run_jobs()
    assert tasks.whoami.get_result(result.id).return_value == [1, result.id, "RUNNING"]


@pytest.mark.parametrize("result_id", ["987654", "0", "-3", "abc", "", "pending"])
def test_get_result_of_an_unknown_id_raises_task_result_does_not_exist(
        django_target: str, result_id: str) -> None:
    from shop import tasks

    from liteq.contrib.django.api import TaskResultDoesNotExist

    with pytest.raises(TaskResultDoesNotExist):
        tasks.add.get_result(result_id)


def test_get_result_through_another_task_raises_task_result_mismatch(
        django_target: str) -> None:
    from shop import tasks

    exceptions = pytest.importorskip("django_tasks.exceptions")
    result = tasks.add.enqueue(1, 2)
    with pytest.raises(exceptions.TaskResultMismatch):
        tasks.explode.get_result(result.id)


def test_task_enqueued_is_sent_with_the_result(django_target: str) -> None:
    from shop import tasks

    from liteq.contrib.django.api import task_enqueued
    from liteq.contrib.django.backend import LiteqBackend

    seen: list[Any] = []

    def receiver(sender: Any, task_result: Any, **kwargs: Any) -> None:
        seen.append((sender, task_result.id, task_result.status))

    task_enqueued.connect(receiver)
    try:
        result = tasks.add.enqueue(1, 2)
    finally:
        task_enqueued.disconnect(receiver)
    assert seen == [(LiteqBackend, result.id, "READY")]


def test_task_started_and_finished_are_sent_by_the_worker(django_target: str) -> None:
    from shop import tasks

    from liteq.contrib.django.api import task_finished, task_started

    seen: list[Any] = []

    def receiver(sender: Any, task_result: Any, **kwargs: Any) -> None:
        seen.append((task_result.id, task_result.status, len(task_result.worker_ids)))

    result = tasks.add.enqueue(1, 2)
    task_started.connect(receiver)
    task_finished.connect(receiver)
    try:
        run_jobs()
    finally:
        task_started.disconnect(receiver)
        task_finished.disconnect(receiver)
    assert seen == [(result.id, "RUNNING", 1), (result.id, "SUCCESSFUL", 1)]


def test_args_that_are_not_json_are_refused_and_nothing_is_enqueued(
        django_target: str) -> None:
    from shop import tasks

    from liteq.contrib.django.registry import database

    with pytest.raises(TypeError):
        tasks.add.enqueue(object(), 1)
    assert not database(django_target).has_queue("default")


def test_arguments_that_do_not_fit_the_signature_are_refused_when_enqueued(
        django_target: str) -> None:
    from django.db import transaction
    from shop import tasks

    with pytest.raises(liteq.InvalidArgument, match="missing a required argument"):
        tasks.add.enqueue(1)
    # Inside a transaction too, at the call (not later, when the transaction commits).
    with transaction.atomic():
        with pytest.raises(liteq.InvalidArgument, match="missing a required argument"):
            tasks.add.enqueue(1)


def test_the_worker_runs_only_the_queues_it_serves(django_target: str) -> None:
    from shop import tasks

    result = tasks.add.using(queue_name="other").enqueue(1, 2)
    assert result.task.queue_name == "other"
    run_jobs(["default"])
    assert tasks.add.get_result(result.id).status == "READY"
    run_jobs(["other"])
    done = tasks.add.get_result(result.id)
    assert (done.status, done.task.queue_name) == ("SUCCESSFUL", "other")


def test_a_cancelled_job_is_failed(django_target: str) -> None:
    from shop import tasks

    from liteq.contrib.django.registry import database

    result = tasks.add.enqueue(1, 2)
    assert database(django_target).job(int(result.id)).cancel() == "cancelled"
    cancelled = tasks.add.get_result(result.id)
    assert cancelled.status == "FAILED"
    assert cancelled.errors[0].exception_class_path == "liteq.LiteqError"
    assert cancelled.errors[0].exception_class is liteq.LiteqError


def test_a_dedup_key_gives_back_the_unfinished_job(django_target: str) -> None:
    from shop import tasks

    first = tasks.singleton.enqueue(1)
    second = tasks.singleton.enqueue(2)
    assert second.id == first.id
    run_jobs()
    assert tasks.singleton.get_result(first.id).return_value == 1
    assert tasks.singleton.enqueue(3).id != first.id  # finished: a new one may start


def test_liteq_options_given_to_the_task_decorator_apply_to_that_task(
        django_target: str) -> None:
    from shop import tasks

    from liteq.contrib.django.registry import database

    task = tasks.once_per_name  # @task(max_attempts=1, key=lambda args, kwargs: args[0])
    first = task.enqueue("a")
    assert task.enqueue("a").id == first.id
    assert task.enqueue("b").id != first.id
    run_jobs()
    failed = task.get_result(first.id)
    assert (failed.status, failed.attempts) == ("FAILED", 1)
    assert database(django_target).tasks["shop.tasks.once_per_name"].max_attempts == 1


def test_enqueue_on_commit_false_writes_the_job_inside_the_transaction(
        django_target: str) -> None:
    from django.conf import settings
    from django.db import transaction
    from django.test import override_settings
    from shop import tasks

    from liteq.contrib.django.registry import database

    config = {**settings.TASKS["default"]}
    config["OPTIONS"] = {**config["OPTIONS"], "enqueue_on_commit": False}
    with override_settings(TASKS={"default": config}):
        with pytest.raises(RuntimeError), transaction.atomic():
            result = tasks.add.enqueue(1, 2)
            assert result.id != "pending"
            raise RuntimeError("roll back")
    assert database(django_target).job(int(result.id)).state == "queued"


def test_run_after_makes_a_scheduled_job_and_naive_datetimes_are_refused(
        django_target: str) -> None:
    from django.utils import timezone
    from shop import tasks

    from liteq.contrib.django.api import InvalidTask
    from liteq.contrib.django.registry import database

    later = timezone.now() + dt.timedelta(hours=1)
    result = tasks.add.using(run_after=later).enqueue(1, 2)
    info = database(django_target).job(int(result.id)).info()
    assert info.state == "scheduled"
    assert info.run_at == pytest.approx(later.timestamp(), abs=1.0)
    with pytest.raises(InvalidTask, match="aware"):
        tasks.add.using(run_after=dt.datetime.now() + dt.timedelta(hours=1))


@pytest.mark.parametrize(("change", "message"), [
    ({"priority": 101}, "priority"),
    ({"priority": -101}, "priority"),
    ({"queue_name": "nope"}, "Queue 'nope'"),
])
def test_validate_task_refuses_what_the_backend_cannot_run(
        django_target: str, change: dict[str, Any], message: str) -> None:
    from shop import tasks

    from liteq.contrib.django.api import InvalidTask

    with pytest.raises(InvalidTask, match=message):
        tasks.add.using(**change)


def test_validate_task_refuses_a_context_task_without_a_context_argument(
        django_target: str) -> None:
    from shop import tasks

    from liteq.contrib.django.api import InvalidTask
    from liteq.contrib.django.backend import LiteqTask

    with pytest.raises(InvalidTask, match="context"):
        LiteqTask(func=tasks.add.func, takes_context=True)
    with pytest.raises(InvalidTask, match="max_attempts"):
        LiteqTask(func=tasks.add.func, max_attempts=0)
    with pytest.raises(InvalidTask, match="backoff"):
        LiteqTask(func=tasks.add.func, backoff={"speed": 2})


def test_check_reports_each_problem_with_the_options_and_the_database_refuses_them(
        django_target: str) -> None:
    from django.core.exceptions import ImproperlyConfigured

    from liteq.contrib.django.backend import LiteqBackend

    backend = LiteqBackend("broken", {"OPTIONS": {"max_attempts": 0, "bogus": 1,
                                                  "enqueue_on_commit": 3}})
    messages = [m.msg for m in backend.check()]
    assert [m.id for m in backend.check()] == ["liteq.E001"] * 4
    assert any("unknown OPTIONS 'bogus'" in m for m in messages)
    assert any("max_attempts" in m for m in messages)
    assert any("enqueue_on_commit" in m for m in messages)
    assert any("OPTIONS['database'] is required" in m for m in messages)
    with pytest.raises(ImproperlyConfigured, match="bogus"):
        backend.db  # noqa: B018
    good = LiteqBackend("good", {"OPTIONS": {"database": django_target}})
    assert list(good.check()) == []


def test_django_check_passes_on_the_project(django_target: str) -> None:
    from django.core.management import call_command

    call_command("check")


def test_liteq_worker_wants_app_or_django_settings_but_not_both() -> None:
    from click.testing import CliRunner

    from liteq.cli import cli

    for args in (["worker"], ["worker", "app", "--django-settings", "mysite.settings"]):
        result = CliRunner().invoke(cli, args, prog_name="liteq")
        assert result.exit_code == 2
        assert "give APP, or --django-settings" in result.output


def test_a_worker_creates_the_queues_named_in_settings(django_target: str) -> None:
    from liteq.contrib.django.registry import database
    from liteq.contrib.django.worker import prepare

    prepared = prepare("default")
    assert prepared.queues == ["default", "other"]
    assert all(database(django_target).has_queue(name) for name in prepared.queues)


def test_the_worker_command_says_what_is_wrong_without_a_traceback(
        django_project: Any) -> None:
    import subprocess
    import sys

    from djangoproject import PATIENCE, worker_env

    proc = subprocess.run(
        [sys.executable, "manage.py", "liteq_worker", "--backend", "nope"],
        cwd=django_project, env=worker_env(str(django_project / "unused")),
        capture_output=True, timeout=PATIENCE)
    assert proc.returncode == 1
    err = proc.stderr.decode()
    assert "no task backend 'nope'" in err
    assert "Traceback" not in err
