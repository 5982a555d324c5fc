"""What crosses the storage boundary: message states, typed rows, and what an engine can do.

Every record is a ``NamedTuple`` whose fields are, in order, the columns the engines
select today (``liteq/backends/sqlite/sql.py``), so a record and a plain row of the same query
are interchangeable: code that still indexes a row keeps working when an engine
starts returning records, and an engine may return plain tuples in a record's field
order where building a record per row would cost too much (the claim, the worker's
batched results; see :mod:`liteq.backends.base`).

Conventions for every field below:

* Times are epoch seconds as floats, on the database's clock (``Backend.clock``).
* Durations (``lease``, ``retention``, ``backoff_*``) are seconds as floats.
* ``payload``, ``headers`` and ``call`` are CBOR bytes as stored; decoding happens
  above the backend (``liteq.codec``), so an undecodable row can still be read.
* Flags (``count_depth``, ``cancel``, ``enabled``) are 0/1 on SQLite and booleans on
  PostgreSQL: test their truth, never ``is True``.
* A message state is an ``int`` equal to one of :class:`State`'s members (engines
  hand back the stored integer; :class:`State` is an ``IntEnum``, so comparisons just
  work and nothing converts per row).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple

from ..errors import InvalidArgument

__all__ = [
    "State", "STATES", "STATE_NAMES", "UNFINISHED", "FINISHED", "state_named",
    "QueueRecord", "QueueStats", "NewMessage", "NewRow", "MessageRecord", "ClaimedRow",
    "ResultRecord", "ScheduleRecord", "ScheduleRun", "Fire", "Subscriptions",
    "Capabilities", "StaleRoutes",
]


class State(IntEnum):
    """A message's state, as stored. Ordered so that "unfinished" is ``state < DONE``
    (the dedup index and the depth counter rely on that order)."""

    #: Due now and claimable.
    READY = 0
    #: ``run_at`` is in the future; becomes READY when it falls due.
    DELAYED = 1
    #: Claimed: ``token`` and ``lease_until`` are set.
    LEASED = 2
    #: Acked and kept because the queue has ``retention`` > 0.
    DONE = 3
    #: Gave up (``error`` says why); may be redriven.
    DEAD = 4
    #: Cancelled before it ran, or while it ran (cancellation asked, lease ended).
    CANCELLED = 5

    @property
    def label(self) -> str:
        """The lower-case name users see (``"ready"``, ``"dead"`` ...)."""
        return self.name.lower()


#: State by the name users type (``liteq peek --state dead``).
STATES: dict[str, State] = {s.label: s for s in State}
#: The name of each stored state value (keys are plain ints, so a raw row's state works).
STATE_NAMES: dict[int, str] = {int(s): s.label for s in State}


def state_named(name: str | None) -> State | None:
    """The :class:`State` called *name* (``"ready"`` ...), None for None; InvalidArgument
    for any other name."""
    if name is None:
        return None
    if name not in STATES:
        raise InvalidArgument(f"state must be one of {', '.join(STATES)} or None, got {name!r}")
    return STATES[name]
#: States that count towards a queue's depth (and hold a dedup key).
UNFINISHED: tuple[State, ...] = (State.READY, State.DELAYED, State.LEASED)
#: States of a message that will not be delivered again unless revived.
FINISHED: tuple[State, ...] = (State.DONE, State.DEAD, State.CANCELLED)


class QueueRecord(NamedTuple):
    """A queue's row: its name and options (``SQL_QUEUE_BY_NAME``; a topic
    subscription is a queue with ``topic`` and ``pattern`` set)."""

    #: The queue's id (``qid`` in every other verb).
    id: int
    #: Unique name.
    name: str
    #: Most unfinished messages allowed; None = unbounded.
    max_depth: int | None
    #: Default lease (visibility timeout) of a claim, seconds.
    lease: float
    #: Deliveries before a message is buried.
    max_attempts: int
    #: Queue that receives buried messages (as ready ones); None = they stay here, dead.
    dead_letter: str | None
    #: Seconds to keep acked messages as DONE; 0 = delete on ack.
    retention: float
    #: First retry delay, seconds.
    backoff_base: float
    #: Multiplier per further attempt.
    backoff_factor: float
    #: Cap on a retry delay, seconds.
    backoff_max: float
    #: Random spread of a retry delay, ± this fraction of it (0 to 1).
    backoff_jitter: float
    #: Topic this queue subscribes to; None for a plain queue.
    topic: str | None
    #: Routing pattern of the subscription (``*`` one word, ``#`` any words).
    pattern: str | None
    #: When a temporary subscription lapses unless renewed; None = never.
    expires_at: float | None
    #: Keep the depth counter without a bound (flag).
    count_depth: bool
    #: Nothing is claimed while set (flag; ``Queue.pause()``), puts go on.
    paused: bool = False
    #: Most claims per second (the queue's token bucket refills at this rate); None: none.
    rate_limit: float | None = None
    #: The most tokens the queue's bucket holds (None with no rate limit).
    rate_burst: float | None = None


class QueueStats(NamedTuple):
    """Exact counts of one queue (``SQL_STATS`` after ``sqlite/queues.py`` folds it:
    ``count_depth`` dropped, ``depth`` filled in, this process's unflushed totals added)."""

    #: Messages due and claimable.
    ready: int
    #: Earliest ``run_at`` of a ready message; None if none is ready.
    oldest_ready_at: float | None
    #: Messages not yet due.
    delayed: int
    #: Messages under a lease (including expired leases not yet settled).
    leased: int
    #: Acked messages kept by retention.
    done: int
    #: Buried messages still in this queue.
    dead: int
    #: Cancelled messages still in this queue.
    cancelled: int
    #: Unfinished messages (ready + delayed + leased): the counter, or the counts summed.
    depth: int
    #: The queue's bound; None = unbounded.
    max_depth: int | None
    #: Messages ever put (statistics: written about once a second per process).
    enqueued: int
    #: Messages ever acked (statistics, like ``enqueued``).
    finished: int
    #: Leased messages whose lease has run out (settled by the next claim or expire).
    expired_leases: int
    #: Leased jobs under a task's limits: the concurrency slots in use (issue 19).
    limited_running: int = 0
    #: Ready messages a limit holds back now: a task's cap or empty bucket, or (all of
    #: them) the queue's own empty bucket.
    held: int = 0


class NewMessage(NamedTuple):
    """One message to insert (``put``, ``publish``); plain tuples in this order work too
    (see :data:`NewRow`)."""

    #: Higher is claimed first.
    priority: int
    #: Order within a priority before ``run_at`` (``compat.PriorityQueue``); None sorts first.
    rank: bytes | None
    #: When it falls due; in the future makes it DELAYED.
    run_at: float
    #: CBOR of the message body.
    payload: bytes
    #: CBOR of a small dict, or None.
    headers: bytes | None
    #: Dedup key: while an unfinished message holds it, a put returns that message's id.
    key: str | None


#: A put row as a plain tuple, in :class:`NewMessage`'s order (a ``NewMessage`` is one).
NewRow = tuple[int, bytes | None, float, bytes, bytes | None, str | None]


class MessageRecord(NamedTuple):
    """A message's full row (``SQL_MESSAGE``, ``SQL_PEEK``, ``SQL_JOB_MESSAGES``)."""

    #: Its id: also a job's id and half of a receipt.
    id: int
    #: The queue it is in now (a dead-lettered message moves).
    qid: int
    #: A :class:`State` value.
    state: int
    #: Higher is claimed first.
    priority: int
    #: When it is (or was) due.
    run_at: float
    #: CBOR of the message body.
    payload: bytes
    #: CBOR of a small dict, or None.
    headers: bytes | None
    #: Dedup key, or None.
    key: str | None
    #: Deliveries so far (a claim counts one).
    attempts: int
    #: When it was put.
    enqueued_at: float
    #: While LEASED: when the lease runs out; else None.
    lease_until: float | None
    #: While LEASED: the fencing token of the current claim; else None.
    token: int | None
    #: The last attempt's error text, or why it was buried or cancelled.
    error: str | None
    #: When it became DONE, DEAD or CANCELLED; else None.
    finished_at: float | None
    #: The queue a dead-lettered message came from; None otherwise.
    origin: str | None
    #: Order within a priority (see :class:`NewMessage`).
    rank: bytes | None
    #: Cancellation was asked while it was leased (flag).
    cancel: bool
    #: The id of its task's limits (the ``flows`` row), or None: no limits (issue 19).
    flow: int | None = None
    #: Its concurrency key ('' when its task's cap is task-wide); None without limits.
    flow_key: str | None = None


class ClaimedRow(NamedTuple):
    """A message as a claim returns it (``CLAIM_COLUMNS``). The hot path: engines
    return plain tuples in this order, consumed by unpacking, never ``ClaimedRow(...)``
    per row (its state is LEASED by construction)."""

    #: Its id.
    id: int
    #: The fencing token of this claim (shared by the messages of one batch claim).
    token: int
    #: Deliveries including this one.
    attempts: int
    #: CBOR of the message body.
    payload: bytes
    #: CBOR of a small dict, or None.
    headers: bytes | None
    #: Its priority.
    priority: int
    #: When it fell due.
    run_at: float
    #: When it was put.
    enqueued_at: float
    #: Dedup key, or None.
    key: str | None
    #: Order within a priority, or None.
    rank: bytes | None
    #: The previous attempt's error text, or None.
    error: str | None
    #: The queue a dead-lettered message came from, or None.
    origin: str | None


class ResultRecord(NamedTuple):
    """A finished job's outcome and history (the ``results`` table, schema version 2;
    ``SQL_RESULT_GET``). The worker writes these as plain tuples in this order."""

    #: The job's id (= its message's id).
    id: int
    #: Registered task name, or None if unknown.
    task: str | None
    #: DONE, DEAD or CANCELLED (a :class:`State` value).
    state: int
    #: CBOR of the return value, if the task stores results.
    value: bytes | None
    #: Error text of a failed or cancelled job.
    error: str | None
    #: Deliveries it took.
    attempts: int
    #: When it finished.
    finished_at: float
    #: When this row may be pruned; None = kept for ever.
    expires_at: float | None
    #: The queue it ran on (v2; None in rows written by version 1).
    queue: str | None
    #: CBOR of ``{"task", "args", "kwargs"}`` (v2).
    call: bytes | None
    #: When its message was put (v2).
    enqueued_at: float | None
    #: Start of its last run; None if it never ran (v2).
    started_at: float | None
    #: Seconds its last run took (v2).
    duration: float | None
    #: The worker that ran its last attempt (registry id or host:pid; None: unknown or
    #: written before schema ``_V_OBS``). Its earlier attempts: ``Backend.attempts``.
    worker: str | None = None


class ScheduleRecord(NamedTuple):
    """A schedule's row (``SQL_SCHEDULE_GET``)."""

    #: Its id.
    id: int
    #: Unique name.
    name: str
    #: ``"cron"``, ``"every"`` or ``"at"``.
    kind: str
    #: The cron expression, the interval in seconds, or the ISO time, as text.
    spec: str
    #: IANA time zone of the timing (cron, and ``at`` times without an offset); None = UTC.
    tz: str | None
    #: ``"task"``, ``"queue"`` or ``"command"``.
    target: str
    #: Queue each fire is put on.
    queue: str
    #: CBOR of what each fire enqueues.
    payload: bytes
    #: Misfire policy: ``"skip"``, ``"once"`` or ``"all"``.
    misfire: str
    #: Under ``"all"``, only the latest this many missed fires are enqueued.
    misfire_cap: int
    #: Paused when false (flag).
    enabled: bool
    #: Next planned fire time; None = nothing left to fire.
    next_run_at: float | None
    #: Fire time of the last fire, or None.
    last_run_at: float | None
    #: Job (message) id of the last fire, or None.
    last_job_id: int | None
    #: When it was first created.
    created_at: float
    #: When it was last replaced, paused or resumed.
    updated_at: float


class ScheduleRun(NamedTuple):
    """One fire in a schedule's history (``SQL_RUNS``)."""

    #: The planned fire time.
    fire_at: float
    #: When a scheduler enqueued it.
    fired_at: float
    #: The job (message) it enqueued, or None.
    job_id: int | None

    @property
    def late(self) -> float:
        """Seconds between the planned time and the enqueue."""
        return self.fired_at - self.fire_at


class Fire(NamedTuple):
    """A fire that ``schedule_tick`` enqueued."""

    #: Schedule name.
    schedule: str
    #: The planned fire time.
    fire_at: float
    #: The message id it was enqueued as.
    job_id: int


class Subscriptions(NamedTuple):
    """A topic's subscription set and the version it was read at (``publish`` checks it)."""

    #: Counter bumped by every subscribe, unsubscribe and expiry (all topics).
    version: int
    #: The subscription queues of the topic, by name.
    queues: list[QueueRecord]


@dataclass(frozen=True)
class Capabilities:
    """What an engine can do, read once when a Database (or Queue, Worker) is built and
    never per call. Features an engine lacks are refused above it with a clear error."""

    #: ``"sqlite"`` or ``"postgres"``.
    engine: str
    #: How a waiter is woken: ``"inotify"``, ``"poll"`` or ``"listen"``.
    wakeup: str
    #: PEP 249 paramstyle of ``execute``'s SQL (``"qmark"`` on SQLite, which also takes
    #: ``"named"``; ``"format"`` on PostgreSQL).
    paramstyle: str
    #: Processes on several hosts may share the database.
    shared_across_hosts: bool
    #: The database is a local file (``storage_size`` is its size on disk).
    local_file: bool
    #: ``vacuum()`` is supported.
    vacuum: bool
    #: ``checkpoint()`` is supported (SQLite's WAL).
    checkpoint: bool
    #: ``integrity_check()`` is supported.
    integrity_check: bool
    #: Verbs can run on the application's own connection and transaction (``using``).
    foreign_connection: bool


class StaleRoutes(Exception):
    """``Backend.publish``: the subscription set changed since the caller read it;
    re-read :meth:`~liteq.backends.base.Backend.subscriptions` and retry. An internal
    signal between the topic and its backend, not a LiteqError: it never reaches users."""
