"""Which Django tasks this process knows, and their liteq side.

A Django task is known once it has been declared (``@task`` validates it against the
backend, which records it here). A worker runs only known tasks, looked up by the
task's module path: the name its messages carry. It never imports a path read from a
message; it imports the ``tasks`` modules of the installed apps and the backend's
``task_modules`` at start, which declares them (see :mod:`.worker`).

Each known task is registered on the liteq database as a liteq task of the same name,
whose function runs the Django task: with its ``TaskContext`` when it
``takes_context``, awaited when it is a coroutine function, its return value turned
into JSON values (Django's rule for results).
"""

from __future__ import annotations

import inspect
import json
import threading
from collections.abc import Callable
from typing import Any

import liteq

from ...running import current_job
from ...task import Task as LiteqJobTask
from .config import BackendOptions
from .results import running_result

__all__ = ["remember", "known", "known_tasks", "database", "close_databases", "liteq_task",
           "jsonable"]

_tasks: dict[str, Any] = {}
_databases: dict[str, liteq.Database] = {}
_lock = threading.Lock()


def remember(task: Any) -> None:
    """Record *task* (a Django task) as known to this process. The first declaration
    of a function is kept: ``task.using(...)`` makes variants of it (another queue or
    priority per call), which must not replace the declared defaults."""
    known_task = _tasks.get(task.module_path)
    if known_task is None or known_task.func is not task.func:
        _tasks[task.module_path] = task


def known(name: str) -> Any | None:
    """The known Django task named *name* (its module path), or None."""
    return _tasks.get(name)


def known_tasks() -> list[Any]:
    """Every known Django task, in the order they were declared."""
    return list(_tasks.values())


def database(target: str) -> liteq.Database:
    """The liteq database at *target*, opened once per process (Django makes a backend
    object per thread; they share it, and the tasks registered on it)."""
    with _lock:
        db = _databases.get(target)
        if db is None:
            db = _databases[target] = liteq.connect(target)
        return db


def close_databases() -> None:
    """Close every database :func:`database` opened (tests; a process about to exit)."""
    with _lock:
        for db in _databases.values():
            db.close()
        _databases.clear()


def jsonable(value: Any) -> Any:
    """*value* as JSON values (tuples become lists), or TypeError naming the type."""
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"a task's return value must be JSON-serializable: {exc}") from None


def liteq_task(db: liteq.Database, task: Any, options: BackendOptions,
               alias: str) -> LiteqJobTask[Any, Any]:
    """The liteq task that runs the Django *task* on *db*, registering it if needed."""
    name = task.module_path
    found = db.tasks.get(name)
    if found is not None and getattr(found.fn, "django_func", None) is task.func:
        return found
    # The options Django passed to our task_class (LiteqTask), else OPTIONS.
    backoff = getattr(task, "backoff", None) or options.backoff
    timeout = getattr(task, "timeout", None) or options.timeout
    attempts = getattr(task, "max_attempts", None) or options.max_attempts
    registered: LiteqJobTask[Any, Any] = db.task(
        _runner(task, alias), name=name, queue=task.queue_name, max_attempts=attempts,
        backoff=backoff, timeout=timeout, store_result=True, result_ttl=options.result_ttl)
    return registered


def _runner(task: Any, alias: str) -> Callable[..., Any]:
    """The function a liteq worker calls for the Django *task*."""
    func = task.func

    def context() -> tuple[Any, ...]:
        if not task.takes_context:
            return ()
        from .api import TaskContext

        job = current_job()
        if job is None:  # called outside a worker: no job to describe
            raise RuntimeError(f"{task.module_path} takes a context: run it through a worker")
        return (TaskContext(task_result=running_result(task, job, alias)),)

    if inspect.iscoroutinefunction(func):
        async def run_async(*args: Any, **kwargs: Any) -> Any:
            return jsonable(await func(*context(), *args, **kwargs))
        run: Callable[..., Any] = run_async
    else:
        def run_sync(*args: Any, **kwargs: Any) -> Any:
            return jsonable(func(*context(), *args, **kwargs))
        run = run_sync
    run.__name__ = getattr(func, "__name__", "task")
    run.__qualname__ = getattr(func, "__qualname__", run.__name__)
    run.__module__ = getattr(func, "__module__", __name__)
    run.django_func = func  # type: ignore[attr-defined]
    # liteq checks at enqueue that the arguments fit the signature: the task's, less
    # the context a worker passes.
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        return run
    params = list(signature.parameters.values())
    if task.takes_context and params:
        params = params[1:]
    run.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    return run
