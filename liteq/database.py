"""The database handle: ``liteq.connect()`` and what hangs off it."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from .codec import DEFAULT_MAX_PAYLOAD
from .errors import InvalidArgument, LeaseLost
from .queue import Message, Queue, inspectable, option_columns
from .store import Store, default_queue_options
from .topic import Topic
from .validate import INT64_MAX, INT64_MIN, UNSET, check_id, short, validate_name
from .wake import Waiter

__all__ = ["Database", "connect", "default_path"]


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


def default_path() -> str:
    """``$LITEQ_DB`` if set, else ``./liteq.db``."""
    return os.environ.get("LITEQ_DB") or "liteq.db"


def connect(
    path: str | os.PathLike[str] | None = None,
    *,
    durability: str = "normal",
    busy_timeout: float = 30.0,
    max_payload: int = DEFAULT_MAX_PAYLOAD,
    clock: Callable[[], float] | None = None,
) -> Database:
    """Open (creating if needed) the liteq database at *path*.

    *path* defaults to ``$LITEQ_DB``, else ``./liteq.db``. ``durability="normal"``
    (synchronous=NORMAL) survives any process crash; ``"full"`` (synchronous=FULL)
    also survives power loss, at several times the cost per commit. *busy_timeout*
    bounds how long an operation waits for the write lock before raising
    :class:`~liteq.DatabaseBusy`. *clock* replaces ``time.time`` (for tests).

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
    )


