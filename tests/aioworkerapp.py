"""The application the asyncio worker tests (``test_aio_worker.py``) run in real
``liteq worker --pool asyncio`` subprocesses. Its database is ``$LITEQ_DB``; evidence
goes in the application's own table (SQL through ``dbsql.sql``)."""

from __future__ import annotations

import asyncio
import os
import time

from dbsql import sql

import liteq

db = liteq.connect()  # $LITEQ_DB: a file, or a PostgreSQL URL

sql(db, "CREATE TABLE IF NOT EXISTS finishes (tag TEXT, pid INTEGER, at REAL)")


#: A file each nap appends its tag to when it starts, if the test names one (a file, not
#: the database: the thousand-coroutine test must not pay a write per start).
STARTED = os.environ.get("AIO_TEST_STARTED")


@db.task(name="aio.nap", queue="aio", store_result=True)
async def nap(tag: str, seconds: float) -> str:
    """A coroutine that sleeps *seconds* (the asyncio pool runs many at once)."""
    if STARTED:
        with open(STARTED, "a") as f:
            f.write(tag + "\n")
    await asyncio.sleep(seconds)
    return tag


@db.task(name="aio.who", queue="aio", store_result=True)
async def who() -> list[object]:
    """Which job liteq.current_job() names inside this coroutine, before and after a pause."""
    job = liteq.current_job()
    await asyncio.sleep(0.05)
    again = liteq.current_job()
    return [job.id if job else None, again.id if again else None]


@db.task(name="aio.pid", queue="aio", store_result=True)
def pid() -> int:
    """A sync task: the pid of the process that runs it."""
    return os.getpid()


@db.task(name="aio.late", queue="aio", timeout=0.2, max_attempts=2,
         backoff=liteq.Backoff(base=0.0))
async def late() -> None:
    """Always runs past its timeout."""
    await asyncio.sleep(5)


@db.task(name="aio.boom", queue="aio", max_attempts=2, backoff=liteq.Backoff(base=0.0))
async def boom() -> None:
    """Always fails."""
    raise ValueError("boom")


@db.task(name="aio.sync_late", queue="aio", timeout=0.3, max_attempts=1)
def sync_late(tag: str) -> None:
    """A sync task past its timeout, in short sleeps; notes it if it gets to the end."""
    for _ in range(100):
        time.sleep(0.02)
    sql(db, "INSERT INTO finishes VALUES (?, ?, ?)", (tag, os.getpid(), time.time()))
