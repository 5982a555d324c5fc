"""The async Database's own threads: every database call of ``liteq.aio`` runs on one of
them, never on the event loop's thread.

A :class:`Runner` is a small bounded pool (``connect(threads=...)``, default 4). Each
thread keeps its own connection, as the sync API does for every thread (apsw and
psycopg connections are one per thread), so the pool opens at most that many. apsw
releases the GIL while SQLite works, so a lock wait or a slow disk in one thread never
stalls the loop.

**The hot thread first.** Idle threads wait on a stack, and a call goes to the one that
became idle last (a ``ThreadPoolExecutor`` wakes them in turn). Calls made one after
another so run on one thread and one connection: on SQLite a connection whose database
another connection wrote since its last transaction starts with a cold page cache, and
turn-taking between 4 connections made a put's own work on its thread 82-100 us instead
of 42-48 us (session 8). A second thread starts only when calls overlap. The threads are
daemons: one left idle by a Database never closed does not keep the process alive.

A **lane** pins one pool thread for the length of an ``async with db.transaction()``
block: the thread enters the sync ``transaction()`` (SQLite: ``BEGIN IMMEDIATE``) and
then runs, one after another, every call made from inside the block (the lane is found
through a context variable, so calls from other coroutines keep using the rest of the
pool), then commits or rolls back. The transaction's connection is that thread's.

**Cancellation.** :meth:`Runner.call` never lets a cancelled caller walk away from a
call that is still running: a call that had not started is dropped (it never runs);
one already running is waited for (further cancellations are held back meanwhile), then
its *cleanup* runs on its result (``Queue.get`` releases what a claim took), then the
caller sees ``CancelledError``. So when a cancelled ``await`` returns, the database is
as if the call had either not happened or finished, and nothing is leased by nobody.
"""

from __future__ import annotations

import asyncio
import contextvars
import queue
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from ..errors import InvalidArgument, LiteqError

__all__ = ["Runner", "Lane", "DEFAULT_THREADS", "hold", "held"]

T = TypeVar("T")

#: Threads of one async Database unless ``connect(threads=...)`` says otherwise.
DEFAULT_THREADS = 4

_END = object()


class Lane:
    """One pool thread held for a transaction: :meth:`submit` queues calls to run on it
    in order, until :meth:`close`."""

    def __init__(self) -> None:
        self._calls: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.closed = False

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """Queue ``fn(*args, **kwargs)`` on the lane's thread; its future."""
        if self.closed:
            raise InvalidArgument(
                "this transaction has ended: a task started inside 'async with "
                "db.transaction()' called the database after the block was left")
        cf: Future[T] = Future()
        self._calls.put((cf, fn, args, kwargs))
        return cf

    def run(self) -> None:
        """The lane's thread: run the queued calls in order until :meth:`close`."""
        while True:
            item = self._calls.get()
            if item is _END:
                return
            run(item)

    def close(self) -> None:
        """Let the thread go back to the pool once the calls queued so far ran."""
        self.closed = True
        self._calls.put(_END)


