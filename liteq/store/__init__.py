"""The storage layer: the only package that imports apsw and the only home of SQL.

Everything above this module calls verbs (``put``, ``claim``, ``ack``, ``nack``,
``extend``, ``expire`` ...) and never sees SQL, so a PostgreSQL store with the same
verbs could sit behind the same API.

SQLite facts this module is built on (measured on the project's machine; see
DESIGN.md):

* Every write transaction is ``BEGIN IMMEDIATE``. A deferred transaction that reads
  and then writes fails with SQLITE_BUSY at once, whatever the busy timeout, when
  another connection wrote in between.
* The default busy timeout backs off in steps of up to 100 ms and let claims wait
  1.8 s under 4 processes; a handler sleeping ~1 ms keeps the worst case in tens of
  milliseconds.
* A RETURNING cursor must be read to the end: a half-read one keeps the write lock.
* A read transaction left open stops checkpoints and lets the WAL grow without
  bound, so no cursor is ever handed out half-read, and ``journal_size_limit`` is set.
* A connection must not cross ``fork()``: each thread of each process opens its own.

The package holds one module per concept, joined into :class:`Store`:

================  ==========================================================
``sql.py``        every SQL statement, as named constants
``files.py``      the path: what it is, its real path, side files, causes
``opening.py``    opening a connection: checks, schema creation and migration,
                  pragmas, read-only opens, why an open failed
``base.py``       connections per thread, busy handler, WAL checkpoints,
                  transactions (``write``/``read``), error translation
``queues.py``     queue rows, put, back pressure, administration, stats
``messages.py``   claim, expiry, ack, retry, extend, heartbeat, fail, bury
``jobs.py``       task results, cancellation, released leases
``schedules.py``  schedules and the exactly-once tick
``topics.py``     subscriptions and the atomic publish
================  ==========================================================
"""

from __future__ import annotations

from .base import DURABILITY, JOURNAL_SIZE_LIMIT, MAINTAIN_EVERY, StoreBase
from .jobs import JobVerbs
from .messages import MessageVerbs
from .queues import default_queue_options
from .schedules import ScheduleVerbs
from .sql import *  # noqa: F403 - the statements, for tools that inspect them
from .topics import StaleRoutes, TopicVerbs

__all__ = [
    "Store", "StoreBase", "StaleRoutes", "DURABILITY", "JOURNAL_SIZE_LIMIT", "MAINTAIN_EVERY",
    "default_queue_options",
]


class Store(MessageVerbs, JobVerbs, ScheduleVerbs, TopicVerbs):
    """One database file, with one apsw connection per thread (and per process).

    Not used directly by applications: :class:`liteq.Database` wraps it.
    """
