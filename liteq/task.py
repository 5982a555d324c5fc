"""Tasks: registered functions whose calls are enqueued as messages, and job handles.

::

    @db.task(queue="emails", max_attempts=5, timeout=60)
    def send_email(to: str) -> None: ...

    job = send_email.delay("a@b.c")   # one message: {"task": NAME, "args": [...], "kwargs": {...}}
    job.state                         # "queued", then "running", then "done"
    send_email("a@b.c")               # calling the function directly just runs it

A worker (``worker.py``) claims the message, looks the task up by name in the
registry of its :class:`~liteq.Database` (never a dotted path read from a message)
and runs it. A job's id is its message's id.

Job states, derived from the message row, or from the ``results`` row once the
message is gone (acked with retention 0):

=========== ==================================================================
queued      waiting to run for the first time
scheduled   waiting for its ``delay`` to pass, first time
running     claimed by a worker (leased)
retrying    waiting for another attempt (a delivery failed or its lease ran out)
done        finished; ``result()`` returns the value if the task stores results
failed      gave up: ``Fail``, ``max_attempts`` used up, unknown task, bad payload
cancelled   ``cancel()``-ed before or while it ran
=========== ==================================================================

Every finished job (done, failed, cancelled) gets a ``results`` row written in the
same transaction as its ack, kept for the task's ``result_ttl``; ``Job.state``
never has to answer "unknown" for a job that existed within that time.

Flow signals, raised inside a task, are not errors: :class:`Retry` asks for another
attempt, :class:`Fail` gives up at once, :class:`Cancelled` (raised by
``JobContext.checkpoint()``) stops a job whose cancellation was requested.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import re
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, ParamSpec, TypeVar

from . import codec
from .backends.records import MessageRecord, ResultRecord, State
from .context import Context
from .errors import InvalidArgument, LiteqError, SerializationError
from .options import Backoff
from .queue import Queue
from .validate import (
    INT64_MAX,
    check_positive_int,
    check_priority,
    check_seconds,
    check_text,
    short,
    storable,
    validate_name,
)

__all__ = [
    "Task", "register", "registry", "Job", "JobInfo", "JobError", "JobContext", "Outcome",
    "current_job", "Retry", "Fail", "Cancelled", "TaskTimeout", "JobFailed", "JobCancelled",
    "NoResult", "JobNotFound", "ResultTimeout", "JOB_STATES", "DEFAULT_RESULT_TTL",
    "task_call", "list_jobs", "outcome_row",
]

P = ParamSpec("P")
R = TypeVar("R")

JOB_STATES = ("queued", "scheduled", "running", "retrying", "done", "failed", "cancelled")
#: How long a finished job's outcome is kept by default (one day).
DEFAULT_RESULT_TTL = 86400.0
#: Longest traceback text kept with a job (the end is kept: it names the error).
MAX_TRACEBACK = 16_000
_CANCEL_CHECK = 0.05  # checkpoint() reads the cancel flag at most this often


# -- flow signals (not errors) ----------------------------------------------------------

class Retry(Exception):  # noqa: N818 - a flow signal, named for what it asks
    """Raise inside a task to ask for another attempt, after *delay* seconds (the
    task's backoff when None). It counts as an attempt: after ``max_attempts`` the job
    fails with *reason*."""

    def __init__(self, reason: str = "", *, delay: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.delay = None if delay is None else check_seconds(delay, "Retry delay")


class Fail(Exception):  # noqa: N818 - a flow signal
    """Raise inside a task to fail the job now with *reason*: no more attempts."""

    def __init__(self, reason: str = "") -> None:
        super().__init__(reason)
        self.reason = reason


class Cancelled(Exception):  # noqa: N818 - a flow signal
    """Raised by :meth:`JobContext.checkpoint` once the job's cancellation was
    requested; let it propagate and the job ends ``cancelled``."""


class TaskTimeout(BaseException):  # noqa: N818 - like KeyboardInterrupt, not an Exception
    """Raised inside a task (thread pool) that ran past its ``timeout``.

    A BaseException so that ``except Exception`` in the task does not swallow it.
    The job counts the attempt and is retried (or fails after ``max_attempts``).
    """


# -- errors the caller of Job.result() meets --------------------------------------------

class JobNotFound(LiteqError, LookupError):
    """No job with this id: it never existed, or it finished longer than its
    ``result_ttl`` ago and its record was pruned."""


class JobFailed(LiteqError):
    """``result()`` of a failed job; ``.error`` is its :class:`JobError`."""

    def __init__(self, message: str, job_id: int, error: JobError | None) -> None:
        super().__init__(message)
        self.job_id = job_id
        self.error = error


class JobCancelled(LiteqError):
    """``result()`` of a cancelled job."""


class NoResult(LiteqError):
    """``result()`` of a job that finished but has no stored value (its task was not
    registered with ``store_result=True``, or the value could not be encoded)."""


class ResultTimeout(LiteqError, TimeoutError):
    """``result(wait=...)``: the job did not finish within the wait."""


# -- error records --------------------------------------------------------------------

_TB_HEAD = "Traceback (most recent call last):"
_TYPE_LINE = re.compile(r"^((?:[A-Za-z_]\w*\.)*[A-Z_]\w*)(?::[ \n](.*))?$", re.DOTALL)


@dataclass(frozen=True)
class JobError:
    """The last error of a job: exception type, message and traceback text.

    ``type`` is None when liteq itself gave the reason ("lease expired",
    "unknown task 'x'"). Stored as text: ``"Type: message"`` then the traceback.
    """

    type: str | None
    message: str
    traceback: str | None = None

    @classmethod
    def from_exception(cls, exc: BaseException, skip: int = 0) -> JobError:
        kind = type(exc)
        name = kind.__qualname__
        if kind.__module__ not in ("builtins", "__main__"):
            name = f"{kind.__module__}.{name}"
        tb = exc.__traceback__
        for _ in range(skip):  # drop the worker's own frames
            if tb is not None and tb.tb_next is not None:
                tb = tb.tb_next
        text = "".join(traceback.format_exception(kind, exc, tb)).rstrip("\n")
        if len(text) > MAX_TRACEBACK:
            text = _TB_HEAD + "\n  ...\n" + text[-MAX_TRACEBACK:]
        # Stored as text in SQLite: a lone surrogate in the message (a decoded file
        # name, say) would make the record itself fail.
        return cls(name, storable(str(exc)), storable(text))

    @classmethod
    def parse(cls, text: str | None) -> JobError | None:
        """The record stored as *text* (see :meth:`format`), or None."""
        if not text:
            return None
        head, sep, tail = text.partition("\n" + _TB_HEAD)
        tb = _TB_HEAD + tail if sep else None
        match = _TYPE_LINE.match(head)
        if match:
            return cls(match.group(1), match.group(2) or "", tb)
        return cls(None, head, tb)

    def format(self) -> str:
        head = self.message if self.type is None else (
            f"{self.type}: {self.message}" if self.message else self.type)
        return f"{head}\n{self.traceback}" if self.traceback else head

    def __str__(self) -> str:
        if self.type is None:
            return self.message
        return f"{self.type}: {self.message}" if self.message else self.type


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
                 atomic: bool) -> None:
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
        self.is_async = inspect.iscoroutinefunction(fn)
        self.signature = _signature(fn)
        functools.update_wrapper(self, fn)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the function here and now (no queue involved)."""
        return self.fn(*args, **kwargs)

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> Job:
        """Enqueue a call with these arguments; return its :class:`Job`."""
        return self.enqueue(args, kwargs)

    def enqueue(self, args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None, *,
                delay: float = 0, priority: int | None = None, key: str | None = None,
                queue: str | None = None) -> Job:
        """Enqueue a call, with options: run no sooner than *delay* seconds from now,
        at *priority* (higher first; default the task's), deduplicated by *key* (while
        a job with that key is unfinished in the queue, its Job is returned and nothing
        is added), on *queue* (default the task's).

        Arguments go through CBOR: one that cannot be encoded raises
        :class:`~liteq.SerializationError` and nothing is written. Tuples arrive as lists.
        """
        payload = self._payload(args, kwargs)
        q = self._queue(queue)
        try:
            mid = q.put(payload, delay=delay, key=key,
                        priority=self.priority if priority is None else priority)
        except SerializationError as exc:
            raise SerializationError(f"cannot enqueue task {self.name}: {exc}") from exc
        return Job(self.db, mid, task=self.name)

    def enqueue_many(self, calls: Iterable[Sequence[Any]], *, delay: float = 0,
                     priority: int | None = None, queue: str | None = None) -> list[Job]:
        """Enqueue many calls in one transaction (all or none); each item is the
        positional arguments of one call. Returns their jobs in order."""
        payloads = [self._payload(args, None) for args in calls]
        q = self._queue(queue)
        try:
            ids = q.put_many(payloads, delay=delay,
                             priority=self.priority if priority is None else priority)
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
             result_ttl: float | None = DEFAULT_RESULT_TTL, atomic: bool = False) -> Any:
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

    Nothing is written to the database at registration.
    """
    options = _check_options(name, queue, max_attempts, backoff, timeout, priority,
                             store_result, result_ttl, atomic)

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
        task: Task[Any, Any] = Task(db, f, name=task_name, **options)
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


def task_call(payload: Any) -> tuple[str, list[Any], dict[str, Any]] | None:
    """``(name, args, kwargs)`` of a task message's payload, or None if it is not one."""
    if type(payload) is dict:
        name = payload.get("task")
        args = payload.get("args", [])
        kwargs = payload.get("kwargs", {})
        if isinstance(name, str) and isinstance(args, list) and isinstance(kwargs, dict) \
                and all(isinstance(k, str) for k in kwargs):
            return name, args, kwargs
    return None


