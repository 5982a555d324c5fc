"""Storage engines behind one written interface.

Layout (issue 17; the file list shows the architecture)::

    backends/
      records.py     State, the typed records that cross the boundary, Capabilities
      base.py        Backend: every verb the domain code calls, with its contract;
                     Waiter: how a consumer sleeps until another process commits
      targets.py     telling a SQLite path from a PostgreSQL URL (no driver imported)
      sqlite/        the SQLite engine (``SQLiteBackend``; was ``liteq/store/``)
      postgres/      the PostgreSQL engine (optional extra)

Dependencies run one way: ``Database`` -> domain modules (queue, topic, task,
scheduler, worker) -> this package's interface -> one engine. Each engine keeps its
SQL, schema and migrations, connection handling, transactions and wake-up channel in
its own package: ``apsw`` is imported only under ``backends/sqlite`` and ``psycopg``
only under ``backends/postgres``, so nothing above an engine sees SQL, a driver or a
positional row.

This package exports the interface and :func:`open_backend`, which picks the engine
from the target and imports it only then (so psycopg is needed only for a URL).
"""

from __future__ import annotations

import os
from typing import Any

from ..errors import InvalidArgument, LiteqError
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
from .targets import describe, is_postgres, split_schema

__all__ = [
    # choosing and opening an engine
    "open_backend", "ENGINE_OPTIONS",
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


#: The options only one engine knows (given to the other, they are refused).
ENGINE_OPTIONS: dict[str, frozenset[str]] = {
    "postgres": frozenset({"schema"}),
    "sqlite": frozenset(),
}

_ENGINE_NAMES = {"postgres": "PostgreSQL", "sqlite": "SQLite"}
_WHAT = {"schema": "the PostgreSQL schema holding liteq's tables"}


def _refuse_foreign(options: dict[str, Any], engine: str, target: str) -> None:
    for other, names in ENGINE_OPTIONS.items():
        if other == engine:
            continue
        for name in sorted(names & options.keys()):
            raise InvalidArgument(
                f"{name}= ({_WHAT.get(name, 'an option')}) is a {_ENGINE_NAMES[other]} "
                f"option, but {target} is a {_ENGINE_NAMES[engine]} database: leave it out"
                + (", or connect with a postgresql:// URL" if other == "postgres" else "")
            )


def open_backend(target: str | os.PathLike[str], **options: Any) -> Backend:
    """Open the engine *target* names: a ``postgresql://`` or ``postgres://`` URL opens
    :class:`~liteq.backends.postgres.PostgresBackend` (needs the ``postgres`` extra),
    anything else is a SQLite file's path (:class:`~liteq.backends.sqlite.SQLiteBackend`).
    See :mod:`liteq.backends.targets` for what counts as a URL and ``?schema=``.

    *options* are the engines' keyword arguments (``durability``, ``busy_timeout``,
    ``clock``, ``read_only``, ``create`` on both; ``schema`` on PostgreSQL only); one
    the other engine alone knows raises InvalidArgument. ``None`` for ``clock`` or
    ``schema`` means the engine's default.
    """
    options = {k: v for k, v in options.items() if not (k in ("clock", "schema") and v is None)}
    if is_postgres(target):
        url, schema = split_schema(str(target))
        where = describe(target)
        _refuse_foreign(options, "postgres", where)
        if schema is not None:
            if options.get("schema", schema) != schema:
                raise InvalidArgument(
                    f"{where} names schema {schema!r} but schema={options['schema']!r} was "
                    f"given too: name it once"
                )
            options["schema"] = schema
        try:
            from .postgres import PostgresBackend
        except ImportError as exc:
            raise LiteqError(
                f"{where} is a PostgreSQL database, which needs psycopg 3 ({exc}): "
                f"pip install 'liteq-queue[postgres]'"
            ) from None
        return PostgresBackend(url, **options)
    _refuse_foreign(options, "sqlite", describe(target))
    from .sqlite import SQLiteBackend

    return SQLiteBackend(os.fspath(target), **options)
