"""Jobs: the handle on one job (:class:`Job`, what ``delay()`` returns and
``db.job(id)`` gives), its snapshot (:class:`JobInfo`) and the history
(:func:`list_jobs`, for ``liteq jobs``). A job's id is its message's id.

Job states, derived from the message row, or from the ``results`` row once the
message is gone (acked with retention 0):

=========== ==================================================================
waiting     a workflow step whose parents have not all ended (:mod:`liteq.workflow`)
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
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import codec
from .backends.records import MessageRecord, ResultRecord, State
from .backends.workflow import WAITING_AT, WfEdge
from .context import Context
from .errors import InvalidArgument, LiteqError, SerializationError
from .outbox import on_connection
from .running import JobError
from .validate import INT64_MAX, check_positive_int, check_seconds, short

__all__ = [
    "Job", "JobInfo", "list_jobs", "task_call", "JOB_STATES", "DEFAULT_RESULT_TTL",
    "JobFailed", "JobCancelled", "NoResult", "JobNotFound", "ResultTimeout",
]

JOB_STATES = ("waiting", "queued", "scheduled", "running", "retrying", "done", "failed",
              "cancelled")
#: How long a finished job's outcome is kept by default (one day).
DEFAULT_RESULT_TTL = 86400.0


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


def _message_state(state: int, attempts: int, origin: str | None, run_at: float = 0.0) -> str:
    if state == State.LEASED:
        return "running"
    if state in (State.READY, State.DELAYED):
        if origin is not None:
            return "failed"  # dead-lettered into another queue
        if state == State.DELAYED and run_at >= WAITING_AT:
            return "waiting"
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
        job_state = _message_state(row.state, row.attempts, row.origin, row.run_at)
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
        """One of waiting, queued, scheduled, running, retrying, done, failed, cancelled."""
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

    @property
    def parents(self) -> list[Job]:
        """The jobs this one waits for (a workflow step's, or ``depends_on``), in order."""
        return [Job(self.db, e.parent) for e in self.db.backend.wf_edges(self.id)[0]]

    @property
    def children(self) -> list[Job]:
        """The jobs that wait for this one."""
        return [Job(self.db, e.child) for e in self.db.backend.wf_edges(self.id)[1]]

    @property
    def workflow(self) -> int | None:
        """The id of the workflow this job belongs to (its first job's id), or None."""
        return self.db.backend.wf_workflow(self.id)

    def edges(self) -> tuple[list[WfEdge], list[WfEdge]]:
        """Its dependency records: ``(to its parents, to its children)``, each with the
        parent's outcome once it ended (see :class:`liteq.backends.workflow.WfEdge`)."""
        return self.db.backend.wf_edges(self.id)

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

    def cancel(self, *, connection: Any = None) -> str:
        """Cancel the job: ``"cancelled"`` if it had not started (it never will),
        ``"requested"`` if it is running (it stops at its next ``checkpoint()``, or
        is not retried; the request survives a worker restart), ``"finished"`` if it
        had already ended. *connection* (PostgreSQL): inside the application's own
        connection and transaction, as for :meth:`liteq.Queue.put` (the cancellation
        takes effect when the application commits)."""
        db, store = self.db, self.db.backend
        with on_connection(store, connection), db.transaction():
            row = store.message(self.id)
            if row is None:
                if store.result(self.id) is None:
                    raise JobNotFound(f"no job with id {self.id}")
                return "finished"
            outcome = store.request_cancel(self.id)
            if outcome == "cancelled":
                call = task_call(_safe_decode(row.payload))
                name = call[0] if call else None
                task = db.tasks.get(name) if name else None
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
    "waiting": (State.DELAYED,), "queued": (State.READY,), "scheduled": (State.DELAYED,), "retrying": (State.READY, State.DELAYED),
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
              queue: str | None = None, limit: int = 50,
              workflow: int | None = None) -> list[JobInfo]:
    """The newest jobs (task messages, and outcomes of jobs whose message is gone),
    newest first, optionally only those in *state*, of *task*, on *queue*, or of
    *workflow* (its id: the id of its first job; then in id order, first first).

    *state* ``"dead"`` is accepted for ``"failed"`` (the message state's name)."""
    if state == "dead":
        state = "failed"
    if state is not None and state not in JOB_STATES:
        raise InvalidArgument(f"state must be one of {', '.join(JOB_STATES)}, got {state!r}")
    check_positive_int(limit, "limit")
    names: dict[int, str | None] = {}
    if workflow is not None:
        found_in: list[JobInfo] = []
        for mid in db.backend.wf_members(workflow):
            try:
                member = Job(db, mid).info()
            except JobNotFound:
                continue
            if (state is None or member.state == state) and \
                    (task is None or member.task == task) and \
                    (queue is None or member.queue == queue):
                found_in.append(member)
        return found_in[:limit]

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
