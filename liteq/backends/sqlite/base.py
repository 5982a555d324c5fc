"""The connection layer: one connection per thread and process (opened and checked by
``opening.py``), the busy handler, WAL checkpoints, transactions, the statistics totals,
and translating apsw errors."""

from __future__ import annotations

import os
import random
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

import apsw

from ...errors import DatabaseBusy, InvalidArgument, LiteqError, StorageError
from ..base import check_open_options
from ..due import SeenDue
from ..totals import PendingTotals
from .files import resolve
from .group import GroupCommit
from .opening import DURABILITY, JOURNAL_SIZE_LIMIT, PAGE_SIZE, Opening
from .opsql import SQL_HISTORY_ADD
from .sql import CLOCK_FUNCTION, SQL_TOTALS

__all__ = ["StoreBase", "DURABILITY", "JOURNAL_SIZE_LIMIT", "MAINTAIN_EVERY", "PAGE_SIZE"]

#: Claims settle delayed and expired messages of a queue at least this often (s).
MAINTAIN_EVERY = 0.05
#: ... and settle at most this many delayed and this many expired messages each time
#: (the rest at the next claim), so that a claim's transaction stays short however
#: many fell due at once.
MAINTAIN_ROWS = 1000

#: How long a RESTART checkpoint may wait for readers before giving up for now.
WAL_RESTART_WAIT = 0.05
#: Pages in the WAL at which a commit checkpoints (SQLite's autocheckpoint default).
WAL_HOOK_PAGES = 1000

#: A history row's fields after put and acked, when it counts no run.
_NO_RUNS = (0, 0, 0, 0.0, 0.0, 0, 0, 0, 0, 0)

class _Local(threading.local):
    """Per-thread state of a store; the class attributes are the defaults."""

    pid: int | None = None
    conn: Any = None
    cur: Any = None  # a cursor reused for BEGIN/COMMIT and the verbs' statements
    busy_limit: float | None = None  # a shorter busy timeout while set
    app_tx = False  # inside the application's db.transaction()
    broken: str | None = None  # why that transaction is unusable (see _Write)
    #: ``(conn, cur)`` while the connection is open in this process and no
    #: transaction is broken, else None (a fork sets it None in the child): the hot
    #: verbs read this one attribute instead of three to five (each thread-local read
    #: is ~500 instructions), and compare no pid.
    hot: tuple[Any, Any] | None = None


# This process's id, kept by a fork hook: a child must open its own connections.
_pid = os.getpid()


def _forked() -> None:
    global _pid
    _pid = os.getpid()
    for store in list(_STORES):
        store._local.hot = None  # the forking thread's handles are the parent's


#: Every open store of this process, for _forked().
_STORES: weakref.WeakSet[StoreBase] = weakref.WeakSet()


os.register_at_fork(after_in_child=_forked)

# Connections abandoned by a fork: the child must never use or close them (closing
# could disturb the parent's locks), and must not let them be garbage collected.
_ABANDONED: list[Any] = []


