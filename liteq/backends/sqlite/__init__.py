"""The SQLite engine: the only package that imports apsw, and the home of SQLite's SQL.

Everything above ``liteq.backends`` calls the verbs of
:class:`~liteq.backends.base.Backend` (``put``, ``claim``, ``ack``, ``retry``,
``extend``, ``expire`` ...) and never sees SQL; :class:`SQLiteBackend` implements
them on one database file.

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

The package holds one module per concept, joined into :class:`SQLiteBackend`:

================  ==========================================================
``schema.py``     the tables, indexes and migrations (``pragma user_version``)
``sql.py``        every SQL statement, as named constants
``files.py``      the path: what it is, its real path, side files, causes
``opening.py``    opening a connection: checks, schema creation and migration,
                  pragmas, read-only opens, why an open failed
``base.py``       connections per thread, busy handler, WAL checkpoints,
                  transactions (``write``/``read``), error translation
``queues.py``     queue rows, put, back pressure, administration, stats
``group.py``      group commit: threads' plain puts sharing commits (``full``)
``messages.py``   claim, expiry, ack, retry, extend, heartbeat, fail, bury
``jobs.py``       task results, cancellation, released leases
``schedules.py``  schedules and the exactly-once tick
``topics.py``     subscriptions and the atomic publish
``flow.py``       flow control: pausing a queue
``workflow.py``   workflows: edges between jobs (the triggers: ``workflow_sql.py``)
``operating.py``  the workers registry, job progress, per-minute history
``notifier.py``   the wake-up channel: inotify on the ``-wal`` file, else polling
================  ==========================================================
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from ..base import Backend
from ..records import Capabilities
from . import notifier
from .base import DURABILITY, JOURNAL_SIZE_LIMIT, MAINTAIN_EVERY, StoreBase
from .copying import CopyVerbs
from .flow import FlowVerbs
from .group import GroupCommit
from .jobs import JobVerbs
from .messages import MessageVerbs
from .notifier import Waiter
from .operating import OperatingVerbs
from .queues import default_queue_options
from .schedules import ScheduleVerbs
from .sql import *  # noqa: F403 - the statements, for tools that inspect them
from .topics import TopicVerbs
from .workflow import WorkflowVerbs

__all__ = [
    "SQLiteBackend", "StoreBase", "Waiter", "DURABILITY", "JOURNAL_SIZE_LIMIT",
    "MAINTAIN_EVERY", "default_queue_options",
]


class SQLiteBackend(MessageVerbs, JobVerbs, ScheduleVerbs, TopicVerbs, CopyVerbs, FlowVerbs,
                    OperatingVerbs, WorkflowVerbs, Backend):
    """One database file, with one apsw connection per thread (and per process).

    Not used directly by applications: :class:`liteq.Database` wraps it. The verbs
    come from the mixins (one module per concept); :class:`~liteq.backends.base.Backend`
    is last in the bases, so it only declares them and adds nothing per call.
    """

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
        super().__init__(path, durability=durability, busy_timeout=busy_timeout,
                         clock=clock, read_only=read_only, create=create)
        #: Plain puts of this process's threads share commits (group.py) where that
        #: was measured to win: at durability "full", where each commit waits for an fsync.
        self.group = GroupCommit(self.put_ready_group) if durability == "full" else None
        #: Read once by callers when they are built; ``wakeup`` says whether this
        #: process can watch the file with inotify (Linux) or polls.
        self.capabilities = Capabilities(
            engine="sqlite",
            wakeup="inotify" if notifier.can_watch() else "poll",
            paramstyle="qmark",
            shared_across_hosts=False,
            local_file=True,
            vacuum=True,
            checkpoint=True,
            integrity_check=True,
            foreign_connection=False,
        )

    def connection(self) -> Any:
        """This thread's apsw connection (the one every verb and ``execute`` use)."""
        return self.conn()

    def waiter(self) -> Waiter:
        """A new waiter woken by writes to the ``-wal`` file, which SQLite keeps beside
        the real file (not beside a symlink to it)."""
        return Waiter(self.file + "-wal")

    def storage_size(self) -> int:
        """Bytes of the database file and its ``-wal`` (the real path's) now."""
        size = 0
        for path in (self.file, self.file + "-wal"):
            try:
                size += os.path.getsize(path)
            except FileNotFoundError:
                pass  # no -wal while no connection has the file open
        return size
