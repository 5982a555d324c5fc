"""What an engine keeps for operators (issue 21): the registry of live workers, the
progress of running jobs, per-minute history counters (with hourly roll-ups) and each
job's attempts; their records and verbs.

A part of the storage interface of its own (:class:`OperatingVerbs`, a base of
:class:`~liteq.backends.base.Backend`) so the verbs the dashboard and ``liteq
workers``/``liteq metrics`` need sit together. Every writer here is a process that
already writes (a worker's or scheduler's heartbeat, a task reporting progress, the
put/ack totals flush, a retry) or a trigger in the transaction of a write (a failure's
history count, the hourly roll-ups, an expired lease's attempt); readers only read.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import NamedTuple

from .records import MessageRecord

__all__ = ["WorkerRecord", "ProgressRecord", "HistoryRow", "HISTORY_BUCKETS", "ErrorGroup",
           "HistorySums", "StateCounts", "AttemptRecord", "OperatingVerbs"]

#: Upper bounds (seconds) of the run-time histogram buckets kept in each history row
#: (``le_*`` columns); the ``+Inf`` bucket is ``runs``.
HISTORY_BUCKETS = (0.01, 0.1, 1.0, 10.0, 60.0)


class WorkerRecord(NamedTuple):
    """A worker's (or scheduler's) row in the registry (the ``workers`` table)."""

    #: Unique id, ``host:pid:random`` (a restarted process gets a new one).
    id: str
    #: ``"worker"`` or ``"scheduler"``.
    kind: str
    #: Host name.
    host: str
    #: Process id (the supervisor's, for a process pool).
    pid: int
    #: The queues it serves, comma-separated in order of preference ("" for a scheduler).
    queues: str
    #: ``"thread"``, ``"process"`` or ``""`` (a scheduler).
    pool: str
    #: Consumers it runs at once (0 for a scheduler).
    concurrency: int
    #: liteq's version.
    version: str
    #: When it started.
    started_at: float
    #: Its last heartbeat.
    heartbeat_at: float
    #: Seconds between its heartbeats (how stale is "gone" is the reader's choice).
    interval: float
    #: The jobs running now, as JSON: ``[[id, since], ...]``.
    jobs: str
    #: Jobs it finished successfully so far.
    done: int
    #: Jobs that failed for good (dead) so far.
    failed: int


class ProgressRecord(NamedTuple):
    """The progress a running (or finished) job last reported (the ``progress`` table)."""

    #: The job's (message's) id.
    id: int
    #: 0.0 to 1.0.
    fraction: float
    #: What the task said (may be empty).
    note: str
    #: When it said it.
    at: float


class HistoryRow(NamedTuple):
    """One queue's (and one task's, or ``""``) counters for one minute (the ``history``
    table). :meth:`OperatingVerbs.add_history` adds rows to what is stored."""

    #: The queue's id.
    qid: int
    #: ``int(epoch seconds // 60)``.
    minute: int
    #: The task name; ``""`` for the queue's own counters (put, acked).
    task: str
    #: Messages put.
    put: int
    #: Messages acked (jobs done).
    acked: int
    #: Failed attempts that will be retried.
    failed: int
    #: Messages or jobs that went dead.
    dead: int
    #: Runs measured.
    runs: int
    #: Their total run time, seconds.
    run_total: float
    #: The longest one, seconds.
    run_max: float
    #: Runs of at most 10 ms, 100 ms, 1 s, 10 s, 60 s (:data:`HISTORY_BUCKETS`).
    le_10ms: int = 0
    le_100ms: int = 0
    le_1s: int = 0
    le_10s: int = 0
    le_60s: int = 0


class ErrorGroup(NamedTuple):
    """Messages of one queue and state that share one error text (the dashboard's dead
    letters, grouped)."""

    #: The error text (None: no error was recorded).
    error: str | None
    #: How many messages have it.
    messages: int
    #: The newest of them.
    last_id: int


class StateCounts(NamedTuple):
    """A queue's messages per state, each counted up to a cap (the dashboard's pages:
    :meth:`OperatingVerbs.count_states`). A count of ``cap + 1`` means "more than cap"."""

    ready: int
    delayed: int
    leased: int
    done: int
    dead: int
    cancelled: int
    #: The earliest ``run_at`` among the ready messages counted (None: none ready).
    #: Exact while ``ready`` is at most the cap; past it, the earliest of those counted.
    oldest_ready_at: float | None
    #: The depth counter when the queue keeps one (``max_depth`` set, or
    #: ``count_depth``): exact and free. None when it keeps none.
    depth: int | None
    #: The queue's ``max_depth`` (None: unbounded).
    max_depth: int | None


class HistorySums(NamedTuple):
    """One bucket of a chart: the history's counts summed over its minutes."""

    #: The bucket's first minute (``int(epoch seconds // 60)``, a multiple of the width).
    start: int
    #: Messages put (the queues' own counts).
    put: int
    #: Messages acked (the queues' own counts).
    acked: int
    #: Messages that went dead (the queues' own counts: by a worker, by hand, or by a
    #: lease that ran out on the last attempt).
    dead: int
    #: Deliveries given back for another attempt (a retry, a nack, a lease that ran
    #: out; the queues' own counts).
    failed: int = 0


