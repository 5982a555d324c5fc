"""Storage engines behind one written interface.

Layout (issue 17; the file list shows the architecture)::

    backends/
      records.py     State, the typed records that cross the boundary, Capabilities
      base.py        Backend: every verb the domain code calls, with its contract;
                     Waiter: how a consumer sleeps until another process commits
      sqlite/        the SQLite engine (``SQLiteBackend``; was ``liteq/store/``)
      postgres/      the PostgreSQL engine (optional extra)

Dependencies run one way: ``Database`` -> domain modules (queue, topic, task,
scheduler, worker) -> this package's interface -> one engine. Each engine keeps its
SQL, schema and migrations, connection handling, transactions and wake-up channel in
its own package: ``apsw`` is imported only under ``backends/sqlite`` and ``psycopg``
only under ``backends/postgres``, so nothing above an engine sees SQL, a driver or a
positional row.

This package exports the interface only; no engine is imported here (import
``liteq.backends.sqlite`` for ``SQLiteBackend``).
# later (B0): ``open_backend(target)`` choosing the engine from the target
# ("postgres(ql)://" URL, else a SQLite path).
"""

from __future__ import annotations

from .base import Backend, Waiter
from .records import (
    FINISHED,
    STATE_NAMES,
    STATES,
    UNFINISHED,
    Capabilities,
    ClaimedRow,
    Fire,
    MessageRecord,
    NewMessage,
    NewRow,
    QueueRecord,
    QueueStats,
    ResultRecord,
    ScheduleRecord,
    ScheduleRun,
    StaleRoutes,
    State,
    Subscriptions,
)

__all__ = [
    # the interface
    "Backend", "Waiter", "Capabilities",
    # message states
    "State", "STATES", "STATE_NAMES", "UNFINISHED", "FINISHED",
    # records
    "QueueRecord", "QueueStats", "NewMessage", "NewRow", "MessageRecord", "ClaimedRow",
    "ResultRecord", "ScheduleRecord", "ScheduleRun", "Fire", "Subscriptions",
    # signals
    "StaleRoutes",
]
