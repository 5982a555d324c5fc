"""The asyncio worker pool: ``liteq worker APP --pool asyncio --concurrency 500``
(``liteq.Worker(db, pool="asyncio")``).

One event loop per process runs up to *concurrency* jobs at once: an ``async def`` task
is a coroutine on the loop; a sync task runs in a bounded thread pool
(:data:`SYNC_THREADS` at most) beside it. What the thread pool guarantees holds here:

* **Claims.** One fetcher claims up to ``min(free slots, prefetch)`` jobs at a time from
  the first served queue that has some, through :mod:`liteq.aio` (database calls on the
  async Database's own threads, waiting on the loop: an idle worker holds no thread).
* **Leases.** A heartbeat coroutine renews every held lease each third of the shortest
  lease; an ``async def`` job whose cancellation was asked (``job.cancel()``, ``liteq
  cancel``) while it runs is cancelled in the loop at the next beat (its coroutine gets
  ``CancelledError``) and ends ``cancelled``. A sync task is told through
  ``checkpoint()``, as in the thread pool.
* **Time limits.** ``asyncio.timeout(task.timeout)`` around each run: past it the job
  ends with ``TaskTimeout`` and is retried. A sync task's thread gets ``TaskTimeout``
  raised in it, as in the thread pool (the next time it runs Python code).
* **Retries, failures, hooks, results**: as the thread pool (``liteq.settle``), with
  successes acked in batches together with their results rows. The job hooks run on the
  event loop (keep them quick), the job's :func:`liteq.current_job` is its own.
* **Shutdown.** The first SIGTERM/SIGINT stops claiming; running jobs get ``grace``
  seconds; then (or at a second signal) the ones still running are cancelled and their
  leases released: ready again at once, the attempt not counted. SIGKILL loses nothing:
  the leases run out and the jobs run again.
* **Atomic tasks** (``atomic=True``) run in a thread of the pool inside the transaction
  that acks them, exactly as in the thread pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import ctypes
import functools
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from .. import codec, workflow
from ..backends.records import State
from ..database import Database as SyncDatabase
from ..errors import LiteqError
from ..hooks import HookRunner, StatsHook, logger
from ..job import task_call
from ..queue import Message as SyncMessage
from ..queue import Queue as SyncQueue
from ..running import (
    Cancelled,
    Fail,
    JobContext,
    JobError,
    Outcome,
    Retry,
    TaskTimeout,
    outcome_row,
    raised,
    run_coroutine,
    set_current_job,
    timed_out,
)
from ..settle import settle
from ..task import Task
from ..wake import Looks
from .database import Database, connect
from .queue import Message, Queue

__all__ = ["AsyncPool", "AsyncHost", "SYNC_THREADS", "DB_THREADS"]

#: The most threads sync tasks of one asyncio worker run in at once.
SYNC_THREADS = 32
#: The async Database's threads in an asyncio worker (its database calls).
DB_THREADS = 4
_FLUSH_AFTER = 0.002  # successes wait this long to be acked together
_FLUSH_MAX = 500  # ... or until this many are waiting
_TICK = 0.1  # the supervisor's period (stop signals, grace, summaries)
_LOOK_FOR_QUEUES = 1.0


class AsyncHost(Protocol):
    """What the asyncio pool uses of the :class:`liteq.Worker` (a protocol, so that
    this module needs no import of the worker, which imports it)."""

    db: SyncDatabase
    tasks: dict[str, Task[Any, Any]]
    queues: list[str]
    concurrency: int
    prefetch: int
    burst: bool
    grace: float
    _stopping: bool
    _stop_now: bool
    _stop_deadline: float
    _hooks: HookRunner
    _stats: StatsHook
    _running_ids: Callable[[], list[int]]
    _running_jobs: Callable[[], int]

    def stop(self, now: bool = False) -> None: ...
    def existing_queues(self) -> list[SyncQueue]: ...
    def _announce_stop(self) -> None: ...
    def _periodic(self, state: dict[str, float]) -> None: ...
    def _timers(self) -> dict[str, float]: ...


class _Held:
    """A job this process holds: its message, lease token and the task running it."""

    __slots__ = ("msg", "task", "why", "coroutine", "thread")

    def __init__(self, msg: Message) -> None:
        self.msg = msg
        self.task: asyncio.Task[None] | None = None
        #: Why its coroutine is being cancelled: "cancel" (asked for) or "stop".
        self.why = ""
        #: Its task is a coroutine on the loop (cancelled when cancellation is asked).
        self.coroutine = False
        #: The executor thread running its sync task now (0: none).
        self.thread = 0


class AsyncPool:
    """Runs a worker's jobs on one event loop (see the module docstring)."""

    def __init__(self, worker: AsyncHost) -> None:
        self.w = worker
        self.held: dict[int, _Held] = {}
        self._done: list[tuple[Message, Task[Any, Any], JobContext, Outcome]] = []
        self._flushing: asyncio.Task[None] | None = None
        self._room = asyncio.Event()
        self._queues: list[Queue] = []
        self._offset = 0.0
        # The jobs running now, for the workers registry (read by the worker's heartbeat;
        # list() of a dict is one C call, safe beside the loop thread's changes).
        worker._running_ids = lambda: list(self.held)
        worker._running_jobs = lambda: len(self.held)

    def run(self) -> None:
        """Serve until stopped (in the calling thread, which becomes the loop's)."""
        asyncio.run(self._main())

    async def _main(self) -> None:
        w = self.w
        self.adb: Database = await connect(w.db, threads=DB_THREADS)
        self.sync_pool = ThreadPoolExecutor(max_workers=min(w.concurrency, SYNC_THREADS),
                                            thread_name_prefix="liteq-task")
        try:
            self._queues = [self.adb.wrap(q) for q in
                            await self.adb.runner.call(w.existing_queues)]
            store = w.db.backend
            self._offset = await self.adb.runner.call(store.clock) - time.time()
            fetcher = asyncio.create_task(self._fetch())
            beat = asyncio.create_task(self._heartbeat())
            try:
                await self._supervise(fetcher)
            finally:
                beat.cancel()
                fetcher.cancel()
                await asyncio.gather(beat, fetcher, return_exceptions=True)
                # A flush under way holds finished jobs it took from _done: let it end
                # (asyncio.run would cancel it at the exit, and its acks with it).
                if self._flushing is not None:
                    await asyncio.gather(self._flushing, return_exceptions=True)
                await self._flush()
        finally:
            self.sync_pool.shutdown(wait=False)
            await self.adb.close()

    # -- claiming ---------------------------------------------------------------------

    async def _fetch(self) -> None:
        w, hub, call = self.w, self.adb.hub, self.adb.runner.call
        looks = Looks(claim=True, hinted=False)
        looked_for_queues = time.monotonic()
        while not w._stopping:
            free = w.concurrency - len(self.held)
            if free <= 0:
                self._room.clear()
                await self._room.wait()
                continue
            mark = hub.mark()
            if time.monotonic() - looked_for_queues > _LOOK_FOR_QUEUES and \
                    len(self._queues) < len(w.queues):
                looked_for_queues = time.monotonic()
                self._queues = [self.adb.wrap(q) for q in await call(w.existing_queues)]
            until_due = math.inf
            msgs: list[Message] = []
            for q in self._queues:
                if not looks.claim:
                    ready, q_due = await q.probe()
                    if not ready:
                        until_due = min(until_due, q_due)
                        continue
                msgs = await q.get_many(min(free, w.prefetch))
                if msgs:
                    break
            if msgs:
                hub.found()
                if w._stopping:
                    await self._release(msgs)
                    return
                for m in msgs:
                    self._start(m)
                continue
            if w.burst:
                if not self.held:
                    w.stop()
                    return
                self._room.clear()
                await self._room.wait()
                continue
            if looks.claim:
                for q in self._queues:
                    until_due = min(until_due, (await q.probe())[1])
            timeout = max(0.0005, min(until_due, 1.0))
            looks.woke(await hub.wait(mark, looks.delay(timeout)))

    def _start(self, msg: Message) -> None:
        held = self.held[msg.id] = _Held(msg)
        held.task = asyncio.create_task(self._job(held), name=f"liteq-job-{msg.id}")

    async def _release(self, msgs: list[Message]) -> None:
        if msgs:
            await self.adb.runner.call(_release, self.w.db, [m.sync for m in msgs])
            self.w._stats.count("released", len(msgs))

    # -- running one job ----------------------------------------------------------------

    async def _job(self, held: _Held) -> None:
        msg = held.msg
        try:
            await self._run(held)
        except asyncio.CancelledError:
            if held.why == "stop" or not held.why:
                await self._release([msg])
        except Exception:
            logger.exception("job %d: the asyncio worker could not settle it; it runs again "
                             "once its lease runs out", msg.id)
        finally:
            self.held.pop(msg.id, None)
            self._room.set()

    async def _run(self, held: _Held) -> None:
        msg, m = held.msg, held.msg.sync
        q = m.owner
        call = task_call(m.payload)
        if call is None:
            ctx = JobContext(self.w.db, m.id, "?", q.name, m.attempts, m.attempts, [], {},
                             m.enqueued_at)
            why = JobError(None, "not a task message: the payload must be "
                                 "{'task': NAME, 'args': [...], 'kwargs': {...}}")
            await self._settle(m, ctx, None, Outcome("failed", 0.0, error=why), ran=False)
            return
        name, args, kwargs = call
        if "wf" in m.payload:  # a workflow step: its parents' results come first
            lead = await self.adb.runner.call(workflow.inputs, self.w.db, m.id, m.payload["wf"])
            args = [*lead, *args]
        task = self.w.tasks.get(name)
        max_attempts = task.max_attempts if task else await self.adb.runner.call(
            lambda: q.config.max_attempts)
        ctx = JobContext(self.w.db, m.id, name, q.name, m.attempts, max_attempts, args, kwargs,
                         m.enqueued_at)
        if task is None:
            why = JobError(None, f"unknown task {name!r}: no task of that name is registered in "
                                 f"this worker's application")
            await self._settle(m, ctx, None, Outcome("retrying", 0.0, error=why), ran=False)
            return
        if m.cancel_requested:
            why = JobError("liteq.Cancelled", "cancelled before it started")
            await self._settle(m, ctx, task, Outcome("cancelled", 0.0, error=why), ran=False)
            return
        self.w._hooks.call("before_job", ctx)
        held.coroutine = task.is_async and not task.atomic
        outcome, settled = await self._execute(held, task, ctx, args, kwargs)
        if outcome.state == "done" and not settled:
            self._done.append((msg, task, ctx, outcome))
            self._schedule_flush()
        elif settled:
            self.w._hooks.call("after_job", ctx, outcome)
        else:
            await self._settle(m, ctx, task, outcome, ran=True)

    async def _execute(self, held: _Held, task: Task[Any, Any], ctx: JobContext,
                       args: list[Any], kwargs: dict[str, Any]) -> tuple[Outcome, bool]:
        loop = asyncio.get_running_loop()
        ctx.started_at = time.time() + self._offset
        set_current_job(ctx)  # this asyncio task's context only
        start = time.perf_counter()
        settled = False
        limit = asyncio.timeout(task.timeout)
        try:
            async with limit:
                if task.atomic:
                    result, settled = await loop.run_in_executor(
                        self.sync_pool, contextvars.copy_context().run,
                        functools.partial(self._atomic, task, held.msg.sync, ctx, args, kwargs))
                    if not settled:
                        return Outcome("lost", time.perf_counter() - start), True
                elif task.is_async:
                    result = await task.fn(*args, **kwargs)
                else:
                    result = await loop.run_in_executor(
                        self.sync_pool, contextvars.copy_context().run,
                        functools.partial(_in_thread, held, task.fn, args, kwargs))
        except Retry as sig:
            return Outcome("retrying", time.perf_counter() - start,
                           error=JobError("liteq.Retry", sig.reason), delay=sig.delay), False
        except Fail as sig:
            return Outcome("failed", time.perf_counter() - start,
                           error=JobError("liteq.Fail", sig.reason)), False
        except Cancelled as sig:
            return Outcome("cancelled", time.perf_counter() - start,
                           error=JobError("liteq.Cancelled", str(sig))), False
        except asyncio.CancelledError:
            if held.why != "cancel":
                raise  # stopping: released by _job
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            return Outcome("cancelled", time.perf_counter() - start,
                           error=JobError("liteq.Cancelled", "cancelled while it ran")), False
        except TimeoutError as exc:
            if not limit.expired():  # the task's own TimeoutError
                return Outcome("retrying", time.perf_counter() - start,
                               error=JobError.from_exception(exc, skip=1)), False
            if held.thread:
                # A sync task's thread: stop it as the thread pool does, with TaskTimeout
                # raised in it the next time it runs Python code.
                logger.warning("job %d %s ran past its timeout: raising TaskTimeout in its "
                               "thread", held.msg.id, task.name)
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(held.thread),
                                                           ctypes.py_object(TaskTimeout))
            return timed_out(task.name, task.timeout or 0, start), False
        except BaseException as exc:  # SystemExit, KeyboardInterrupt ... fail the job only
            return raised(task, args, kwargs, exc, start), False
        finally:
            set_current_job(None)
        return Outcome("done", time.perf_counter() - start, result=result), settled

    def _atomic(self, task: Task[Any, Any], m: SyncMessage, ctx: JobContext, args: list[Any],
                kwargs: dict[str, Any]) -> tuple[Any, bool]:
        """In a task thread: run it inside the transaction that acks it (as the thread
        pool does); False when its lease was lost (everything rolled back)."""
        db, q = self.w.db, m.owner
        start = time.perf_counter()
        with contextlib.suppress(_Lost), db.transaction():
            if task.is_async:
                loop = asyncio.new_event_loop()
                try:
                    result = run_coroutine(loop, task.fn(*args, **kwargs), task.timeout)
                finally:
                    loop.close()
            else:
                result = task.fn(*args, **kwargs)
            if db.backend.ack(q.id, [(m.id, m.token or 0)], q.config.retention):
                logger.warning("job %d %s: its lease was lost before the ack; its writes "
                               "were rolled back and another worker runs it", m.id, task.name)
                raise _Lost()
            workflow.record(db, [(m.id, result)])  # releases its dependents
            db.backend.save_results([self._result_row(m, task, ctx, result,
                                                      time.perf_counter() - start)])
            return result, True
        return None, False

    async def _settle(self, m: SyncMessage, ctx: JobContext, task: Task[Any, Any] | None,
                      outcome: Outcome, ran: bool) -> None:
        await self.adb.runner.call(settle, self.w, m.owner, m.id, m.token or 0, m.attempts, ctx,
                                   task, outcome, ran)

    # -- acking successes in batches -------------------------------------------------

    def _schedule_flush(self) -> None:
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush(_FLUSH_AFTER))

    async def _flush(self, after: float = 0.0) -> None:
        if after:
            await asyncio.sleep(after)
        while self._done:
            done, self._done = self._done[:_FLUSH_MAX], self._done[_FLUSH_MAX:]
            lost = await self.adb.runner.call(self._ack, done)
            for msg, task, ctx, outcome in done:
                if msg.id in lost:
                    logger.warning("job %d %s finished, but its lease was lost: another "
                                   "worker runs it again", msg.id, task.name)
                    outcome.state = "lost"
                self.w._hooks.call("after_job", ctx, outcome)

    def _ack(self, done: list[tuple[Message, Task[Any, Any], JobContext, Outcome]]) -> set[int]:
        """On a database thread: ack finished jobs with their results rows, in one
        transaction; the ids whose lease was lost."""
        db, store = self.w.db, self.w.db.backend
        by_queue: dict[int, tuple[SyncQueue, list[tuple[int, int]]]] = {}
        for msg, _task, _ctx, _outcome in done:
            m = msg.sync
            by_queue.setdefault(m.owner.id, (m.owner, []))[1].append((m.id, m.token or 0))
        lost: set[int] = set()
        try:
            with db.transaction():
                for q, pairs in by_queue.values():
                    lost.update(store.ack(q.id, pairs, q.config.retention))
                # With the acks: the dependents of the jobs acked, with their results.
                workflow.record(db, [(m.sync.id, o.result) for m, _t, _c, o in done
                                     if m.sync.id not in lost])
                store.save_results([self._result_row(m.sync, t, c, o.result, o.duration)
                                    for m, t, c, o in done if m.id not in lost])
        except LiteqError:
            logger.exception("could not ack %d finished job(s); they will run again once "
                             "their leases run out", len(done))
            lost = {m.id for m, _t, _c, _o in done}
        return lost

    def _result_row(self, m: SyncMessage, task: Task[Any, Any], ctx: JobContext, result: Any,
                    duration: float) -> tuple[Any, ...]:
        value = note = None
        if task.store_result:
            try:
                value = codec.encode(result, self.w.db.max_payload)
            except LiteqError as exc:
                note = f"the return value was not stored: {exc}"
                logger.warning("job %d %s: %s", m.id, task.name, note)
        return outcome_row(ctx, State.DONE, attempts=m.attempts, now=self.w.db.backend.clock(),
                           ttl=task.result_ttl, error=note, value=value, duration=duration)

    # -- leases -------------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        store, call = self.w.db.backend, self.adb.runner.call
        while True:
            leases = await call(_leases, list(self._queues))
            await asyncio.sleep(max(0.05, min(leases.values(), default=30.0) / 3))
            by_queue: dict[int, list[tuple[int, int]]] = {}
            for mid, held in list(self.held.items()):
                by_queue.setdefault(held.msg.sync.owner.id, []).append((mid, held.msg.token or 0))
            for qid, pairs in by_queue.items():
                try:
                    lost, cancel = await call(store.heartbeat, pairs, leases.get(qid, 30.0))
                except LiteqError:
                    logger.exception("heartbeat failed; retrying at the next beat")
                    continue
                if lost:
                    logger.debug("heartbeat: leases lost on %s", lost)
                for mid in cancel:
                    asked = self.held.get(mid)
                    if asked is not None and asked.task is not None and asked.coroutine \
                            and not asked.why:
                        asked.why = "cancel"
                        asked.task.cancel()

    # -- supervising --------------------------------------------------------------------

    async def _supervise(self, fetcher: asyncio.Task[None]) -> None:
        w = self.w
        timers = w._timers()
        woken = False
        while True:
            w._announce_stop()
            if w._stopping:
                if not woken:
                    woken = True
                    self.adb.hub.hint()  # the fetcher stops looking now
                    self._room.set()
                if not self.held and fetcher.done():
                    return
                if w._stop_now or time.monotonic() > w._stop_deadline:
                    running = [(h, h.task) for h in self.held.values() if h.task is not None]
                    if running and not w._stop_now:
                        logger.warning("the grace period is over: releasing %d job(s) still "
                                       "running", len(running))
                    for h, job in running:
                        h.why = h.why or "stop"
                        job.cancel()
                    await asyncio.gather(*(job for _h, job in running), return_exceptions=True)
                    await asyncio.gather(fetcher, return_exceptions=True)
                    return
            await self.adb.runner.call(w._periodic, timers)
            await asyncio.sleep(_TICK)


class _Lost(Exception):
    """Internal: roll an atomic task's transaction back, its lease is gone."""


def _in_thread(held: _Held, fn: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """A sync task's call in an executor thread, noting the thread while it runs."""
    held.thread = threading.get_ident()
    try:
        return fn(*args, **kwargs)
    finally:
        held.thread = 0


def _leases(queues: list[Queue]) -> dict[int, float]:
    """On a database thread: each queue's lease (its stored options, re-read)."""
    return {q.id: q.sync.config.lease for q in queues}


def _release(db: SyncDatabase, msgs: list[SyncMessage]) -> None:
    by_queue: dict[int, list[tuple[int, int]]] = {}
    for m in msgs:
        by_queue.setdefault(m.owner.id, []).append((m.id, m.token or 0))
    for qid, pairs in by_queue.items():
        db.backend.release(qid, pairs)

