"""Connections to PostgreSQL: one sticky connection per thread and process, transactions
with nested savepoints, the session settings, measuring the server's clock (kept by
``clock.py``), and translating psycopg errors into liteq's.

Where things are: this docstring says why (each rule in a bold paragraph below);
:func:`translate` and :func:`redact` come first, then :class:`Connections` in three
parts, each opened by a ``# --`` line (a thread's connection: ``get``, ``_open`` with
the session settings, ``_drop``, ``close``, ``open_session``, and what a thread's verbs
ask of it: ``after_tx``, ``in_transaction``, ``borrowed``; statements and transactions:
``tx``, ``statement``, ``hot``, ``joined``, ``failure``; the server's clock:
``measure_offset``), then :func:`ended` (an idle session the server
ended) and :class:`Tx` (BEGIN or SAVEPOINT, and their ends). The libpq side of the hot
statements is ``hot.py``.

**A sticky connection per thread, not a pool checkout per verb.** Every verb of a thread
runs on that thread's own connection, opened on first use (as on SQLite), for three
reasons. (1) ``db.transaction()`` must see every verb and ``db.execute()`` of its block
on one connection, so a thread keeps its connection for the block anyway; keeping it for
the thread's life makes that the only rule. (2) The hot verbs (put, claim, ack) are one
round trip each; a pool checkout and return around each costs a lock and a few
microseconds more for nothing, since liteq's threads (workers, producers) live long.
(3) After ``fork()`` a pool's background threads do not exist in the child and its
connections are the parent's; plain connections are simply abandoned (below). Not
measured (the brief said measure neither): the reasons are structural. The cost is one
server session per thread that uses the database; a thread's connection is closed when
another thread of the process next opens one after it has ended, and all of them by
``close()``. ``psycopg_pool`` stays in the ``postgres`` extra as planned; nothing here
uses it yet.

**Fork safety.** A child process must never use its parent's sessions, and must never
*close* them either: closing sends the server a Terminate message on the socket the
parent still uses, which ends the parent's session. At fork every connection of the
process is abandoned in the child: its socket descriptor is pointed at ``/dev/null``
(so even a later close or garbage collection writes nowhere) and the object is kept
alive; the child opens its own connections on first use.

**Session settings**, set once per connection in one round trip:
``synchronous_commit`` off for durability "normal" (a commit returns before its WAL
record is flushed; a server crash can lose the last few hundred milliseconds of commits
but never corrupts or half-applies one, as SQLite's ``synchronous=NORMAL`` in WAL mode)
and on for "full"; ``lock_timeout`` = ``busy_timeout`` (0 becomes 1 ms: PostgreSQL's 0
means wait forever); ``default_transaction_read_only`` for read-only opens;
``client_encoding`` UTF8, whatever the database's or the environment's (``hot.py`` reads
and sends text as UTF-8; psycopg follows the session's encoding either way).
``plan_cache_mode`` stays at the server's ``auto``: a statement psycopg prepares (from
its 5th run) gets PostgreSQL's generic plan after five custom ones and is not planned
again, which for the put and the ack was most of their server time (planning ~90-180
us against ~70 us of execution, issue 17). The statements whose generic plan is a trap
are not prepared with a parameter there: a claim whose ``LIMIT`` is a parameter gets a
generic plan that expects a tenth of the table and hash-joins a sequential scan of
``messages`` (4.5 ms per claim at 5,000 queued, where the custom plan takes 0.16 ms).
So the batch claim and maintenance's picks carry their ``LIMIT`` in the text (one
batch-claim text per batch size, ``queues.SizedTexts``, which the batch put uses too;
past its limit a size is sent unprepared, ``statement(..., prepare=False)``: an unnamed statement is
planned with its actual values every time). ``tests/test_backend_queues.py`` checks the generic
plan of every statement a session prepares against a table filled after it was
prepared.

``enable_seqscan`` is off in liteq's sessions: a generic plan made while ``messages``
was empty, or small and just analyzed, may scan the whole table for the one row a
claim or an ack finds by id, and keep doing so at any size until the next ANALYZE.
With sequential scans priced out (not forbidden: a table with no usable index is still
read whole), and every lookup by id spelled so that no partial index can stand in for
the primary key (``queues_sql.state_is``), such plans read the primary key (issue 17,
session 15). SQL run through ``db.execute()`` is planned with it too. ``jit`` is off
with it: a statement that can only scan a table (a trigger's read of ``workers``, a
count over ``results``) is then priced above ``jit_above_cost`` by the disabled scan's
cost alone, and PostgreSQL compiled it on every run (tens of milliseconds each; 2.6 s
for one expiry of 38 leases, whose trigger ran once a row).

**Transactions.** Connections are in autocommit mode: a single statement outside a
transaction is its own transaction (one round trip, as SQLite's autocommit statements).
:meth:`Connections.tx` opens ``BEGIN`` ... ``COMMIT``, or a ``SAVEPOINT`` inside an open
transaction, so every verb is all-or-nothing and joins ``db.transaction()``. Unlike
SQLite, an error in PostgreSQL aborts the whole transaction; the savepoint per verb (and
per ``db.execute()`` inside a transaction) keeps the caller's transaction usable after a
verb or statement fails, as it is on SQLite.

**The hot statements** (a put, a claim of one, an ack of one) skip psycopg's cursor
outside a transaction: :meth:`Connections.hot`, with the libpq side in ``hot.py``.

**A lost connection** (server restart, ``pg_terminate_backend``, network) raises
ConnectionLost (a StorageError) and the thread's connection is dropped; the next call
opens a new one. Inside ``db.transaction()`` every later call of the block raises the
same error instead (a new connection would commit on its own what the block meant to
commit together); the next call after the block reconnects. A connection lost during a
COMMIT or an autocommit statement says that whether it was committed is unknown
(``maybe_committed``). A connection the server ended while it sat idle (a restart
between two calls) is noticed before a statement is sent, by a zero-timeout look at its
socket, and replaced without an error: nothing had been sent on it. Which verbs are
retried once after a loss mid-call is ``retry.py``'s business.
"""

