"""liteq for asyncio: the whole API awaitable, with no call blocking the event loop and
no thread per waiting call.

::

    import liteq.aio

    async with liteq.aio.connect("app.db") as db:      # or: db = await liteq.aio.connect(...)
        q = await db.queue("emails")
        await q.put({"to": "a@b.c"})
        async with await q.get(wait=5) as msg:          # acks on success, nacks on an error
            await send(msg.payload)
        async for msg in q.consume(prefetch=10):        # every message, forever
            ...
        job = await send_email.adelay("a@b.c")          # a task registered on db (or its sync Database)
        value = await job.result(wait=10)
        async with db.transaction():                    # the outbox: all or nothing
            await db.execute("INSERT INTO orders VALUES (?)", (7,))
            await q.put({"order": 7})

One implementation of the semantics: every verb is the sync API's (its validation, its
engine verbs), run on a small pool of threads the async Database owns
(:mod:`liteq.aio.runner`); waiting sleeps on the engine's wake-up channel registered in
the event loop (:mod:`liteq.aio.hub`). Works on every engine (SQLite and PostgreSQL).
"""

from .database import Connecting, Database, Transaction, connect
from .objects import Job, Tail, Topic
from .queue import Consumer, Message, Queue
from .runner import DEFAULT_THREADS

__all__ = [
    # the database
    "connect",
    "Connecting",
    "Database",
    "Transaction",
    "DEFAULT_THREADS",
    # queues
    "Queue",
    "Message",
    "Consumer",
    # pub/sub
    "Topic",
    "Tail",
    # jobs
    "Job",
]
