"""Tasks: registered functions whose calls are enqueued as messages.

::

    @db.task(queue="emails", max_attempts=5, timeout=60)
    def send_email(to: str) -> None: ...

    job = send_email.delay("a@b.c")   # one message: {"task": NAME, "args": [...], "kwargs": {...}}
    job.state                         # "queued", then "running", then "done"
    send_email("a@b.c")               # calling the function directly just runs it

A worker (``worker.py``) claims the message, looks the task up by name in the
registry of its :class:`~liteq.Database` (never a dotted path read from a message)
and runs it. A job's id is its message's id.

Job handles, their states and history are :mod:`liteq.job`; what a running task
sees, the flow signals (:class:`Retry`, :class:`Fail`, :class:`Cancelled`) and how a run
ends are :mod:`liteq.running`. Their names stay importable from here.
"""

from __future__ import annotations

import functools
import inspect
import sys
import weakref
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Generic, ParamSpec, TypeVar

from .context import Context
from .errors import InvalidArgument, SerializationError
from .flow import FlowSpec, check_concurrency_key, check_max_concurrency, check_rate_limit
from .job import (
    DEFAULT_RESULT_TTL,
    JOB_STATES,
    Job,
    JobCancelled,
    JobFailed,
    JobInfo,
    JobNotFound,
    NoResult,
    ResultTimeout,
    list_jobs,
    task_call,
)
from .options import Backoff
from .outbox import on_connection
from .queue import Queue
from .running import MAX_TRACEBACK as MAX_TRACEBACK
from .running import (
    Cancelled,
    Fail,
    JobContext,
    JobError,
    Outcome,
    Retry,
    TaskTimeout,
    current_job,
    outcome_row,
)
from .running import run_coroutine as run_coroutine
from .running import set_current_job as set_current_job
from .validate import (
    check_positive_int,
    check_priority,
    check_seconds,
    check_text,
    validate_name,
)
from .workflow import Signature

# Job handles and the running job live in liteq.job and liteq.running; their names
# stay importable from here, as before.
__all__ = [
    "Task", "register", "registry", "Job", "JobInfo", "JobError", "JobContext", "Outcome",
    "current_job", "Retry", "Fail", "Cancelled", "TaskTimeout", "JobFailed", "JobCancelled",
    "NoResult", "JobNotFound", "ResultTimeout", "JOB_STATES", "DEFAULT_RESULT_TTL",
    "task_call", "list_jobs", "outcome_row",
]

#: The async Database (``liteq.aio``) opened on each sync Database, if any: what
#: :meth:`Task.adelay` and :meth:`Task.aenqueue` enqueue through.
ASYNC_FACES: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()

P = ParamSpec("P")
R = TypeVar("R")


# -- tasks ----------------------------------------------------------------------------

def registry(db: Context) -> dict[str, Task[Any, Any]]:
    """The tasks registered on *db*, by name (kept on the Database object)."""
    tasks: dict[str, Task[Any, Any]] = db.tasks
    return tasks


def _default_name(fn: Callable[..., Any]) -> str:
    module = getattr(fn, "__module__", None) or "__main__"
    if module == "__main__":
        # Run as a script, the module is "__main__" here but "app" in the worker
        # that imports it: name it as the worker will see it.
        main = sys.modules.get("__main__")
        spec = getattr(main, "__spec__", None)
        if spec is not None and spec.name:
            module = spec.name
        elif getattr(main, "__file__", None):
            module = Path(main.__file__).stem  # type: ignore[union-attr,arg-type]
    return f"{module}.{getattr(fn, '__qualname__', getattr(fn, '__name__', 'task'))}"