# -- the running job ----------------------------------------------------------------------

_current = threading.local()


def current_job() -> JobContext | None:
    """The job running in this thread (inside a task), or None."""
    return getattr(_current, "job", None)


def set_current_job(ctx: JobContext | None) -> None:
    """Make *ctx* the job :func:`current_job` returns in this thread (the worker, around
    a task's call; None after it)."""
    _current.job = ctx


class JobContext:
    """What a running task (and a hook) can know about its job::

        @db.task
        def export(n):
            job = liteq.current_job()
            for chunk in range(n):
                job.checkpoint()          # raises Cancelled once cancel() was asked
                ...
    """

    __slots__ = ("db", "id", "task", "queue", "attempts", "max_attempts", "args", "kwargs",
                 "enqueued_at", "started_at", "_checked_at", "_cancel")

    def __init__(self, db: Context, job_id: int, task: str, queue: str, attempts: int,
                 max_attempts: int, args: list[Any], kwargs: dict[str, Any],
                 enqueued_at: float) -> None:
        self.db = db
        self.id = job_id
        self.task = task
        self.queue = queue
        self.attempts = attempts
        self.max_attempts = max_attempts
        self.args = args
        self.kwargs = kwargs
        self.enqueued_at = enqueued_at
        self.started_at = 0.0
        self._checked_at = 0.0
        self._cancel = False

    @property
    def cancel_requested(self) -> bool:
        """True once ``job.cancel()`` was asked for this job (read from the database
        at most every 50 ms, so it is cheap to call in a loop)."""
        if not self._cancel:
            now = time.monotonic()
            if now - self._checked_at >= _CANCEL_CHECK:
                self._checked_at = now
                self._cancel = self.db.backend.cancel_requested(self.id)
        return self._cancel

    def checkpoint(self) -> None:
        """Raise :class:`Cancelled` if this job's cancellation was requested."""
        if self.cancel_requested:
            raise Cancelled(f"job {self.id} was cancelled while it ran")

    def __repr__(self) -> str:
        return f"<JobContext {self.id} {self.task} attempt {self.attempts}>"