class AttemptRecord(NamedTuple):
    """One attempt of a job: a row of ``attempts`` (an attempt that did not end the
    job), or the job's results row (the attempt that ended it)."""

    #: The job's (message's) id.
    id: int
    #: Its number: 1 for the first delivery.
    attempt: int
    #: The worker that ran it (registry id ``host:pid:random``, or ``host:pid``);
    #: None when unknown (a lease that ran out after its worker's row was gone).
    worker: str | None
    #: When it started; None when unknown.
    started_at: float | None
    #: When it ended: its start plus its run time where both are known (so
    #: ``ended_at - started_at`` is the run time the job's ``duration`` reports); a
    #: lease that ran out: the lease's end.
    ended_at: float
    #: ``retried``, ``lease expired`` (did not end the job), or ``done``, ``dead``,
    #: ``cancelled`` (the last attempt).
    outcome: str
    #: The error with its traceback (None for a success).
    error: str | None


class OperatingVerbs(ABC):
    """The registry, progress and history verbs every engine implements."""

    # -- the workers registry --------------------------------------------------------

    @abstractmethod
    def save_worker(self, row: WorkerRecord) -> None:
        """Insert or replace the registry row ``row.id`` (a start, or a heartbeat): one
        statement."""

    @abstractmethod
    def remove_worker(self, wid: str) -> bool:
        """Delete the registry row *wid* (a clean exit); False if there was none."""

    @abstractmethod
    def workers(self) -> list[WorkerRecord]:
        """Every registry row, oldest start first."""

    @abstractmethod
    def prune_workers(self, before: float) -> int:
        """Delete the rows whose last heartbeat is before *before* (long gone)."""

    # -- progress -------------------------------------------------------------------

    @abstractmethod
    def set_progress(self, mid: int, fraction: float, note: str) -> None:
        """Record job *mid*'s progress now (replacing what it said before)."""

    @abstractmethod
    def progress(self, ids: Sequence[int]) -> dict[int, ProgressRecord]:
        """The last progress of each of *ids* that reported any."""

    @abstractmethod
    def prune_progress(self, before: float) -> int:
        """Delete progress older than *before* of jobs whose message and results row
        are both gone."""

    # -- history --------------------------------------------------------------------

    @abstractmethod
    def add_history(self, rows: Sequence[HistoryRow]) -> None:
        """Add *rows* to the stored counters of their (queue, minute, task): counts and
        totals add up, ``run_max`` keeps the larger. One transaction (joins the
        caller's)."""

    @abstractmethod
    def history(self, since_minute: int, qid: int | None = None) -> list[HistoryRow]:
        """Stored rows from *since_minute* on (of queue *qid*, or all), by minute."""

    @abstractmethod
    def history_sums(self, since_minute: int, width: int,
                     qid: int | None = None) -> list[HistorySums]:
        """The history from *since_minute* on (of queue *qid*, or all) summed per bucket
        of *width* minutes (buckets start at multiples of *width*), oldest first; buckets
        without rows are left out. Summed by the engine: a week is one short answer.
        When *width* and *since_minute* are whole hours, it reads the hourly roll-ups."""

    @abstractmethod
    def history_runs(self, since_minute: int) -> list[HistoryRow]:
        """Each (queue, task)'s rows from the hour of *since_minute* on, summed into one
        row (its ``minute`` the first one, ``run_max`` the largest), read from the hourly
        roll-ups; the queues' own rows (task ``""``) left out. What the run-time
        histogram needs."""

    @abstractmethod
    def prune_history(self, before_minute: int) -> int:
        """Delete rows older than *before_minute*, and the hourly roll-ups of hours
        before its hour; how many minute rows."""

    # -- attempts ---------------------------------------------------------------------

    @abstractmethod
    def save_attempts(self, rows: Sequence[AttemptRecord]) -> None:
        """Record attempts that did not end their jobs (replacing a row of the same id
        and number); joins the caller's transaction (the retry's)."""

    @abstractmethod
    def attempts(self, mid: int) -> list[AttemptRecord]:
        """Job *mid*'s attempts, first to last: the recorded ones, then its results row
        as the last (when it has one). Reads only."""

    # -- browsing (the web dashboard) -------------------------------------------------

    @abstractmethod
    def browse_task(self, qid: int, state: int, task: str, after: int,
                    n: int) -> list[MessageRecord]:
        """Up to *n* messages of queue *qid* in *state* whose payload is a job of *task*
        (``{"task": task, ...}``), with ``id > after``, by id, through the engine's
        index of task names (``msg_task``). Reads only."""

    @abstractmethod
    def browse(self, qid: int, state: int, after: int, n: int, *, key: str | None = None,
               error: str | None = None) -> list[MessageRecord]:
        """Up to *n* messages of queue *qid* in *state* with ``id > after``, by id (a
        keyset page: no OFFSET, so a page deep in a big queue costs what the first
        does); only those with this *key* or this *error* text when given. Reads only."""

    @abstractmethod
    def error_groups(self, qid: int, state: int, n: int) -> list[ErrorGroup]:
        """The queue's messages in *state* grouped by error text, most common first, at
        most *n* groups. Reads only."""

    @abstractmethod
    def count_states(self, qid: int, cap: int) -> StateCounts:
        """Queue *qid*'s messages in each state, each count stopping at *cap* + 1 (so
        a page's cost does not grow with the queue: each count reads at most *cap* + 1
        entries of the state's index); the depth counter where one is kept. Raises
        :class:`~liteq.LiteqError` when the queue is gone. Reads only."""

    @abstractmethod
    def delete_finished(self, qid: int, ids: Sequence[int], state: int) -> int:
        """Delete those of *ids* that are in queue *qid* and in *state*, a finished
        state (DONE, DEAD or CANCELLED: no depth to release); how many. Guarded by the
        state, so a message redriven meanwhile stays. One transaction."""