class Task(Generic[P, R]):
    """A function registered with ``@db.task``. Calling it runs it; :meth:`delay`
    and :meth:`enqueue` queue a call for a worker and return a :class:`Job`."""

    def __init__(self, db: Context, fn: Callable[P, R], *, name: str, queue: str,
                 max_attempts: int, backoff: Backoff | None, timeout: float | None,
                 priority: int, store_result: bool, result_ttl: float | None,
                 atomic: bool, flow: FlowSpec | None = None,
                 concurrency_key: Callable[..., str] | None = None) -> None:
        self.db = db
        self.fn = fn
        self.name = name
        self.queue = queue
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.timeout = timeout
        self.priority = priority
        self.store_result = store_result
        self.result_ttl = result_ttl
        self.atomic = atomic
        #: Its limits (``max_concurrency``, ``rate_limit``), or None (issue 19).
        self.flow = flow
        #: ``concurrency_key(*args, **kwargs) -> str``: the key its cap counts per.
        self.concurrency_key = concurrency_key
        self.is_async = inspect.iscoroutinefunction(fn)
        self.signature = _signature(fn)
        functools.update_wrapper(self, fn)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the function here and now (no queue involved)."""
        return self.fn(*args, **kwargs)

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> Job:
        """Enqueue a call with these arguments; return its :class:`Job`."""
        return self.enqueue(args, kwargs)

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        """A call not yet enqueued, for workflows (:mod:`liteq.workflow`): after another
        step it receives that step's result as its first argument."""
        return Signature(self, args, kwargs)

    def si(self, *args: Any, **kwargs: Any) -> Signature:
        """An immutable :meth:`s`: it receives no result from the step before it."""
        return Signature(self, args, kwargs, immutable=True)

    def enqueue(self, args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None, *,
                delay: float = 0, priority: int | None = None, key: str | None = None,
                queue: str | None = None, connection: Any = None,
                depends_on: Iterable[Job | int] | None = None,
                concurrency_key: str | None = None) -> Job:
        """Enqueue a call, with options: run no sooner than *delay* seconds from now,
        at *priority* (higher first; default the task's), deduplicated by *key* (while
        a job with that key is unfinished in the queue, its Job is returned and nothing
        is added), on *queue* (default the task's), inside the application's own
        *connection* and transaction (PostgreSQL; as for :meth:`liteq.Queue.put`: the job
        commits with the application's rows). :meth:`delay` passes every argument to
        the function, so it has no such option: ``enqueue(args, kwargs, connection=conn)``.
        *concurrency_key* (a task with ``max_concurrency``): the key its cap counts
        per, instead of what the task's ``concurrency_key`` callable returns.

        *depends_on*: jobs (or ids) this one waits for; it runs once they all
        succeeded and is cancelled if one does not (see :mod:`liteq.workflow`), and it is
        inserted with its edges atomically. Its arguments are unchanged.

        Arguments go through CBOR: one that cannot be encoded raises
        :class:`~liteq.SerializationError` and nothing is written. Tuples arrive as lists.
        """
        if depends_on is not None:
            if concurrency_key is not None:
                raise InvalidArgument(
                    f"task {self.name}: concurrency_key= and depends_on= together are not "
                    f"supported: a waiting job's key comes from the task's concurrency_key "
                    f"callable (register it with @db.task(concurrency_key=...))")
            sig = Signature(self, args, kwargs, immutable=True).set(
                queue=queue, delay=delay, priority=priority, key=key)
            job: Job = sig.enqueue(depends_on=depends_on, connection=connection)
            return job
        payload = self._payload(args, kwargs)
        flow_key = self.flow_key(args, kwargs, concurrency_key)
        q = self._queue(queue)
        try:
            if self.flow is None:
                mid = q.put(payload, delay=delay, key=key, connection=connection,
                            priority=self.priority if priority is None else priority)
            else:
                # The job and its limits commit together: a claim never sees it without.
                with on_connection(self.db.backend, connection), self.db.transaction():
                    mid = q.put(payload, delay=delay, key=key,
                                priority=self.priority if priority is None else priority)
                    self.db.backend.set_flow(q.id, [mid], self.flow, flow_key)
        except SerializationError as exc:
            raise SerializationError(f"cannot enqueue task {self.name}: {exc}") from exc
        return Job(self.db, mid, task=self.name)

    async def adelay(self, *args: P.args, **kwargs: P.kwargs) -> Any:
        """:meth:`delay` for asyncio code: enqueue without blocking the event loop;
        returns a ``liteq.aio.Job``. Needs the async Database of this task's database
        (``await liteq.aio.connect(db)``, or the one the task was registered on)."""
        return await self.aenqueue(args, kwargs)

    async def aenqueue(self, args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None, *,
                       delay: float = 0, priority: int | None = None, key: str | None = None,
                       queue: str | None = None, concurrency_key: str | None = None) -> Any:
        """:meth:`enqueue` for asyncio code (see :meth:`adelay`)."""
        face = ASYNC_FACES.get(self.db)
        if face is None:
            raise InvalidArgument(
                f"task {self.name} is registered on a Database that has no asyncio face: "
                f"open one first with 'adb = await liteq.aio.connect(db)' (once, e.g. in "
                f"the app's startup), or register the task with @adb.task")
        return await face.enqueue(self, args, kwargs, delay=delay, priority=priority, key=key,
                                  queue=queue, concurrency_key=concurrency_key)

    def enqueue_many(self, calls: Iterable[Sequence[Any]], *, delay: float = 0,
                     priority: int | None = None, queue: str | None = None,
                     connection: Any = None) -> list[Job]:
        """Enqueue many calls in one transaction (all or none); each item is the
        positional arguments of one call. Returns their jobs in order. *connection*:
        as for :meth:`enqueue`."""
        payloads = [self._payload(args, None) for args in calls]
        q = self._queue(queue)
        try:
            if self.flow is None:
                ids = q.put_many(payloads, delay=delay, connection=connection,
                                 priority=self.priority if priority is None else priority)
            else:
                keys = [self.flow_key(p["args"], {}, None) for p in payloads]
                with on_connection(self.db.backend, connection), self.db.transaction():
                    ids = q.put_many(payloads, delay=delay,
                                     priority=self.priority if priority is None else priority)
                    by_key: dict[str | None, list[int]] = {}
                    for mid, k in zip(ids, keys, strict=True):
                        by_key.setdefault(k, []).append(mid)
                    for k, some in by_key.items():
                        self.db.backend.set_flow(q.id, some, self.flow, k)
        except SerializationError as exc:
            raise SerializationError(f"cannot enqueue task {self.name}: {exc}") from exc
        return [Job(self.db, mid, task=self.name) for mid in ids]

    def binding_error(self, args: Sequence[Any], kwargs: dict[str, Any]) -> str | None:
        """Why ``fn(*args, **kwargs)`` cannot be called with these arguments
        (``inspect.signature(fn).bind``), or None when they fit (or the function's
        signature cannot be read)."""
        if self.signature is None:
            return None
        try:
            self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            empty = inspect.Parameter.empty
            plain = self.signature.replace(
                parameters=[p.replace(annotation=empty) for p in self.signature.parameters.values()],
                return_annotation=empty)
            return f"{exc} (the signature is {self.name}{plain})"
        return None

    def flow_key(self, args: Any, kwargs: Any, given: str | None) -> str | None:
        """The concurrency key of a call: *given*, else the task's callable's, else
        None (a task-wide cap)."""
        if given is None and self.concurrency_key is None:
            return None
        if self.flow is None or self.flow.max_concurrency is None:
            raise InvalidArgument(
                f"concurrency_key needs a cap: register task {self.name} with "
                f"@db.task(max_concurrency=N, ...) to run at most N jobs per key")
        if given is None:
            assert self.concurrency_key is not None
            try:
                given = self.concurrency_key(*args, **(kwargs or {}))
            except Exception as exc:
                raise InvalidArgument(
                    f"the concurrency_key callable of task {self.name} failed on this call: "
                    f"{type(exc).__name__}: {exc}") from exc
        return check_concurrency_key(given, self.name)

    def _queue(self, name: str | None) -> Queue:
        return self.db.queue(self.queue if name is None else name)

    def _payload(self, args: Any, kwargs: Any) -> dict[str, Any]:
        if not isinstance(args, (list, tuple)):
            raise InvalidArgument(
                f"args of task {self.name} must be a list or tuple, got {type(args).__name__}")
        if kwargs is None:
            kwargs = {}
        elif not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
            raise InvalidArgument(f"kwargs of task {self.name} must be a dict with str keys")
        # Checked here, where the caller can fix it: a call that cannot bind would
        # only fail in the worker, every attempt.
        why = self.binding_error(args, kwargs)
        if why is not None:
            raise InvalidArgument(f"cannot enqueue task {self.name}: {why}")
        return {"task": self.name, "args": list(args), "kwargs": kwargs}

    def __repr__(self) -> str:
        return f"<Task {self.name} queue={self.queue!r}>"


