"""The connection layer: opening and checking the file, pragmas, the busy handler,
WAL checkpoints, transactions, the statistics totals, and translating apsw errors."""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import apsw
import filelock

from .. import schema
from ..errors import (
    DatabaseBusy,
    InvalidArgument,
    LiteqError,
    SchemaError,
    StorageError,
)
from .sql import SQL_TOTALS, TOTALS_EVERY

#: durability name -> PRAGMA synchronous value. The apsw wheel's SQLite defaults to
#: FULL, so the setting is always made explicitly.
DURABILITY = {"normal": "NORMAL", "full": "FULL"}

#: Claims settle delayed and expired messages of a queue at least this often (s).
MAINTAIN_EVERY = 0.05
#: ... and settle at most this many delayed and this many expired messages each time
#: (the rest at the next claim), so that a claim's transaction stays short however
#: many fell due at once.
MAINTAIN_ROWS = 1000

#: Page size of a new file, in bytes (SQLite's default is 4,096). At synchronous=NORMAL
#: the cost of a commit follows the bytes it appends to the WAL, and a queue operation
#: changes a few small rows on 3-5 pages: 2,048-byte pages made per-message put +27%
#: and get+ack +15% faster, with no loss up to 16 KB payloads (1,024: 16 KB payloads
#: at half speed). Measured and decided in DESIGN-NOTES.md ("Page size").
PAGE_SIZE = 2048

#: Truncate the WAL back to this size after a checkpoint (64 MiB).
JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024

#: How long a RESTART checkpoint may wait for readers before giving up for now.
WAL_RESTART_WAIT = 0.05
#: Pages in the WAL at which a commit checkpoints (SQLite's autocheckpoint default).
WAL_HOOK_PAGES = 1000

class _Local(threading.local):
    """Per-thread state of a store; the class attributes are the defaults."""

    pid: int | None = None
    conn: Any = None
    cur: Any = None  # a cursor reused for BEGIN/COMMIT and the verbs' statements
    busy_limit: float | None = None  # a shorter busy timeout while set
    app_tx = False  # inside the application's db.transaction()
    broken: str | None = None  # why that transaction is unusable (see _Write)


# This process's id, kept by a fork hook: a child must open its own connections.
_pid = os.getpid()


def _forked() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_forked)

# Connections abandoned by a fork: the child must never use or close them (closing
# could disturb the parent's locks), and must not let them be garbage collected.
_ABANDONED: list[Any] = []