from __future__ import annotations

import os
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import errors as pgerrors
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import ExecStatus, TransactionStatus
from psycopg.rows import tuple_row

from ...errors import ConnectionLost, DatabaseBusy, InvalidArgument, LiteqError, StorageError
from ...fdwait import wait_readable
from ..base import check_open_options
from ..targets import redact_url
from . import hot as hot_sql

__all__ = ["DURABILITY", "Connections", "Tx", "ended", "redact", "translate"]

#: liteq's durability names -> ``synchronous_commit``.
DURABILITY = {"normal": "off", "full": "on"}

_IDLE = TransactionStatus.IDLE
_TUPLES_OK = ExecStatus.TUPLES_OK
_COMMAND_OK = ExecStatus.COMMAND_OK


def _rows(cur: psycopg.Cursor[Any]) -> list[Any]:
    """Every row of *cur*'s last statement; ``[]`` for one that returns none. Asks the
    result's status: ``cur.description`` says the same but builds a Column object per
    column (10 us for the 14 columns of a claim, measured, on every statement)."""
    res = cur.pgresult
    return cur.fetchall() if res is not None and res.status == _TUPLES_OK else []
_OK = psycopg.pq.ConnStatus.OK

# This process's id, kept by a fork hook: a child must open its own connections.
_pid = os.getpid()
# Every connection this process opened and has not closed (for the fork hook).
_OPEN: weakref.WeakSet[psycopg.Connection[Any]] = weakref.WeakSet()
# Connections inherited across a fork: never used, never closed, never collected.
_ABANDONED: list[psycopg.Connection[Any]] = []
# Every Connections object of this process (the fork hook resets them).
_INSTANCES: weakref.WeakSet[Connections] = weakref.WeakSet()


def _abandon_after_fork() -> None:
    global _pid
    _pid = os.getpid()
    for conns in list(_INSTANCES):
        # Another thread of the parent may have held the lock at fork: a fresh one.
        conns._all_lock = threading.Lock()
        conns._all = []
    if not _OPEN:
        return
    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        for conn in list(_OPEN):
            try:
                os.dup2(devnull, conn.pgconn.socket)
            except (OSError, psycopg.Error):
                pass  # already closed
            _ABANDONED.append(conn)
    finally:
        os.close(devnull)
    _OPEN.clear()


os.register_at_fork(after_in_child=_abandon_after_fork)


def redact(conninfo: str) -> str:
    """*conninfo* (a URL or ``key=value`` string) without its password, for messages."""
    if "://" in conninfo:
        return redact_url(conninfo)
    return re.sub(r"\s*password\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", "", conninfo).strip()


