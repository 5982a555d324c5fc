"""Django's task API, from wherever this interpreter has it.

Django >= 6.0 ships it as ``django.tasks``; before that (Django 5.2 on Python 3.11)
the ``django-tasks`` package backports the same interface as ``django_tasks``. The
choice is made once, at import: ``django.tasks`` when Django has it, else the backport.
Everything else in :mod:`liteq.contrib.django` takes these names from here.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "PACKAGE", "Task", "TaskResult", "TaskResultStatus", "TaskError", "TaskContext",
    "BaseTaskBackend", "InvalidTask", "TaskResultDoesNotExist", "task_backends",
    "task_enqueued", "task_started", "task_finished", "DEFAULT_QUEUE_NAME",
]


def _package() -> str:
    try:
        importlib.import_module("django.tasks")
    except ImportError:
        try:
            importlib.import_module("django_tasks")
        except ImportError as exc:
            raise ImportError(
                "liteq.contrib.django needs Django >= 6.0 (django.tasks) or the django-tasks "
                "backport: pip install 'liteq-queue[django]'") from exc
        return "django_tasks"
    return "django.tasks"


#: ``"django.tasks"`` (Django >= 6.0) or ``"django_tasks"`` (the backport).
PACKAGE = _package()

_root: Any = importlib.import_module(PACKAGE)
_base: Any = importlib.import_module(f"{PACKAGE}.base")
_backends: Any = importlib.import_module(f"{PACKAGE}.backends.base")
_exceptions: Any = importlib.import_module(f"{PACKAGE}.exceptions")
_signals: Any = importlib.import_module(f"{PACKAGE}.signals")

Task: Any = _base.Task
TaskResult: Any = _base.TaskResult
TaskResultStatus: Any = _base.TaskResultStatus
TaskError: Any = _base.TaskError
TaskContext: Any = _base.TaskContext
DEFAULT_QUEUE_NAME: str = _base.DEFAULT_TASK_QUEUE_NAME
BaseTaskBackend: Any = _backends.BaseTaskBackend
# Django 6 names it InvalidTask; the backport, InvalidTaskError.
InvalidTask: Any = getattr(_exceptions, "InvalidTask", None) or _exceptions.InvalidTaskError
TaskResultDoesNotExist: Any = _exceptions.TaskResultDoesNotExist
task_backends: Any = _root.task_backends
task_enqueued: Any = _signals.task_enqueued
task_started: Any = _signals.task_started
task_finished: Any = _signals.task_finished
