"""The async Database: ``db = await liteq.aio.connect(target)`` (or ``async with``).

It wraps a sync :class:`liteq.Database` (its tasks, options, validation and verbs) and
adds what asyncio needs: its own small pool of threads where every database call runs
(:class:`~liteq.aio.runner.Runner`), and one wake-up channel read by the event loop
(:class:`~liteq.aio.hub.Hub`), so that waiting costs no thread.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Generator, Sequence
from types import TracebackType
from typing import Any

from .. import database as sync_db
from .. import task as sync_task
from ..errors import InvalidArgument
from .hub import Hub
from .objects import Job, Topic
from .queue import Queue
from .runner import DEFAULT_THREADS, Lane, Runner

__all__ = ["Database", "Transaction", "connect"]


def connect(target: str | os.PathLike[str] | sync_db.Database | None = None, *,
            threads: int = DEFAULT_THREADS, **options: Any) -> Connecting:
    """Open the liteq database *target* for asyncio code: ``db = await connect(...)``
    or ``async with connect(...) as db:`` (closed at the end).

    *target* is what :func:`liteq.connect` takes (a SQLite file's path or a
    ``postgresql://`` URL; *options* are its keyword options), or an open sync
    :class:`liteq.Database`: then the async one shares it (its registered tasks too,
    so ``task.adelay()`` works on them) and closing it leaves the sync one open.
    *threads* (default 4) bounds the threads, and so the connections, it uses.
    """
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= 64:
        raise InvalidArgument(f"threads must be an integer from 1 to 64, got {threads!r}")
    return Connecting(target, threads, options)


class Connecting:
    """What :func:`connect` returns: await it, or use it with ``async with``."""

    def __init__(self, target: Any, threads: int, options: dict[str, Any]) -> None:
        self._args = (target, threads, options)
        self._db: Database | None = None

    async def open(self) -> Database:
        """Open the database (on a pool thread) and its wake-up channel."""
        target, threads, options = self._args
        runner = Runner(threads)
        try:
            if isinstance(target, sync_db.Database):
                if options:
                    raise InvalidArgument("connect() takes no options with an open Database")
                db, owned = target, False
            else:
                db, owned = await runner.call(sync_db.connect, target, **options), True
            try:
                waiter = await runner.call(db.backend.waiter)
            except BaseException:
                if owned:
                    await runner.call(db.close)
                raise
        except BaseException:
            runner.shutdown()
            raise
        return Database(db, runner, Hub(asyncio.get_running_loop(), waiter), owned)

    def __await__(self) -> Generator[Any, None, Database]:
        return self.open().__await__()

    async def __aenter__(self) -> Database:
        self._db = await self.open()
        return self._db

    async def __aexit__(self, *exc: object) -> None:
        if self._db is not None:
            await self._db.close()


class Database:
    """One liteq database for asyncio code (made by :func:`connect`). Every method that
    reads or writes is a coroutine running the sync verb on this Database's threads;
    use it from the event loop it was opened in."""

    def __init__(self, db: sync_db.Database, runner: Runner, hub: Hub, owned: bool) -> None:
        #: The sync :class:`liteq.Database` underneath (tasks are registered on it).
        self.sync = db
        #: The threads every database call runs on.
        self.runner = runner
        #: The wake-up channel waiting calls sleep on.
        self.hub = hub
        self.path = db.path
        self._owned = owned
        self._queues: dict[str, Queue] = {}
        self._topics: dict[str, Topic] = {}
        self.closed = False
        sync_task.ASYNC_FACES[db] = self

    # -- queues and topics ----------------------------------------------------------

    def wrap(self, q: Any) -> Queue:
        """The async :class:`~liteq.aio.Queue` of a sync one (cached by name)."""
        aq = self._queues.get(q.name)
        if aq is None or aq.sync is not q:
            aq = self._queues[q.name] = Queue(self, q)
        return aq

    async def queue(self, name: str, **options: Any) -> Queue:
        """The queue *name*, created on first use, its options as
        :meth:`liteq.Database.queue` (declared options are stored)."""
        if not options and name in self._queues:
            return self._queues[name]
        return self.wrap(await self.runner.call(self.sync.queue, name, **options))

    async def configure_queue(self, name: str, **options: Any) -> Queue:
        """Set queue *name*'s stored options on purpose (see the sync method)."""
        return self.wrap(await self.runner.call(self.sync.configure_queue, name, **options))

    async def create_queue(self, name: str, **options: Any) -> Queue:
        """Create queue *name*; InvalidArgument if it exists."""
        return self.wrap(await self.runner.call(self.sync.create_queue, name, **options))

    async def queues(self) -> list[str]:
        """Names of every queue (subscriptions included)."""
        return await self.runner.call(self.sync.queues)

    async def has_queue(self, name: str) -> bool:
        """True if queue *name* exists (without creating it)."""
        return await self.runner.call(self.sync.has_queue, name)

    async def delete_queue(self, name: str) -> None:
        """Delete queue *name* and every message in it."""
        await self.runner.call(self.sync.delete_queue, name)
        self._queues.pop(name, None)

    def topic(self, name: str) -> Topic:
        """The topic *name* (no database call: topics need no creation)."""
        t = self._topics.get(name)
        if t is None:
            t = self._topics[name] = Topic(self, self.sync.topic(name))
        return t

    async def topics(self) -> list[str]:
        """Names of topics that have at least one subscription."""
        return await self.runner.call(self.sync.topics)

    # -- tasks and jobs ---------------------------------------------------------------

    def task(self, fn: Any = None, /, **options: Any) -> Any:
        """Register a task on the sync Database (``@db.task``, as
        :meth:`liteq.Database.task`; nothing is written). Enqueue with
        ``await fn.adelay(...)`` or ``await fn.aenqueue(...)``."""
        return self.sync.task(fn, **options)

    def job(self, job_id: int) -> Job:
        """The async handle of job *job_id* (no database call)."""
        return Job(self, self.sync.job(job_id))

    async def enqueue(self, task: sync_task.Task[Any, Any], args: Sequence[Any] = (),
                      kwargs: dict[str, Any] | None = None, **options: Any) -> Job:
        """``task.enqueue(args, kwargs, **options)`` on this Database's threads: what
        ``Task.aenqueue`` runs."""
        job = await self.runner.call(task.enqueue, args, kwargs, **options)
        return Job(self, job)

    # -- schedules --------------------------------------------------------------------

    async def schedule(self, name: str, **options: Any) -> Any:
        """Create or replace schedule *name* (see :meth:`liteq.Database.schedule`)."""
        return await self.runner.call(self.sync.schedule, name, **options)

    async def unschedule(self, name: str) -> bool:
        """Delete schedule *name*; False if there was none."""
        return await self.runner.call(self.sync.unschedule, name)

    async def schedules(self) -> list[Any]:
        """Every schedule, by name."""
        return await self.runner.call(self.sync.schedules)

    # -- messages by id -------------------------------------------------------------

    async def message(self, message_id: int) -> Any:
        """Any message by id, for looking at (a sync :class:`liteq.Message`), or None."""
        return await self.runner.call(self.sync.message, message_id)

    async def ack(self, receipt: str) -> None:
        """Ack a delivery by its receipt ``"ID:TOKEN"``."""
        await self.runner.call(self.sync.ack, receipt)

    async def retry(self, message_id: int) -> bool:
        """Make a dead or cancelled message ready again."""
        return await self.runner.call(self.sync.retry, message_id)

    async def cancel(self, message_id: int) -> bool:
        """Cancel a ready or delayed message."""
        return await self.runner.call(self.sync.cancel, message_id)

    # -- transactions and the application's SQL -------------------------------------

    def transaction(self) -> Transaction:
        """``async with db.transaction():`` everything awaited inside (puts, acks,
        ``await db.execute(...)``) commits or rolls back together, as
        :meth:`liteq.Database.transaction`. The block holds one of this Database's
        threads for its whole length and runs every call made inside it there, on
        that thread's connection; other coroutines use the other threads."""
        return Transaction(self)

    async def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[tuple[Any, ...]]:
        """Run the application's own SQL (the engine's dialect); inside
        :meth:`transaction` it joins it. Returns every row."""
        return await self.runner.call(self.sync.execute, sql, params)

    # -- closing --------------------------------------------------------------------

    async def close(self) -> None:
        """Stop waiting, close the connections this Database opened (a sync Database
        given to :func:`connect` stays open) and let its threads end."""
        if self.closed:
            return
        self.closed = True
        if sync_task.ASYNC_FACES.get(self.sync) is self:
            del sync_task.ASYNC_FACES[self.sync]
        self.hub.close()
        try:
            if self._owned:
                await self.runner.call(self.sync.close)
        finally:
            self.runner.shutdown()

    async def __aenter__(self) -> Database:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<liteq.aio.Database {self.path!r}>"


_CANCELLED = (asyncio.CancelledError, asyncio.CancelledError(), None)


class Transaction:
    """``async with db.transaction():`` (see :meth:`Database.transaction`). Nested
    blocks make savepoints on the same thread."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._lane: Lane | None = None
        self._token: Any = None
        self._block: Any = None

    async def __aenter__(self) -> Database:
        runner = self.db.runner
        if runner.lane.get() is None:
            self._lane = runner.open_lane()
            self._token = runner.lane.set(self._lane)
        try:
            block = self._block = self.db.sync.transaction()  # a generator: no call yet
            # Entered but cancelled meanwhile: leave it again (a rollback) on its thread.
            await runner.settle(runner.submit(block.__enter__),
                                lambda _: block.__exit__(*_CANCELLED))
        except BaseException:
            self._end()
            raise
        return self.db

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        try:
            await self.db.runner.call(self._block.__exit__, exc_type, exc, tb)
        finally:
            self._end()

    def _end(self) -> None:
        if self._lane is not None:
            self.db.runner.lane.reset(self._token)
            self._lane.close()
            self._lane = None