def translate(exc: psycopg.Error, where: str) -> LiteqError:
    """A psycopg error as the liteq error that says what happened and what to do."""
    diag = getattr(exc, "diag", None)
    text = (getattr(diag, "message_primary", None) or str(exc)).strip()
    code = getattr(exc, "sqlstate", None)
    if isinstance(exc, pgerrors.LockNotAvailable):
        return DatabaseBusy(f"{where}: a lock stayed taken past busy_timeout ({text})")
    if isinstance(exc, pgerrors.DeadlockDetected | pgerrors.SerializationFailure):
        busy = DatabaseBusy(f"{where}: {text}; the operation was rolled back, try it again")
        busy.rolled_back = True
        return busy
    if isinstance(exc, pgerrors.InFailedSqlTransaction):
        return StorageError(
            f"{where}: the transaction was aborted by an earlier error; nothing of it will "
            f"be committed (leave the db.transaction() block and start again)"
        )
    if isinstance(exc, pgerrors.ReadOnlySqlTransaction):
        return StorageError(f"{where}: the database is read-only here ({text})")
    if isinstance(exc, pgerrors.DiskFull):
        return StorageError(f"{where}: the server's disk is full; the operation was rolled back")
    if isinstance(exc, pgerrors.InsufficientPrivilege):
        return StorageError(f"{where}: permission denied ({text}); grant the role access")
    if code:
        return StorageError(f"{where}: {text} (SQLSTATE {code})")
    return StorageError(f"{where}: {type(exc).__name__}: {text}")


class _Local(threading.local):
    """Per-thread state; the class attributes are the defaults."""

    pid: int | None = None
    conn: psycopg.Connection[Any] | None = None
    cur: psycopg.Cursor[Any] | None = None  # reused by every statement of the thread
    side: Any = None  # a second cursor: savepoints pipelined around a statement
    app_depth = 0  # nesting of the application's db.transaction() blocks
    broken: str | None = None  # why the application's transaction is unusable
    tx_depth = 0  # nesting of Tx blocks (liteq's and the application's)
    after: list[Callable[[], None]] | None = None  # run when the outermost Tx ends
    hot_conn: psycopg.Connection[Any] | None = None  # the connection hot_names are of
    hot_names: set[bytes] | None = None  # hot statements prepared on it (hot.py)


