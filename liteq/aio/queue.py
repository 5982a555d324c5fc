"""Async queues and messages: the sync :class:`liteq.Queue` and :class:`liteq.Message`,
awaited.

Every verb validates and runs exactly as the sync one does (it *is* the sync one, called
on one of the async Database's threads: :mod:`liteq.aio.runner`); only waiting is
rewritten, to sleep on the event loop (:mod:`liteq.aio.hub`) instead of in a thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from types import TracebackType
from typing import Any

from .. import queue as sync
from ..errors import InvalidArgument, LeaseLost, QueueFull
from ..validate import check_positive_int, check_seconds
from ..wake import Looks
from .batch import MAX_BATCH, Batcher, ack_writer, claim_writer, put_writer, simple_put
from .context import AsyncContext
from .hub import Line
from .runner import hold

__all__ = ["Queue", "Message", "Consumer"]

#: The longest sleep between two looks of a waiting get, as in the sync API.
RECHECK = 1.0
#: How often a blocked put (``block=True``) looks for room without a hint.
ROOM_RECHECK = 0.1


def _forward(name: str, doc: str) -> property:
    return property(lambda self: getattr(self.sync, name), doc=doc)


class Message:
    """A claimed message (what ``await q.get()`` returns): the sync
    :class:`liteq.Message`'s fields, with awaitable ``ack``, ``nack``, ``extend`` and
    ``fail``. ``async with msg:`` acks on success and nacks on an exception; a
    cancellation (``CancelledError``, also from ``asyncio.timeout()``) nacks it with
    ``delay=0``: ready again at once, the attempt counted (so a message that always
    times out still ends dead after ``max_attempts``).
    """

    __slots__ = ("sync", "_queue")

    id = _forward("id", "The message id.")
    queue = _forward("queue", "The queue's name.")
    payload = _forward("payload", "The decoded payload.")
    headers = _forward("headers", "The headers dict.")
    priority = _forward("priority", "Higher first.")
    run_at = _forward("run_at", "When it was (or is) due, epoch seconds.")
    attempts = _forward("attempts", "Deliveries so far, this one included.")
    enqueued_at = _forward("enqueued_at", "When it was put.")
    lease_until = _forward("lease_until", "When the lease ends, epoch seconds.")
    token = _forward("token", "The lease token of this delivery.")
    key = _forward("key", "The dedup key, or None.")
    state = _forward("state", "The state when read.")
    error = _forward("error", "The last error kept with it, or None.")
    receipt = _forward("receipt", "``ID:TOKEN``: acks this delivery from anywhere.")
    routing_key = _forward("routing_key", "The key a topic message was published with.")

    def __init__(self, queue: Queue, msg: sync.Message) -> None:
        #: The sync message this one wraps.
        self.sync = msg
        self._queue = queue

    async def ack(self) -> None:
        """Finish it (see :meth:`liteq.Message.ack`)."""
        await self._queue.ack(self)

    async def nack(self, delay: float | None = None, error: str | None = None) -> None:
        """Give it back for another delivery (see :meth:`liteq.Message.nack`)."""
        await self._queue.nack(self, delay=delay, error=error)

    async def extend(self, seconds: float) -> None:
        """Renew the lease to end *seconds* from now."""
        await self._queue.extend(self, seconds)

    async def fail(self, reason: str) -> None:
        """Send it to the dead letter place now, with *reason*; no retries."""
        await self._queue.fail(self, reason)

    async def __aenter__(self) -> Message:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        q = self._queue
        if exc is None:
            await q.db.runner.call(self.sync.__exit__, None, None, None)
        elif isinstance(exc, asyncio.CancelledError):
            await q.db.runner.call(_nack_unless_settled, q.sync, self.sync)
        else:
            await q.db.runner.call(self.sync.__exit__, exc_type, exc, tb)

    def __repr__(self) -> str:
        return repr(self.sync).replace("<Message", "<liteq.aio.Message", 1)


def _nack_unless_settled(q: sync.Queue, msg: sync.Message) -> None:
    """Give back a message whose handler was cancelled (ready at once, the attempt
    counted), unless the handler had finished it already (its token is then stale)."""
    try:
        q.nack(msg, 0, "cancelled while it was handled")
    except LeaseLost:
        pass


class Queue:
    """A queue of an async Database (``await db.queue(name)``): the verbs of
    :class:`liteq.Queue`, awaitable."""

    def __init__(self, db: AsyncContext, q: sync.Queue) -> None:
        self.db = db
        #: The sync queue every verb runs (on the async Database's threads).
        self.sync = q
        self.name = q.name
        self.id = q.id
        self._line = Line()
        #: The group commits of this queue's simple puts, acks and claims
        #: (:mod:`liteq.aio.batch`); set a batcher's ``trips`` to a list to record how
        #: many calls each trip carries.
        self.put_batches = Batcher(db.runner, put_writer(q))
        self.ack_batches = Batcher(db.runner, ack_writer(q))
        # A claim's item is its count: size=int weighs it as such.
        self.claim_batches = Batcher(db.runner, claim_writer(q), size=int,
                                     cleanup=self._release)

    # -- put ------------------------------------------------------------------------

    async def put(self, payload: Any, *, delay: float = 0, priority: int = 0,
                  key: str | None = None, headers: dict[str, Any] | None = None,
                  block: bool = False, timeout: float | None = None) -> int:
        """Add one message (see :meth:`liteq.Queue.put`); with *block*, wait on the
        loop (no thread) up to *timeout* seconds for room."""
        put = self.sync.put
        if simple_put(delay, priority, key, headers, block) and self.db.runner.lane.get() is None:
            mid: int = await self.put_batches.enqueue((payload, priority))  # batch.py
            return mid
        if not block:
            return await self.db.runner.call(put, payload, delay=delay, priority=priority,
                                             key=key, headers=headers)
        ids = await self._blocking(
            lambda: [put(payload, delay=delay, priority=priority, key=key, headers=headers)],
            timeout)
        return ids[0]

    async def put_many(self, payloads: Iterable[Any], *, delay: float = 0, priority: int = 0,
                       headers: dict[str, Any] | None = None, block: bool = False,
                       timeout: float | None = None) -> list[int]:
        """Add many messages in one transaction, all or none (see
        :meth:`liteq.Queue.put_many`)."""
        items = list(payloads)
        put_many = self.sync.put_many
        if not block:
            return await self.db.runner.call(put_many, items, delay=delay, priority=priority,
                                             headers=headers)
        return await self._blocking(
            lambda: put_many(items, delay=delay, priority=priority, headers=headers), timeout)

    async def _blocking(self, put: Any, timeout: float | None) -> list[int]:
        t = check_seconds(timeout, "timeout", allow_none=True)
        loop = asyncio.get_running_loop()
        deadline = None if t is None else loop.time() + t
        hub = self.db.hub
        while True:
            mark = hub.mark()
            try:
                ids: list[int] = await self.db.runner.call(put)
                return ids
            except QueueFull as exc:
                if exc.max_depth is not None and exc.extra > exc.max_depth:
                    raise  # can never fit
                left = None if deadline is None else deadline - loop.time()
                if left is not None and left <= 0:
                    raise
            # Room appears when a consumer acks: wake on its commit, look anyway.
            await hub.wait(mark, ROOM_RECHECK if left is None else min(left, ROOM_RECHECK))

    # -- get ------------------------------------------------------------------------

    async def get(self, wait: float = 0) -> Message | None:
        """Claim the next due message, or None if there is none within *wait* seconds;
        the wait costs no thread. Cancelled while waiting, it has claimed nothing;
        cancelled while its claim ran, what the claim took is released at once."""
        msgs = await self.get_many(1, wait=wait)
        return msgs[0] if msgs else None

    async def get_many(self, n: int, wait: float = 0) -> list[Message]:
        """Claim up to *n* due messages in one transaction, waiting up to *wait*
        seconds for at least one (see :meth:`get`)."""
        check_positive_int(n, "n")
        w = check_seconds(wait, "wait")
        assert w is not None
        hub, line = self.db.hub, self._line
        mark = hub.mark()
        # While a head waits, the queue was empty at its last look and the head looks
        # again on every commit: join the line without a claim of our own (10,000
        # waiters cost one look, not 10,000). Otherwise claim first: gets arriving
        # together share one claim (batch.py), however many they are.
        first = w == 0 or not line.busy
        if first:
            msgs = await self._claim(n)
            if msgs or w == 0:
                return msgs
        loop = asyncio.get_running_loop()
        deadline = loop.time() + w
        got = await line.enter(loop, deadline, n, self._give_back)
        if got is False:
            return []
        if got is not True:
            delivered: list[Message] = got  # claimed for us by the head (Line.deliver)
            return delivered
        try:
            # The first in line has just looked; a later one looks at once, since the
            # head before it may have left messages behind.
            return await self._look(n, deadline, Looks(claim=not first,
                                                       hinted=hub.generation != mark))
        finally:
            line.leave()

    async def _look(self, n: int, deadline: float, looks: Looks) -> list[Message]:
        """The head of the line: ``Queue.get_many``'s loop, sleeping on the hub."""
        hub = self.db.hub
        loop = hub.loop
        line = self._line
        while True:
            mark = hub.mark()
            # One trip to a thread per look: the probe (without the write lock) and,
            # when it finds a message ready, the claim -- for the sleepers in line too.
            want = n + line.wanted(max(0, MAX_BATCH - n))
            msgs, ready, until_due = await self._look_once(want, probe=not looks.claim)
            if msgs:
                hub.found()
                mine, extra = msgs[:n], line.deliver(msgs[n:])
                if extra:  # their sleepers left while the claim ran
                    try:
                        await self.release(extra)
                    except asyncio.CancelledError:
                        # Ours go back too; a release that did run is not redone
                        # (the lease token no longer matches).
                        await self._give_back(extra + mine)
                        raise
                return mine
            left = deadline - loop.time()
            if left <= 0:
                return []
            timeout = max(0.0, min(left, until_due, RECHECK))
            looks.woke(await hub.wait(mark, looks.delay(timeout, relook=not ready)))

    async def probe(self) -> tuple[bool, float]:
        """Without the write lock: is a message ready, and in how many seconds does the
        next delayed message fall due or lease run out (0 when one is ready)."""
        return await self.db.runner.call(self._probe)

    def _probe(self) -> tuple[bool, float]:
        backend = self.sync.db.backend
        ready, due_at = backend.probe(self.id)
        return ready, (0.0 if ready else due_at - backend.clock())

    def _probe_claim(self, n: int, probe: bool) -> tuple[list[sync.Message], bool, float]:
        backend = self.sync.db.backend
        if probe:
            ready, due_at = backend.probe(self.id)
            if not ready:
                return [], False, due_at - backend.clock()
        msgs = self.sync.get_many(n)
        if msgs:
            return msgs, True, 0.0
        return msgs, True, backend.wait_due(self.id) - backend.clock()

    async def _give_back(self, msgs: list[Message]) -> None:
        """Release *msgs* at once (ready, attempt not counted), cancellations of the
        caller held off until it is done."""
        await hold(self.db.runner.submit(self._release, [m.sync for m in msgs]))

    def _release(self, got: Any) -> None:
        msgs = got[0] if isinstance(got, tuple) else got
        if msgs:
            self.sync.db.backend.release(self.id, [(m.id, m.token) for m in msgs])

    async def _claim(self, n: int) -> list[Message]:
        runner = self.db.runner
        if runner.lane.get() is None:
            # Gets of several coroutines at once share one claim (batch.py).
            msgs = await self.claim_batches.submit(n)
        else:
            msgs = await runner.settle(runner.submit(self.sync.get_many, n), self._release)
        return [Message(self, m) for m in msgs]

    async def _look_once(self, n: int, probe: bool) -> tuple[list[Message], bool, float]:
        runner = self.db.runner
        msgs, ready, until_due = await runner.settle(
            runner.submit(self._probe_claim, n, probe), self._release)
        return [Message(self, m) for m in msgs], ready, until_due

    def consume(self, prefetch: int = 1, wait: float = RECHECK) -> Consumer:
        """``async for msg in q.consume(prefetch=10):`` every message, forever: claims
        up to *prefetch* at a time (waiting on the loop between them, each wait at most
        *wait* seconds before looking again). Use ``async with q.consume(...) as
        stream`` (or ``await stream.aclose()``) to give claimed-but-not-yet-yielded
        messages back at once when you stop; otherwise they wait for their lease."""
        check_positive_int(prefetch, "prefetch")
        w = check_seconds(wait, "wait")
        assert w is not None
        return Consumer(self, prefetch, w)

    # -- finishing ------------------------------------------------------------------

    async def ack(self, msg: Message) -> None:
        """Finish *msg* (LeaseLost if its token is stale); acks of several coroutines
        at once share a transaction (:mod:`liteq.aio.batch`)."""
        if self.db.runner.lane.get() is None:
            await self.ack_batches.enqueue(msg.sync)
        else:
            await self.db.runner.call(self.sync.ack, msg.sync)

    async def ack_many(self, msgs: Iterable[Message]) -> None:
        """Finish many messages in one transaction (see :meth:`liteq.Queue.ack_many`)."""
        await self.db.runner.call(self.sync.ack_many, [m.sync for m in msgs])

    async def nack(self, msg: Message, delay: float | None = None, error: str | None = None) -> None:
        """Give *msg* back for another delivery (see :meth:`liteq.Message.nack`)."""
        await self.db.runner.call(self.sync.nack, msg.sync, delay, error)

    async def extend(self, msg: Message, seconds: float) -> None:
        """Renew *msg*'s lease to end *seconds* from now."""
        await self.db.runner.call(self.sync.extend, msg.sync, seconds)

    async def fail(self, msg: Message, reason: str) -> None:
        """Bury *msg* now with *reason*."""
        await self.db.runner.call(self.sync.fail, msg.sync, reason)

    async def release(self, msgs: Iterable[Message]) -> None:
        """Give leased messages back at once without counting the attempt (what a
        cancelled get does with what it claimed)."""
        await self.db.runner.call(self._release, [m.sync for m in msgs])

    # -- looking and administration -------------------------------------------------

    async def peek(self, n: int = 10, state: str | None = "ready") -> list[sync.Message]:
        """Read up to *n* messages without claiming them (sync :class:`liteq.Message`
        objects: they are for looking at)."""
        return await self.db.runner.call(self.sync.peek, n, state)

    async def stats(self) -> dict[str, Any]:
        """Counts per state (see :meth:`liteq.Queue.stats`)."""
        return await self.db.runner.call(self.sync.stats)

    async def depth(self) -> int:
        """Unfinished messages (``len(q)`` of the sync API)."""
        return await self.db.runner.call(len, self.sync)

    async def config(self) -> Any:
        """The stored options, re-read now (a :class:`liteq.options.QueueConfig`)."""
        return await self.db.runner.call(self.sync.refresh)

    async def redrive(self, limit: int | None = None) -> int:
        """Make dead messages ready again; how many."""
        return await self.db.runner.call(self.sync.redrive, limit)

    async def purge(self, state: str | None = None) -> int:
        """Delete messages (all, or those in *state*); how many."""
        return await self.db.runner.call(self.sync.purge, state)

    async def prune(self, older_than: float | None = None) -> int:
        """Delete done and cancelled messages finished more than *older_than* s ago."""
        return await self.db.runner.call(self.sync.prune, older_than)

    async def cancel(self, message_id: int) -> bool:
        """Cancel a ready or delayed message; False if it is leased or finished."""
        return await self.db.runner.call(self.sync.cancel, message_id)

    async def expire(self) -> None:
        """Release expired leases and promote due delayed messages now."""
        await self.db.runner.call(self.sync.expire)

    def __repr__(self) -> str:
        return f"<liteq.aio.Queue {self.name!r} of {self.db.path}>"


class Consumer:
    """What :meth:`Queue.consume` returns: an async iterator of claimed messages."""

    def __init__(self, queue: Queue, prefetch: int, wait: float) -> None:
        self.queue = queue
        self.prefetch = prefetch
        self.wait = wait
        self._buffer: list[Message] = []
        self.closed = False

    def __aiter__(self) -> Consumer:
        return self

    async def __anext__(self) -> Message:
        while not self._buffer:
            if self.closed:
                raise StopAsyncIteration
            self._buffer = await self.queue.get_many(self.prefetch, wait=self.wait)
        return self._buffer.pop(0)

    async def aclose(self) -> None:
        """Stop: messages claimed but not yielded yet are released (ready at once)."""
        self.closed = True
        left, self._buffer = self._buffer, []
        if left:
            await self.queue.release(left)

    async def __aenter__(self) -> Consumer:
        if self.closed:
            raise InvalidArgument("this consumer was closed; call q.consume() again")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