class StoreBase(Opening):
    """One database file, with one apsw connection per thread (and per process)."""

    def __init__(
        self,
        path: str,
        *,
        durability: str = "normal",
        busy_timeout: float = 30.0,
        clock: Callable[[], float] = time.time,
        read_only: bool = False,
        create: bool = True,
    ) -> None:
        check_open_options(durability, busy_timeout)
        if not isinstance(read_only, bool):
            raise InvalidArgument(f"read_only must be True or False, got {read_only!r}")
        if not isinstance(create, bool):
            raise InvalidArgument(f"create must be True or False, got {create!r}")
        #: The path as given (made absolute): what messages name.
        self.path = os.path.abspath(os.fspath(path))
        #: The real path, resolved once: SQLite, the schema lock and the wake-up watch
        #: all use it, so every name for one file meets the same side files.
        self.file = resolve(self.path, read_only=read_only)
        self.identity = "sqlite:" + self.file
        self.read_only = read_only
        #: A missing file becomes a new database (never when read_only).
        self.create = create and not read_only
        if not create and not read_only:
            _refuse_missing(self.path, self.file)
        self.durability = durability
        self.busy_timeout = float(busy_timeout)
        self.clock = clock
        self._local = _Local()
        self._maintained: dict[int, float] = {}
        self._behind: set[int] = set()  # queues whose last maintenance left rows to settle
        self.seen_due = SeenDue()  # what the last probe saw due, per queue (due.py)
        self.held: dict[int, float] = {}  # queues whose buckets are empty until (flow.py)
        self.flows_written: set[Any] = set()  # task limits this process wrote (flow.py)
        self.limited_queues: set[int] = set()  # queues this process saw with limits
        self.totals = PendingTotals()
        self.group: GroupCommit | None = None  # set by SQLiteBackend (group.py)
        self._all: list[apsw.Connection] = []
        self._all_lock = threading.Lock()
        _STORES.add(self)
        # Open once now so that a bad path fails at connect(), not at first use.
        self.conn()

    # -- connections ----------------------------------------------------------------

    def conn(self) -> apsw.Connection:
        """This thread's connection, opened on first use and after a fork."""
        local = self._local
        if local.pid == _pid:
            return local.conn
        return self._reopen()

    def _handles(self) -> tuple[apsw.Connection, Any]:
        """This thread's connection and its reusable cursor."""
        local = self._local
        if local.pid != _pid:
            self._reopen()
        return local.conn, local.cur

    def _reopen(self) -> apsw.Connection:
        local = self._local
        if local.conn is not None:
            _ABANDONED.append(local.conn)
        local.conn = conn = self._open()
        local.cur = cur = conn.cursor()
        local.pid = _pid
        local.hot = (conn, cur) if local.broken is None else None
        return conn

    def _wal_hook(self, conn: Any, dbname: str, pages: int) -> int:
        # Replaces SQLite's autocheckpoint (which is itself a WAL hook doing PASSIVE
        # checkpoints every 1,000 pages) with RESTART ones, waiting at most
        # WAL_RESTART_WAIT for readers. Passive checkpoints copy frames but can never
        # make the WAL start over while readers stay on older snapshots: under 8 busy
        # processes the file grew by 60-90 MB/s to over 1 GiB (measured,
        # tools/contention.py); with this hook it stayed near 5 MiB. A RESTART that
        # gives up (busy) is tried again by the next commit.
        if pages >= WAL_HOOK_PAGES:
            local = self._local
            local.busy_limit = WAL_RESTART_WAIT
            try:
                conn.wal_checkpoint(dbname, apsw.SQLITE_CHECKPOINT_RESTART)
            except apsw.Error:
                pass  # busy: as much as could be copied was; the next commit tries again
            finally:
                local.busy_limit = None
        return 0  # SQLITE_OK

    def _open(self) -> apsw.Connection:
        if self.read_only:
            conn = self._open_read_only()
        else:
            conn = self._open_read_write()
        # The store's clock (injectable) inside SQL: a one-statement claim computes
        # its lease deadline after SQLite granted the write lock (see SQL_CLAIM_NEXT).
        conn.create_scalar_function(CLOCK_FUNCTION, cast(Any, self.clock), 0)
        with self._all_lock:
            self._all.append(conn)
        return conn

    def _busy_handler(self) -> Callable[[int], bool]:
        # Short sleeps first: a consumer woken by a commit often meets the tail of
        # that very commit. Then ~1 ms with jitter, so waiters do not move in step.
        timeout = self.busy_timeout
        state = {"start": 0.0}
        local = self._local

        def handler(count: int) -> bool:
            now = time.monotonic()
            if count == 0:
                state["start"] = now
            elif now - state["start"] >= (local.busy_limit or timeout):
                return False
            time.sleep(0.0001 if count < 5 else random.uniform(0.0005, 0.0015))
            return True

        return handler

    def close(self) -> None:
        """Close every connection this store opened in this process."""
        try:
            self.flush_totals()
        except LiteqError:
            pass
        with self._all_lock:
            conns, self._all = self._all, []
        for c in conns:
            try:
                c.close()
            except apsw.Error:
                pass
        self._local = _Local()

    # -- transactions ---------------------------------------------------------------

    def write(self) -> _Write:
        """A write transaction: ``BEGIN IMMEDIATE``, or a savepoint inside one the
        caller already opened (so every verb joins ``db.transaction()``).

        Used as ``with store.write() as cur:``; an apsw error inside becomes a
        LiteqError after the rollback.
        """
        return _Write(self)

    @contextmanager
    def read(self) -> Iterator[Any]:
        """A short read transaction (one consistent snapshot), never left open."""
        conn = self.conn()
        if conn.in_transaction:
            try:
                yield conn.cursor()
            except apsw.Error as exc:
                raise _translate(exc, self.path) from exc
            return
        try:
            conn.execute("BEGIN")
            yield conn.cursor()
        except apsw.Error as exc:
            raise _translate(exc, self.path) from exc
        finally:
            if conn.in_transaction:
                try:
                    conn.execute("COMMIT")
                except apsw.Error:
                    pass

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """The application's transaction (see ``Database.transaction``); nested use
        is a savepoint."""
        with _Write(self, app=True):
            yield

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[tuple[Any, ...]]:
        """Run the application's own SQL on this thread's connection; rows as a list.

        The cursor is always read to the end, so no read or write lock outlives
        the call.
        """
        conn = self.conn()
        broken = self._local.broken
        if broken is not None:
            raise StorageError(broken)  # see _Write: it would commit on its own
        try:
            return [tuple(r) for r in conn.execute(sql, params)]
        except apsw.Error as exc:
            raise self._failure(conn, exc) from exc

    def statement(self, sql: str, params: Sequence[Any]) -> list[Any]:
        """Run one write statement on its own and return its rows (read to the end).

        Outside a transaction it is an autocommit transaction: SQLite takes the write
        lock when the statement starts (through the busy handler, like ``BEGIN
        IMMEDIATE``) and commits when it ends, in one call instead of three. Inside
        the application's transaction it is part of it; a statement is all-or-nothing
        on its own, so no savepoint is needed.
        """
        hot = self._local.hot or self._hot()
        try:
            return hot[1].execute(sql, params).fetchall()
        except apsw.Error as exc:
            raise self._failure(hot[0], exc) from exc

    def change(self, sql: str, params: Sequence[Any]) -> int:
        """:meth:`statement` for a statement that returns no rows: how many rows it
        changed."""
        hot = self._local.hot or self._hot()
        try:
            hot[1].execute(sql, params)
        except apsw.Error as exc:
            raise self._failure(hot[0], exc) from exc
        changed: int = hot[0].changes()
        return changed

    def insert(self, sql: str, params: Sequence[Any]) -> int | None:
        """:meth:`statement` for an INSERT of at most one row: its id, or None if it
        inserted nothing."""
        hot = self._local.hot or self._hot()
        try:
            hot[1].execute(sql, params)
        except apsw.Error as exc:
            raise self._failure(hot[0], exc) from exc
        conn = hot[0]
        if not conn.changes():
            return None
        mid: int = conn.last_insert_rowid()
        return mid

    def _hot(self) -> tuple[Any, Any]:
        """This thread's ``(conn, cur)`` when :attr:`_Local.hot` is not set: a new
        thread or process opens its connection; a broken transaction refuses."""
        local = self._local
        if local.pid != _pid:
            self._reopen()
        if local.broken is not None:
            raise StorageError(local.broken)  # see _Write: it would commit on its own
        hot = local.hot = (local.conn, local.cur)
        return hot

    def _failure(self, conn: apsw.Connection, exc: apsw.Error) -> LiteqError:
        local = self._local
        if local.app_tx and not conn.in_transaction:
            # SQLite rolled the application's whole transaction back (I/O error, disk
            # full): refuse further work in its block (see _Write).
            local.broken = (
                f"{self.path}: the transaction was rolled back by an earlier error "
                f"({exc}); nothing of it was committed"
            )
            local.hot = None
            return StorageError(local.broken)
        return _translate(exc, self.path)

    def _tally(self, qid: int, enqueued: int, finished: int) -> None:
        # Called after the commit, so a rolled-back operation is not counted (one
        # inside an application transaction that later rolls back still is). The hot
        # verbs call ``if self.totals.add(...): self._totals_due()`` themselves.
        if self.totals.add(qid, enqueued, finished):
            self._totals_due()

    def _totals_due(self) -> None:
        """The totals are due to be written: now, unless inside a transaction."""
        if not self.conn().in_transaction:
            try:
                self.flush_totals()
            except LiteqError:
                pass  # statistics only; the counts were kept for the next flush

    def flush_totals(self) -> None:
        """Write the in-memory put/ack totals now, in a transaction of their own (they
        are written about once a second anyway). On failure they stay in memory."""
        pending = self.totals.take()
        if not pending:
            return
        try:
            with self.write() as cur:
                cur.executemany(SQL_TOTALS, [(e, f, q) for q, (e, f) in pending.items()])
                # The per-minute history (issue 21) rides on the same transaction.
                minute = int(self.clock() // 60)
                cur.executemany(SQL_HISTORY_ADD, [(q, minute, "", e, f, *_NO_RUNS)
                                                  for q, (e, f) in pending.items()])
        except BaseException:
            self.totals.give_back(pending)
            raise

    def integrity_check(self) -> list[str]:
        """``PRAGMA integrity_check`` lines (``['ok']`` for a healthy file)."""
        return [r[0] for r in self.execute("PRAGMA integrity_check")]

    def checkpoint(self) -> None:
        """Copy the WAL into the database file and truncate it."""
        self.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def vacuum(self) -> None:
        self.execute("VACUUM")



class _Write:
    """The context manager behind :meth:`StoreBase.write` (a class, not a generator:
    it runs on every operation, and this is several times cheaper)."""

    __slots__ = ("store", "conn", "cur", "nested", "app")

    def __init__(self, store: StoreBase, app: bool = False) -> None:
        self.store = store
        hot = store._local.hot
        if hot is None:
            self.conn, self.cur = store._handles()
        else:
            self.conn, self.cur = hot
        self.nested = False
        self.app = app  # the application's own db.transaction()

    def __enter__(self) -> Any:
        local = self.store._local
        if local.hot is None and local.broken is not None:
            # SQLite rolled back the application's transaction under it: nothing
            # more may run until that transaction's block ends (it would commit alone).
            raise StorageError(local.broken)
        try:
            if self.conn.in_transaction:
                # Inside the application's transaction: a savepoint makes this one
                # operation all-or-nothing without ending the outer transaction.
                self.nested = True
                self.cur.execute("SAVEPOINT liteq_op")
            else:
                self.cur.execute("BEGIN IMMEDIATE")
                if self.app:
                    local.app_tx = True
        except apsw.Error as exc:
            raise _translate(exc, self.store.path) from exc
        except BaseException:
            # Raised once the statement ran (a signal handler's KeyboardInterrupt runs
            # as the call returns): __exit__ will not run, so undo what was opened here.
            # Left open, every later write on this thread would join it as a savepoint
            # and none would ever be committed (seen: `liteq tail` ended by a signal).
            self._undo_enter()
            raise
        return self.cur

    def _undo_enter(self) -> None:
        try:
            self._roll_back()
        finally:
            if self.app and not self.nested:
                self.store._local.app_tx = False

    def _roll_back(self) -> None:
        """Undo this operation: back to its savepoint (nested), else the transaction."""
        conn = self.conn
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK TO liteq_op; RELEASE liteq_op" if self.nested
                             else "ROLLBACK")
        except apsw.Error:
            pass

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is None and not self.app:
            try:
                self.cur.execute("RELEASE liteq_op" if self.nested else "COMMIT")
                return
            except apsw.Error as err:
                exc = err
        self._finish(exc)

    def _finish(self, exc: BaseException | None) -> None:
        conn = self.conn
        local = self.store._local
        outer_app = self.app and not self.nested
        try:
            broken = local.broken
            if outer_app and broken is not None:
                if exc is None:
                    raise StorageError(broken)
                return  # the block's own exception says what went wrong
            if exc is None:
                try:
                    conn.execute("RELEASE liteq_op" if self.nested else "COMMIT")
                except apsw.Error as err:
                    exc = err
                else:
                    return
            self._roll_back()
            if self.nested and not conn.in_transaction and local.app_tx:
                # An I/O error or disk full during a cache spill makes SQLite roll back
                # the whole transaction, not just this savepoint: say so, and refuse
                # further work in the application's block.
                local.broken = (
                    f"{self.store.path}: the transaction was rolled back by an earlier error "
                    f"({exc}); nothing of it was committed"
                )
                local.hot = None
                raise StorageError(local.broken) from exc
            if isinstance(exc, apsw.Error):
                raise _translate(exc, self.store.path) from exc
        finally:
            if outer_app:
                local.app_tx = False
                local.broken = None


