"""The application the worker tests run in real ``liteq worker`` subprocesses.

Its database is ``$LITEQ_DB``. Every task leaves evidence in the application's own
tables in the same database, so a test can see what ran, how often, and where (SQL
through ``dbsql.sql``: SQLite's dialect, translated on PostgreSQL).
"""

from __future__ import annotations

import os
import time

from dbsql import sql

import liteq

db = liteq.connect()  # $LITEQ_DB: a file, or a PostgreSQL URL (then the tables below go
# in liteq's schema there, so that each test's database has its own)

sql(db, "CREATE TABLE IF NOT EXISTS effects (n INTEGER NOT NULL)")
sql(db, "CREATE TABLE IF NOT EXISTS touches (n INTEGER NOT NULL)")
sql(db, "CREATE TABLE IF NOT EXISTS starts (tag TEXT, pid INTEGER, at REAL)")
sql(db, "CREATE TABLE IF NOT EXISTS finishes (tag TEXT, pid INTEGER, at REAL)")


@db.task(name="app.noop")
def noop() -> None:
    """Nothing at all."""


@db.task(name="app.record", atomic=True)
def record(n: int) -> None:
    """Its side effect commits in the transaction that acks it: exactly once."""
    time.sleep(0.001)
    sql(db, "INSERT INTO effects (n) VALUES (?)", (n,))


@db.task(name="app.touch")
def touch(n: int) -> None:
    """Its side effect commits on its own, before the ack: at least once."""
    time.sleep(0.001)
    sql(db, "INSERT INTO touches (n) VALUES (?)", (n,))


@db.task(name="app.sleepy", queue="slow", store_result=True)
def sleepy(tag: str, seconds: float, again: float | None = None) -> str:
    """Note the start, sleep *seconds* (or *again* if this tag started before), note
    the finish."""
    seen = sql(db, "SELECT count(*) FROM starts WHERE tag = ?", (tag,))[0][0]
    sql(db, "INSERT INTO starts VALUES (?, ?, ?)", (tag, os.getpid(), time.time()))
    time.sleep(seconds if not seen or again is None else again)
    sql(db, "INSERT INTO finishes VALUES (?, ?, ?)", (tag, os.getpid(), time.time()))
    return tag


@db.task(name="app.whoami", queue="bad", store_result=True)
def whoami() -> int:
    """The pid of the process that runs it."""
    return os.getpid()


@db.task(name="app.forever", queue="bad", timeout=0.5, max_attempts=1)
def forever() -> None:
    """Sleeps in one long C call: only a kill ends it before its timeout."""
    time.sleep(120)


@db.task(name="app.die", queue="bad", max_attempts=2,
         backoff=liteq.Backoff(base=0.01, jitter=0))
def die() -> None:
    """Its process exits under it."""
    os._exit(3)


class Meltdown(BaseException):
    """A BaseException that is neither SystemExit nor KeyboardInterrupt."""


@db.task(name="app.base", queue="bad", max_attempts=1)
def base(kind: str) -> None:
    """Raises a BaseException subclass."""
    if kind == "exit":
        raise SystemExit(4)
    if kind == "interrupt":
        raise KeyboardInterrupt
    raise Meltdown("core temperature critical")