class Connections:
    """This process's connections to one database: one per thread (see the module
    docstring), the transactions on them, and error translation."""

    def __init__(
        self,
        conninfo: str,
        *,
        durability: str = "normal",
        busy_timeout: float = 30.0,
        read_only: bool = False,
    ) -> None:
        check_open_options(durability, busy_timeout)
        try:
            params = conninfo_to_dict(conninfo)
        except psycopg.Error as exc:
            raise InvalidArgument(
                f"not a PostgreSQL connection string: {redact(conninfo)!r} ({exc}); "
                f"write postgresql://USER@HOST:PORT/DBNAME"
            ) from exc
        #: The connection string without its password: what messages name.
        self.description = redact(conninfo)
        self.read_only = read_only
        self._conninfo = conninfo
        self._given = frozenset(params)
        self._connect_args: dict[str, Any] = {"autocommit": True}
        if "connect_timeout" not in params:
            self._connect_args["connect_timeout"] = 10
        if "application_name" not in params:
            self._connect_args["application_name"] = "liteq"
        self._settings = (
            DURABILITY[durability],
            f"{max(1, round(busy_timeout * 1000))}ms",
            "on" if read_only else "off",
        )
        self._local = _Local()
        self._all: list[tuple[weakref.ref[threading.Thread], psycopg.Connection[Any]]] = []
        self._all_lock = threading.Lock()
        _INSTANCES.add(self)

    # -- connections ----------------------------------------------------------------

    def get(self) -> psycopg.Connection[Any]:
        """This thread's connection, opened on first use, after a fork and after a
        lost connection."""
        local = self._local
        conn = local.conn
        if local.pid == _pid and conn is not None and not conn.closed and not ended(conn):
            return conn
        return self._reopen()[0]

    def _handles(self) -> tuple[psycopg.Connection[Any], psycopg.Cursor[Any]]:
        local = self._local
        if local.broken is not None:
            raise ConnectionLost(local.broken)
        conn, cur = local.conn, local.cur
        if local.pid == _pid and conn is not None and cur is not None and not conn.closed:
            if not ended(conn):
                return conn, cur
            self._drop(conn)  # ended while idle: nothing was sent on it, open another
        return self._reopen()

    def _reopen(self) -> tuple[psycopg.Connection[Any], psycopg.Cursor[Any]]:
        local = self._local
        if local.conn is not None and local.pid == _pid and not local.conn.closed:
            self._drop(local.conn)  # ended by the server while idle (see ended())
        local.conn = local.cur = None
        conn = self._open()
        local.conn, local.cur, local.side, local.pid = conn, conn.cursor(), conn.cursor(), _pid
        return conn, local.cur

    def _open(self) -> psycopg.Connection[Any]:
        try:
            conn = psycopg.connect(self._conninfo, **self._connect_args)
        except psycopg.Error as exc:
            raise StorageError(f"{self.description}: cannot connect: {str(exc).strip()}") from exc
        try:
            conn.execute(
                "SELECT set_config('synchronous_commit', %s, false),"
                " set_config('lock_timeout', %s, false),"
                " set_config('default_transaction_read_only', %s, false),"
                " set_config('client_encoding', 'UTF8', false),"
                " set_config('enable_seqscan', 'off', false),"
                " set_config('jit', 'off', false)",
                self._settings,
            )
        except psycopg.Error as exc:
            conn.close()
            raise translate(exc, self.description) from exc
        _OPEN.add(conn)
        me = threading.current_thread()
        with self._all_lock:
            ended = [c for t, c in self._all if not _alive(t)]
            self._all = [(t, c) for t, c in self._all if _alive(t) and not c.closed]
            self._all.append((weakref.ref(me), conn))
        for c in ended:  # connections of threads that have finished
            _close(c)
        return conn

    def _drop(self, conn: psycopg.Connection[Any]) -> None:
        local = self._local
        if local.conn is conn:
            local.conn = local.cur = local.side = None
        _close(conn)

    def close(self) -> None:
        """Close every connection opened in this process (not the parent's, after a
        fork). Calls afterwards open new ones."""
        with self._all_lock:
            conns, self._all = [c for _t, c in self._all], []
        for c in conns:
            _close(c)
        self._local = _Local()

    def open_session(self, **options: Any) -> psycopg.Connection[Any]:
        """A new autocommit connection to this database, owned by the caller: no
        thread's, not closed by :meth:`close`, and abandoned (never closed) in a forked
        child like the others. *options* are libpq parameters the connection string
        does not set already. For sessions that outlive every verb, such as the LISTEN
        connection (``notifier.py``); StorageError if the server cannot be reached."""
        args = {**{k: v for k, v in options.items() if k not in self._given}, **self._connect_args}
        try:
            conn = psycopg.connect(self._conninfo, **args)
        except psycopg.Error as exc:
            raise StorageError(f"{self.description}: cannot connect: {str(exc).strip()}") from exc
        _OPEN.add(conn)
        return conn

    def after_tx(self, fn: Callable[[], None]) -> None:
        """Call *fn* when this thread's outermost transaction (:meth:`tx`) has ended,
        committed or rolled back; at once when none is open. For what must follow a
        commit, such as a throttled put's trailing notification (``notifier.py``)."""
        local = self._local
        if local.tx_depth <= 0:
            fn()
        elif local.after is None:
            local.after = [fn]
        else:
            local.after.append(fn)

    def in_transaction(self) -> bool:
        """True inside the application's ``db.transaction()`` on this thread (what it
        writes commits when the block ends, not when a verb returns)."""
        return self._local.app_depth > 0

    @contextmanager
    def borrowed(self, conn: psycopg.Connection[Any]) -> Iterator[None]:
        """Inside the block, this thread's statements and transactions run on *conn*,
        the application's own connection (checked by the caller: ``outbox.py``), then
        this thread's own connection and state come back. Counted as inside the
        application's transaction (its commit may come at any time: notifications are
        not throttled, and a connection lost in the block fails the rest of it rather
        than reconnecting). Cursors are plain ``psycopg.Cursor`` with tuple rows,
        whatever row or cursor factory the application set on *conn*."""
        local = self._local
        saved = (local.pid, local.conn, local.cur, local.side, local.app_depth, local.broken)
        local.pid, local.conn = _pid, conn
        local.cur = psycopg.Cursor(conn, row_factory=tuple_row)
        local.side = psycopg.Cursor(conn, row_factory=tuple_row)
        local.app_depth, local.broken = 1, None
        try:
            yield
        finally:
            (local.pid, local.conn, local.cur, local.side, local.app_depth, local.broken) = saved

    def owns(self, conn: object) -> bool:
        """True if *conn* is one of the connections liteq opened for a thread of this
        process (this thread's is :meth:`get`)."""
        with self._all_lock:
            return any(c is conn for _t, c in self._all)

    def count(self) -> int:
        """How many connections this process holds open now."""
        with self._all_lock:
            return sum(1 for _t, c in self._all if not c.closed)

    # -- statements and transactions ------------------------------------------------

    def tx(self, app: bool = False) -> Tx:
        """A transaction: ``with conns.tx() as cur:``. ``BEGIN`` ... ``COMMIT``, or a
        savepoint inside an open one; rolled back on an exception; psycopg errors
        leave it as liteq errors. *app* marks the application's ``db.transaction()``."""
        return Tx(self, app)

    def statement(
        self,
        sql: str,
        params: Sequence[Any] | dict[str, Any] | None = None,
        prepare: bool | None = None,
        binary: bool = False,
    ) -> list[Any]:
        """Run one statement and return its rows (all of them; ``[]`` if it returns
        none). Outside a transaction it is a transaction of its own (autocommit, one
        round trip). Inside one (``db.transaction()``) it runs under a savepoint, so
        that an error in it (say a unique violation the application catches) leaves
        the transaction usable, as on SQLite; a verb's statements inside its own
        :meth:`tx` use the cursor instead. Also ``db.execute()``. The savepoint, the
        statement and the release go to the server in one pipeline: one round trip.
        *prepare*: psycopg's (None: prepared from the 5th run; False: never, for a
        statement whose generic plan is bad, see the module docstring). *binary*: the
        rows in binary format (a claim's payloads arrive as they are, not hex to decode;
        only for columns whose types load the same either way: not ``tid``).
        """
        conn, cur = self._handles()
        if conn.pgconn.transaction_status != _IDLE:
            side = self._local.side  # its own results, so cur keeps the statement's
            try:
                with conn.pipeline():
                    side.execute("SAVEPOINT liteq_op", prepare=False)
                    cur.execute(sql, params, prepare=prepare, binary=binary)
                    side.execute("RELEASE SAVEPOINT liteq_op", prepare=False)
                return _rows(cur)
            except psycopg.Error as exc:
                if not (conn.closed or conn.broken or isinstance(exc, pgerrors.InFailedSqlTransaction)):
                    # The statement failed after our savepoint: back to it, so the
                    # caller's transaction stays usable (a failed SAVEPOINT means the
                    # transaction was already aborted: nothing of ours to undo).
                    try:
                        side.execute("ROLLBACK TO SAVEPOINT liteq_op", prepare=False)
                        side.execute("RELEASE SAVEPOINT liteq_op", prepare=False)
                    except psycopg.Error:
                        pass  # lost now: failure() below or the next call notices
                raise self.failure(conn, exc) from exc
        try:
            cur.execute(sql, params, prepare=prepare, binary=binary)
            return _rows(cur)
        except psycopg.Error as exc:
            raise self.failure(conn, exc, committing=True) from exc

    def hot(self, sql: str, params: dict[str, Any], again: bool = True) -> list[Any]:
        """:meth:`statement` for the verbs that run once per message (a put, a claim of
        one, an ack of one): outside a transaction, sent through libpq's prepared-
        statement calls rather than the cursor (``hot.py`` says why and what qualifies);
        the rows come back as from ``statement(..., binary=True)``. Inside a transaction,
        on the application's connection, and for a statement or call ``hot.py`` cannot
        send, :meth:`statement`."""
        stmt = hot_sql.compiled(sql)
        if stmt.unfit:
            return self.statement(sql, params, binary=True)
        conn, _cur = self._handles()
        pg = conn.pgconn
        local = self._local
        if local.app_depth or pg.transaction_status != _IDLE:
            # In a transaction, or on the application's own connection (borrowed: its
            # next statement must begin or join its transaction, as psycopg's cursor
            # does; a statement sent here would commit on its own).
            return self.statement(sql, params, binary=True)
        if local.hot_conn is not conn:
            local.hot_conn, local.hot_names = conn, set()
        names = local.hot_names
        assert names is not None
        if stmt.params is None and not stmt.fix_types([params[k] for k in stmt.order]):
            return self.statement(sql, params, binary=True)
        values = hot_sql.encode(stmt, params)
        if values is None:
            return self.statement(sql, params, binary=True)
        if stmt.name not in names:
            try:
                prepared = hot_sql.prepare(pg, stmt)
            except psycopg.Error as exc:
                raise self.failure(conn, exc) from exc  # nothing ran: not maybe-committed
            if not prepared:
                return self.statement(sql, params, binary=True)
            names.add(stmt.name)
        try:
            res = hot_sql.run(pg, stmt, values)
        except psycopg.Error as exc:
            raise self.failure(conn, exc, committing=True) from exc
        except BaseException:
            self._drop(conn)  # interrupted with the statement in flight: not reusable
            raise
        if again and hot_sql.gone(res):
            # Our prepared statement is gone (DEALLOCATE ALL by the application, a
            # pooler that moved the session): nothing ran; prepare it again, once.
            names.discard(stmt.name)
            return self.hot(sql, params, again=False)
        status = res.status
        if status == _TUPLES_OK:
            return hot_sql.decode_rows(stmt, res)
        if status == _COMMAND_OK:
            return []
        raise self.failure(conn, hot_sql.result_error(pg, res), committing=True)

    def joined(self, sql: str, params: dict[str, Any]) -> None:
        """Run one statement as a part of the open transaction, with no savepoint of its
        own (a round of SAVEPOINT and RELEASE less), for a step whose failure must undo
        the whole transaction anyway: a workflow's settling in the worker's ack (as on
        SQLite, wf_done). Outside a transaction, :meth:`statement`."""
        conn, cur = self._handles()
        if conn.pgconn.transaction_status == _IDLE:
            self.statement(sql, params)
            return
        try:
            cur.execute(sql, params)
        except psycopg.Error as exc:
            raise self.failure(conn, exc) from exc

    def failure(self, conn: psycopg.Connection[Any], exc: psycopg.Error, committing: bool = False) -> LiteqError:
        """The liteq error for *exc*, met on *conn*; a lost connection is dropped (the
        next call reconnects) and, inside ``db.transaction()``, breaks the block.
        *committing*: *exc* came from a COMMIT or an autocommit statement, whose
        outcome a lost connection leaves unknown."""
        if not (conn.closed or conn.broken):
            return translate(exc, self.description)
        self._drop(conn)
        outcome = (
            "whether it was committed is unknown" if committing
            else "the operation was rolled back; try it again"
        )
        text = f"{self.description}: lost the connection to the server ({str(exc).strip()}); {outcome}"
        local = self._local
        if local.app_depth > 0 and local.broken is None:
            local.broken = (
                f"{self.description}: the connection was lost inside db.transaction(); nothing "
                f"of the transaction was committed ({str(exc).strip()})"
            )
            return ConnectionLost(local.broken)
        return ConnectionLost(text, maybe_committed=committing)

    # -- the server's clock ----------------------------------------------------------

    def measure_offset(self, samples: int = 5) -> float | None:
        """Server clock minus this host's (seconds), from the fastest of *samples*
        round trips; None when this thread's connection is inside a transaction or the
        server cannot be reached now."""
        local = self._local
        if local.broken is not None or local.app_depth:
            return None
        conn = local.conn
        if conn is not None and (local.pid != _pid or conn.closed):
            conn = None
        try:
            if conn is None:
                conn = self.get()
            if conn.pgconn.transaction_status != _IDLE:
                return None
            best: tuple[float, float] | None = None
            cur = conn.cursor()
            for _ in range(samples):
                t0 = time.time()
                cur.execute("SELECT extract(epoch FROM clock_timestamp())::float8")
                row = cur.fetchone()
                t1 = time.time()
                if row is None:
                    return None
                sample = (t1 - t0, float(row[0]) - (t0 + t1) / 2)
                if best is None or sample < best:
                    best = sample
            return best[1] if best is not None else None
        except psycopg.Error as exc:
            if conn is not None:
                self.failure(conn, exc)
            return None
        except LiteqError:
            return None


