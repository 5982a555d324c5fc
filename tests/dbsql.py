"""Engine-neutral SQL on liteq's own tables, for tests that look underneath the API.

The behavioural suite runs on every engine (tests/engines.py); a test that reads or
damages liteq's rows directly says so through these helpers instead of SQLite's SQL:

* :func:`sql` runs *text* written with ``?`` placeholders, SQLite-style; on PostgreSQL the
  placeholders become ``%s`` (a literal ``%`` is doubled) and liteq's table names after
  ``FROM``/``JOIN``/``UPDATE``/``INTO`` are qualified with the database's schema (the
  engine leaves ``search_path`` alone, so the application's names resolve as usual).
* :func:`rows` reads a whole table in id order; :func:`count` counts rows.
* :func:`app_table` makes an application table (``id`` counting up, then *columns*) next
  to liteq's, for the outbox tests (the application's SQL and a put in one transaction).
* :func:`corrupt_payload` overwrites a message's payload with bytes no codec decodes.
* :func:`pg_schema_before` makes a PostgreSQL schema as an older release left it: the
  migrations before a given one applied and recorded, for the migration tests.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import liteq

__all__ = [
    "TABLES", "missing_words", "is_postgres", "sql", "rows", "count", "everything",
    "corrupt_payload", "app_table", "pg_schema_before",
]

#: liteq's tables (the engine's schema); anything else is the application's.
TABLES = ("queues", "messages", "results", "schedules", "schedule_runs", "meta")

#: The application tables tests make with :func:`app_table` (kept in the test's schema
#: on PostgreSQL, so that no two tests of a module share one).
APP_TABLES = ("orders", "ledger", "effects", "touches", "starts", "finishes")

_TABLE = re.compile(
    r"\b(FROM|JOIN|UPDATE|INTO|TABLE(?:\s+IF\s+NOT\s+EXISTS)?)\s+("
    + "|".join(TABLES + APP_TABLES)
    + r")\b",
    re.IGNORECASE,
)

#: Bytes that are not a valid encoding of anything (an undecodable payload).
GARBAGE = b"\xff\xff"


def is_postgres(db: liteq.Database) -> bool:
    """Whether *db* is on the PostgreSQL engine."""
    return db.backend.capabilities.paramstyle == "format"


def translate(db: liteq.Database, text: str) -> str:
    """*text* (SQLite-style, ``?`` placeholders) in *db*'s engine dialect."""
    if not is_postgres(db):
        return text
    return to_postgres(text, db.backend.schema)  # type: ignore[attr-defined]


def to_postgres(text: str, schema: str) -> str:
    """*text* with psycopg's placeholders and liteq's tables in *schema*."""
    text = text.replace("%", "%%").replace("?", "%s")
    return _TABLE.sub(lambda m: f'{m.group(1)} "{schema}".{m.group(2)}', text)


def sql(db: liteq.Database, text: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Run *text* (``?`` placeholders, liteq's table names bare) on *db*; every row."""
    return db.execute(translate(db, text), tuple(params))


def rows(db: liteq.Database, table: str, columns: str = "*") -> list[tuple[Any, ...]]:
    """Every row of liteq's *table*, ordered by its first column (``id``)."""
    if table not in TABLES:
        raise ValueError(f"{table!r} is not one of liteq's tables {TABLES}")
    return sql(db, f"SELECT {columns} FROM {table} ORDER BY 1")


def count(db: liteq.Database, table: str) -> int:
    """How many rows liteq's *table* holds."""
    if table not in TABLES:
        raise ValueError(f"{table!r} is not one of liteq's tables {TABLES}")
    return int(sql(db, f"SELECT count(*) FROM {table}")[0][0])


def everything(db: liteq.Database) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every liteq table: equal before and after means nothing was written."""
    return {table: rows(db, table) for table in TABLES}


def corrupt_payload(db: liteq.Database, message_id: int, garbage: bytes = GARBAGE) -> None:
    """Overwrite message *message_id*'s stored payload with *garbage* (undecodable)."""
    sql(db, "UPDATE messages SET payload = ? WHERE id = ?", (garbage, message_id))


def app_table(db: liteq.Database, name: str, columns: str) -> None:
    """Create the application table *name* (one of ``APP_TABLES``): an ``id`` primary key
    numbering rows in insertion order, then *columns* (portable SQL types)."""
    if name not in APP_TABLES:
        raise ValueError(f"{name!r} is not one of APP_TABLES {APP_TABLES}")
    key = "BIGINT GENERATED ALWAYS AS IDENTITY" if is_postgres(db) else "INTEGER"
    sql(db, f"CREATE TABLE {name} (id {key} PRIMARY KEY, {columns})")


def missing_words(target: str) -> str:
    """The words liteq's error starts with when *target* holds no liteq database yet
    (``create=False``, the CLI's looking commands): no file on SQLite, no schema on
    PostgreSQL."""
    return "no liteq schema" if target.startswith(("postgresql:", "postgres:")) else (
        "no liteq database at"
    )


def pg_schema_before(conn: Any, schema: str, migration: str) -> int:
    """Make *schema* on *conn* (psycopg, autocommit) with every PostgreSQL migration
    before *migration* (one of ``MIGRATIONS``) applied and recorded, as a release of
    then left it; return how many were applied."""
    from liteq.backends.postgres.schema import (
        MIGRATIONS,
        SQL_MIGRATIONS_TABLE,
        SQL_RECORD,
        qualify,
    )

    before = MIGRATIONS.index(migration)
    conn.execute(f'CREATE SCHEMA "{schema}"')
    conn.execute(qualify(SQL_MIGRATIONS_TABLE, schema))
    for n in range(before):
        conn.execute(qualify(MIGRATIONS[n], schema))
        conn.execute(qualify(SQL_RECORD, schema), (n + 1, 1.0))
    return before
