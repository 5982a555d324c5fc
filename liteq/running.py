"""The running job: what a task can know about its job (:class:`JobContext`,
:func:`current_job`), the flow signals it may raise (:class:`Retry`, :class:`Fail`,
:class:`Cancelled`, :class:`TaskTimeout`: not errors), and how one run ended
(:class:`Outcome`, with its :class:`JobError` record, and the results row it leaves).

Flow signals, raised inside a task, are not errors: :class:`Retry` asks for another
attempt, :class:`Fail` gives up at once, :class:`Cancelled` (raised by
``JobContext.checkpoint()``) stops a job whose cancellation was requested.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import re
import socket
import time
import traceback
from dataclasses import dataclass
from typing import Any

from . import codec
from .context import Context
from .errors import InvalidArgument, LiteqError
from .validate import check_seconds, storable

__all__ = [
    "JobContext", "Outcome", "JobError", "current_job", "set_current_job", "Retry", "Fail",
    "Cancelled", "TaskTimeout", "outcome_row", "run_coroutine", "MAX_TRACEBACK",
    "worker_name", "set_worker_name",
]

#: Longest traceback text kept with a job (the end is kept: it names the error).
MAX_TRACEBACK = 16_000
_CANCEL_CHECK = 0.05  # checkpoint() reads the cancel flag at most this often
#: progress() writes at most once per this many seconds per job (1.0 always).
PROGRESS_EVERY = 1.0
#: Longest progress note kept (characters).
MAX_NOTE = 200


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


# -- the running job ----------------------------------------------------------------------

# A context variable, not a thread-local: each thread has its own context, and so does
# each asyncio task, so the jobs an asyncio worker runs at once in one thread each see
# their own.
_current: contextvars.ContextVar[JobContext | None] = contextvars.ContextVar(
    "liteq_current_job", default=None)


def current_job() -> JobContext | None:
    """The job running in this thread or asyncio task (inside a task), or None."""
    return _current.get()


def set_current_job(ctx: JobContext | None) -> None:
    """Make *ctx* the job :func:`current_job` returns in this thread or asyncio task
    (the worker, around a task's call; None after it)."""
    _current.set(ctx)


class JobContext:
    """What a running task (and a hook) can know about its job::

        @db.task
        def export(n):
            job = liteq.current_job()
            for chunk in range(n):
                job.checkpoint()          # raises Cancelled once cancel() was asked
                job.progress(chunk / n, f"{chunk} of {n}")
                ...
    """

    __slots__ = ("db", "id", "task", "queue", "attempts", "max_attempts", "args", "kwargs",
                 "enqueued_at", "started_at", "_checked_at", "_cancel", "_progress_at")

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
        self._progress_at = -PROGRESS_EVERY

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

    def progress(self, fraction: float, note: str = "") -> None:
        """Report how far the job is: *fraction* from 0.0 to 1.0, and a short *note*
        (at most 200 characters kept). Shown by ``liteq job N`` and ``liteq workers``.

        Cheap to call in a loop: it writes at most once a second (a report of 1.0
        always), and a report that comes sooner is dropped, not delayed. A failed
        write is logged by no one and changes nothing: progress is only for people."""
        if isinstance(fraction, bool) or not isinstance(fraction, int | float) \
                or not 0.0 <= fraction <= 1.0:
            raise InvalidArgument(f"progress must be a number from 0.0 to 1.0, got {fraction!r}")
        if not isinstance(note, str):
            raise InvalidArgument(f"progress note must be a string, got {note!r}")
        now = time.monotonic()
        if fraction < 1.0 and now - self._progress_at < PROGRESS_EVERY:
            return
        self._progress_at = now
        try:
            self.db.backend.set_progress(self.id, float(fraction), storable(note[:MAX_NOTE]))
        except LiteqError:
            pass

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


def timed_out(task: str, timeout: float, start: float) -> Outcome:
    """How a run stopped at its *timeout* ends: retried (``start``: its perf_counter)."""
    why = JobError("liteq.TaskTimeout", f"task {task} exceeded its timeout of {timeout:g} s")
    return Outcome("retrying", time.perf_counter() - start, error=why)


def raised(task: Any, args: Any, kwargs: Any, exc: BaseException, start: float) -> Outcome:
    """How a run that raised *exc* ends: failed at once when the call itself could not
    be made (the job's arguments do not fit the task: no attempt would do better), else
    retried, with *exc*'s traceback less the worker's own frame."""
    unfit = task.binding_error(args, kwargs) if isinstance(exc, TypeError) else None
    if unfit is not None:
        error = JobError("TypeError", f"the job's arguments do not fit the task: {unfit}; "
                         f"failed without retrying (did the task's signature change "
                         f"after the job was enqueued?)")
        return Outcome("failed", time.perf_counter() - start, error=error)
    return Outcome("retrying", time.perf_counter() - start,
                   error=JobError.from_exception(exc, skip=1))


# -- who runs the jobs of this process ---------------------------------------------------

_worker: tuple[int, str] | None = None  # (pid, registry id) of this process's worker


def set_worker_name(name: str | None) -> None:
    """Name the jobs this process runs after *name* (the registry id of its worker;
    None: forget it)."""
    global _worker
    _worker = None if name is None else (os.getpid(), name)


def worker_name() -> str:
    """Who runs a job here, as an attempt records it: the registry id of this process's
    worker (``host:pid:random``, see :mod:`liteq.registry`); in a process forked from
    it (a process pool's child) that id and the child's pid, ``host:pid:random/pid``;
    else ``host:pid`` (a program consuming by hand)."""
    if _worker is not None:
        pid, name = _worker
        return name if pid == os.getpid() else f"{name}/{os.getpid()}"
    return f"{socket.gethostname()}:{os.getpid()}"


def outcome_row(ctx: JobContext, state: int, *, attempts: int, now: float,
                ttl: float | None, error: str | None = None, value: bytes | None = None,
                duration: float | None = None) -> tuple[Any, ...]:
    """The results row of a job that ended in *state* (DONE, DEAD or CANCELLED) at
    *now*: its outcome, and its history (queue, call, enqueue and start times, how
    long its last run took, the worker that ran it: the results row is the job's last
    attempt), kept together until ``now + ttl`` (None: for ever)."""
    try:
        call = codec.encode({"task": ctx.task, "args": ctx.args, "kwargs": ctx.kwargs},
                            2**62)
    except LiteqError:
        call = None  # it was decoded from CBOR, so this is only a value the task changed
    started = ctx.started_at or None
    return (ctx.id, ctx.task, state, value, error, attempts, now,
            None if ttl is None else now + ttl, ctx.queue, call, ctx.enqueued_at, started,
            duration if started is not None else None, worker_name())


def run_coroutine(loop: asyncio.AbstractEventLoop, coro: Any, timeout: float | None) -> Any:
    """Run *coro* to the end on *loop* (the worker's), raising TaskTimeout past *timeout*."""
    if timeout is None:
        return loop.run_until_complete(coro)
    try:
        return loop.run_until_complete(asyncio.wait_for(coro, timeout))
    except TimeoutError:
        raise TaskTimeout(f"task exceeded its timeout of {timeout:g} s") from None
