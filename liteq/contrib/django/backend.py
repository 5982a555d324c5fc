"""``LiteqBackend``: Django's task framework on liteq.

::

    TASKS = {"default": {
        "BACKEND": "liteq.contrib.django.LiteqBackend",
        "QUEUES": ["default", "emails"],
        "OPTIONS": {"database": BASE_DIR / "liteq.db"},   # see liteq.contrib.django.config
    }}

How Django's task maps onto liteq:

* A result's id is the liteq job's id, as a string.
* ``priority`` (-100..100, higher first) is liteq's priority unchanged: liteq also
  runs higher first, and its range contains Django's.
* ``queue_name`` is the liteq queue; ``run_after`` (aware, or naive in Django's time
  zone when ``USE_TZ`` is off) becomes the job's due time.
* ``enqueue_on_commit`` (default on): inside a transaction of the Django database,
  the job is written when that transaction commits, and not at all if it rolls back
  (the queue lives in its own file, so it cannot share the transaction). Until the
  commit the result's id is ``"pending"``; the commit sets it, its ``enqueued_at``,
  and sends ``task_enqueued``. Outside a transaction the job is written at once.
* ``task_enqueued`` is sent where the job is written; ``task_started`` and
  ``task_finished`` by the worker (:mod:`.worker`), ``task_finished`` once the
  outcome is committed and only when the task is finished (a failed attempt that will
  be retried sends nothing: the result is READY again).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.utils import timezone

import liteq

from ... import codec
from ...errors import InvalidArgument, LiteqError
from ...job import Job, JobNotFound
from ...task import Task as LiteqJobTask
from ...validate import INT64_MAX, validate_name
from .api import (
    DEFAULT_QUEUE_NAME,
    BaseTaskBackend,
    InvalidTask,
    Task,
    TaskResultDoesNotExist,
    task_enqueued,
)
from .config import BackendOptions, check_backoff, check_key, read_options
from .registry import database, known, liteq_task, remember
from .results import PENDING, new_result, result_from_info

__all__ = ["LiteqBackend", "LiteqTask"]


@dataclass(frozen=True, slots=True, kw_only=True)
class LiteqTask(Task):
    """A Django task with liteq's options: ``@task(max_attempts=3, timeout=60, key=...)``
    (Django passes the decorator's extra options to the backend's ``task_class``).
    Each one left None takes the backend's ``OPTIONS`` value."""

    #: Runs before the task is FAILED.
    max_attempts: int | None = None
    #: Delay before each retry: a :class:`liteq.Backoff` or a dict of its fields.
    backoff: Any = None
    #: Seconds one run may take.
    timeout: float | None = None
    #: Dedup key: a string (one unfinished job of this task at a time) or a callable
    #: ``key(args, kwargs) -> str | None``.
    key: str | Callable[..., Any] | None = None


