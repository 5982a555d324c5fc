"""The application the worker tests run in real ``liteq worker`` subprocesses.

Its database is ``$LITEQ_DB``. Every task leaves evidence in the application's own
tables in the same file, so a test can see what ran, how often, and where.
"""

from __future__ import annotations

import os
import time

import liteq

db = liteq.connect()  # $LITEQ_DB

db.execute("CREATE TABLE IF NOT EXISTS effects (n INTEGER NOT NULL)")
db.execute("CREATE TABLE IF NOT EXISTS touches (n INTEGER NOT NULL)")
db.execute("CREATE TABLE IF NOT EXISTS starts (tag TEXT, pid INTEGER, at REAL)")
db.execute("CREATE TABLE IF NOT EXISTS finishes (tag TEXT, pid INTEGER, at REAL)")


@db.task(name="app.noop")
def noop() -> None:
    """Nothing at all."""


@db.task(name="app.record", atomic=True)
def record(n: int) -> None:
    """Its side effect commits in the transaction that acks it: exactly once."""
    time.sleep(0.001)
    db.execute("INSERT INTO effects (n) VALUES (?)", (n,))


@db.task(name="app.touch")
def touch(n: int) -> None:
    """Its side effect commits on its own, before the ack: at least once."""
    time.sleep(0.001)
    db.execute("INSERT INTO touches (n) VALUES (?)", (n,))


@db.task(name="app.sleepy", queue="slow", store_result=True)
def sleepy(tag: str, seconds: float, again: float | None = None) -> str:
    """Note the start, sleep *seconds* (or *again* if this tag started before), note
    the finish."""
    seen = db.execute("SELECT count(*) FROM starts WHERE tag = ?", (tag,))[0][0]
    db.execute("INSERT INTO starts VALUES (?, ?, ?)", (tag, os.getpid(), time.time()))
    time.sleep(seconds if not seen or again is None else again)
    db.execute("INSERT INTO finishes VALUES (?, ?, ?)", (tag, os.getpid(), time.time()))
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