def ended(conn: psycopg.Connection[Any]) -> bool:
    """True if the server ended *conn* while it sat idle between two calls (a restart,
    ``pg_terminate_backend``): its socket is readable though nothing was asked, and
    reading it finds the end. An idle session gets nothing unasked but a notice or the
    server's last words (a FATAL message, then end of file), so the common case costs
    one zero-timeout ``poll``. Inside a transaction it answers False: a loss there is
    the statement's failure to report (:meth:`Connections.failure`)."""
    pgconn = conn.pgconn
    try:
        if pgconn.transaction_status != _IDLE:
            return pgconn.status != _OK
        sock = pgconn.socket
        for _ in range(4):  # the FATAL message and the end of file may come apart
            if not wait_readable([sock], 0):
                return False
            pgconn.consume_input()
            if pgconn.status != _OK:
                return True
        return False
    except (psycopg.Error, OSError, ValueError):
        return True


def _alive(ref: weakref.ref[threading.Thread]) -> bool:
    t = ref()
    return t is not None and t.is_alive()


def _close(conn: psycopg.Connection[Any]) -> None:
    _OPEN.discard(conn)
    try:
        conn.close()
    except psycopg.Error:
        pass


class Tx:
    """The context manager behind :meth:`Connections.tx` (a class, not a generator: it
    runs on every multi-statement verb)."""

    __slots__ = ("conns", "app", "conn", "cur", "nested")

    def __init__(self, conns: Connections, app: bool) -> None:
        self.conns = conns
        self.app = app

    def __enter__(self) -> psycopg.Cursor[Any]:
        conns = self.conns
        conn, cur = conns._handles()
        self.conn, self.cur = conn, cur
        try:
            # Not autocommit: the application's own connection (borrowed), whose next
            # statement begins (or joins) its transaction, which liteq never commits.
            if conn.pgconn.transaction_status != _IDLE or not conn.autocommit:
                self.nested = True
                cur.execute("SAVEPOINT liteq_op", prepare=False)
            else:
                self.nested = False
                cur.execute("BEGIN", prepare=False)
        except psycopg.Error as exc:
            raise conns.failure(conn, exc) from exc
        except BaseException:
            # As SQLite's _Write: an exception once the statement ran (a signal
            # handler's KeyboardInterrupt) means __exit__ will not run; undo what was
            # opened here, or later statements would join a transaction nobody commits.
            self._undo_enter()
            raise
        local = conns._local
        local.tx_depth += 1
        if self.app:
            local.app_depth += 1
        return cur

    def _undo_enter(self) -> None:
        conn, cur = self.conn, self.cur
        if conn.closed or conn.broken or conn.pgconn.transaction_status == _IDLE:
            return
        try:
            if self.nested:
                cur.execute("ROLLBACK TO SAVEPOINT liteq_op", prepare=False)
                cur.execute("RELEASE SAVEPOINT liteq_op", prepare=False)
            elif conn.autocommit:
                cur.execute("ROLLBACK", prepare=False)
        except psycopg.Error:
            pass  # lost now: the next call notices

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        conns, conn, cur = self.conns, self.conn, self.cur
        local = conns._local
        if self.app:
            local.app_depth -= 1
        ends_app = self.app and local.app_depth == 0
        try:
            if local.broken is not None:
                # The connection was lost inside the application's block.
                if ends_app and exc is None:
                    raise ConnectionLost(local.broken)
                return  # the block's own exception (a StorageError) says so
            if exc is None:
                try:
                    cur.execute("RELEASE SAVEPOINT liteq_op" if self.nested else "COMMIT", prepare=False)
                    return
                except psycopg.Error as err:
                    if not self.nested and (conn.closed or conn.broken):
                        raise conns.failure(conn, err, committing=True) from err
                    exc = err
            if not (conn.closed or conn.broken):
                try:
                    if self.nested:
                        cur.execute("ROLLBACK TO SAVEPOINT liteq_op", prepare=False)
                        cur.execute("RELEASE SAVEPOINT liteq_op", prepare=False)
                    else:
                        cur.execute("ROLLBACK", prepare=False)
                except psycopg.Error:
                    pass  # lost now: failure() below or the next call notices
            if isinstance(exc, psycopg.Error):
                raise conns.failure(conn, exc) from exc
        finally:
            if ends_app:
                local.broken = None
            local.tx_depth -= 1
            if local.tx_depth <= 0 and local.after is not None:
                after, local.after = local.after, None
                for fn in after:
                    fn()