class LiteqBackend(BaseTaskBackend):
    """A Django task backend that keeps its tasks in a liteq database (SQLite file or
    PostgreSQL): leases, retries, priorities, deferred runs, results and schedules."""

    task_class = LiteqTask
    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        #: Queues in the order given (a worker prefers the first).
        self.queue_order: list[str] = list(dict.fromkeys(
            params.get("QUEUES") or [DEFAULT_QUEUE_NAME]))
        self.settings: BackendOptions
        self.settings, self.problems = read_options(self.options)

    # -- the database -----------------------------------------------------------------

    @property
    def db(self) -> liteq.Database:
        """The liteq database of this backend (opened on first use, once per process)."""
        if self.problems:
            raise ImproperlyConfigured(
                f"TASKS[{self.alias!r}] (liteq): {'; '.join(self.problems)}")
        assert self.settings.database is not None
        return database(self.settings.database)

    # -- Django's interface -------------------------------------------------------------

    def validate_task(self, task: Any) -> None:
        """Django's checks (a module-level function, priority, run_after, queue
        among QUEUES, a context argument), then liteq's: the queue name and the
        task's liteq options. A valid task becomes known to this process."""
        super().validate_task(task)
        try:
            validate_name(task.queue_name)
            check_backoff(getattr(task, "backoff", None), "task")
            check_key(getattr(task, "key", None), "task")
            for name in ("max_attempts", "timeout"):
                value = getattr(task, name, None)
                if value is not None and (isinstance(value, bool) or
                                          not isinstance(value, (int, float)) or value <= 0):
                    raise LiteqError(f"task {name} must be a positive number or None, "
                                     f"got {value!r}")
        except LiteqError as exc:
            raise InvalidTask(str(exc)) from None
        remember(task)

    def enqueue(self, task: Any, args: Any, kwargs: Any) -> Any:
        """Enqueue *task* with *args* and *kwargs* (JSON values); return its READY result."""
        self.validate_task(task)
        result = new_result(task, args, kwargs, self.alias)
        db = self.db
        # Checked now, where the caller can fix it, even when the write waits for a
        # commit: arguments that do not fit the function, a key function that fails.
        job_task = liteq_task(db, task, self.settings, self.alias)
        why = job_task.binding_error(result.args, result.kwargs)
        if why is not None:
            raise InvalidArgument(f"cannot enqueue task {job_task.name}: {why}")
        key = _key(task, self.settings, result.args, result.kwargs)
        write = functools.partial(self._write, db, job_task, result, key)
        alias = self.settings.enqueue_on_commit
        if alias is not None and transaction.get_connection(alias).in_atomic_block:
            transaction.on_commit(write, using=alias)
        else:
            write()
        return result

    def get_result(self, result_id: str) -> Any:
        """The result with this id, read afresh; ``TaskResultDoesNotExist`` if there
        is none (never existed, pruned after its ``result_ttl``, or still pending)."""
        if result_id == PENDING:
            raise TaskResultDoesNotExist(
                "this result was enqueued inside a transaction that has not committed yet "
                "(enqueue_on_commit): its id is set when the transaction commits")
        try:
            job_id = int(result_id)
        except (TypeError, ValueError):
            raise TaskResultDoesNotExist(result_id) from None
        if not 1 <= job_id <= INT64_MAX:
            raise TaskResultDoesNotExist(result_id)
        try:
            info = Job(self.db, job_id).info()
        except JobNotFound:
            raise TaskResultDoesNotExist(result_id) from None
        task = known(info.task) if info.task else None
        if task is None:
            raise TaskResultDoesNotExist(
                f"{result_id}: its task {info.task!r} is not a Django task declared in this "
                f"process (import its module first)")
        if info.queue and info.queue != task.queue_name:
            task = _on_queue(task, info.queue)
        value = codec.decode(info.value) if info.state == "done" and info.value else None
        return result_from_info(task, info, self.alias, value, self.db.backend.attempts(job_id))

    def check(self, **kwargs: Any) -> Iterable[Any]:
        """Django's system checks: every problem with OPTIONS (``liteq.E001``)."""
        yield from super().check(**kwargs)
        for problem in self.problems:
            yield checks.Error(f"TASKS[{self.alias!r}]: {problem}", id="liteq.E001")

    # -- writing a job ----------------------------------------------------------------

    def _write(self, db: liteq.Database, job_task: LiteqJobTask[Any, Any], result: Any,
               key: str | None) -> None:
        task = result.task
        delay = 0.0
        if task.run_after is not None:
            run_after = task.run_after
            if timezone.is_naive(run_after):
                run_after = timezone.make_aware(run_after)
            delay = max(0.0, run_after.timestamp() - db.clock())
        job = job_task.enqueue(result.args, result.kwargs, delay=delay, priority=task.priority,
                               key=key, queue=task.queue_name)
        object.__setattr__(result, "id", str(job.id))
        object.__setattr__(result, "enqueued_at", timezone.now())
        if key is not None:  # it may be a job enqueued before: show that one
            found = self.get_result(result.id)
            for name in ("status", "enqueued_at", "started_at", "finished_at",
                         "last_attempted_at", "errors", "worker_ids"):
                object.__setattr__(result, name, getattr(found, name))
        task_enqueued.send(type(self), task_result=result)


def _on_queue(task: Any, queue: str) -> Any:
    """*task* as enqueued on *queue* (a dead-lettered job moved to another queue keeps
    the task's own)."""
    try:
        return task.using(queue_name=queue)
    except InvalidTask:
        return task


def _key(task: Any, options: BackendOptions, args: Any, kwargs: Any) -> str | None:
    """The job's dedup key, scoped to the task; None for no dedup."""
    key = getattr(task, "key", None) or options.key
    if callable(key):
        key = key(args, kwargs)
        if key is None:
            return None
        if not isinstance(key, str) or not key:
            raise InvalidTask(f"the key function of {task.module_path} must return a "
                              f"non-empty string or None, got {key!r}")
    return None if key is None else f"{task.module_path}:{key}"

