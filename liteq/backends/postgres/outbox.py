"""The application's own connection (issue 17, the outbox on PostgreSQL): liteq's verbs
run on a psycopg connection the application owns, inside its open transaction, so that
the application's rows and its jobs commit, or roll back, together.

``Queue.put(x, connection=conn)`` (and ``put_many``, ``Topic.publish``,
``Task.enqueue``, ``Job.cancel``) reach :meth:`Outbox.using`, which checks *conn* and
then lends it to this thread's verbs (``Connections.borrowed``): every statement of the
verb goes to *conn*, under a savepoint when *conn* is in a transaction, so a failing
verb leaves the application's transaction usable. liteq never commits or rolls back
the application's transaction:

* *conn* in a transaction (``with conn.transaction():``, or a non-autocommit
  connection): the verb joins it; its messages are visible, and its ``NOTIFY`` wakes
  consumers, when the application commits; a rollback leaves nothing of it.
* *conn* in autocommit mode and idle: the verb is a transaction of its own, committed
  before it returns, as a normal put.
* *conn* not in autocommit mode and idle: psycopg begins a transaction with the next
  statement, and it is the application's to commit (psycopg's rule for every statement
  on such a connection, liteq's included). The put is not committed by liteq.

**What is checked** (cheap, before anything is written): *conn* is an open, sync
``psycopg.Connection`` (InvalidArgument otherwise), not in an aborted transaction
(StorageError: roll it back first), and, once per connection object (a connection never
changes database), on the database and liteq schema this backend opened: the database's
name and the schema's creation time (``migrations`` version 1), so a connection to
another database, or to a copy made before, is refused with InvalidArgument. liteq's
own connection of this thread is accepted as it is (nothing to lend); another thread's
is refused.

**What the application's session decides**: its ``lock_timeout``,
``statement_timeout``, ``synchronous_commit`` (the commit is the application's) and
``plan_cache_mode`` apply to liteq's statements there, not the options liteq was
opened with. Names are schema-qualified, so its ``search_path`` is neither read nor
changed.

**Back pressure stays exact**: a put reserves room on one of the queue's depth stripes
in the application's transaction, and that stripe row stays locked until the
application commits or rolls back (a rollback gives the room back). Other producers
skip a locked stripe; a long application transaction holds one of the queue's 16
stripes, and a producer taking the slow path (queue nearly full) waits for it. (A
queue without max_depth or count_depth has no stripes: its put locks none. Giving such
a queue a max_depth waits for the application's transaction, as for any writer of
messages: depth.py.)
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus

from ...errors import InvalidArgument, StorageError
from .connection import Connections
from .schema import qualify

__all__ = ["Outbox", "check_connection"]

SQL_WHERE = "SELECT current_database(), to_regclass(%s) IS NOT NULL"
SQL_STAMP = "SELECT applied_at FROM {s}.migrations WHERE version = 1"


def check_connection(conn: Any) -> None:
    """Refuse what cannot carry liteq's statements: not a sync psycopg 3 connection
    (InvalidArgument), closed (InvalidArgument), broken or in an aborted transaction
    (StorageError). Each message says how to fix it."""
    if isinstance(conn, psycopg.AsyncConnection):
        raise InvalidArgument(
            "connection= takes a sync psycopg.Connection; liteq's API is synchronous "
            "(for an AsyncConnection, enqueue from a sync connection or a thread)"
        )
    if not isinstance(conn, psycopg.Connection):
        kind = f"{type(conn).__module__}.{type(conn).__qualname__}"
        raise InvalidArgument(
            f"connection= takes a psycopg 3 Connection to the database liteq was opened "
            f"on (psycopg.connect(...)), got {kind}"
        )
    if conn.closed:
        raise InvalidArgument("connection= is closed: pass an open psycopg connection")
    status = conn.info.transaction_status
    if conn.broken or status == TransactionStatus.UNKNOWN:
        raise StorageError(
            "connection= has lost its server connection: roll back and reconnect; "
            "nothing was written"
        )
    if status == TransactionStatus.INERROR:
        raise StorageError(
            "connection= is in a transaction aborted by an earlier error: roll it back "
            "(conn.rollback()) and try again; nothing was written"
        )
    if status == TransactionStatus.ACTIVE:
        raise InvalidArgument(
            "connection= is busy with a statement still running (an unfinished COPY or "
            "stream): finish it first"
        )


class Outbox:
    """Lends the application's connections to this backend's verbs, checked (see the
    module docstring). One per backend."""

    def __init__(self, conns: Connections, schema: str) -> None:
        self.conns = conns
        self.schema = schema
        self._stamp_sql = qualify(SQL_STAMP, schema)
        self._mine: tuple[str, float] | None = None
        self._checked: weakref.WeakSet[psycopg.Connection[Any]] = weakref.WeakSet()
        self._lock = threading.Lock()

    @contextmanager
    def using(self, conn: Any) -> Iterator[None]:
        """Inside the block, this thread's verbs run on *conn* (checked first)."""
        check_connection(conn)
        if self.conns.owns(conn):
            if conn is not self.conns.get():
                raise InvalidArgument(
                    "connection= is liteq's connection of another thread: pass your own "
                    "connection, or this thread's db.connection"
                )
            yield  # this thread's own: every verb runs on it anyway
            return
        mine = self._identity()  # on liteq's own connection, before lending conn
        with self.conns.borrowed(conn):
            with self._lock:
                known = conn in self._checked
            if not known:
                self._verify(conn, mine)
                with self._lock:
                    self._checked.add(conn)
            yield

    def _identity(self) -> tuple[str, float]:
        mine = self._mine
        if mine is None:
            name, _ = self.conns.statement(SQL_WHERE, (f'"{self.schema}".migrations',))[0]
            stamp = self.conns.statement(self._stamp_sql)[0][0]
            mine = self._mine = (str(name), float(stamp))
        return mine

    def _verify(self, conn: psycopg.Connection[Any], mine: tuple[str, float]) -> None:
        """On the borrowed *conn*: the same database and liteq schema as liteq's own."""
        name, present = self.conns.statement(SQL_WHERE, (f'"{self.schema}".migrations',))[0]
        if not present:
            raise InvalidArgument(
                f"connection= is to database {name!r}, which has no liteq schema "
                f"{self.schema!r}; pass a connection to database {mine[0]!r}, the one "
                f"liteq was opened on"
            )
        stamp = self.conns.statement(self._stamp_sql)[0][0]
        if name != mine[0]:
            raise InvalidArgument(
                f"connection= is to database {name!r}, not {mine[0]!r}, the one liteq "
                f"was opened on: pass a connection to that database"
            )
        if stamp != mine[1]:
            raise InvalidArgument(
                f"connection= is to another database named {name!r} (another server, or "
                f"a copy: its liteq schema {self.schema!r} is not the one liteq was "
                f"opened on): pass a connection to the same server and database"
            )
