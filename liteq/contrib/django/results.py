"""liteq jobs seen as Django ``TaskResult`` objects.

Status from the job's state: queued, scheduled and retrying are READY; running is
RUNNING; done is SUCCESSFUL; failed and cancelled are FAILED. ``errors`` holds the
job's last error (liteq keeps the last one, with its traceback), ``enqueued_at``,
``started_at`` (= ``last_attempted_at``: liteq keeps the start of the last run, known
once the job finished) and ``finished_at`` come from the job's record.

``worker_ids`` has one entry per attempt, so that ``TaskResult.attempts`` is liteq's
attempt count: the worker liteq recorded for each attempt (``Backend.attempts``: the
registry id, or ``host:pid``), and ``"unrecorded"`` where none is known (an attempt
running now as seen from outside its worker, a lease that ran out after its worker's
registry row was gone, a job finished before schema ``_V_OBS``). ``errors`` lists the
error of every failed attempt liteq recorded, oldest first, ending with the job's last
error. In the ``task_started`` and ``task_finished`` signals and a task's context, the
attempt running now carries this worker's id, ``host:pid``.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from collections.abc import Sequence
from typing import Any

from django.conf import settings
from django.utils import timezone

from ...backends.registry import AttemptRecord
from ...job import JobInfo
from ...running import JobContext, JobError, Outcome
from .api import TaskError, TaskResult, TaskResultStatus

__all__ = ["STATUS", "PENDING", "UNRECORDED", "worker_id", "when", "task_error",
           "new_result", "result_from_info", "running_result", "finished_result"]

#: TaskResult status of each liteq job state.
STATUS: dict[str, Any] = {
    "waiting": TaskResultStatus.READY,  # a workflow step whose parents have not ended
    "queued": TaskResultStatus.READY, "scheduled": TaskResultStatus.READY,
    "retrying": TaskResultStatus.READY, "running": TaskResultStatus.RUNNING,
    "done": TaskResultStatus.SUCCESSFUL, "failed": TaskResultStatus.FAILED,
    "cancelled": TaskResultStatus.FAILED,
}
#: The id of a result enqueued inside a transaction that has not committed yet.
PENDING = "pending"
#: The worker id of an attempt that no process recorded.
UNRECORDED = "unrecorded"
_OUTCOME_STATUS = {"done": TaskResultStatus.SUCCESSFUL, "failed": TaskResultStatus.FAILED,
                   "cancelled": TaskResultStatus.FAILED}


def worker_id() -> str:
    """This process as a worker id: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def when(seconds: float | None) -> dt.datetime | None:
    """Epoch seconds as Django shows times: aware (UTC) with USE_TZ, else naive local."""
    if seconds is None:
        return None
    moment = dt.datetime.fromtimestamp(seconds, tz=dt.UTC)
    return moment if settings.USE_TZ else timezone.make_naive(moment)


def task_error(error: JobError) -> Any:
    """A liteq error record as Django's ``TaskError``: the exception's import path
    (``builtins.ValueError``; ``liteq.LiteqError`` when liteq gave the reason, as
    "lease expired") and the traceback text (the reason, when there is none)."""
    if error.type is None:
        path = "liteq.LiteqError"
    else:
        path = error.type if "." in error.type else f"builtins.{error.type}"
    return TaskError(exception_class_path=path, traceback=error.traceback or error.format())


def _result(task: Any, job_id: str, status: Any, alias: str, args: Any, kwargs: Any,
            **fields: Any) -> Any:
    values: dict[str, Any] = {"enqueued_at": None, "started_at": None, "finished_at": None,
                              "last_attempted_at": None, "errors": [], "worker_ids": []}
    values.update(fields)
    return TaskResult(task=task, id=job_id, status=status, args=list(args or []),
                      kwargs=dict(kwargs or {}), backend=alias, **values)


def new_result(task: Any, args: Any, kwargs: Any, alias: str) -> Any:
    """The READY result ``enqueue`` returns, before its job exists (id ``pending``).
    Building it checks that the arguments are JSON values (Django's rule)."""
    return _result(task, PENDING, TaskResultStatus.READY, alias, args, kwargs)


def result_from_info(task: Any, info: JobInfo, alias: str, value: Any,
                     attempts: Sequence[AttemptRecord] = ()) -> Any:
    """The result of the job *info* describes (*value*: its decoded return value;
    *attempts*: its recorded attempts, ``Backend.attempts``)."""
    started = when(info.started_at)
    workers = {a.attempt: a.worker for a in attempts}
    recorded = [e for e in (JobError.parse(a.error) for a in attempts) if e is not None]
    if info.error and (not recorded or recorded[-1].format() != info.error.format()):
        recorded.append(info.error)  # the job's last error, when no attempt row has it
    errors = [task_error(e) for e in recorded]
    result = _result(
        task, str(info.id), STATUS[info.state], alias, info.args, info.kwargs,
        enqueued_at=when(info.enqueued_at), started_at=started, last_attempted_at=started,
        finished_at=when(info.finished_at) if info.state in _OUTCOME_STATUS else None,
        errors=errors,
        worker_ids=[workers.get(n) or UNRECORDED for n in range(1, info.attempts + 1)])
    if info.state == "done":
        object.__setattr__(result, "_return_value", value)
    return result


def running_result(task: Any, job: JobContext, alias: str) -> Any:
    """The result of the job a worker is running now (RUNNING, this worker last)."""
    started = when(job.started_at or None) or timezone.now()
    return _result(task, str(job.id), TaskResultStatus.RUNNING, alias, job.args, job.kwargs,
                   enqueued_at=when(job.enqueued_at), started_at=started,
                   last_attempted_at=started,
                   worker_ids=[UNRECORDED] * (job.attempts - 1) + [worker_id()])


def finished_result(task: Any, job: JobContext, outcome: Outcome, alias: str) -> Any:
    """The result of the job a worker just finished (its outcome is committed)."""
    result = running_result(task, job, alias)
    object.__setattr__(result, "status", _OUTCOME_STATUS[outcome.state])
    object.__setattr__(result, "finished_at", timezone.now())
    if outcome.error is not None:
        result.errors.append(task_error(outcome.error))
    if outcome.state == "done":
        object.__setattr__(result, "_return_value", outcome.result)
    return result