class StoreBase:
    """One database file, with one apsw connection per thread (and per process)."""

    def __init__(
        self,
        path: str,
        *,
        durability: str = "normal",
        busy_timeout: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if durability not in DURABILITY:
            raise InvalidArgument(
                f"durability must be one of {sorted(DURABILITY)}, got {durability!r}"
            )
        if not (isinstance(busy_timeout, (int, float)) and busy_timeout >= 0):
            raise InvalidArgument(
                f"busy_timeout must be a number of seconds >= 0, got {busy_timeout!r}"
            )
        self.path = os.path.abspath(os.fspath(path))
        self.durability = durability
        self.busy_timeout = float(busy_timeout)
        self.clock = clock
        self._local = _Local()
        self._maintained: dict[int, float] = {}
        self._behind: set[int] = set()  # queues whose last maintenance left rows to settle
        self._totals: dict[int, list[int]] = {}
        self._totals_at = time.monotonic()
        self._totals_lock = threading.Lock()
        self._all: list[apsw.Connection] = []
        self._all_lock = threading.Lock()
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
        local.cur = conn.cursor()
        local.pid = _pid
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
        path = self.path
        if os.path.isdir(path):
            raise LiteqError(f"cannot open {path}: it is a directory, not a database file")
        parent = os.path.dirname(path) or "."
        if not os.path.isdir(parent):
            raise LiteqError(f"cannot open {path}: directory {parent} does not exist")
        try:
            conn = apsw.Connection(
                path, flags=apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE
            )
        except apsw.Error as exc:
            raise LiteqError(f"cannot open {path}: {_reason(exc)}") from exc
        conn.set_busy_handler(self._busy_handler())
        conn.set_wal_hook(self._wal_hook)
        try:
            self._check_and_migrate(conn)
            self._pragmas(conn)
        except BaseException:
            conn.close()
            raise
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

    def _read_header(self, conn: Any) -> tuple[int, int, list[str]]:
        # One read transaction: three autocommit reads could straddle another
        # process's schema creation and see tables without the liteq marks.
        try:
            conn.execute("BEGIN")
            try:
                app_id = conn.execute("PRAGMA application_id").fetchall()[0][0]
                version = conn.execute("PRAGMA user_version").fetchall()[0][0]
                names = [
                    r[0]
                    for r in conn.execute(
                        "SELECT name FROM sqlite_schema WHERE name NOT LIKE 'sqlite_%'"
                    ).fetchall()
                ]
            finally:
                if conn.in_transaction:
                    conn.execute("COMMIT")
        except apsw.NotADBError as exc:
            raise LiteqError(
                f"cannot open {self.path}: not a SQLite database (file is not a database)"
            ) from exc
        except apsw.Error as exc:
            raise LiteqError(f"cannot open {self.path}: {_reason(exc)}") from exc
        return app_id, version, names

    def _check_and_migrate(self, conn: apsw.Connection) -> None:
        app_id, version, names = self._read_header(conn)
        if app_id == schema.APPLICATION_ID and version == schema.SCHEMA_VERSION:
            return
        self._refuse_foreign(app_id, version, names)
        # New file or an older schema: create/migrate under a file lock so that many
        # processes opening a brand-new file at the same moment all succeed.
        try:
            lock = filelock.FileLock(self.path + ".lock", timeout=max(self.busy_timeout, 1))
            with lock:
                app_id, version, names = self._read_header(conn)
                self._refuse_foreign(app_id, version, names)
                if version < schema.SCHEMA_VERSION:
                    self._migrate(conn, version)
        except filelock.Timeout as exc:
            raise DatabaseBusy(
                f"cannot open {self.path}: timed out waiting for the schema lock {exc.lock_file}"
            ) from exc
        except OSError as exc:
            raise LiteqError(f"cannot open {self.path}: {exc.strerror or exc}") from exc

    def _refuse_foreign(self, app_id: int, version: int, names: list[str]) -> None:
        if app_id == schema.APPLICATION_ID:
            if version > schema.SCHEMA_VERSION:
                raise SchemaError(
                    f"{self.path} has liteq schema version {version}, but this liteq "
                    f"understands up to version {schema.SCHEMA_VERSION}: upgrade liteq"
                )
            return
        if app_id != 0 or names or version != 0:
            shown = ", ".join(sorted(names)[:5]) or "none"
            raise LiteqError(
                f"cannot open {self.path}: it is a SQLite database of another application "
                f"(application_id {app_id}, user_version {version}, tables: {shown}); "
                f"liteq leaves it untouched"
            )

    def _migrate(self, conn: apsw.Connection, version: int) -> None:
        try:
            # The page size only takes on a file with no pages yet; then WAL (which
            # cannot change inside a transaction) before the schema.
            if version == 0:
                conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchall()[0][0]
            if str(mode).lower() != "wal":
                raise LiteqError(f"cannot open {self.path}: WAL mode refused (got {mode})")
            conn.execute("BEGIN IMMEDIATE")
            try:
                for step in schema.MIGRATIONS[version:]:
                    conn.execute(step)
                conn.execute(f"PRAGMA application_id = {schema.APPLICATION_ID}")
                conn.execute(f"PRAGMA user_version = {schema.SCHEMA_VERSION}")
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except apsw.ReadOnlyError as exc:
            raise LiteqError(f"cannot open {self.path}: the file is not writable") from exc
        except apsw.Error as exc:
            raise LiteqError(f"cannot open {self.path}: {_reason(exc)}") from exc

    def _pragmas(self, conn: apsw.Connection) -> None:
        try:
            mode = conn.execute("PRAGMA journal_mode").fetchall()[0][0]
            if str(mode).lower() != "wal":
                conn.execute("PRAGMA journal_mode=WAL").fetchall()
            conn.execute(f"PRAGMA synchronous = {DURABILITY[self.durability]}")
            conn.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}").fetchall()
            conn.execute("PRAGMA temp_store = MEMORY")
            # Touch the file so the -wal exists (the wake-up watches it).
            conn.execute("SELECT count(*) FROM queues").fetchall()
        except apsw.ReadOnlyError as exc:
            raise LiteqError(f"cannot open {self.path}: the file is not writable") from exc
        except apsw.Error as exc:
            raise LiteqError(f"cannot open {self.path}: {_reason(exc)}") from exc

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
        local = self._local
        if local.pid != _pid:
            self._reopen()
        if local.broken is not None:
            raise StorageError(local.broken)  # see _Write: it would commit on its own
        try:
            return local.cur.execute(sql, params).fetchall()
        except apsw.Error as exc:
            raise self._failure(local.conn, exc) from exc

    def _failure(self, conn: apsw.Connection, exc: apsw.Error) -> LiteqError:
        local = self._local
        if local.app_tx and not conn.in_transaction:
            # SQLite rolled the application's whole transaction back (I/O error, disk
            # full): refuse further work in its block (see _Write).
            local.broken = (
                f"{self.path}: the transaction was rolled back by an earlier error "
                f"({exc}); nothing of it was committed"
            )
            return StorageError(local.broken)
        return _translate(exc, self.path)

    def _tally(self, qid: int, enqueued: int, finished: int) -> None:
        # Called after the commit, so a rolled-back operation is not counted (one
        # inside an application transaction that later rolls back still is).
        with self._totals_lock:
            t = self._totals.get(qid)
            if t is None:
                self._totals[qid] = [enqueued, finished]
            else:
                t[0] += enqueued
                t[1] += finished
            now = time.monotonic()
            due = now - self._totals_at >= TOTALS_EVERY
            if due:
                self._totals_at = now
        if due and not self.conn().in_transaction:
            try:
                self.flush_totals()
            except LiteqError:
                pass  # statistics only; the counts were kept for the next flush

    def flush_totals(self) -> None:
        """Write the in-memory put/ack totals now, in a transaction of their own (they
        are written about once a second anyway). On failure they stay in memory."""
        with self._totals_lock:
            pending, self._totals = self._totals, {}
        if not pending:
            return
        try:
            with self.write() as cur:
                cur.executemany(SQL_TOTALS, [(e, f, q) for q, (e, f) in pending.items()])
        except BaseException:
            with self._totals_lock:
                for qid, (e, f) in pending.items():
                    t = self._totals.setdefault(qid, [0, 0])
                    t[0] += e
                    t[1] += f
            raise

    def integrity_check(self) -> list[str]:
        """``PRAGMA integrity_check`` lines (``['ok']`` for a healthy file)."""
        return [r[0] for r in self.execute("PRAGMA integrity_check")]

    def checkpoint(self, mode: str = "TRUNCATE") -> None:
        self.execute(f"PRAGMA wal_checkpoint({mode})")

    def vacuum(self) -> None:
        self.execute("VACUUM")



