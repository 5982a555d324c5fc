"""The backend's ``OPTIONS``, read and checked once (``TASKS[alias]["OPTIONS"]``).

::

    "OPTIONS": {
        "database": BASE_DIR / "liteq.db",    # or "postgresql://host/db" (required)
        "max_attempts": 5,                    # runs before a task is FAILED
        "backoff": {"base": 1, "factor": 2},  # a liteq.Backoff, or its fields
        "timeout": 60,                        # seconds a run may take (None: no limit)
        "key": None,                          # dedup key, see below
        "enqueue_on_commit": True,            # or False, or a Django database alias
        "result_ttl": 86400,                  # seconds a finished result is kept
        "task_modules": ["shop.jobs"],        # imported by the worker, beside apps' tasks.py
        "schedules": {"nightly": {"task": "shop.tasks.report", "cron": "0 3 * * *"}},
    }

``max_attempts``, ``backoff``, ``timeout`` and ``key`` are defaults: a task declared
with ``@task(max_attempts=3, ...)`` (the options Django passes to the backend's
``task_class``) overrides them. A *key* is a string (one unfinished job per task at a
time) or a callable ``key(args, kwargs) -> str | None`` (one per distinct value); it is
scoped to the task, so two tasks never share one.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ...errors import LiteqError
from ...job import DEFAULT_RESULT_TTL
from ...options import Backoff
from ...validate import check_positive_int, check_seconds, validate_name

__all__ = ["BackendOptions", "read_options", "check_key", "check_backoff", "OPTION_NAMES"]

OPTION_NAMES = ("database", "max_attempts", "backoff", "timeout", "key", "enqueue_on_commit",
                "result_ttl", "task_modules", "schedules")


@dataclass(frozen=True)
class BackendOptions:
    """The checked ``OPTIONS`` of one backend."""

    database: str | None = None
    max_attempts: int = 5
    backoff: Backoff | None = None
    timeout: float | None = None
    key: str | Callable[..., Any] | None = None
    #: False, or the alias of the Django database whose commit releases an enqueue.
    enqueue_on_commit: str | None = "default"
    result_ttl: float | None = DEFAULT_RESULT_TTL
    task_modules: tuple[str, ...] = ()
    schedules: dict[str, dict[str, Any]] = field(default_factory=dict)


def check_key(value: Any, where: str) -> str | Callable[..., Any] | None:
    """A dedup key option: None, a non-empty string, or a callable."""
    if value is None or callable(value) or (isinstance(value, str) and value):
        return value
    raise LiteqError(f"{where} key must be a non-empty string, a callable key(args, kwargs) "
                     f"or None, got {value!r}")


def check_backoff(value: Any, where: str) -> Backoff | None:
    """A backoff option: None, a :class:`liteq.Backoff`, or a dict of its fields."""
    if value is None or isinstance(value, Backoff):
        return value
    if isinstance(value, Mapping):
        try:
            return Backoff(**value)
        except TypeError as exc:
            raise LiteqError(f"{where} backoff: {exc} (fields: base, factor, max, "
                             f"jitter)") from None
    raise LiteqError(f"{where} backoff must be a liteq.Backoff or a dict of its fields "
                     f"(base, factor, max, jitter), got {value!r}")


def read_options(options: Mapping[str, Any]) -> tuple[BackendOptions, list[str]]:
    """The checked options, and what is wrong with them (one sentence each, saying how
    to fix it); a wrong option keeps its default, so ``check`` can report them all."""
    problems: list[str] = []
    if not isinstance(options, Mapping):
        return BackendOptions(), [f"OPTIONS must be a dict, got {type(options).__name__}"]
    found: dict[str, Any] = {}
    unknown = sorted(set(options) - set(OPTION_NAMES))
    if unknown:
        problems.append(f"unknown OPTIONS {', '.join(map(repr, unknown))}; the options are "
                        f"{', '.join(OPTION_NAMES)}")
    readers: dict[str, Callable[[Any], Any]] = {
        "database": _database,
        "max_attempts": lambda v: check_positive_int(v, "max_attempts"),
        "backoff": lambda v: check_backoff(v, "OPTIONS"),
        "timeout": _timeout,
        "key": lambda v: check_key(v, "OPTIONS"),
        "enqueue_on_commit": _on_commit,
        "result_ttl": lambda v: check_seconds(v, "result_ttl", allow_none=True),
        "task_modules": _modules,
        "schedules": _schedules,
    }
    for name, read in readers.items():
        if name in options:
            try:
                found[name] = read(options[name])
            except (LiteqError, ValueError, TypeError) as exc:
                problems.append(f"OPTIONS[{name!r}]: {exc}")
    if found.get("database") is None:
        if "database" not in options:
            problems.append("OPTIONS['database'] is required: a file path (e.g. BASE_DIR / "
                            "'liteq.db') or a postgresql:// URL")
        found.pop("database", None)
    return BackendOptions(**found), problems


def _database(value: Any) -> str:
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value:
        raise LiteqError(f"must be a file path or a postgresql:// URL, got {value!r}")
    return value


def _timeout(value: Any) -> float | None:
    seconds = check_seconds(value, "timeout", allow_none=True)
    if seconds == 0:
        raise LiteqError("timeout must be a number of seconds > 0 or None, got 0")
    return seconds


def _on_commit(value: Any) -> str | None:
    if value is True:
        return "default"
    if value is False or value is None:
        return None
    if isinstance(value, str) and value:
        return value
    raise LiteqError(f"must be True, False or a Django database alias, got {value!r}")


def _modules(value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or \
            not all(isinstance(m, str) and m for m in value):
        raise LiteqError(f"must be a list of module names, got {value!r}")
    return tuple(value)


def _schedules(value: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(value, Mapping):
        raise LiteqError(f"must be a dict of schedule name -> db.schedule() options, "
                         f"got {value!r}")
    out: dict[str, dict[str, Any]] = {}
    for name, spec in value.items():
        validate_name(name, "schedule")
        if not isinstance(spec, Mapping) or "task" not in spec:
            raise LiteqError(f"schedule {name!r} must be a dict with a 'task' (the task's "
                             f"module path, or the task) and cron=, every= or at=, "
                             f"got {spec!r}")
        out[name] = dict(spec)
    return out
