"""Running Django tasks: ``manage.py liteq_worker`` and ``liteq worker --django-settings``.

Both set Django up (no autoreload), import the task modules (every installed app's
``tasks`` module and the backend's ``task_modules``: a worker runs only the tasks
declared there, never a path read from a message), register those tasks on the
backend's liteq database, declare the ``schedules`` of its OPTIONS, and run a
:class:`liteq.Worker` with the same signals and shutdown as ``liteq worker``, plus
:class:`DjangoSignals` (Django's ``task_started`` and ``task_finished``, and
``close_old_connections`` around each task, as Django does around a request).
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import close_old_connections
from django.utils.module_loading import autodiscover_modules

import liteq

from ...errors import LiteqError
from ...hooks import Hook
from ...running import JobContext, Outcome
from .api import task_backends, task_finished, task_started
from .backend import LiteqBackend
from .registry import known, known_tasks, liteq_task
from .results import finished_result, running_result

__all__ = ["DjangoSignals", "Prepared", "prepare", "setup_django"]


class DjangoSignals(Hook):
    """Sends ``task_started`` before a Django task runs and ``task_finished`` once it
    finished (its outcome committed; not after an attempt that will be retried), and
    closes the thread's stale Django database connections around each task."""

    def __init__(self, backend: LiteqBackend) -> None:
        self.backend = backend

    def before_job(self, job: JobContext) -> None:
        close_old_connections()
        task = known(job.task)
        if task is not None:
            task_started.send(type(self.backend),
                              task_result=running_result(task, job, self.backend.alias))

    def after_job(self, job: JobContext, outcome: Outcome) -> None:
        task = known(job.task)
        if task is not None and outcome.state in ("done", "failed", "cancelled"):
            task_finished.send(type(self.backend), task_result=finished_result(
                task, job, outcome, self.backend.alias))
        close_old_connections()


@dataclass
class Prepared:
    """What a worker for one backend needs."""

    backend: LiteqBackend
    db: liteq.Database
    queues: list[str]
    hooks: list[Hook]


def setup_django(settings_module: str | None = None) -> None:
    """Set Django up in this process (``liteq worker --django-settings``): the settings
    module from *settings_module* or ``$DJANGO_SETTINGS_MODULE``, imported like
    ``manage.py`` does, from the current directory."""
    import django

    if settings_module:
        os.environ["DJANGO_SETTINGS_MODULE"] = settings_module
    if not os.environ.get("DJANGO_SETTINGS_MODULE"):
        raise LiteqError("no Django settings: give --django-settings mysite.settings or set "
                         "DJANGO_SETTINGS_MODULE")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        django.setup()
    except ImportError as exc:
        raise LiteqError(f"cannot import the Django settings "
                         f"{os.environ['DJANGO_SETTINGS_MODULE']!r}: {exc} (run from the "
                         f"directory that holds manage.py, or set PYTHONPATH)") from exc


def prepare(alias: str = "default") -> Prepared:
    """Import the task modules, register the tasks of backend *alias* on its database,
    declare its schedules; Django must be set up. Raises LiteqError saying what to fix."""
    try:
        backend = task_backends[alias]
    except Exception as exc:  # InvalidTaskBackendError, with Django's own message
        raise LiteqError(f"no task backend {alias!r}: {exc}") from None
    if not isinstance(backend, LiteqBackend):
        raise LiteqError(f"TASKS[{alias!r}] is {type(backend).__name__}, not "
                         f"liteq.contrib.django.LiteqBackend: nothing for a liteq worker to run")
    try:
        db = backend.db
    except ImproperlyConfigured as exc:
        raise LiteqError(str(exc)) from None
    autodiscover_modules("tasks")
    for module in backend.settings.task_modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise LiteqError(f"OPTIONS['task_modules']: cannot import {module!r}: {exc}") from exc
    for task in known_tasks():
        if task.backend == alias:
            liteq_task(db, task, backend.settings, alias)
    for name in backend.queue_order:
        db.queue(name)  # declared in settings: created, not warned about as a typo
    _declare_schedules(backend, db)
    return Prepared(backend, db, list(backend.queue_order), [DjangoSignals(backend)])


def _declare_schedules(backend: LiteqBackend, db: liteq.Database) -> None:
    """Create or update the schedules of OPTIONS (an unchanged one keeps its next fire)."""
    for name, spec in backend.settings.schedules.items():
        options: dict[str, Any] = dict(spec)
        target = options.pop("task")
        path = getattr(target, "module_path", target)
        task = known(path) if isinstance(path, str) else None
        if task is None:
            raise LiteqError(f"schedule {name!r}: task {path!r} is not a Django task declared "
                             f"in the apps' tasks modules or OPTIONS['task_modules']")
        options.setdefault("queue", task.queue_name)
        db.schedule(name, task=liteq_task(db, task, backend.settings, backend.alias),
                    **options)
