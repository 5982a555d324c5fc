"""Group commit for the async API's simplest puts, acks and claims of one queue.

Coroutines that ``await q.put(payload)`` (no key, headers, delay or block), ``await
msg.ack()`` or ``await q.get()`` at the same time each wait for one trip to a thread;
while one trip is under way, the next ones gather, and the next trip writes them all in
one transaction (``put_many`` / ``ack_many`` / one ``get_many`` whose messages are
dealt out in the order the calls came, up to each call's *n*). One coroutine alone
still makes one trip per call; eight at once make one trip for eight. Each call keeps
its own outcome: a put or ack batch that fails as a whole (a full queue, a payload that
does not encode) is retried item by item on the same thread, so a call fails only for
its own reason; a claim still leases each message with its own token. Inside ``async
with db.transaction()`` nothing is batched (each call joins the block as it comes).

After a trip, the batcher lets the loop run the callers it has just answered once
(``sleep(0)``) before it looks for more: a coroutine that calls again at once joins the
next trip instead of starting a new task for it.

Cancellation: a call cancelled before its batch left is dropped (never written or
claimed). One cancelled after: a put or an ack is written or not with its batch, as a
running call would be, and the caller leaves at once; a claim's caller waits for the
trip, then its messages are released (ready at once, the attempt not counted) before it
sees ``CancelledError``, the rule of :meth:`liteq.aio.runner.Runner.settle`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from ..errors import LeaseLost
from ..queue import Message as SyncMessage
from ..queue import Queue as SyncQueue
from .runner import Runner, held

__all__ = ["Batcher", "MAX_BATCH", "put_writer", "ack_writer", "claim_writer", "simple_put"]

#: The most calls one trip writes, and the most messages one merged claim takes.
MAX_BATCH = 500


class _Call:
    """One call waiting in a batcher: its item, the caller's future, and once taken, the
    future of the trip that carries it (done when the trip's cleanups ran)."""

    __slots__ = ("item", "fut", "trip")

    def __init__(self, item: Any, fut: asyncio.Future[Any]) -> None:
        self.item = item
        self.fut = fut
        self.trip: asyncio.Future[None] | None = None


class Batcher:
    """Gathers calls of one kind on one queue and writes them in batches (see above).
    *write* runs on a pool thread with a list of items and returns one
    ``(ok, value_or_exception)`` per item. *size* weighs an item against
    :data:`MAX_BATCH` (a claim of *n* weighs *n*). *cleanup*, if given, runs on a pool
    thread on the value of a call whose caller was cancelled after its trip left (a
    claim's release), before that caller sees ``CancelledError``."""

    def __init__(self, runner: Runner,
                 write: Callable[[list[Any]], list[tuple[bool, Any]]], *,
                 size: Callable[[Any], int] | None = None,
                 cleanup: Callable[[Any], Any] | None = None) -> None:
        self.runner = runner
        self.write = write
        self.size = size
        self.cleanup = cleanup
        self._pending: list[_Call] = []
        self._busy = False
        self._task: asyncio.Task[None] | None = None  # held: the loop keeps weak refs
        #: Calls each trip carried, if a list is put here (tests and benchmarks read it).
        self.trips: list[int] | None = None

    def enqueue(self, item: Any) -> asyncio.Future[Any]:
        """Put *item* in the next batch; the future of its own result or exception.
        Only for a batcher without *cleanup*: cancelling the future before its trip
        leaves drops the call (the trip skips it); after, the call is written or not
        with its batch. (One coroutine fewer per call than :meth:`submit`.)"""
        return self._add(_Call(item, asyncio.get_running_loop().create_future())).fut

    def _add(self, call: _Call) -> _Call:
        self._pending.append(call)
        if not self._busy:
            self._busy = True
            self._task = call.fut.get_loop().create_task(self._drain())
        return call

    async def submit(self, item: Any) -> Any:
        """Write *item* with the next batch; its own result or exception (for a claim:
        see the module docstring for what a cancellation does)."""
        call = self._add(_Call(item, asyncio.get_running_loop().create_future()))
        try:
            return await call.fut
        except asyncio.CancelledError:
            # A cancelled future is skipped by a trip not yet taken (never written).
            if call.trip is None or self.cleanup is None:
                raise
            if call.fut.cancelled():
                await held(call.trip)  # the trip cleans up after it
            elif call.fut.exception() is None:  # answered, then cancelled: ours to undo
                await held(asyncio.wrap_future(
                    self.runner.submit(self.cleanup, call.fut.result())))
            raise

    def _take(self) -> list[_Call]:
        """The next batch, without the calls cancelled while they waited."""
        pending = [c for c in self._pending if not c.fut.done()]
        size = self.size
        if size is None:
            count = min(len(pending), MAX_BATCH)
        else:
            count, weight = 0, 0
            for call in pending:
                weight += size(call.item)
                if count and weight > MAX_BATCH:
                    break
                count += 1
        batch, self._pending = pending[:count], pending[count:]
        return batch

    async def _drain(self) -> None:
        try:
            while True:
                while self._pending:
                    batch = self._take()
                    if batch:
                        await self._trip(batch)
                # Let the callers just answered run: those that call again at once
                # join the next trip of this task.
                await asyncio.sleep(0)
                if not self._pending:
                    return
        finally:
            self._busy = False

    async def _trip(self, batch: list[_Call]) -> None:
        trip: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for call in batch:
            call.trip = trip
        if self.trips is not None:
            self.trips.append(len(batch))
        try:
            try:
                outcomes = await self.runner.call(self.write, [c.item for c in batch])
            except BaseException as exc:  # the pool is gone, or the thread failed
                outcomes = [(False, exc)] * len(batch)
            undo = []
            for call, (ok, value) in zip(batch, outcomes, strict=True):
                if call.fut.done():  # its caller was cancelled while the trip ran
                    if ok and self.cleanup is not None:
                        undo.append(value)
                elif ok:
                    call.fut.set_result(value)
                else:
                    call.fut.set_exception(value)
            if undo:
                try:
                    await self.runner.call(_each, self.cleanup, undo)
                except Exception:  # noqa: S110 - as Runner.settle: the lease still ends
                    pass
        finally:
            trip.set_result(None)


def _each(fn: Callable[[Any], Any], values: list[Any]) -> None:
    for value in values:
        fn(value)


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


def claim_writer(q: SyncQueue) -> Callable[[list[int]], list[tuple[bool, Any]]]:
    """*write* for claims of up to *n* messages each: one ``get_many`` of their sum,
    dealt out in order (each message keeps its own lease token)."""

    def write(ns: list[int]) -> list[tuple[bool, Any]]:
        got = q.get_many(sum(ns))
        out: list[tuple[bool, Any]] = []
        start = 0
        for n in ns:
            out.append((True, got[start:start + n]))
            start += n
        return out

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