def _signature(fn: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError):  # some builtins have none: their calls go unchecked
        return None


def register(db: Context, fn: Callable[..., Any] | None = None, /, *, name: str | None = None,
             queue: str = "default", max_attempts: int = 5, backoff: Backoff | None = None,
             timeout: float | None = None, priority: int = 0, store_result: bool = False,
             result_ttl: float | None = DEFAULT_RESULT_TTL, atomic: bool = False,
             max_concurrency: int | None = None, concurrency_key: Callable[..., str] | None = None,
             rate_limit: str | None = None) -> Any:
    """Register *fn* as a task of *db* (``@db.task`` or ``@db.task(...)``).

    * *name*: the stable name messages carry (default ``module.qualname``; give one
      if you may move or rename the function while jobs are queued).
    * *queue*, *priority*: where and how its jobs are enqueued by default.
    * *max_attempts*: runs before the job fails (the queue's ``max_attempts`` still
      bounds deliveries whose lease ran out).
    * *backoff*: a :class:`~liteq.Backoff` for retries (default: the queue's).
    * *timeout*: seconds a run may take (see the worker for how it is enforced).
    * *store_result*: keep the return value (CBOR) for ``job.result()``.
    * *result_ttl*: seconds a finished job's outcome is kept (None: until pruned
      by hand); default one day.
    * *atomic*: run the task inside the transaction that acks it, so that its
      ``db.execute(...)`` writes commit together with the ack, or not at all.
      The write lock is held while it runs: keep atomic tasks short.
    * *max_concurrency*: at most this many of its jobs run at once, across every
      worker on the database (a slot is held by the job's lease); with
      *concurrency_key*, ``concurrency_key(*args, **kwargs) -> str``, at most this
      many per key (or give ``enqueue(..., concurrency_key="user:7")``).
    * *rate_limit*: at most this many of its jobs start per period, across every
      worker: ``"100/s"``, ``"30/m"``, ``"500/h"``, with an optional burst
      ``"100/s burst 10"`` (default burst: a tenth of a second's jobs, at least 1).

    A job held back by a limit waits in the queue (not claimed, not an attempt); see
    README "Flow control". Nothing is written to the database at registration (a
    task's limits are stored, by its name, with its first job).
    """
    options = _check_options(name, queue, max_attempts, backoff, timeout, priority,
                             store_result, result_ttl, atomic)
    cap = check_max_concurrency(max_concurrency)
    rate = check_rate_limit(rate_limit, "rate_limit")
    if concurrency_key is not None and not callable(concurrency_key):
        raise InvalidArgument(f"concurrency_key must be a function of the task's arguments "
                              f"returning a string, got {concurrency_key!r}")
    if concurrency_key is not None and cap is None:
        raise InvalidArgument("concurrency_key needs max_concurrency: "
                              "@db.task(max_concurrency=1, concurrency_key=...)")

    def decorate(f: Callable[..., Any]) -> Task[Any, Any]:
        if isinstance(f, Task):
            f = f.fn
        if not callable(f):
            raise InvalidArgument(f"@db.task needs a function, got {f!r}")
        task_name = name if name is not None else _default_name(f)
        tasks = registry(db)
        old = tasks.get(task_name)
        if old is not None and old.fn is not f and (
                getattr(old.fn, "__qualname__", None) != getattr(f, "__qualname__", None)):
            raise InvalidArgument(
                f"task name {task_name!r} is already registered to {old.fn!r}; "
                f"give this one another name with @db.task(name=...)")
        flow = None if cap is None and rate is None else FlowSpec(task_name, cap, rate)
        task: Task[Any, Any] = Task(db, f, name=task_name, flow=flow,
                                    concurrency_key=concurrency_key, **options)
        tasks[task_name] = task
        return task

    return decorate(fn) if fn is not None else decorate


def _check_options(name: Any, queue: Any, max_attempts: Any, backoff: Any, timeout: Any,
                   priority: Any, store_result: Any, result_ttl: Any,
                   atomic: Any) -> dict[str, Any]:
    if name is not None and (not isinstance(name, str) or not name or len(name) > 200):
        raise InvalidArgument(f"task name must be a non-empty string of up to 200 characters, "
                              f"got {name!r}")
    check_text(name, "task name", allow_none=True)  # a lone surrogate cannot be stored
    validate_name(queue)
    check_positive_int(max_attempts, "max_attempts")
    if backoff is not None and not isinstance(backoff, Backoff):
        raise InvalidArgument(f"backoff must be a liteq.Backoff or None, got {backoff!r}")
    t = check_seconds(timeout, "timeout", allow_none=True)
    if t == 0:
        raise InvalidArgument("timeout must be a number of seconds > 0 or None, got 0")
    return {
        "queue": queue, "max_attempts": max_attempts, "backoff": backoff, "timeout": t,
        "priority": check_priority(priority), "store_result": bool(store_result),
        "result_ttl": check_seconds(result_ttl, "result_ttl", allow_none=True),
        "atomic": bool(atomic),
    }