@dataclass
class Outcome:
    """How one run of a job ended (given to ``Hook.after_job``).

    ``state`` is ``done``, ``retrying``, ``failed``, ``cancelled``, ``released``
    (given back at shutdown) or ``lost`` (its lease was lost: another worker has it).
    """

    state: str
    duration: float
    result: Any = None
    error: JobError | None = None
    delay: float | None = None


# -- job handles ------------------------------------------------------------------------

@dataclass(frozen=True)
class JobInfo:
    """A snapshot of one job (see :meth:`Job.info`)."""

    id: int
    task: str | None
    queue: str | None
    state: str
    attempts: int
    error: JobError | None
    args: list[Any] | None = None
    kwargs: dict[str, Any] | None = None
    enqueued_at: float | None = None
    run_at: float | None = None
    finished_at: float | None = None
    expires_at: float | None = None
    value: bytes | None = field(default=None, repr=False)
    #: When its last run started (None if it never ran), and how long that run took.
    started_at: float | None = None
    duration: float | None = None


def _message_state(state: int, attempts: int, origin: str | None) -> str:
    if state == State.LEASED:
        return "running"
    if state in (State.READY, State.DELAYED):
        if origin is not None:
            return "failed"  # dead-lettered into another queue
        if attempts:
            return "retrying"
        return "queued" if state == State.READY else "scheduled"
    return _RESULT_STATES[state]