def _refuse_missing(path: str, real: str) -> None:
    """Raise LiteqError if *real* does not exist or is empty (SQLite would make an
    empty file a new database): for ``connect(create=False)``."""
    try:
        size = os.path.getsize(real)
    except FileNotFoundError:
        raise LiteqError(
            f"no liteq database at {path} (connect() without create=False makes one)"
        ) from None
    if size == 0:
        raise LiteqError(f"{path} is an empty file, not a liteq database")


def lost_text(mid: int) -> str:
    """Why a fenced change of message *mid* changed nothing (for LeaseLost)."""
    return (
        f"lease on message {mid} is lost: the token is stale (the lease ran out and the "
        f"message was claimed again, or it was finished, cancelled or purged)"
    )



def _translate(exc: apsw.Error, path: str) -> LiteqError:
    if isinstance(exc, apsw.BusyError | apsw.LockedError):
        return DatabaseBusy(f"{path}: the database stayed locked past busy_timeout ({exc})")
    if isinstance(exc, apsw.FullError):
        return StorageError(f"{path}: disk full; the operation was rolled back")
    if isinstance(exc, apsw.IOError):
        return StorageError(f"{path}: I/O error ({exc}); the operation was rolled back")
    if isinstance(exc, apsw.CorruptError | apsw.NotADBError):
        return StorageError(f"{path}: the database file is corrupt ({exc})")
    if isinstance(exc, apsw.ReadOnlyError):
        return StorageError(f"{path}: the database is read-only ({exc})")
    return StorageError(f"{path}: {type(exc).__name__}: {exc}")