class _Write:
    """The context manager behind :meth:`Store.write` (a class, not a generator:
    it runs on every operation, and this is several times cheaper)."""

    __slots__ = ("store", "conn", "cur", "nested", "app")

    def __init__(self, store: StoreBase, app: bool = False) -> None:
        self.store = store
        self.conn, self.cur = store._handles()
        self.nested = False
        self.app = app  # the application's own db.transaction()

    def __enter__(self) -> Any:
        local = self.store._local
        if local.broken is not None:
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
        return self.cur

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
            try:
                if self.nested:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK TO liteq_op; RELEASE liteq_op")
                elif conn.in_transaction:
                    conn.execute("ROLLBACK")
            except apsw.Error:
                pass
            if self.nested and not conn.in_transaction and local.app_tx:
                # An I/O error or disk full during a cache spill makes SQLite roll back
                # the whole transaction, not just this savepoint: say so, and refuse
                # further work in the application's block.
                local.broken = (
                    f"{self.store.path}: the transaction was rolled back by an earlier error "
                    f"({exc}); nothing of it was committed"
                )
                raise StorageError(local.broken) from exc
            if isinstance(exc, apsw.Error):
                raise _translate(exc, self.store.path) from exc
        finally:
            if outer_app:
                local.app_tx = False
                local.broken = None


def _lost_text(mid: int) -> str:
    return (
        f"lease on message {mid} is lost: the token is stale (the lease ran out and the "
        f"message was claimed again, or it was finished, cancelled or purged)"
    )



def _reason(exc: apsw.Error) -> str:
    if isinstance(exc, apsw.CantOpenError):
        return "unable to open the file (missing directory or no permission)"
    if isinstance(exc, apsw.ReadOnlyError):
        return "the file is not writable"
    if isinstance(exc, apsw.NotADBError):
        return "not a SQLite database"
    if isinstance(exc, apsw.CorruptError):
        return "the database file is corrupt"
    text = str(exc)
    return text.split(": ", 1)[1] if ": " in text else text


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