_RESULT_STATES: dict[int, str] = {State.DONE: "done", State.DEAD: "failed", State.CANCELLED: "cancelled"}


def _info_from(db: Context, row: MessageRecord | None, res: ResultRecord | None,
               queue_name: Callable[[int], str | None]) -> JobInfo | None:
    """A job from its message row, its results row, or both (the message wins for
    what it still holds; the results row keeps the rest once the message is gone)."""
    kept: dict[str, Any] = {}
    if res is not None:
        kept = {"value": res.value, "expires_at": res.expires_at, "started_at": res.started_at,
                "duration": res.duration}
    if row is not None:
        call = task_call(_safe_decode(row.payload))
        name, args, kwargs = call if call else (res.task if res else None, None, None)
        job_state = _message_state(row.state, row.attempts, row.origin)
        finished = job_state in ("done", "failed", "cancelled")
        return JobInfo(
            id=row.id, task=name, queue=row.origin or queue_name(row.qid), state=job_state,
            attempts=row.attempts,
            error=JobError.parse(res.error if finished and res and res.error else row.error),
            args=args, kwargs=kwargs, enqueued_at=row.enqueued_at, run_at=row.run_at,
            finished_at=row.finished_at if row.finished_at is not None else (
                res.finished_at if res else None),
            **kept)
    if res is not None:
        call = task_call(_safe_decode(res.call)) if res.call is not None else None
        return JobInfo(id=res.id, task=res.task, queue=res.queue, state=_RESULT_STATES[res.state],
                       attempts=res.attempts, error=JobError.parse(res.error),
                       args=call[1] if call else None, kwargs=call[2] if call else None,
                       enqueued_at=res.enqueued_at, finished_at=res.finished_at, **kept)
    return None


def outcome_row(ctx: JobContext, state: int, *, attempts: int, now: float,
                ttl: float | None, error: str | None = None, value: bytes | None = None,
                duration: float | None = None) -> tuple[Any, ...]:
    """The results row of a job that ended in *state* (DONE, DEAD or CANCELLED) at
    *now*: its outcome, and its history (queue, call, enqueue and start times, how
    long its last run took), kept together until ``now + ttl`` (None: for ever)."""
    try:
        call = codec.encode({"task": ctx.task, "args": ctx.args, "kwargs": ctx.kwargs},
                            2**62)
    except LiteqError:
        call = None  # it was decoded from CBOR, so this is only a value the task changed
    started = ctx.started_at or None
    return (ctx.id, ctx.task, state, value, error, attempts, now,
            None if ttl is None else now + ttl, ctx.queue, call, ctx.enqueued_at, started,
            duration if started is not None else None)


