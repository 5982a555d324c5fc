"""Waiting without a thread: the async Database's one wake-up channel, read by the
event loop, and the line of waiting ``get`` calls of each queue.

:class:`Hub` owns one engine :class:`~liteq.backends.Waiter` per async Database (inotify
on the ``-wal`` file on SQLite; on PostgreSQL the pipe its LISTEN thread writes to, one
per waiter) and registers its descriptor with ``loop.add_reader``: a hint costs one
callback on the loop, which drains the descriptor and bumps :attr:`Hub.generation`, then
wakes the coroutines sleeping in :meth:`Hub.wait`. A coroutine takes the generation
before it looks for work (``mark``, the async twin of ``Waiter.arm()``), and
``wait(mark, ...)`` returns at once if a hint came since: a commit landing between an
empty look and the wait is never missed. Hints stay hints (spurious or early): callers
bound every wait and look again by ``liteq.wake.Looks``, as the sync API does. A waiter
without a descriptor (``$LITEQ_NO_INOTIFY``, no inotify, a ``-wal`` not created yet)
is polled with the sync waiter's backoff (1 ms to 50 ms), and watched again as soon as
it has one.

:class:`Line`: the waiting ``get`` calls of one queue form a line, and only its head
looks (claims, probes, sleeps on the hub, and re-checks every second); the others sleep
on a future of their own, at no cost, until the head leaves (it got messages, its wait
ended, it was cancelled), when the next one becomes head and looks at once. So 10,000
idle waiters on one queue cost one look per hint or second, not 10,000.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from ..backends.base import Waiter

__all__ = ["Hub", "Line"]

_POLL_MIN = 0.001
_POLL_MAX = 0.05


def _settle(fut: asyncio.Future[bool], value: bool) -> None:
    if not fut.done():
        fut.set_result(value)


class Hub:
    """One waiter of the engine, read by *loop* (see the module docstring)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, waiter: Waiter) -> None:
        self.loop = loop
        self.waiter = waiter
        #: Bumped on every hint; compare with a ``mark`` taken before a look.
        self.generation = 0
        self._sleepers: set[asyncio.Future[bool]] = set()
        self._fd = -1
        self._poll = _POLL_MIN
        self._closed = False
        self._watch()

    def _watch(self) -> None:
        """Register the waiter's descriptor (it may have made a new one)."""
        fd = self.waiter.fd
        if fd == self._fd:
            return
        if self._fd >= 0:
            self.loop.remove_reader(self._fd)
        self._fd = fd
        if fd >= 0:
            self.loop.add_reader(fd, self._readable)

    def _readable(self) -> None:
        # Drain (a read of a non-blocking descriptor: no database call), then wake.
        self.waiter.arm()
        self._watch()
        self.hint()

    def hint(self) -> None:
        """Wake every sleeper: something may have been committed."""
        self.generation += 1
        sleepers, self._sleepers = self._sleepers, set()
        for fut in sleepers:
            _settle(fut, True)

    def mark(self) -> int:
        """Take before looking for work; pass to :meth:`wait` after finding none."""
        return self.generation

    async def wait(self, mark: int, timeout: float) -> bool:
        """Sleep until a hint newer than *mark* (True) or *timeout* seconds (False)."""
        if self.generation != mark:
            return True
        if timeout <= 0 or self._closed:
            return False
        if self._fd < 0:
            # No descriptor: poll, and try to get one (arm() watches again).
            self.waiter.arm()
            self._watch()
            if self._fd < 0:
                await asyncio.sleep(min(timeout, self._poll))
                self._poll = min(self._poll * 2, _POLL_MAX)
                return self.generation != mark
        fut: asyncio.Future[bool] = self.loop.create_future()
        self._sleepers.add(fut)
        timer = self.loop.call_later(timeout, _settle, fut, False)
        try:
            return await fut
        finally:
            timer.cancel()
            self._sleepers.discard(fut)

    def found(self) -> None:
        """Work was found: polling (without a descriptor) starts fast again."""
        self._poll = _POLL_MIN

    def close(self) -> None:
        """Unregister and close the waiter; sleepers return as after a timeout."""
        self._closed = True
        if self._fd >= 0:
            self.loop.remove_reader(self._fd)
            self._fd = -1
        sleepers, self._sleepers = self._sleepers, set()
        for fut in sleepers:
            _settle(fut, False)
        self.waiter.close()


class Line:
    """The waiting ``get`` calls of one queue: one head looks, the rest sleep. When the
    head's look finds messages, it claims for the sleepers too (:meth:`wanted`) and
    hands them theirs (:meth:`deliver`): a burst after a quiet spell reaches every
    waiting consumer in one claim, not one claim per waiter."""

    def __init__(self) -> None:
        # Each sleeper: its future (True: you are head; False: your wait ended; a list:
        # your messages) and how many messages it asked for.
        self._waiting: deque[tuple[asyncio.Future[Any], int]] = deque()
        self._head = False

    @property
    def busy(self) -> bool:
        """True while a head is looking (a new caller would wait its turn)."""
        return self._head

    async def enter(self, loop: asyncio.AbstractEventLoop, deadline: float, n: int,
                    give_back: Callable[[list[Any]], Awaitable[None]]) -> bool | list[Any]:
        """Become the head: True at once if there is none, or when the one before
        leaves; False if *deadline* (``loop.time()``) passes first; or the (up to *n*)
        messages a head claimed for this caller. A True caller must call :meth:`leave`
        when it stops looking. Cancelled after messages were handed to it, the caller
        gives them back (*give_back*, cancellations held off) before it re-raises."""
        if not self._head:
            self._head = True
            return True
        fut: asyncio.Future[Any] = loop.create_future()
        self._waiting.append((fut, n))
        timer = loop.call_later(max(0.0, deadline - loop.time()), _settle, fut, False)
        try:
            got: bool | list[Any] = await fut
            return got
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                got = fut.result()
                if got is True:
                    self.leave()  # made head just as it was cancelled: pass the turn on
                elif got:
                    await give_back(got)  # handed messages just as it was cancelled
            raise
        finally:
            timer.cancel()

    def wanted(self, most: int) -> int:
        """How many messages the sleepers asked for, together, counted up to *most*
        (a look stays cheap behind 10,000 idle waiters)."""
        total = 0
        for fut, n in self._waiting:
            if total >= most:
                return most
            if not fut.done():
                total += n
        return min(total, most)

    def deliver(self, msgs: list[Any]) -> list[Any]:
        """Hand *msgs* to the sleepers in order, each up to what it asked for (they
        return them); what is left over (sleepers gone meanwhile) is returned."""
        start = 0
        while start < len(msgs) and self._waiting:
            fut, n = self._waiting.popleft()
            if not fut.done():
                fut.set_result(msgs[start:start + n])
                start += n
        return msgs[start:]

    def leave(self) -> None:
        """The head stops looking: the next waiting caller (if any) becomes head."""
        while self._waiting:
            fut, _ = self._waiting.popleft()
            if not fut.done():
                fut.set_result(True)
                return
        self._head = False
