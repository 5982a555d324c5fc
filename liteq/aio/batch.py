"""Group commit for the async API's simplest puts and acks of one queue.

Coroutines that ``await q.put(payload)`` (no key, headers, delay or block) or ``await
msg.ack()`` at the same time each wait for one trip to a thread; while one trip is under
way, the next ones gather, and the next trip writes them all in one transaction
(``put_many`` / ``ack_many``). One coroutine alone still makes one trip per call; eight
at once make about one trip for eight. Each call keeps its own outcome: a batch that
fails as a whole (a full queue, a payload that does not encode) is retried item by item
on the same thread, so a put fails only for its own reason. Inside ``async with
db.transaction()`` nothing is batched (each call joins the block as it comes).

Cancellation: a call cancelled before its batch left is dropped (never written); one
cancelled after is written or not with its batch, as a running call would be.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from ..errors import LeaseLost
from ..queue import Message as SyncMessage
from ..queue import Queue as SyncQueue
from .runner import Runner

__all__ = ["Batcher", "MAX_BATCH"]

#: The most calls one trip writes.
MAX_BATCH = 500


class Batcher:
    """Gathers calls of one kind on one queue and writes them in batches (see above).
    *write* runs on a pool thread with a list of items and returns one
    ``(ok, value_or_exception)`` per item."""

    def __init__(self, runner: Runner,
                 write: Callable[[list[Any]], list[tuple[bool, Any]]]) -> None:
        self.runner = runner
        self.write = write
        self._pending: list[tuple[Any, asyncio.Future[Any]]] = []
        self._busy = False
        self._task: asyncio.Task[None] | None = None  # held: the loop keeps weak refs

    async def submit(self, item: Any) -> Any:
        """Write *item* with the next batch; its own result or exception."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        entry = (item, fut)
        self._pending.append(entry)
        if not self._busy:
            self._busy = True
            self._task = loop.create_task(self._drain())
        try:
            return await asyncio.shield(fut)
        except asyncio.CancelledError:
            if entry in self._pending:
                self._pending.remove(entry)  # not taken yet: never written
            raise

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
                try:
                    outcomes = await self.runner.call(self.write, [item for item, _ in batch])
                except BaseException as exc:  # the pool is gone, or the thread failed
                    outcomes = [(False, exc)] * len(batch)
                for (_, fut), (ok, value) in zip(batch, outcomes, strict=True):
                    if fut.done():
                        continue
                    if ok:
                        fut.set_result(value)
                    else:
                        fut.set_exception(value)
        finally:
            self._busy = False


def put_writer(q: SyncQueue) -> Callable[[list[tuple[Any, int]]], list[tuple[bool, Any]]]:
    """*write* for plain puts ``(payload, priority)`` on *q*: one ``put_many`` per
    priority, or each on its own if that fails."""

    def write(items: list[tuple[Any, int]]) -> list[tuple[bool, Any]]:
        if len(items) == 1:
            return [_one(q.put, items[0][0], priority=items[0][1])]
        out: list[tuple[bool, Any] | None] = [None] * len(items)
        by_priority: dict[int, list[int]] = {}
        for i, (_, prio) in enumerate(items):
            by_priority.setdefault(prio, []).append(i)
        for prio, idx in by_priority.items():
            try:
                ids = q.put_many([items[i][0] for i in idx], priority=prio)
            except Exception:
                for i in idx:  # each for its own reason
                    out[i] = _one(q.put, items[i][0], priority=prio)
            else:
                for i, mid in zip(idx, ids, strict=True):
                    out[i] = (True, mid)
        return [o for o in out if o is not None]

    return write


def ack_writer(q: SyncQueue) -> Callable[[list[SyncMessage]], list[tuple[bool, Any]]]:
    """*write* for acks of messages of *q*: one ``ack_many``; a stale token raises
    LeaseLost for its own message only."""

    def write(msgs: list[SyncMessage]) -> list[tuple[bool, Any]]:
        if len(msgs) == 1:
            return [_one(q.ack, msgs[0])]
        try:
            q.ack_many(msgs)
        except LeaseLost as exc:
            lost = set(exc.ids)
            return [(False, LeaseLost(str(exc), [m.id])) if m.id in lost else (True, None)
                    for m in msgs]
        except Exception as exc:
            return [(False, exc)] * len(msgs)
        return [(True, None)] * len(msgs)

    return write


def _one(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[bool, Any]:
    try:
        return True, fn(*args, **kwargs)
    except Exception as exc:
        return False, exc


def simple_put(delay: Any, priority: Any, key: Any, headers: Any, block: bool) -> bool:
    """True for a put that can join a batch: due now, no key, headers or block, an int
    priority (the sync fast path's own test, bounds left to ``put_many``)."""
    return (delay == 0 and type(delay) is int and type(priority) is int and key is None
            and headers is None and not block)