class Job:
    """A handle on one job: ``db.job(id)``, or what ``delay()``/``enqueue()`` return.

    Every property reads the database afresh (the job moves on while you hold it).
    """

    __slots__ = ("db", "id", "_task")

    def __init__(self, db: Context, job_id: int, *, task: str | None = None) -> None:
        if isinstance(job_id, bool) or not isinstance(job_id, int) or not 1 <= job_id <= INT64_MAX:
            raise InvalidArgument(f"a job id is a positive integer (at most {INT64_MAX}), "
                                  f"got {short(job_id)}")
        self.db = db
        self.id = job_id
        self._task = task

    def info(self) -> JobInfo:
        """Everything about the job now; raises :class:`JobNotFound` if it does not exist."""
        row, res = self.db.backend.job(self.id)  # one snapshot for both rows
        info = _info_from(self.db, row, res, self._queue_name)
        if info is None:
            raise JobNotFound(
                f"no job with id {self.id}: it never existed, or it finished more than its "
                f"result_ttl ago and its record was pruned")
        return info

    def _queue_name(self, qid: int) -> str | None:
        row = self.db.backend.queue_row_by_id(qid)
        return row.name if row else None

    @property
    def state(self) -> str:
        """One of queued, scheduled, running, retrying, done, failed, cancelled."""
        return self.info().state

    @property
    def attempts(self) -> int:
        """Deliveries so far (a run that is going on counts)."""
        return self.info().attempts

    @property
    def error(self) -> JobError | None:
        """The last error (type, message, traceback text), or None."""
        return self.info().error

    @property
    def task(self) -> str | None:
        """The task's name."""
        if self._task is None:
            self._task = self.info().task
        return self._task

    def result(self, wait: float = 0) -> Any:
        """The task's return value, waiting up to *wait* seconds for the job to finish.

        Raises :class:`JobFailed` (with ``.error``) if it failed, :class:`JobCancelled`
        if it was cancelled, :class:`NoResult` if it finished without a stored value,
        :class:`ResultTimeout` if it has not finished within *wait*.
        """
        w = check_seconds(wait, "wait")
        assert w is not None
        deadline = time.monotonic() + w
        waiter = None
        while True:
            if waiter is not None:
                waiter.arm()  # before reading: a commit in between wakes the wait
            info = self.info()
            if info.state == "done":
                if info.value is None:
                    why = f": {info.error}" if info.error else (
                        " (register the task with store_result=True to keep it)")
                    raise NoResult(f"job {self.id} ({info.task}) is done but has no stored "
                                   f"result{why}")
                return codec.decode(info.value)
            if info.state == "failed":
                raise JobFailed(f"job {self.id} ({info.task}) failed after {info.attempts} "
                                f"attempt(s): {info.error or 'no error recorded'}",
                                self.id, info.error)
            if info.state == "cancelled":
                raise JobCancelled(f"job {self.id} ({info.task}) was cancelled")
            left = deadline - time.monotonic()
            if left <= 0:
                raise ResultTimeout(f"job {self.id} ({info.task}) is still {info.state} "
                                    f"after waiting {w:g} s")
            if waiter is None:
                waiter = self.db.waiter()
                continue
            waiter.wait(min(left, 0.5))

    def cancel(self) -> str:
        """Cancel the job: ``"cancelled"`` if it had not started (it never will),
        ``"requested"`` if it is running (it stops at its next ``checkpoint()``, or
        is not retried; the request survives a worker restart), ``"finished"`` if it
        had already ended."""
        db, store = self.db, self.db.backend
        with db.transaction():
            row = store.message(self.id)
            if row is None:
                if store.result(self.id) is None:
                    raise JobNotFound(f"no job with id {self.id}")
                return "finished"
            outcome = store.request_cancel(self.id)
            if outcome == "cancelled":
                call = task_call(_safe_decode(row.payload))
                name = call[0] if call else None
                task = registry(db).get(name) if name else None
                ttl = task.result_ttl if task else DEFAULT_RESULT_TTL
                now = store.clock()
                store.save_results([(self.id, name, State.CANCELLED, None, "cancelled before it ran",
                                     row.attempts, now, None if ttl is None else now + ttl,
                                     row.origin or self._queue_name(row.qid),
                                     row.payload if call else None, row.enqueued_at, None, None)])
        return outcome

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Job) and other.id == self.id and other.db is self.db

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"<Job {self.id} {self._task or ''}>".replace(" >", ">")


