"""The database handle: ``liteq.connect()`` and what hangs off it."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from . import scheduler
from .backends import open_backend
from .backends.base import Backend, Waiter
from .backends.records import QueueRecord
from .backends.targets import describe, is_postgres
from .codec import DEFAULT_MAX_PAYLOAD
from .errors import InvalidArgument, LeaseLost
from .options import QUEUE_OPTIONS, default_columns, option_columns
from .queue import Message, Queue, inspectable
from .task import Job, register
from .topic import Topic
from .turns import Turn, open_turn
from .validate import INT64_MAX, INT64_MIN, UNSET, check_id, short, validate_name

__all__ = ["Database", "connect", "default_path"]

logger = logging.getLogger("liteq")


def parse_receipt(receipt: str) -> tuple[int, int]:
    """Split a receipt ``"ID:TOKEN"`` into integers, or raise InvalidArgument."""
    try:
        mid, token = str(receipt).split(":")
        pair = int(mid), int(token)
    except ValueError:  # also a number of more digits than int() reads
        pair = (0, 0)
    if not 1 <= pair[0] <= INT64_MAX or not INT64_MIN <= pair[1] <= INT64_MAX:
        raise InvalidArgument(
            f"a receipt is ID:TOKEN as printed by 'liteq get' (e.g. 12:-4417; both 64-bit "
            f"integers, the ID positive), got {short(receipt)}"
        )
    return pair


def _warn_changed(stored: QueueRecord, updates: dict[str, Any]) -> None:
    """Log which declared options (*updates*, as columns) differ from the *stored* ones."""
    cols = stored._asdict()
    for option in QUEUE_OPTIONS:
        if not updates.keys() & set(option.columns):
            continue
        old, new = option.read(cols), option.read({**cols, **updates})
        if new == old:
            continue
        logger.warning(
            "queue %r: %s=%r declared here differs from the stored %s=%r (declared by "
            "another process or version, or set with 'liteq queue config'); the declared "
            "value replaces it for every process. Declare the same options everywhere, or "
            "set them once with 'liteq queue config' and declare none",
            stored.name, option.name, new, option.name, old)


def default_path() -> str:
    """``$LITEQ_DB`` if set (a path or a ``postgresql://`` URL), else ``./liteq.db``."""
    return os.environ.get("LITEQ_DB") or "liteq.db"


def connect(
    path: str | os.PathLike[str] | None = None,
    *,
    durability: str = "normal",
    busy_timeout: float = 30.0,
    max_payload: int = DEFAULT_MAX_PAYLOAD,
    clock: Callable[[], float] | None = None,
    read_only: bool = False,
    create: bool = True,
    schema: str | None = None,
) -> Database:
    """Open (creating if needed) the liteq database at *path*: a SQLite file, or a
    PostgreSQL database given as a URL.

    *path* defaults to ``$LITEQ_DB``, else ``./liteq.db``. A ``postgresql://`` or
    ``postgres://`` URL (``postgresql://USER:PASSWORD@HOST:PORT/DBNAME``) opens the
    PostgreSQL engine (``pip install 'liteq-queue[postgres]'``): liteq's tables live in
    the schema *schema* (default ``liteq``; or ``?schema=NAME`` in the URL), created on
    first open; the other options below keep their meaning (``durability`` sets
    ``synchronous_commit``, ``busy_timeout`` the ``lock_timeout``, ``create=False`` and
    ``read_only`` refuse a schema that does not exist yet, *clock* replaces the server's
    clock). ``schema`` given for a SQLite file raises InvalidArgument, as does a URL of
    another scheme; libpq's ``key=value`` strings are not taken (a file name may hold
    ``=``). ``durability="normal"``
    (synchronous=NORMAL) survives any process crash; ``"full"`` (synchronous=FULL)
    also survives power loss, at several times the cost per commit. *busy_timeout*
    bounds how long an operation waits for the write lock before raising
    :class:`~liteq.DatabaseBusy`. *clock* replaces ``time.time`` (for tests).

    ``read_only=True`` opens an existing liteq file for looking only (SQLite
    ``mode=ro``): read access to the file is enough, nothing is created or changed
    beside it but SQLite's own ``-wal``/``-shm`` where the directory allows, and any
    write raises :class:`~liteq.StorageError`. Where SQLite cannot use the ``-shm``
    (the directory is not writable and no writer has the file open, or the disk is
    full) and the ``-wal`` is empty, the main file is read as it is (``immutable=1``):
    that connection does not see later commits.

    ``create=False`` opens only an existing database: a missing or empty file raises
    :class:`~liteq.LiteqError` and nothing is created (``read_only`` never creates).

    The path is resolved once (symlinks followed): SQLite's side files, the schema
    lock ``PATH.lock`` and the wake-up watch sit beside the real file.

    Raises :class:`~liteq.LiteqError` naming the path if the file is a directory,
    not a SQLite database, another application's database or not writable, and
    :class:`~liteq.SchemaError` if a newer liteq wrote it; the file is left untouched.
    """
    return Database(
        default_path() if path is None else path,
        durability=durability,
        busy_timeout=busy_timeout,
        max_payload=max_payload,
        clock=clock,
        read_only=read_only,
        create=create,
        schema=schema,
    )


class Database:
    """One liteq database. Safe to share between threads; each thread (and each
    process after ``fork()``) uses its own connection to it.

    Queues, topics, tasks, schedules and the worker reach the storage only through
    :attr:`backend` (the engine, a :class:`liteq.backends.Backend`) and the public
    methods below; none of them sees SQL or the driver.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        durability: str = "normal",
        busy_timeout: float = 30.0,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        clock: Callable[[], float] | None = None,
        read_only: bool = False,
        create: bool = True,
        schema: str | None = None,
    ) -> None:
        if isinstance(max_payload, bool) or not isinstance(max_payload, int) or max_payload < 1:
            raise InvalidArgument(f"max_payload must be a positive number of bytes, got {max_payload!r}")
        self.max_payload = max_payload
        #: The storage engine behind this database (``SQLiteBackend`` for a path,
        #: ``PostgresBackend`` for a URL): the verbs of :class:`liteq.backends.Backend`,
        #: for liteq's own domain objects.
        self.backend: Backend = open_backend(
            path, durability=durability, busy_timeout=busy_timeout, clock=clock,
            read_only=read_only, create=create, schema=schema,
        )
        #: What this database is: a file's path as given, made absolute, or the URL as
        #: given without its password (safe to print).
        self.path = describe(path)
        #: What opens this database again elsewhere (a child process): the file's
        #: absolute path, or the URL *with* its password. Never print it: :attr:`path`
        #: is the printable name.
        self.target: str = str(path) if is_postgres(path) else self.path
        self._queues: dict[str, Queue] = {}
        self._topics: dict[str, Topic] = {}
        #: The registered tasks, by name (``liteq.task.Task``, filled by ``@db.task``).
        self.tasks: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._local = threading.local()

    @property
    def durability(self) -> str:
        """``"normal"`` or ``"full"``, as given to :func:`connect`."""
        return self.backend.durability

    @property
    def real_path(self) -> str | None:
        """The database file's real path (symlinks resolved once, at open): SQLite's
        ``-wal`` and ``-shm`` and liteq's ``.lock`` sit beside it. :attr:`path` is the
        path as given, made absolute. None for a database that is not a local file
        (PostgreSQL): there is no file to point at, and :attr:`path` names it."""
        file = getattr(self.backend, "file", None)
        return None if file is None else str(file)

    @property
    def read_only(self) -> bool:
        """True when opened with ``read_only=True`` (for looking only)."""
        return self.backend.read_only

    @property
    def connection(self) -> Any:
        """The engine's connection for this thread: the one :meth:`execute` and every
        operation of this thread use (on SQLite an ``apsw.Connection``)."""
        return self.backend.connection()

    def clock(self) -> float:
        """The current time as liteq sees it (``time.time`` unless injected)."""
        return self.backend.clock()

    # -- queues ---------------------------------------------------------------------

    def queue(
        self,
        name: str,
        *,
        max_depth: Any = UNSET,
        lease: Any = UNSET,
        max_attempts: Any = UNSET,
        dead_letter: Any = UNSET,
        retention: Any = UNSET,
        backoff: Any = UNSET,
        count_depth: Any = UNSET,
        rate_limit: Any = UNSET,
    ) -> Queue:
        """The queue *name*, created on first use.

        Options given here are stored in the file (and so seen by every process);
        options not given keep their stored value, or the default for a new queue:
        ``max_depth=None`` (unbounded), ``lease=30`` s, ``max_attempts=5``,
        ``dead_letter=None`` (dead messages stay in this queue), ``retention=0``
        (delete on ack), ``backoff=Backoff()``, ``count_depth=False``,
        ``rate_limit=None`` (no limit) (``"100/s"``, ``"30/m"``, ``"500/h"``, with an
        optional burst ``"100/s burst 10"``: at most that many claims per period across
        every worker, see README "Flow control").

        Declared options win: an option given here that differs from the stored
        one replaces it (for every process), and a warning on the ``liteq`` logger
        names the option and both values, since two processes declaring different
        values would otherwise flip them back and forth unnoticed. Declare the same
        options everywhere, or declare none and set them deliberately with
        :meth:`configure_queue` (``liteq queue config``), which does not warn.

        The depth counter (``len(q)`` in O(1)) is kept while the queue has a
        ``max_depth``; ``count_depth=True`` keeps it for an unbounded queue too, at
        the cost of one more page written per put and ack.
        """
        return self._declare(name, True, max_depth=max_depth, lease=lease,
                             max_attempts=max_attempts, dead_letter=dead_letter,
                             retention=retention, backoff=backoff, count_depth=count_depth,
                             rate_limit=rate_limit)

    def configure_queue(self, name: str, **options: Any) -> Queue:
        """Set queue *name*'s stored options on purpose (creating it if missing), as
        ``liteq queue config`` does: the options of :meth:`queue`, without its
        warning about values that differ from the stored ones."""
        return self._declare(name, False, **options)

    def _declare(self, name: str, warn: bool, **options: Any) -> Queue:
        validate_name(name)
        updates = option_columns(**options)
        if not updates:
            q = self._queues.get(name)
            if q is not None:
                return q
        elif warn:
            stored = self.backend.queue_row(name)
            if stored is not None:
                _warn_changed(stored, updates)
        row = self.backend.ensure_queue(name, default_columns(), updates)
        q = Queue(self, row)
        with self._lock:
            self._queues[name] = q
        return q

    def adopt(self, record: QueueRecord) -> Queue:
        """The :class:`Queue` for a queue *record* the backend just returned (a topic's
        subscription, say), cached like those of :meth:`queue`. For liteq's domain
        objects; applications use :meth:`queue`."""
        q = Queue(self, record)
        with self._lock:
            self._queues[q.name] = q
        return q

    def forget(self, name: str) -> None:
        """Drop the cached :class:`Queue` named *name* (its queue was deleted)."""
        with self._lock:
            self._queues.pop(name, None)

    # -- topics -----------------------------------------------------------------------

    def topic(self, name: str) -> Topic:
        """The topic *name* (topics need no creation; subscribing makes them visible)."""
        with self._lock:
            t = self._topics.get(name)
        if t is None:
            t = Topic(self, name)
            with self._lock:
                self._topics[name] = t
        return t

    def topics(self) -> list[str]:
        """Names of topics that have at least one subscription."""
        return self.backend.topics()

    def create_queue(self, name: str, **options: Any) -> Queue:
        """Create queue *name* with *options* (those of :meth:`queue`); InvalidArgument
        if it exists.

        Unlike :meth:`queue`, never changes an existing queue (the check and the
        creation are one transaction).
        """
        validate_name(name)
        updates = option_columns(**options)
        row = self.backend.create_queue(name, {**default_columns(), **updates})
        return self.adopt(row)

    def queues(self) -> list[str]:
        """Names of every queue in the file (subscriptions included)."""
        return self.backend.queue_names()

    def has_queue(self, name: str) -> bool:
        """True if a queue named *name* exists (without creating it)."""
        return self.backend.queue_row(name) is not None

    def delete_queue(self, name: str) -> None:
        """Delete queue *name* and every message in it."""
        validate_name(name)
        row = self.backend.queue_row(name)
        if row is None:
            raise InvalidArgument(f"no queue named {name!r}")
        self.backend.delete_queue(row.id)
        with self._lock:
            self._queues.pop(name, None)

    # -- tasks ------------------------------------------------------------------------

    def task(self, fn: Any = None, /, **options: Any) -> Any:
        """Register a function as a task: ``@db.task`` or ``@db.task(queue=..., ...)``.

        See :func:`liteq.task.register` for the options.
        """
        return register(self, fn, **options)

    def job(self, job_id: int) -> Job:
        """The :class:`liteq.task.Job` handle of job *job_id*."""
        return Job(self, check_id(job_id, "job id"))

    # -- schedules --------------------------------------------------------------------

    def schedule(self, name: str, **options: Any) -> Any:
        """Create or replace schedule *name* (a :class:`liteq.Schedule`); with only
        *name*, the existing one. Options: see :func:`liteq.scheduler.schedule`::

            db.schedule("nightly", cron="0 3 * * *", tz="Europe/Berlin",
                        task="send_report", args=[1])
        """
        return scheduler.schedule(self, name, **options)

    def unschedule(self, name: str) -> bool:
        """Delete schedule *name* and its history; False if there was none."""
        return scheduler.unschedule(self, name)

    def schedules(self) -> list[Any]:
        """Every schedule in the file, by name."""
        return scheduler.schedules(self)

    # -- messages by id -------------------------------------------------------------

    def message(self, message_id: int) -> Message | None:
        """Any message by id, in whatever state (None if it does not exist)."""
        row = self.backend.message(check_id(message_id))
        if row is None:
            return None
        return inspectable(self.queue_by_id(row.qid), row)

    def ack(self, receipt: str) -> None:
        """Ack a delivery by its receipt ``"ID:TOKEN"`` (see ``Message.receipt``)."""
        mid, token = parse_receipt(receipt)
        row = self.backend.message(mid)
        if row is None:
            raise LeaseLost(f"message {mid} does not exist (already acked or purged)", [mid])
        q = self.queue_by_id(row.qid)
        lost = self.backend.ack(q.id, [(mid, token)], q.config.retention, settle=True)
        if lost:
            raise LeaseLost(
                f"receipt {receipt} is stale: the lease ran out and the message was claimed "
                f"again, or it was finished; nothing changed", lost)

    def retry(self, message_id: int) -> bool:
        """Make a dead or cancelled message ready again; False if it is neither."""
        return self.backend.retry_finished(check_id(message_id))

    def cancel(self, message_id: int) -> bool:
        """Cancel a ready or delayed message; False if it is leased or finished."""
        return self.backend.cancel(check_id(message_id))

    def request_cancel(self, message_id: int) -> str:
        """Cancel a message whatever its state: ``"cancelled"`` (it was ready or
        delayed), ``"requested"`` (it is leased: its holder sees the request at its next
        heartbeat, retry or checkpoint, and it is not delivered again; the request
        survives restarts) or ``"finished"`` (nothing to cancel)."""
        return self.backend.request_cancel(message_id)

    def queue_by_id(self, qid: int) -> Queue:
        """The queue with id *qid* (ids are what messages and jobs refer to their queue
        by); InvalidArgument if it was deleted."""
        for q in list(self._queues.values()):
            if q.id == qid:
                return q
        row = self.backend.queue_row_by_id(qid)
        if row is None:
            raise InvalidArgument(f"queue id {qid} does not exist")
        return self.queue(row.name)

    # -- transactions and the application's SQL -------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[Database]:
        """Commit or roll back together everything done on this thread inside it:
        puts, acks, and the application's own ``db.execute`` SQL (the outbox pattern).

        The engine takes what it needs to finish the block without failing half-way
        on a concurrent writer (SQLite: the write lock, at once). Nested use makes a
        savepoint.
        """
        with self.backend.transaction():
            yield self

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[tuple[Any, ...]]:
        """Run the application's own SQL, in the engine's dialect and placeholders
        (SQLite: ``?`` or ``:name``), on this thread's connection (joining
        ``transaction()``); returns all rows as a list of tuples."""
        return self.backend.execute(sql, params)

    # -- maintenance ----------------------------------------------------------------

    def integrity_check(self) -> list[str]:
        """The engine's consistency check (SQLite: ``PRAGMA integrity_check``):
        ``['ok']`` when healthy."""
        return self.backend.integrity_check()

    def checkpoint(self) -> None:
        """Copy the write-ahead log into the database and shrink it (SQLite's WAL)."""
        self.backend.checkpoint()

    def vacuum(self) -> None:
        """Rebuild the storage to give free space back (SQLite: to the file system)."""
        self.backend.vacuum()

    def storage_size(self) -> int:
        """Bytes the database takes on disk now (SQLite: the real file and its ``-wal``)."""
        return self.backend.storage_size()

    def prune_results(self) -> int:
        """Delete the stored outcomes of jobs whose ``result_ttl`` has passed; how many.
        The workflow records (parents, children, results kept for dependents) of jobs
        that are gone altogether go with them."""
        n = self.backend.prune_results(self.clock())
        self.backend.wf_prune()
        return n

    def prune_schedule_runs(self, keep: int = 1000, older_than: float | None = None) -> int:
        """Trim schedule history: each schedule keeps its newest *keep* runs, and none
        fired more than *older_than* seconds ago; how many were deleted."""
        return self.backend.prune_schedule_runs(keep, older_than)

    def close(self) -> None:
        """Close this process's connections. The Database reopens on next use."""
        waiter = getattr(self._local, "waiter", None)
        if waiter is not None:
            waiter.close()
            self._local.waiter = None
        turns = getattr(self._local, "turns", None)
        if turns:
            for turn in turns.values():
                if turn is not None:
                    turn.close()
        self._local.turns = None
        self.backend.close()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wait_for_change(self, timeout: float) -> None:
        """Sleep until another connection commits to this file (a hint: it may also
        return early, or, without inotify, after a short poll) or *timeout* passes."""
        waiter = self.waiter()
        waiter.wait(timeout)
        waiter.arm()

    def turn(self, key: str) -> Turn | None:
        """This thread's place in the turns of the consumers waiting on *key* (queue
        ids; ``liteq.turns``), or None where turns cannot be had."""
        local = self._local
        turns = getattr(local, "turns", None)
        if turns is None or getattr(local, "turns_pid", None) != os.getpid():
            turns = local.turns = {}  # a forked child's own (the parent's stay open)
            local.turns_pid = os.getpid()
        try:
            return turns[key]
        except KeyError:
            turn = turns[key] = open_turn(self.backend.identity, key)
            return turn

    def waiter(self) -> Waiter:
        """This thread's :class:`~liteq.backends.Waiter`, woken when another connection
        commits (made on first use, again after a fork; closed by :meth:`close`). Queues,
        jobs, the worker and the scheduler sleep on it between looks for work."""
        local = self._local
        if getattr(local, "pid", None) != os.getpid() or local.waiter is None:
            local.waiter = self.backend.waiter()
            local.pid = os.getpid()
        return local.waiter

    def __repr__(self) -> str:
        mode = " read_only" if self.read_only else ""
        return f"<liteq.Database {self.path!r} durability={self.durability}{mode}>"
