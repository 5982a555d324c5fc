"""The PostgreSQL engine (issue 17): ``PostgresBackend``, for databases several hosts share.

Needs the ``postgres`` extra (``pip install 'liteq-queue[postgres]'``: psycopg 3); this
package is the only place that imports psycopg.

Layout::

    __init__.py    PostgresBackend: opening, the plumbing verbs, maintenance
    connection.py  a sticky connection per thread, fork safety, transactions and
                   savepoints, session settings, error translation
    clock.py       ServerClock: the server's time, read without a round trip
    schema.py      the tables in their own schema, migrations under an advisory lock
    queues.py      queues, put (ids, dedup keys), administration, stats, totals (B1)
    depth.py       back pressure: the striped depth counter (B1)
    messages.py    claims and leases: claim, maintenance, ack, retry, extend ... (B2)
    jobs.py        task results and cancellation (B3, jobs part)
    schedules.py   schedules, their history, and the tick that fires each time once
                   with no leader (B3, schedules part)
    topics.py      subscriptions and the atomic publish, under a lock per topic (B4)
    retry.py       which verbs are tried again on a new connection after a loss
    outbox.py      verbs on the application's own connection and transaction
    copying.py     ``liteq copy``: export from a REPEATABLE READ snapshot, import
                   keeping ids, then sequences and depth stripes
    flow.py        flow control: pausing a queue (issue 19)
    operating.py   the workers registry, job progress, per-minute history (issue 21)
    obs_sql.py     attempts, hourly roll-ups, failure counts, task index (issue 21)
    notifier.py    wake-up: one LISTEN session per process, a pipe per waiter, the
                   throttled NOTIFY the put path sends (``self.notify(cur, qid)``)
    throttle.py    that throttle: leading and trailing edge per queue and process

What exists (step B0): opening (connect, session settings, create or migrate the
schema), ``close``, ``connection``, ``transaction`` (nested: savepoints), ``execute``
(psycopg's ``%s`` / ``%(name)s`` placeholders), ``clock`` (the server's), ``capabilities``,
``integrity_check``, ``vacuum``, ``checkpoint`` (nothing to do), ``storage_size``.
Steps B1 and B2: the queue, put, administration and lease verbs (``queues.py``,
``depth.py``, ``messages.py``, built by ``setup_core`` at open). Step B3: task jobs
(``jobs.py``) and schedules (``schedules.py``).

Step B4: topics (``topics.py``). Every verb of ``Backend`` exists. The outbox on the
application's own psycopg connection: ``using(connection)`` (``outbox.py``).
``liteq.connect("postgresql://...")`` (B6) opens this engine through
:func:`liteq.backends.open_backend`.

How verbs are written here (for the next steps): SQL as named statements with ``{s}``
for the schema (``schema.qualify``, once per backend, never per call); one statement
outside a transaction is a transaction of its own (``self.conns.statement``: one round
trip; a savepoint inside the application's transaction); several statements go in ``with self.conns.tx() as cur:`` (a savepoint inside the
application's transaction); "now" is ``self.clock()``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import psycopg

from ...errors import InvalidArgument, LiteqError
from ..base import Backend
from ..records import Capabilities
from .clock import ServerClock
from .connection import Connections
from .copying import CopyVerbs
from .flow import FlowVerbs
from .jobs import JobVerbs
from .messages import MessageVerbs
from .notifier import Notifier
from .operating import OperatingVerbs
from .outbox import Outbox
from .retry import with_retries
from .schedules import ScheduleVerbs
from .schema import (
    DEFAULT_SCHEMA,
    SCHEMA_VERSION,
    TABLES,
    check_schema_name,
    migrate,
    qualify,
    schema_version,
)
from .topics import TopicVerbs
from .workflow import WorkflowVerbs

__all__ = ["PostgresBackend", "CAPABILITIES"]

#: What the PostgreSQL engine can do.
CAPABILITIES = Capabilities(
    engine="postgres",
    wakeup="listen",
    paramstyle="format",
    shared_across_hosts=True,
    local_file=False,
    vacuum=True,
    checkpoint=False,
    integrity_check=True,
    foreign_connection=True,
)

# Invariants integrity_check() verifies; each query returns the offending row count.
_CHECKS = (
    ("messages with a state outside 0-5",
     "SELECT count(*) FROM {s}.messages WHERE state NOT BETWEEN 0 AND 5"),
    ("leased messages without a token or lease_until",
     "SELECT count(*) FROM {s}.messages WHERE state = 2 AND (token IS NULL OR lease_until IS NULL)"),
    ("messages of a queue that does not exist",
     "SELECT count(*) FROM {s}.messages m WHERE NOT EXISTS "
     "(SELECT 1 FROM {s}.queues q WHERE q.id = m.qid)"),
    ("depth stripes of a queue that does not exist",
     "SELECT count(*) FROM {s}.depth_stripes d WHERE NOT EXISTS "
     "(SELECT 1 FROM {s}.queues q WHERE q.id = d.qid)"),
    ("depth stripes of a queue that keeps no counter (only counted queues have stripes)",
     "SELECT count(*) FROM {s}.depth_stripes d JOIN {s}.queues q ON q.id = d.qid "
     "WHERE NOT q.counted"),
    ("depth stripes with used above cap",
     "SELECT count(*) FROM {s}.depth_stripes WHERE cap IS NOT NULL AND used > cap"),
)


# TopicVerbs first: its base QueueVerbs then precedes Notifier (whose notify_sql
# property QueueVerbs only declares). Backend last: it only declares the verbs, so the
# mixins' definitions come first in the method order (as SQLiteBackend does).
@with_retries  # which verbs a lost connection tries again, once (retry.py)
class PostgresBackend(TopicVerbs, MessageVerbs, JobVerbs, ScheduleVerbs, CopyVerbs, FlowVerbs,
                      Notifier, OperatingVerbs, WorkflowVerbs, Backend):
    """One liteq schema in a PostgreSQL database.

    *url* is a libpq connection string (``postgresql://user:password@host:5432/db`` or
    ``host=... dbname=...``). *schema* names the PostgreSQL schema holding liteq's tables
    (created, or migrated, on first open unless *read_only*). *durability* "normal" sets
    ``synchronous_commit=off``, "full" ``on``. *busy_timeout* (seconds) is the
    ``lock_timeout`` after which a verb raises DatabaseBusy. *clock*, when given, replaces
    the server's clock (tests move time with it). ``create=False`` opens only an existing
    liteq schema: a missing one raises LiteqError and nothing is created.
    """

    def __init__(
        self,
        url: str,
        *,
        schema: str = DEFAULT_SCHEMA,
        durability: str = "normal",
        busy_timeout: float = 30.0,
        clock: Callable[[], float] | None = None,
        read_only: bool = False,
        create: bool = True,
    ) -> None:
        if not isinstance(url, str) or not url.strip():
            raise InvalidArgument(
                f"url must be a PostgreSQL connection string such as "
                f"postgresql://USER@HOST:PORT/DBNAME, got {url!r}"
            )
        if not isinstance(read_only, bool):
            raise InvalidArgument(f"read_only must be True or False, got {read_only!r}")
        if not isinstance(create, bool):
            raise InvalidArgument(f"create must be True or False, got {create!r}")
        if clock is not None and not callable(clock):
            raise InvalidArgument(f"clock must be a function returning epoch seconds, got {clock!r}")
        #: The PostgreSQL schema holding liteq's tables.
        self.schema = check_schema_name(schema)
        self.conns = Connections(
            url, durability=durability, busy_timeout=busy_timeout, read_only=read_only
        )
        #: The connection string without its password (what messages name).
        self.path = self.conns.description
        self.identity = f"postgresql:{self.path}/{self.schema}"
        self.durability = durability
        self.busy_timeout = float(busy_timeout)
        self.read_only = read_only
        self.capabilities = CAPABILITIES
        self.setup_core()
        self.outbox = Outbox(self.conns, self.schema)
        try:
            conn = self.conns.get()
            try:
                if not create and schema_version(conn, self.schema) == 0:
                    # As a missing file on SQLite with create=False.
                    raise LiteqError(
                        f"no liteq schema {self.schema!r} in {self.path} (connect() "
                        f"without create=False makes one)"
                    )
                #: The schema versions this open applied (``[]``: it was current).
                self.migrated = migrate(conn, self.schema, self.path, read_only)
            except psycopg.Error as exc:
                raise self.conns.failure(conn, exc) from exc
            self.clock = clock if clock is not None else ServerClock(
                self.conns.measure_offset
            )
        except BaseException:
            self.conns.close()
            raise

    @classmethod
    def open(cls, url: str, **options: Any) -> PostgresBackend:
        """The same as ``PostgresBackend(url, **options)``."""
        return cls(url, **options)

    # -- lifecycle and application SQL ----------------------------------------------

    def close(self) -> None:
        """Close every connection this backend opened in this process (a forked child
        leaves its parent's alone), and detach its waiters from the listening session."""
        self.stop_waking()
        try:
            self.flush_totals()
        except LiteqError:
            pass
        self.conns.close()

    def connection(self) -> psycopg.Connection[Any]:
        """This thread's psycopg connection (autocommit mode; liteq's transactions are
        explicit ``BEGIN``/``SAVEPOINT`` statements on it)."""
        return self.conns.get()

    def using(self, connection: Any) -> AbstractContextManager[None]:
        """Inside the block, this thread's verbs run on the application's own psycopg
        *connection*, inside its transaction if one is open (see ``outbox.py``: what is
        checked, when it commits); InvalidArgument or StorageError, before anything is
        written, for a connection that cannot carry them."""
        return self.outbox.using(connection)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """The application's transaction: verbs and :meth:`execute` in the block commit
        together at its end or roll back on an exception; nested blocks are savepoints."""
        with self.conns.tx(app=True):
            yield

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[tuple[Any, ...]]:
        """Run the application's SQL (psycopg placeholders: ``%s``, ``%(name)s``) on this
        thread's connection, joining :meth:`transaction`; every row, as tuples."""
        return self.conns.statement(sql, params or None)

    # -- maintenance ----------------------------------------------------------------

    def integrity_check(self) -> list[str]:
        """``["ok"]``, or one line per problem: a schema behind this liteq, a missing
        table, or rows breaking liteq's invariants (PostgreSQL checks its own pages)."""
        found = self.conns.statement(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relkind IN ('r', 'p')",
            (self.schema,),
        )
        tables = {r[0] for r in found}
        missing = [t for t in TABLES if t not in tables]
        if missing:
            return [f"schema {self.schema!r}: missing tables {', '.join(missing)}"]
        lines = []
        version = self.conns.statement(qualify("SELECT max(version) FROM {s}.migrations", self.schema))
        if version[0][0] != SCHEMA_VERSION:
            lines.append(f"schema {self.schema!r} is at version {version[0][0]}, expected {SCHEMA_VERSION}")
        for what, sql in _CHECKS:
            n = self.conns.statement(qualify(sql, self.schema))[0][0]
            if n:
                lines.append(f"{n} {what}")
        return lines or ["ok"]

    def checkpoint(self) -> None:
        """Nothing to do: the server manages its own write-ahead log."""

    def vacuum(self) -> None:
        """``VACUUM (ANALYZE)`` liteq's tables: dead rows' space becomes reusable and the
        planner's statistics fresh (not ``VACUUM FULL``, which locks out every verb)."""
        if self.conns.get().info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            raise InvalidArgument("vacuum() cannot run inside db.transaction()")
        for table in TABLES:
            self.conns.statement(qualify(f"VACUUM (ANALYZE) {{s}}.{table}", self.schema))

    def storage_size(self) -> int:
        """Bytes liteq's tables, indexes and TOAST data take in the database now."""
        rows = self.conns.statement(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relkind IN ('r', 'p', 'S')",
            (self.schema,),
        )
        return int(rows[0][0])

    def __repr__(self) -> str:
        return f"<PostgresBackend {self.path} schema={self.schema}>"