class Runner:
    """The bounded thread pool of one async Database (see the module docstring)."""

    def __init__(self, threads: int = DEFAULT_THREADS) -> None:
        self.threads = threads
        self._pool = Pool(threads)
        #: The lane of the transaction the current coroutine is inside, if any.
        self.lane: contextvars.ContextVar[Lane | None] = contextvars.ContextVar(
            "liteq_aio_lane", default=None)
        self.closed = False

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """Start ``fn(*args, **kwargs)`` on the current lane, else on a pool thread."""
        lane = self.lane.get()
        if lane is not None:
            return lane.submit(fn, *args, **kwargs)
        if self.closed:
            raise LiteqError("this liteq.aio Database is closed")
        return self._pool.submit(fn, *args, **kwargs)

    async def call(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` on a thread of this pool, awaited (see the module
        docstring for what a cancellation does)."""
        return await self.settle(self.submit(fn, *args, **kwargs), None)

    async def settle(self, cf: Future[T], cleanup: Callable[[T], Any] | None) -> T:
        """Await the call *cf*; if the caller is cancelled while it runs, wait for it,
        give its result to *cleanup* (on a pool thread), then raise CancelledError."""
        try:
            return await _awaitable(cf)
        except asyncio.CancelledError:
            if cf.cancel():
                raise  # it never started: nothing happened
            await hold(cf)
            if cleanup is not None and not cf.cancelled() and cf.exception() is None:
                await hold(self.submit(cleanup, cf.result()))
            raise

    def open_lane(self) -> Lane:
        """A new :class:`Lane` on one pool thread (it starts when one is free)."""
        lane = Lane()
        self._pool.submit(lane.run)
        return lane

    def shutdown(self) -> None:
        """Let the threads end once idle (they hold no call: every call is awaited);
        later calls raise LiteqError."""
        self.closed = True
        self._pool.shutdown()


Call = tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]


def run(item: Call) -> None:
    """Run one submitted call into its future (unless it was cancelled before)."""
    finish(item, execute(item))


def execute(item: Call) -> tuple[bool, Any] | None:
    """Run the call: ``(ok, result_or_exception)``, or None if it was cancelled before
    it started (it never runs)."""
    cf, fn, args, kwargs = item
    if not cf.set_running_or_notify_cancel():
        return None
    try:
        return True, fn(*args, **kwargs)
    except BaseException as err:
        return False, err


def finish(item: Call, outcome: tuple[bool, Any] | None) -> None:
    """Give the outcome of :func:`execute` to the call's future (its caller wakes)."""
    if outcome is None:
        return
    ok, value = outcome
    if ok:
        item[0].set_result(value)
    else:
        item[0].set_exception(value)


class Pool:
    """At most *threads* threads; the last one to become idle takes the next call (see
    the module docstring); calls beyond the threads wait in order."""

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self._lock = threading.Lock()
        self._waiting: deque[Call] = deque()  # calls while every thread is busy
        self._idle: list[_Idle] = []  # the last one is the hottest
        self._started = 0
        self._closed = False

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """Start ``fn(*args, **kwargs)`` on a thread; its future."""
        cf: Future[T] = Future()
        item: Call = (cf, fn, args, kwargs)
        with self._lock:
            if self._closed:
                raise LiteqError("this liteq.aio Database is closed")
            idle = self._idle.pop() if self._idle else None
            if idle is None:
                if self._started == self.threads:
                    self._waiting.append(item)
                    return cf
                self._started += 1
        if idle is not None:
            idle.hand(item)  # outside the lock: the woken thread takes it next
            return cf
        threading.Thread(target=self._work, args=(item,), daemon=True,
                         name=f"liteq-aio-{self._started}").start()
        return cf

    def _work(self, item: Call | None) -> None:
        me = _Idle()
        while item is not None:
            outcome = execute(item)
            # Back on the idle stack *before* the caller learns the outcome: its next
            # call (often made at once) then comes back to this thread.
            with self._lock:
                after = self._waiting.popleft() if self._waiting else None
                if after is None and not self._closed:
                    self._idle.append(me)
            finish(item, outcome)
            item = outcome = None  # drop the references before waiting
            if after is not None:
                item = after
            elif not self._closed:
                item = me.wait()

    def shutdown(self) -> None:
        """Refuse new calls; threads end once the calls already submitted ran."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for me in idle:
            me.hand(None)


class _Idle:
    """An idle thread's mailbox: one call (or None: end) handed to it, and its wake-up."""

    __slots__ = ("_item", "_wake")

    def __init__(self) -> None:
        self._item: Call | None = None
        self._wake = threading.Lock()
        self._wake.acquire()

    def hand(self, item: Call | None) -> None:
        self._item = item
        self._wake.release()

    def wait(self) -> Call | None:
        self._wake.acquire()
        item, self._item = self._item, None
        return item


def _awaitable(cf: Future[T]) -> asyncio.Future[T]:
    """An asyncio future that takes *cf*'s outcome: ``asyncio.wrap_future`` without
    its two-way chaining (cancelling the asyncio future does not cancel *cf*; settle()
    does that itself), one callback per call."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[T] = loop.create_future()
    cf.add_done_callback(lambda done: _post(loop, fut, done))
    return fut


def _post(loop: asyncio.AbstractEventLoop, fut: asyncio.Future[T], cf: Future[T]) -> None:
    try:
        loop.call_soon_threadsafe(_copy, fut, cf)
    except RuntimeError:
        pass  # the loop is closed: nobody waits any more


def _copy(fut: asyncio.Future[T], cf: Future[T]) -> None:
    if fut.done():
        return
    if cf.cancelled():
        fut.cancel()
    elif (exc := cf.exception()) is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(cf.result())


async def hold(cf: Future[Any]) -> None:
    """Wait until *cf* is done, cancellations of the caller held back meanwhile (they
    are not lost: the caller re-raises the one it is handling)."""
    await held(asyncio.wrap_future(cf))


async def held(fut: asyncio.Future[Any]) -> None:
    """:func:`hold` for an asyncio future."""
    while not fut.done():
        try:
            await asyncio.shield(fut)
        except asyncio.CancelledError:
            if fut.cancelled():
                return
    if not fut.cancelled():
        fut.exception()  # retrieved: no "exception was never retrieved" warning
