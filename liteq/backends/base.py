"""The storage interface: every verb the domain code (queues, topics, tasks, schedules,
the worker, the CLI) needs from an engine, and the contract a second engine must honour.

Written down from what the SQLite engine did (issue 17, step A2); since A3,
``liteq.backends.sqlite.SQLiteBackend`` implements it, with the same parameter names
and kinds (``tests/test_backend_interface.py`` checks them). Where the intended interface differs, a ``# later:`` comment says how and in
which step. ``conn``, ``write``, ``read`` and ``statement`` stay out: they are SQLite
internals.

Rules for every verb unless its docstring says otherwise (numbers are DESIGN.md's
guarantees):

* **Atomic.** A write is all-or-nothing: one transaction, or a savepoint inside the
  caller's :meth:`Backend.transaction` (which it then joins: guarantee 7). A read sees
  one consistent snapshot and, inside :meth:`Backend.transaction`, the caller's own
  uncommitted writes.
* **Durable.** A write returns only after its commit (guarantee 1), at the durability
  the backend was opened with; inside :meth:`Backend.transaction` the commit is the
  caller's.
* **Clock.** "Now" is :attr:`Backend.clock`, read after the write lock (or row locks)
  was granted, so waiting for it never shortens a lease or ages a due time.
* **Guards.** A change to a leased message is guarded by its lease token and the
  expected state, so a race changes zero rows instead of the wrong one (guarantee 4).
* **Errors.** Only :class:`~liteq.LiteqError` subclasses escape: ``StorageError``
  (I/O error, disk full, corrupt or read-only database, lost connection) and
  ``DatabaseBusy`` (locks held past ``busy_timeout``) from any verb, with nothing of
  the operation changed; others as each verb says. Engine exceptions never escape.
* **Threads and processes.** One backend object serves every thread of a process;
  each thread uses its own connection, and a child process after ``fork()`` opens its
  own without touching (or closing) the parent's.
* **Records.** Rows leave as the records of :mod:`liteq.backends.records` (or plain
  tuples in their field order, where a verb says so for speed: the claim, the put
  and ack paths and the worker's results rows). Records are tuples, so callers that
  still index a row keep working; ``tests/test_backend_interface.py`` checks the
  field orders.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from ..errors import InvalidArgument
from ..flow import FlowSpec
from ..validate import check_seconds
from .due import SeenDue
from .limits import held_due
from .records import (
    Capabilities,
    MessageRecord,
    NewRow,
    QueueRecord,
    QueueStats,
    ResultRecord,
    State,
)
from .registry import OperatingVerbs
from .scheduling import ScheduleTopicVerbs
from .tables import Counters
from .workflow import WorkflowVerbs

__all__ = ["Backend", "Waiter", "DURABILITY_LEVELS", "check_open_options"]

#: What ``connect(durability=...)`` (and ``liteq --durability``) accepts on every engine:
#: ``"normal"`` (a commit survives the process being killed) or ``"full"`` (a power
#: loss too). Each engine maps them to its own settings (SQLite: ``PRAGMA synchronous``).
DURABILITY_LEVELS: tuple[str, ...] = ("full", "normal")


def check_open_options(durability: object, busy_timeout: object) -> None:
    """Refuse, with :class:`~liteq.InvalidArgument`, the options every engine opens with
    when they are out of range (one check for all engines, before anything is opened)."""
    if durability not in DURABILITY_LEVELS:
        raise InvalidArgument(
            f"durability must be one of {sorted(DURABILITY_LEVELS)}, got {durability!r}"
        )
    check_seconds(busy_timeout, "busy_timeout")


class Waiter(Protocol):
    """Sleeps until another connection may have committed, or a timeout passes
    (on SQLite ``liteq.backends.sqlite.notifier.Waiter``: inotify on the ``-wal``
    file, else polling).

    Protocol: :meth:`arm` before looking for work, :meth:`wait` after finding none, so
    a commit landing in between is not missed. Hints may be spurious or (where
    :attr:`early`) sent before the commit is visible, so callers always bound each
    wait and look again (``liteq.wake.Looks``).
    """

    #: A descriptor that becomes readable on a hint, for ``select`` beside other
    #: descriptors (the worker, the scheduler); -1 when the waiter polls.
    fd: int
    #: True if a hint may come before its commit is visible (SQLite's inotify on the
    #: WAL write): callers then look again shortly after an empty look
    #: (``liteq.wake.RECHECK_AFTER``). False on PostgreSQL (NOTIFY follows the commit).
    early: bool

    def arm(self) -> bool:
        """Forget hints received so far; True if there were any (then look again)."""
        ...

    def wait(self, timeout: float) -> bool:
        """Block up to *timeout* seconds; True if woken by a hint, False on timeout or
        after a poll interval."""
        ...

    def found(self) -> None:
        """Work was found: a polling waiter starts its backoff fast again."""
        ...

    def close(self) -> None:
        """Release the descriptor; the waiter is not used afterwards."""
        ...


class Backend(ScheduleTopicVerbs, OperatingVerbs, WorkflowVerbs, ABC):
    """One database, seen through the verbs liteq's domain code calls.

    Abstract methods add no cost per call (they are checked once, at instantiation);
    engines must not add wrappers, ``__getattr__`` forwarding or per-verb dispatch
    on the hot paths (``put_ready``, ``claim``, ``ack``): see the performance guard
    in the boundary plan.
    """

    #: Where the database is, as users name it (an absolute path on SQLite); used
    #: in error messages. # later (B6): a redacted URL on PostgreSQL, ``description``.
    path: str
    #: What tells this database apart from every other one on this host (SQLite: the
    #: file's real path; PostgreSQL: the server, database and schema): names the turns
    #: of its waiting consumers (``liteq.turns``).
    identity: str
    #: ``"normal"`` or ``"full"`` (see ``liteq.connect``).
    durability: str
    #: Opened read-only: every write raises StorageError.
    read_only: bool
    #: Epoch seconds; injectable so tests can move time.
    clock: Callable[[], float]
    #: What this engine can do, fixed when the backend is opened (an instance
    #: attribute, not a ClassVar: SQLite's wake-up kind depends on the platform).
    #: Callers read it once when they are built, never per call.
    capabilities: Capabilities
    #: What each queue's last probe or next_due saw due, and when (``due.py``): lets a
    #: short claim skip maintenance, and a waiting consumer skip a look.
    seen_due: SeenDue
    #: Queues whose flow buckets are empty, until when (``limits.py``).
    held: dict[int, float]

    # ``liteq copy`` (issue 17, D1): see the "copying" verbs at the end.
    # Schedules and topics: ``scheduling.py``. The workers registry, progress and history
    # (issue 21): ``registry.py``.
    # Workflows (issue 20): ``workflow.py``.

    # -- lifecycle and application SQL ----------------------------------------------

    @abstractmethod
    def close(self) -> None:
        """Flush the totals (best effort) and close every connection this backend
        opened in this process. Verbs must not be called afterwards."""

    @abstractmethod
    def transaction(self) -> AbstractContextManager[None]:
        """The application's transaction (guarantee 7): every verb and :meth:`execute`
        in the block commits at its end or rolls back on an exception, together.
        Nested use is a savepoint. If the engine rolled it back under the block
        (I/O error), every later verb in the block raises StorageError."""

    def using(self, connection: Any) -> AbstractContextManager[None]:
        """Inside the block, this thread's verbs run on the application's own driver
        *connection*, inside its open transaction (the outbox on the application's
        connection); never commits or rolls back a transaction the application opened.
        Only where ``capabilities.foreign_connection``; elsewhere InvalidArgument (on
        SQLite, ``transaction()`` with ``execute()`` is the outbox)."""
        raise InvalidArgument(
            f"the {self.capabilities.engine} engine cannot run liteq's verbs on another "
            f"connection: use db.transaction() with db.execute()"
        )

    @abstractmethod
    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[tuple[Any, ...]]:
        """Run the application's own SQL (engine dialect, ``capabilities.paramstyle``)
        on the connection this thread's verbs use, so it joins :meth:`transaction`.
        Returns every row, read to the end (no lock outlives the call)."""

    @abstractmethod
    def connection(self) -> Any:
        """The driver connection this thread's verbs use (``Database.connection``):
        an ``apsw.Connection`` on SQLite."""

    @abstractmethod
    def waiter(self) -> Waiter:
        """A new :class:`Waiter` woken by commits of any process to this database; the
        caller owns it (keeps one per thread and process, and closes it)."""

    @abstractmethod
    def flush_totals(self) -> None:
        """Write this process's in-memory put/ack totals (statistics, normally written
        about once a second) now, in a transaction of their own; kept on failure."""

    # -- maintenance (only when the matching capability is true) --------------------

    @abstractmethod
    def integrity_check(self) -> list[str]:
        """The engine's consistency check, one line per finding; ``["ok"]`` if healthy."""

    @abstractmethod
    def checkpoint(self) -> None:
        """Copy the write-ahead log into the database and shrink it (SQLite's WAL)."""

    @abstractmethod
    def vacuum(self) -> None:
        """Rebuild the storage to give free space back. Not inside :meth:`transaction`."""

    @abstractmethod
    def storage_size(self) -> int:
        """Bytes the database takes on disk now (SQLite: the real file plus its
        ``-wal``)."""

    # -- queues ---------------------------------------------------------------------

    @abstractmethod
    def queue_row(self, name: str) -> QueueRecord | None:
        """The queue named *name*, or None. # later (A5-1): ``queue(name)``."""

    @abstractmethod
    def queue_row_by_id(self, qid: int) -> QueueRecord | None:
        """The queue with id *qid*, or None if it was deleted.
        # later (A5-1): ``queue_by_id(qid)``."""

    @abstractmethod
    def ensure_queue(
        self, name: str, defaults: dict[str, Any], updates: dict[str, Any]
    ) -> QueueRecord:
        """Create queue *name* from *defaults* (every option column) if missing, then
        set the *updates* columns; atomic, so concurrent declarers agree. Changing
        ``max_depth``/``count_depth`` recounts the unfinished messages in the same
        transaction. With no updates and an existing queue it only reads.
        # later (A6): *defaults* is a ``QueueOptions``, *updates* its field names."""

    @abstractmethod
    def create_queue(self, name: str, options: dict[str, Any]) -> QueueRecord:
        """Create queue *name* with *options* (every option column). The existence
        check and the insert are atomic: of two creators, one gets InvalidArgument
        ("already exists"). # later (A6): *options* is a ``QueueOptions``."""

    @abstractmethod
    def queue_names(self) -> list[str]:
        """Every queue's name (subscriptions included), sorted."""

    @abstractmethod
    def delete_queue(self, qid: int) -> None:
        """Delete the queue and every message in it, atomically. Holders of its
        leases get stale tokens. # later: bump the subscription version when it is a
        subscription (today a publisher's cached routes then fail on the gone qid)."""

    @abstractmethod
    def room(self, qid: int) -> tuple[int, int | None]:
        """``(unfinished messages, max_depth)`` without taking the write lock: the
        depth counter where one is kept (O(1)), else an index count. Raises
        LiteqError if the queue was deleted. Feeds ``put(block=True)`` and ``len()``."""

    @abstractmethod
    def stats(self, qid: int) -> QueueStats:
        """Exact counts per state and the queue's totals, in one snapshot, plus this
        process's unflushed totals. Raises LiteqError if the queue was deleted."""

    # -- put (hot path: put_ready) --------------------------------------------------

    @abstractmethod
    def put(self, qid: int, rows: Sequence[NewRow], *, force: bool = False) -> list[int]:
        """Insert *rows* (:class:`~liteq.backends.records.NewMessage` or plain tuples in
        its order) all-or-nothing (guarantee 1); their ids in row order.

        A row whose key an unfinished message (or an earlier row) holds gets that id
        and is not inserted. Raises QueueFull, writing nothing, if the new rows do not
        fit under max_depth (exact under concurrent producers: guarantee 6); *force*
        (schedules, dead letters, redrive) counts them without the check. A row due
        after now is DELAYED. LiteqError if the queue was deleted.
        # later (A5-1): ids need not be consecutive (SQLite's are, by its single writer).
        """

    @abstractmethod
    def put_ready(self, qid: int, priority: int, payload: bytes) -> int:
        """The common put: one message due now, no key, headers or rank; its id. Same
        contract as :meth:`put` of one row; engines make it one round trip (one
        autocommit statement on SQLite while the queue keeps no depth counter)."""

    def put_ready_many(self, qid: int, priority: int, payloads: Sequence[bytes]) -> list[int]:
        """The common batch: messages due now with one priority, no keys, headers or
        ranks; their ids in order. Same contract as :meth:`put` of those rows (this
        default is that call); engines may make it one statement."""
        now = self.clock()
        return self.put(qid, [(priority, None, now, p, None, None) for p in payloads])

    # -- claim and lease (hot path: claim, ack) --------------------------------------

    @abstractmethod
    def claim(self, qid: int, n: int, lease: float) -> tuple[list[tuple[Any, ...]], float]:
        """Lease up to *n* ready messages in one transaction (guarantee 2: no two
        claims ever hold one message); ``(rows, lease_until)``.

        Rows are plain tuples in :class:`~liteq.backends.records.ClaimedRow` order (hot
        path), in queue order (priority desc, rank with None first, run_at, id), every
        one LEASED by this claim with one fresh token, attempts + 1 and *lease_until* =
        now + *lease*. Only rows the claim actually changed are returned. Also promotes
        due delayed messages and settles expired leases (as :meth:`expire`) when the
        claim comes up short, and otherwise at least every ``MAINTAIN_EVERY`` seconds.
        """

    def claim_one(self, qid: int, lease: float) -> tuple[Any, ...] | None:
        """:meth:`claim` of one message (``get()``, the hot path): its row in
        :class:`~liteq.backends.records.ClaimedRow` order with *lease_until* appended
        as a 13th field, or None. Engines may make it shorter than a claim of n."""
        rows, until = self.claim(qid, 1, lease)
        return (*rows[0], until) if rows else None

    @abstractmethod
    def probe(self, qid: int) -> tuple[bool, float]:
        """Without the write lock: is a message ready (and the queue not paused), and
        when does the next delayed message fall due or lease run out (``inf`` if
        never)? A waiting consumer's look."""

    @abstractmethod
    def set_paused(self, qid: int, paused: bool) -> bool:
        """Pause or resume queue *qid* (issue 19); False if the queue does not exist.
        While paused, :meth:`claim` takes nothing (the flag is read inside the claim's
        own statement or transaction); puts go on. A resume wakes waiting consumers as
        a put does. Joins the caller's transaction."""

    @abstractmethod
    def set_flow(self, qid: int, ids: Sequence[int], spec: FlowSpec, key: str | None) -> None:
        """Put messages *ids* of queue *qid* (just put, in the caller's transaction)
        under task limits *spec* (stored by its name; the last writer's values win),
        with concurrency key *key* (None: the cap is task-wide). From then on
        :meth:`claim` takes one of them only while its flow's unexpired leases (of
        its key) are fewer than the cap and a token is in the flow's bucket; a
        queue's own ``rate_limit`` takes a token per claimed message too. A message
        held back is skipped (not claimed, not an attempt). Issue 19."""

    @abstractmethod
    def limit_stats(self, qid: int) -> tuple[int, int, float | None]:
        """``(running, held, tokens)``: leased messages under task limits, ready ones
        a task's limits hold back now, the tokens in the queue's own bucket (None: no
        rate limit). Off the hot path."""

    @abstractmethod
    def flows(self) -> list[tuple[str, int | None, float | None, float | None, float, int]]:
        """Every task's stored limits: ``(name, max_concurrency, rate, burst, tokens,
        running)``, by name."""

    @abstractmethod
    def next_due(self, qid: int) -> float:
        """When the next delayed message falls due or lease runs out, or (after a
        claim held back by an empty bucket) the bucket's next token (``inf`` if never)."""

    def wait_due(self, qid: int) -> float:
        """:meth:`next_due` for a waiting consumer's sleep: the answer of a look at most
        ``due.FRESH`` seconds old when there is one (a commit since then wakes the
        consumer anyway, and it looks again), else a new look."""
        due = self.seen_due.recent(qid, self.clock())
        return self.next_due(qid) if due is None else held_due(self.held, qid, due)

    @abstractmethod
    def expire(self, qid: int) -> None:
        """Promote due delayed messages; settle leases that ran out (guarantees 3, 5):
        cancellation asked -> CANCELLED, last attempt -> buried ("lease expired"),
        else READY again; one transaction. A lease renewed or finished meanwhile is
        left alone (SQLite: its write lock; concurrent writers: guard on the state)."""

    @abstractmethod
    def ack(self, qid: int, items: Iterable[tuple[int, int]], retention: float,
            settle: bool = False) -> list[int]:
        """Finish leased messages ``(id, token)`` in one transaction: delete them, or
        keep them DONE when *retention* > 0; release their depth. Returns the ids whose
        token was stale (unchanged; the caller raises LeaseLost). A pair given twice
        counts once. One round trip for a single pair on an uncounted queue.

        *settle* (a hand ack: ``Message.ack``, ``ack_many``, a receipt): the workflow
        dependents of the jobs deleted are settled as succeeded, with no result, in the
        same transaction (a kept job's are settled by its ending, whatever *settle*).
        The worker passes False and settles them itself, with the results
        (``workflow.record``). A job without dependents costs nothing more: the
        statement that deletes it skips a job flagged ``wf``, which takes a slower
        path."""

    def ack_one(self, qid: int, mid: int, token: int, retention: float,
                settle: bool = False) -> bool:
        """:meth:`ack` of one message (``Message.ack()``, the hot path); True if its
        token was stale (nothing changed)."""
        return bool(self.ack(qid, [(mid, token)], retention, settle))

    @abstractmethod
    def retry(
        self, qid: int, mid: int, token: int, delay: float | Callable[[int], float], error: str | None
    ) -> bool:
        """Give a leased message back (nack), keeping *error*: READY, or DELAYED until
        now + *delay* (a callable gets the attempts so far). Buried instead after its
        last attempt, CANCELLED if cancellation was asked: then False. Atomic; raises
        LeaseLost if the token is stale (guarantee 4)."""

    @abstractmethod
    def extend(self, mid: int, token: int, seconds: float) -> float:
        """Move the lease deadline to now + *seconds*; return it. Raises LeaseLost,
        changing nothing, if the token is stale."""

    @abstractmethod
    def heartbeat(self, items: Sequence[tuple[int, int]], seconds: float) -> tuple[list[int], list[int]]:
        """Extend many leases ``(id, token)`` to now + *seconds* in one transaction;
        ``(lost, cancel)``: stale ids (unchanged) and ids whose cancellation was asked."""

    @abstractmethod
    def fail(self, qid: int, mid: int, token: int, reason: str) -> None:
        """Bury a leased message now, with *reason*, whatever its attempts (guarantee 5):
        DEAD here, or moved READY to the dead-letter queue (created with default
        options if missing, never refused for its max_depth). Raises LeaseLost if stale."""

    @abstractmethod
    def release(self, qid: int, items: Sequence[tuple[int, int]]) -> list[int]:
        """Give leases ``(id, token)`` back without counting the attempt (a worker
        shutting down): READY at once, run_at kept. Returns the stale ids (unchanged).
        # later: lives in ``jobs.py`` today; belongs with the lease verbs."""

    # -- administration -------------------------------------------------------------

    @abstractmethod
    def redrive(self, qid: int, limit: int | None) -> int:
        """Make up to *limit* (None: all) DEAD messages of the queue READY again, oldest
        first, attempts reset; a key an unfinished message holds is dropped. Counted
        without the max_depth check; atomic; returns how many."""

    @abstractmethod
    def cancel(self, mid: int) -> bool:
        """READY or DELAYED -> CANCELLED (depth released); False if it is leased,
        finished or gone (guarded by state)."""

    @abstractmethod
    def retry_finished(self, mid: int) -> bool:
        """DEAD or CANCELLED -> READY (as :meth:`redrive` does); False otherwise."""

    @abstractmethod
    def purge(self, qid: int, state: State | None) -> int:
        """Delete the queue's messages in *state* (None: all, and the depth counter
        is reset); depth released for unfinished ones. Atomic; returns how many."""

    @abstractmethod
    def prune(self, qid: int, before: float) -> int:
        """Delete DONE and CANCELLED messages of the queue finished before *before*."""

    @abstractmethod
    def message(self, mid: int) -> MessageRecord | None:
        """One message by id, any state, or None."""

    @abstractmethod
    def peek(self, qid: int, state: State | None, n: int) -> list[MessageRecord]:
        """Up to *n* messages in *state* in claim order, or (None) in any state by id.
        Reads only: never claims or changes anything."""

    # -- jobs (tasks) -----------------------------------------------------------------

    @abstractmethod
    def save_results(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Insert or replace results rows (plain tuples in
        :class:`~liteq.backends.records.ResultRecord` order, or records), atomically;
        joins the caller's transaction, so the worker commits them with the ack."""

    @abstractmethod
    def result(self, mid: int) -> ResultRecord | None:
        """A job's results row, or None (not finished, not stored, or pruned)."""

    @abstractmethod
    def job(self, mid: int) -> tuple[MessageRecord | None, ResultRecord | None]:
        """A job's message and results rows read in one snapshot (a job finishing
        meanwhile is seen running or finished, never neither)."""

    @abstractmethod
    def job_messages(self, states: Sequence[int], before: int, n: int) -> list[MessageRecord]:
        """Up to *n* messages (any queue) with ``id < before`` in one of *states*
        (State values), newest first: a page of ``liteq jobs``."""

    @abstractmethod
    def orphan_results(
        self,
        state: int | None,
        before: int,
        n: int,
        *,
        queue: str | None = None,
        task: str | None = None,
    ) -> list[ResultRecord]:
        """Up to *n* results rows with ``id < before`` whose message is gone, filtered
        by *state* (a State value), *queue* and *task* when given, newest first."""

    @abstractmethod
    def prune_results(self, before: float) -> int:
        """Delete results rows whose ``expires_at`` is before *before*; how many."""

    @abstractmethod
    def request_cancel(self, mid: int) -> str:
        """Cancel a job atomically: ``"cancelled"`` (was READY/DELAYED, now CANCELLED),
        ``"requested"`` (LEASED: its cancel flag is set and survives restarts; the
        holder sees it on heartbeat, retry or expiry) or ``"finished"``.
        # later (A5-2): returns ``Literal["cancelled", "requested", "finished"]``."""

    @abstractmethod
    def cancel_requested(self, mid: int) -> bool:
        """Whether cancellation was asked for this (running) message."""

    # -- copying (``liteq copy``; ``liteq.copy`` drives these, tables in
    #    ``liteq.backends.tables``) --------------------------------------------------

    @abstractmethod
    def copy_snapshot(self) -> AbstractContextManager[None]:
        """A read-only snapshot held for the block on this thread: every export verb
        called in it sees the database as it was when the block began, whatever other
        connections commit meanwhile (SQLite: one read transaction; PostgreSQL:
        ``REPEATABLE READ, READ ONLY``). Not inside :meth:`transaction`
        (InvalidArgument). The snapshot is held until the block ends: on SQLite the
        ``-wal`` file cannot be checkpointed back to its start meanwhile."""

    @abstractmethod
    def export_rows(self, table: str, after_id: int, limit: int) -> list[tuple[Any, ...]]:
        """Up to *limit* rows of *table* (one of ``COPY_TABLES``) with ``id >
        after_id``, in id order, as the table's record (``ROW_TYPES``). Reads only."""

    @abstractmethod
    def export_extent(self, table: str) -> tuple[int, int]:
        """``(rows, highest id)`` of *table* (``(0, 0)`` when empty). Reads only."""

    @abstractmethod
    def export_counters(self) -> Counters:
        """The sequences and counters a copy carries besides rows
        (:class:`~liteq.backends.tables.Counters`). Reads only."""

    @abstractmethod
    def import_rows(self, table: str, rows: Sequence[tuple[Any, ...]]) -> int:
        """Insert *rows* (records of *table*, as :meth:`export_rows` gives them, from
        either engine) with their ids and every column as given (states, attempts,
        leases and tokens, keys, headers, results, schedules' next fire times); a row
        whose id is already there is skipped (so a chunk written twice lands once).
        Atomic, joins :meth:`transaction`; returns how many rows went in. Depth
        counters and sequences are left to :meth:`import_counters`."""

    @abstractmethod
    def import_counters(self, counters: Counters) -> None:
        """After :meth:`import_rows`: move the id and token sequences past both
        *counters* and every imported id and token (new ids and tokens never meet
        copied ones), raise the subscription version to at least *counters*', and
        recount every queue's depth counter from its unfinished messages (so
        ``max_depth`` holds at once). Atomic, joins :meth:`transaction`; running it
        again changes nothing more."""

    @abstractmethod
    def copy_marks(self) -> dict[str, int]:
        """The marks a copy into this database left (``{name: value}``: which source,
        how far each table got, whether it finished); ``{}`` if none."""

    @abstractmethod
    def set_copy_mark(self, name: str, value: int) -> None:
        """Set mark *name* to *value* (joins :meth:`transaction`, so a chunk and its
        progress mark commit together)."""