class Database:
    """One liteq database file. Safe to share between threads; each thread (and
    each process after ``fork()``) uses its own SQLite connection."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        durability: str = "normal",
        busy_timeout: float = 30.0,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if isinstance(max_payload, bool) or not isinstance(max_payload, int) or max_payload < 1:
            raise InvalidArgument(f"max_payload must be a positive number of bytes, got {max_payload!r}")
        self.max_payload = max_payload
        self._store = Store(
            os.fspath(path), durability=durability, busy_timeout=busy_timeout,
            clock=clock or time.time,
        )
        self.path = self._store.path
        self._queues: dict[str, Queue] = {}
        self._topics: dict[str, Topic] = {}
        self._tasks: dict[str, Any] = {}  # name -> liteq.task.Task, filled by @db.task
        self._lock = threading.Lock()
        self._local = threading.local()

    @property
    def durability(self) -> str:
        return self._store.durability

    @property
    def connection(self) -> Any:
        """This thread's apsw connection (the one ``execute`` and every verb use)."""
        return self._store.conn()

    def clock(self) -> float:
        """The current time as liteq sees it (``time.time`` unless injected)."""
        return self._store.clock()

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
    ) -> Queue:
        """The queue *name*, created on first use.

        Options given here are stored in the file (and so seen by every process);
        options not given keep their stored value, or the default for a new queue:
        ``max_depth=None`` (unbounded), ``lease=30`` s, ``max_attempts=5``,
        ``dead_letter=None`` (dead messages stay in this queue), ``retention=0``
        (delete on ack), ``backoff=Backoff()``, ``count_depth=False``.

        The depth counter (``len(q)`` in O(1)) is kept while the queue has a
        ``max_depth``; ``count_depth=True`` keeps it for an unbounded queue too, at
        the cost of one more page written per put and ack.
        """
        validate_name(name)
        updates = option_columns(
            max_depth=max_depth, lease=lease, max_attempts=max_attempts,
            dead_letter=dead_letter, retention=retention, backoff=backoff,
            count_depth=count_depth,
        )
        if not updates:
            q = self._queues.get(name)
            if q is not None:
                return q
        row = self._store.ensure_queue(name, default_queue_options(), updates)
        q = Queue(self, row)
        with self._lock:
            self._queues[name] = q
        return q

    def _adopt(self, row: Sequence[Any]) -> Queue:
        q = Queue(self, row)
        with self._lock:
            self._queues[q.name] = q
        return q

    def _forget(self, name: str) -> None:
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
        return self._store.topics()

    def create_queue(self, name: str, **options: Any) -> Queue:
        """Create queue *name* with *options* (those of :meth:`queue`); InvalidArgument
        if it exists.

        Unlike :meth:`queue`, never changes an existing queue (the check and the
        creation are one transaction).
        """
        validate_name(name)
        updates = option_columns(**options)
        row = self._store.create_queue(name, {**default_queue_options(), **updates})
        return self._adopt(row)

    def queues(self) -> list[str]:
        """Names of every queue in the file (subscriptions included)."""
        return self._store.queue_names()

    def has_queue(self, name: str) -> bool:
        """True if a queue named *name* exists (without creating it)."""
        return self._store.queue_row(name) is not None

    def delete_queue(self, name: str) -> None:
        """Delete queue *name* and every message in it."""
        validate_name(name)
        row = self._store.queue_row(name)
        if row is None:
            raise InvalidArgument(f"no queue named {name!r}")
        self._store.delete_queue(row[0])
        with self._lock:
            self._queues.pop(name, None)

    # -- tasks ------------------------------------------------------------------------

    def task(self, fn: Any = None, /, **options: Any) -> Any:
        """Register a function as a task: ``@db.task`` or ``@db.task(queue=..., ...)``.

        See :func:`liteq.task.register` for the options.
        """
        from .task import register

        return register(self, fn, **options)

    def job(self, job_id: int) -> Any:
        """The :class:`liteq.task.Job` handle of job *job_id*."""
        from .task import Job

        return Job(self, check_id(job_id, "job id"))

    # -- schedules --------------------------------------------------------------------

    def schedule(self, name: str, **options: Any) -> Any:
        """Create or replace schedule *name* (a :class:`liteq.Schedule`); with only
        *name*, the existing one. Options: see :func:`liteq.scheduler.schedule`::

            db.schedule("nightly", cron="0 3 * * *", tz="Europe/Berlin",
                        task="send_report", args=[1])
        """
        from .scheduler import schedule

        return schedule(self, name, **options)

    def unschedule(self, name: str) -> bool:
        """Delete schedule *name* and its history; False if there was none."""
        from .scheduler import unschedule

        return unschedule(self, name)

    def schedules(self) -> list[Any]:
        """Every schedule in the file, by name."""
        from .scheduler import schedules

        return schedules(self)

    # -- messages by id -------------------------------------------------------------

    def message(self, message_id: int) -> Message | None:
        """Any message by id, in whatever state (None if it does not exist)."""
        row = self._store.message(check_id(message_id))
        if row is None:
            return None
        return inspectable(self._queue_by_id(row[1]), row)

    def ack(self, receipt: str) -> None:
        """Ack a delivery by its receipt ``"ID:TOKEN"`` (see ``Message.receipt``)."""
        mid, token = parse_receipt(receipt)
        row = self._store.message(mid)
        if row is None:
            raise LeaseLost(f"message {mid} does not exist (already acked or purged)", [mid])
        q = self._queue_by_id(row[1])
        lost = self._store.ack(q.id, [(mid, token)], q.config.retention)
        if lost:
            raise LeaseLost(
                f"receipt {receipt} is stale: the lease ran out and the message was claimed "
                f"again, or it was finished; nothing changed", lost)

    def retry(self, message_id: int) -> bool:
        """Make a dead or cancelled message ready again; False if it is neither."""
        return self._store.retry_finished(check_id(message_id))

    def cancel(self, message_id: int) -> bool:
        """Cancel a ready or delayed message; False if it is leased or finished."""
        return self._store.cancel(check_id(message_id))

    def _queue_by_id(self, qid: int) -> Queue:
        for q in list(self._queues.values()):
            if q.id == qid:
                return q
        row = self._store.queue_row_by_id(qid)
        if row is None:
            raise InvalidArgument(f"queue id {qid} does not exist")
        return self.queue(row[1])

    # -- transactions and the application's SQL -------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[Database]:
        """Commit or roll back together everything done on this thread inside it:
        puts, acks, and the application's own ``db.execute`` SQL (the outbox pattern).

        Starts with ``BEGIN IMMEDIATE`` (the write lock is taken at once, so it
        cannot fail half-way with SQLITE_BUSY). Nested use makes a savepoint.
        """
        with self._store.transaction():
            yield self

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[tuple[Any, ...]]:
        """Run the application's own SQL on this thread's connection (joining
        ``transaction()``); returns all rows as a list of tuples."""
        return self._store.execute(sql, params)

    # -- maintenance ----------------------------------------------------------------

    def integrity_check(self) -> list[str]:
        """``PRAGMA integrity_check``: ``['ok']`` for a healthy file."""
        return self._store.integrity_check()

    def checkpoint(self) -> None:
        """Copy the WAL into the database file and truncate it."""
        self._store.checkpoint()

    def vacuum(self) -> None:
        """Rebuild the file to return free pages to the file system."""
        self._store.vacuum()

    def close(self) -> None:
        """Close this process's connections. The Database reopens on next use."""
        waiter = getattr(self._local, "waiter", None)
        if waiter is not None:
            waiter.close()
            self._local.waiter = None
        self._store.close()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wait_for_change(self, timeout: float) -> None:
        """Sleep until another connection commits to this file (a hint: it may also
        return early, or, without inotify, after a short poll) or *timeout* passes."""
        waiter = self._waiter()
        waiter.wait(timeout)
        waiter.arm()

    def _waiter(self) -> Waiter:
        local = self._local
        if getattr(local, "pid", None) != os.getpid() or local.waiter is None:
            local.waiter = Waiter(self.path + "-wal")
            local.pid = os.getpid()
        return local.waiter

    def __repr__(self) -> str:
        return f"<liteq.Database {self.path!r} durability={self.durability}>"