def _safe_decode(blob: bytes) -> Any:
    try:
        return codec.decode(blob)
    except SerializationError:
        return None


# -- listing jobs (for ``liteq jobs``) ------------------------------------------------------
#
_STATE_CODES = {
    "queued": (State.READY,), "scheduled": (State.DELAYED,), "retrying": (State.READY, State.DELAYED),
    "running": (State.LEASED,), "done": (State.DONE,), "failed": (State.DEAD, State.READY, State.DELAYED),
    "cancelled": (State.CANCELLED,),
}
_RESULT_CODES = {"done": State.DONE, "failed": State.DEAD, "cancelled": State.CANCELLED}


def _scan_messages(db: Context, codes: Sequence[int], before: int, n: int) -> list[MessageRecord]:
    return db.backend.job_messages(codes, before, n)


def _scan_results(db: Context, code: int | None, before: int, n: int, queue: str | None,
                  task: str | None) -> list[ResultRecord]:
    return db.backend.orphan_results(code, before, n, queue=queue, task=task)


def list_jobs(db: Context, *, state: str | None = None, task: str | None = None,
              queue: str | None = None, limit: int = 50) -> list[JobInfo]:
    """The newest jobs (task messages, and outcomes of jobs whose message is gone),
    newest first, optionally only those in *state*, of *task*, or on *queue*.

    *state* ``"dead"`` is accepted for ``"failed"`` (the message state's name)."""
    if state == "dead":
        state = "failed"
    if state is not None and state not in JOB_STATES:
        raise InvalidArgument(f"state must be one of {', '.join(JOB_STATES)}, got {state!r}")
    check_positive_int(limit, "limit")
    names: dict[int, str | None] = {}

    def queue_name(qid: int) -> str | None:
        if qid not in names:
            row = db.backend.queue_row_by_id(qid)
            names[qid] = row.name if row else None
        return names[qid]

    def keep(info: JobInfo | None) -> bool:
        return info is not None and (state is None or info.state == state) and \
            (task is None or info.task == task) and (queue is None or info.queue == queue)

    found: list[JobInfo] = []
    codes = _STATE_CODES[state] if state else tuple(State)
    before, chunk = 2**63 - 1, 500
    while len(found) < limit:
        rows = _scan_messages(db, codes, before, chunk)
        for row in rows:
            if task_call(_safe_decode(row.payload)) is None:
                continue
            info = _info_from(db, row, None, queue_name)
            if keep(info):
                assert info is not None
                found.append(info)
        if len(rows) < chunk:
            break
        before = rows[-1].id
    if state is None or state in _RESULT_CODES:
        before = 2**63 - 1
        code = _RESULT_CODES[state] if state else None
        extra: list[JobInfo] = []
        while len(extra) < limit:
            results = _scan_results(db, code, before, chunk, queue, task)
            for res in results:
                info = _info_from(db, None, res, queue_name)
                if keep(info):
                    assert info is not None
                    extra.append(info)
            if len(results) < chunk:
                break
            before = results[-1].id
        found.extend(extra)
    found.sort(key=lambda i: -i.id)
    return found[:limit]


def run_coroutine(loop: asyncio.AbstractEventLoop, coro: Any, timeout: float | None) -> Any:
    """Run *coro* to the end on *loop* (the worker's), raising TaskTimeout past *timeout*."""
    if timeout is None:
        return loop.run_until_complete(coro)
    try:
        return loop.run_until_complete(asyncio.wait_for(coro, timeout))
    except TimeoutError:
        raise TaskTimeout(f"task exceeded its timeout of {timeout:g} s") from None
