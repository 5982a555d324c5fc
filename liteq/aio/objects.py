"""Async topics and job handles: :class:`liteq.Topic` and :class:`liteq.Job`, awaited
(each verb is the sync one, run on the async Database's threads)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from .. import job as sync_job
from .. import queue as sync_queue
from .. import topic as sync_topic
from ..job import JobInfo, ResultTimeout
from ..validate import check_seconds
from .context import AsyncContext
from .queue import Queue

__all__ = ["Topic", "Tail", "Job"]

#: The longest sleep between two looks of ``Job.result(wait=...)``, as in the sync API.
RESULT_RECHECK = 0.5
#: The longest sleep between two reads of a waiting ``Tail.get``.
TAIL_RECHECK = 1.0


class Topic:
    """A topic of an async Database (``db.topic(name)``): the verbs of
    :class:`liteq.Topic`, awaitable."""

    def __init__(self, db: AsyncContext, topic: sync_topic.Topic) -> None:
        self.db = db
        #: The sync topic every verb runs.
        self.sync = topic
        self.name = topic.name

    async def subscribe(self, name: str, pattern: str = "#", **options: Any) -> Queue:
        """Create or update the durable subscription *name* (see
        :meth:`liteq.Topic.subscribe`); its async Queue."""
        q = await self.db.runner.call(self.sync.subscribe, name, pattern, **options)
        return self.db.wrap(q)

    async def unsubscribe(self, name: str) -> None:
        """Delete subscription *name* and its messages."""
        await self.db.runner.call(self.sync.unsubscribe, name)

    async def subscriptions(self) -> list[Queue]:
        """This topic's subscriptions."""
        return [self.db.wrap(q) for q in await self.db.runner.call(self.sync.subscriptions)]

    async def subscription(self, name: str) -> Queue:
        """The existing subscription *name* (InvalidArgument if there is none)."""
        return self.db.wrap(await self.db.runner.call(self.sync.subscription, name))

    async def publish(self, payload: Any, key: str = "", *, headers: dict[str, Any] | None = None,
                      delay: float = 0, priority: int = 0) -> int:
        """Deliver *payload* to every matching subscription in one transaction; how
        many deliveries (see :meth:`liteq.Topic.publish`)."""
        return await self.db.runner.call(self.sync.publish, payload, key, headers=headers,
                                         delay=delay, priority=priority)

    async def publish_many(self, items: Iterable[tuple[str, Any]], *,
                           headers: dict[str, Any] | None = None, delay: float = 0,
                           priority: int = 0) -> int:
        """Publish many ``(key, payload)`` pairs in one transaction, all or nothing."""
        return await self.db.runner.call(self.sync.publish_many, list(items), headers=headers,
                                         delay=delay, priority=priority)

    async def tail(self, pattern: str = "#") -> Tail:
        """Follow messages published from now on whose key matches *pattern* (see
        :meth:`liteq.Topic.tail`): ``async with await topic.tail("order.#") as tail:
        async for msg in tail: ...``."""
        return Tail(self.db, await self.db.runner.call(self.sync.tail, pattern))

    def __repr__(self) -> str:
        return f"<liteq.aio.Topic {self.name!r} of {self.db.path}>"


class Tail:
    """A temporary subscription being read (:meth:`Topic.tail`): the sync
    :class:`liteq.topic.Tail`, whose reads run on the async Database's threads and
    whose waits sleep on the loop. Messages come already acked (a tail is not durable)."""

    def __init__(self, db: AsyncContext, tail: sync_topic.Tail) -> None:
        self.db = db
        #: The sync tail every read runs.
        self.sync = tail

    async def get(self, wait: float = 0) -> sync_queue.Message | None:
        """The next message, or None after *wait* seconds without one."""
        w = check_seconds(wait, "wait")
        assert w is not None
        hub, call = self.db.hub, self.db.runner.call
        loop = asyncio.get_running_loop()
        deadline = loop.time() + w
        while True:
            mark = hub.mark()
            msg = await call(self.sync.get, 0)
            left = deadline - loop.time()
            if msg is not None or left <= 0 or self.sync.closed:
                return msg
            await hub.wait(mark, min(left, TAIL_RECHECK))

    def __aiter__(self) -> Tail:
        return self

    async def __anext__(self) -> sync_queue.Message:
        while not self.sync.closed:
            msg = await self.get(wait=1.0)
            if msg is not None:
                return msg
        raise StopAsyncIteration

    async def close(self) -> None:
        """Remove the temporary subscription and what is still waiting in it."""
        await self.db.runner.call(self.sync.close)

    async def __aenter__(self) -> Tail:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class Job:
    """A handle on one job of an async Database (what ``await task.adelay(...)`` and
    ``db.job(id)`` give). :meth:`refresh` reads it; :attr:`state` and :attr:`info`
    are as of the last read (None before one)."""

    __slots__ = ("db", "sync", "info")

    def __init__(self, db: AsyncContext, job: sync_job.Job) -> None:
        self.db = db
        #: The sync :class:`liteq.Job` every verb runs.
        self.sync = job
        #: The snapshot of the last :meth:`refresh` (None before one).
        self.info: JobInfo | None = None

    @property
    def id(self) -> int:
        """The job's id (its message's id)."""
        return self.sync.id

    @property
    def state(self) -> str | None:
        """The state as of the last :meth:`refresh` or :meth:`result` (None before)."""
        return None if self.info is None else self.info.state

    async def refresh(self) -> JobInfo:
        """Read everything about the job now (JobNotFound if it does not exist)."""
        self.info = await self.db.runner.call(self.sync.info)
        return self.info

    async def result(self, wait: float = 0) -> Any:
        """The task's return value, waiting up to *wait* seconds (on the loop: no
        thread) for the job to finish; raises as :meth:`liteq.Job.result` does."""
        w = check_seconds(wait, "wait")
        assert w is not None
        hub, call = self.db.hub, self.db.runner.call
        loop = asyncio.get_running_loop()
        deadline = loop.time() + w
        while True:
            mark = hub.mark()
            try:
                # wait=0: one read, and the outcome (value or error) exactly as sync.
                return await call(self.sync.result, 0)
            except ResultTimeout:
                left = deadline - loop.time()
                if left <= 0:
                    if w == 0:
                        raise
                    info = self.info = await call(self.sync.info)
                    raise ResultTimeout(f"job {self.id} ({info.task}) is still {info.state} "
                                        f"after waiting {w:g} s") from None
            await hub.wait(mark, min(left, RESULT_RECHECK))

    async def cancel(self) -> str:
        """Cancel the job (see :meth:`liteq.Job.cancel`): ``"cancelled"``,
        ``"requested"`` or ``"finished"``."""
        return await self.db.runner.call(self.sync.cancel)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Job) and other.sync == self.sync

    def __hash__(self) -> int:
        return hash(self.sync)

    def __repr__(self) -> str:
        return repr(self.sync).replace("<Job", "<liteq.aio.Job", 1)
