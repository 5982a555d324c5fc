"""The worker: claim task messages, run them, ack them; survive everything else.

::

    liteq.Worker(db, queues=["default"], concurrency=4, pool="thread").run()

How it works, and the decisions behind it:

* **Consumers.** Each consumer (a thread, or a child process with ``pool="process"``)
  claims a batch from the first of its queues that has due messages, runs the jobs
  one after another, and acks the successful ones together: one transaction for
  ``ack`` and the ``results`` rows. The batch size follows the average run time
  (about 50 ms of work per claim, at most ``prefetch``), so no-op tasks are claimed
  a hundred at a time and slow ones one at a time, leaving the rest to other
  consumers. An idle consumer sleeps on the database's wake-up (inotify on the WAL),
  so a new job starts well under a millisecond after its enqueue commits.
* **Leases.** A heartbeat thread per process renews the leases of every message the
  process holds, every third of the queue's lease, so a task longer than the lease
  is not run twice. A crashed worker needs no recovery: its leases run out.
* **Failures.** An exception (any ``BaseException``: ``SystemExit`` and
  ``KeyboardInterrupt`` raised by a task fail that job, never the worker) schedules
  a retry after the task's backoff (the queue's by default) until ``max_attempts``;
  then the job is failed (dead) with the traceback kept. ``Retry`` and ``Fail`` ask
  for that explicitly. A message naming a task this worker does not know is retried
  with the queue's backoff (another worker, or the next deploy, may know it) and
  goes dead with "unknown task NAME" after the queue's ``max_attempts``; a payload
  that is not a task call is dead at once, and one that does not decode is buried
  by the claim itself. Nothing a message holds can stop the worker.
* **Timeouts.** ``pool="process"``: the supervisor kills (SIGKILL) a child whose task
  runs past its timeout and starts a new one; the job counts the attempt.
  ``pool="thread"``: a thread cannot be killed, so :class:`~liteq.TaskTimeout` is
  raised inside the task's thread, which happens the next time it runs Python code:
  a task blocked in one long C call (a sleep, a read without timeout) is stopped
  only when that call returns. Async tasks get ``asyncio.wait_for``. Use the process
  pool when a hard limit matters.
* **Shutdown.** The first SIGTERM or SIGINT stops claiming; running jobs get
  ``grace`` seconds to finish; jobs claimed but not started, and after the grace the
  ones still running, are *released*: ready again at once for another worker, and
  the interrupted attempt does not count (a deploy never uses up attempts). A
  second signal stops now (running jobs are released, process-pool children
  killed). A thread-pool task still running after that is abandoned: its late ack
  fails harmlessly (its token is stale).
* **Process pool.** The supervisor (forking, reaping, timeouts, shared-memory slots)
  is :mod:`liteq.pool`; this module gives it the jobs' side.
* **Side effects exactly once.** A task registered with ``atomic=True`` runs inside
  the transaction that acks it: its ``db.execute(...)`` writes commit with the ack or
  not at all, so a crash at any moment makes it run again from scratch.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import math
import os
import select
import signal
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from . import codec
from .backends.records import State
from .errors import InvalidArgument, LeaseLost, LiteqError
from .hooks import Hook, HookRunner, LoggingHook, StatsHook, logger
from .pool import Held, ProcessPool, Slot
from .queue import Message, Queue
from .task import (
    DEFAULT_RESULT_TTL,
    Cancelled,
    Fail,
    JobContext,
    JobError,
    Outcome,
    Retry,
    Task,
    TaskTimeout,
    outcome_row,
    registry,
    run_coroutine,
    set_current_job,
    task_call,
)
from .validate import check_positive_int, check_seconds, validate_name
from .wake import Looks

if TYPE_CHECKING:
    from .database import Database

__all__ = ["Worker", "release", "DEFAULT_GRACE", "DEFAULT_PREFETCH", "POOLS"]

POOLS = ("thread", "process")
#: Seconds running jobs get to finish after the first stop signal. Below the 30 s
#: that systemd and Kubernetes wait before SIGKILL, leaving time to release leases.
DEFAULT_GRACE = 20.0
#: Most messages one consumer claims at a time.
DEFAULT_PREFETCH = 100
_BATCH_SECONDS = 0.05  # aim for about this much work per claim
_FLUSH_SECONDS = 0.05  # ack finished jobs at least this often within a batch
_HOLD_SECONDS = 0.5  # a batch still unstarted after this long goes back to the queue
_TICK = 0.1  # the supervisor's polling period (timeouts, children, summaries)
_PRUNE_EVERY = 60.0
_LOOK_FOR_QUEUES = 0.1  # how often a consumer looks for served queues that are missing

# -- releasing leases -----------------------------------------------------------------


def release(db: Database, items: Iterable[tuple[int, int, int]]) -> list[int]:
    """Give leased messages ``(id, token, qid)`` back, ready at once, without counting
    the attempt; return the ids whose token was stale (left unchanged)."""
    by_queue: dict[int, list[tuple[int, int]]] = {}
    for mid, token, qid in items:
        by_queue.setdefault(qid, []).append((mid, token))
    return [mid for qid, pairs in by_queue.items() for mid in db.backend.release(qid, pairs)]


# -- the heartbeat ----------------------------------------------------------------------

class _Leases:
    """The leases this process holds, renewed by one thread in one transaction."""

    def __init__(self, db: Database, queues: Sequence[Queue]) -> None:
        self.db = db
        self.queues = list(queues)
        self._held: dict[int, tuple[int, int]] = {}  # id -> (token, qid)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def watch(self, q: Queue) -> None:
        """Also renew leases of *q* (a served queue that appeared after the start),
        at its own lease's pace from now on."""
        with self._lock:
            self.queues = [*self.queues, q]
        self._wake.set()

    def add(self, msgs: Sequence[Message]) -> None:
        with self._lock:
            for m in msgs:
                self._held[m.id] = (m.token or 0, m.owner.id)

    def discard(self, ids: Iterable[int]) -> None:
        with self._lock:
            for mid in ids:
                self._held.pop(mid, None)

    def items(self) -> list[tuple[int, int, int]]:
        with self._lock:
            return [(mid, token, qid) for mid, (token, qid) in self._held.items()]

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="liteq-heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(5.0)

    def _interval(self) -> float:
        leases = [q.config.lease for q in self.queues] or [30.0]
        return max(0.05, min(leases) / 3)

    def _run(self) -> None:
        while True:
            self._wake.wait(self._interval())
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.beat()
            except Exception:
                logger.exception("heartbeat failed; retrying at the next beat")

    def beat(self) -> None:
        """Renew every held lease to a full lease from now."""
        items = self.items()
        if not items:
            return
        by_queue: dict[int, list[tuple[int, int]]] = {}
        for mid, token, qid in items:
            by_queue.setdefault(qid, []).append((mid, token))
        leases = {q.id: q.config.lease for q in self.queues}
        store = self.db.backend
        for qid, pairs in by_queue.items():
            lost, _cancel = store.heartbeat(pairs, leases.get(qid, 30.0))
            # A lost lease shows up (and is logged) when its job is settled;
            # cancellation is read by JobContext.checkpoint() itself.
            if lost:
                logger.debug("heartbeat: leases lost on %s", lost)


# -- settling a job that did not succeed ----------------------------------------------------

def _settle(worker: Worker, q: Queue, mid: int, token: int, attempts: int,
            ctx: JobContext, task: Task[Any, Any] | None, outcome: Outcome,
            ran: bool) -> None:
    """Record a run that did not succeed: retry, fail or cancel it, with its results
    row in the same transaction when the job is over; then call the hooks."""
    db, store = worker.db, worker.db.backend
    error = outcome.error
    text = error.format() if error else None
    max_attempts = task.max_attempts if task else q.config.max_attempts
    final: int | None = None
    try:
        with db.transaction():
            if outcome.state == "retrying" and attempts >= max_attempts:
                outcome.state = "failed"
            if outcome.state == "retrying":
                if outcome.delay is None:
                    backoff = task.backoff if task and task.backoff else q.config.backoff
                    outcome.delay = backoff.delay(attempts)
                if not store.retry(q.id, mid, token, outcome.delay, text):
                    row = store.message(mid)
                    final = State.CANCELLED if row is not None and row.state == State.CANCELLED else State.DEAD
            elif outcome.state == "cancelled":
                store.request_cancel(mid)  # flags it, so the retry below cancels it
                store.retry(q.id, mid, token, 0.0, text)
                final = State.CANCELLED
            else:
                store.fail(q.id, mid, token, text or "failed")
                final = State.DEAD
            if final is not None:
                now = store.clock()
                ttl = task.result_ttl if task else DEFAULT_RESULT_TTL
                store.save_results([outcome_row(ctx, final, attempts=attempts, now=now,
                                                ttl=ttl, error=text,
                                                duration=outcome.duration)])
    except LeaseLost:
        logger.warning("job %d %s: its lease was lost (the worker did not renew it in time); "
                       "another worker runs it", mid, ctx.task)
        outcome.state = "lost"
        final = None
    if final is not None:
        outcome.state = "cancelled" if final == State.CANCELLED else "failed"
    hooks = worker._hooks
    if outcome.state == "retrying" and error is not None:
        hooks.call("on_retry", ctx, error, outcome.delay or 0.0)
    elif outcome.state == "failed" and error is not None:
        hooks.call("on_failure", ctx, error)
    if ran:
        hooks.call("after_job", ctx, outcome)
    else:
        worker._stats.after_job(ctx, outcome)


# -- one consumer -------------------------------------------------------------------------

class _Consumer:
    """Claims, runs and acks in one thread (of the thread pool, or of a child)."""

    def __init__(self, worker: Worker, leases: _Leases, slot: Slot | None = None) -> None:
        self.w = worker
        self.db = worker.db
        self.store = worker.db.backend
        self.queues: list[Queue] = worker.existing_queues()
        self._looked_for_queues = time.monotonic()
        self.tasks = worker.tasks
        self.hooks = worker._hooks
        self.leases = leases
        self.slot = slot
        self.batch = 1
        self.avg = 0.0
        self._done: list[tuple[Message, Task[Any, Any], JobContext, Outcome]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._running: JobContext | None = None
        self._deadline = 0.0
        self._interrupted = False
        self.thread_id = 0
        self.current = 0  # the id of the job running now, or 0
        self.handled = 0  # messages taken from the batches so far
        self.recycle = 0  # pool child: why it stops to be replaced (RECYCLE_*), or 0

    def run(self) -> None:
        self.thread_id = threading.get_ident()
        try:
            while not self.w._stopping and not self.recycle:
                try:
                    msgs = self._claim()
                    if not msgs:
                        if self.w.burst:
                            break
                        continue
                    self._work(msgs)
                except LiteqError:
                    # The database said no (busy past busy_timeout, I/O error): what
                    # this consumer held runs again once its leases run out.
                    logger.exception("database error in the worker; trying again in 1 s")
                    self.w._pause(1.0)
                except TaskTimeout:
                    # A timeout raised into this thread just as its job ended landed
                    # in the worker's own code: that batch runs again after its lease.
                    logger.warning("a task timeout arrived after its job had ended; the "
                                   "jobs of that batch run again once their leases run out")
        except BaseException:
            logger.exception("worker consumer stopped by an unexpected error")
            self.w.stop()
            raise
        finally:
            if self._loop is not None:
                self._loop.close()

    def _claim(self) -> list[Message]:
        """The next batch, waiting for one while idle (until a stop).

        Claims every queue at first and after a wait that timed out (only a claim
        promotes due delayed messages and expired leases). After a wake-up by a commit,
        which may be anyone's (another consumer's ack, a put to another queue, a
        results row), it looks without the write lock first (``Backend.probe``) and
        claims only a queue that has something ready: idle consumers then no longer
        queue on the write lock behind every commit (one idle 4-thread worker on
        another queue cut a producer's puts from 67k to 29k/s). An empty look is
        repeated as in :meth:`Queue.get_many` (:class:`~liteq.wake.Looks`).
        """
        waiter = self.db.waiter()
        store = self.store
        looks = Looks(claim=True, hinted=False)
        while not self.w._stopping:
            waiter.arm()  # before looking: a commit from now on wakes the wait
            self._find_new_queues()
            due_at = math.inf
            for q in self.queues:
                if not looks.claim:
                    ready, q_due = store.probe(q.id)
                    if not ready:
                        due_at = min(due_at, q_due)
                        continue
                msgs = q.get_many(self._batch())
                if msgs:
                    waiter.found()
                    return msgs
            if self.w.burst:
                return []
            if looks.claim:
                due_at = min((store.next_due(q.id) for q in self.queues), default=math.inf)
            timeout = max(0.0005, min(due_at - store.clock(), 1.0))
            looks.sleep(lambda t: self.w._idle_wait(waiter, t), timeout)
        return []

    def _batch(self) -> int:
        """How many to claim: the batch size, but no more than a pool child with
        ``max_tasks_per_child`` may still run."""
        limit = self.w.max_tasks_per_child
        if self.slot is None or not limit:
            return self.batch
        return max(1, min(self.batch, limit - self.handled))

    def _spent(self) -> bool:
        """Pool child: past ``max_tasks_per_child`` or ``max_memory_per_child``? Then
        it stops claiming, to be replaced by a new child."""
        self.recycle = self.w._child_spent(self.handled)
        return bool(self.recycle)

    def _find_new_queues(self) -> None:
        """Serve a queue that did not exist at the start once something created it
        (a put does): looked for at most every ``_LOOK_FOR_QUEUES`` seconds."""
        if len(self.queues) == len(self.w.queues):
            return
        now = time.monotonic()
        if now - self._looked_for_queues < _LOOK_FOR_QUEUES:
            return
        self._looked_for_queues = now
        known = {q.name for q in self.queues}
        if not any(self.db.has_queue(n) for n in self.w.queues if n not in known):
            return
        self.queues = self.w.existing_queues()
        for q in self.queues:
            if q.name not in known:
                logger.info("queue %r now exists: serving it", q.name)
                self.leases.watch(q)

    def _work(self, msgs: list[Message]) -> None:
        self.leases.add(msgs)
        if self.slot is not None:
            self.slot.publish(held=[(m.id, m.token or 0, m.owner.id) for m in msgs])
        started = time.monotonic()
        flush_at = started + _FLUSH_SECONDS
        ran = 0
        try:
            for i, msg in enumerate(msgs):
                if self.w._stopping:
                    self._release(msgs[i:])
                    break
                if i and time.monotonic() - started > _HOLD_SECONDS:
                    # A slow job held the rest of the batch up: give the rest back
                    # so that idle consumers can take it now.
                    self._release(msgs[i:], count=False)
                    break
                if i and not msg.cancel_requested and \
                        time.monotonic() - started > _FLUSH_SECONDS:
                    msg.cancel_requested = self.store.cancel_requested(msg.id)
                self._run(msg)
                ran += 1
                self.handled += 1
                if self.slot is not None and self._spent():
                    self._release(msgs[i + 1:], count=False)
                    break
                if self._done and time.monotonic() >= flush_at:
                    self._flush()
                    flush_at = time.monotonic() + _FLUSH_SECONDS
            self._flush()
        except BaseException:
            # Stop renewing what was not settled: it runs again after its lease.
            self._done = []
            self.leases.discard(m.id for m in msgs)
            raise
        per_job = (time.monotonic() - started) / max(ran, 1)
        self.avg = per_job if not self.avg else 0.7 * self.avg + 0.3 * per_job
        self.batch = max(1, min(self.w.prefetch, int(_BATCH_SECONDS / max(self.avg, 1e-6))))
        if self.slot is not None:
            self.slot.publish(held=[], counts=self.w._stats.snapshot())

    def _release(self, msgs: list[Message], count: bool = True) -> None:
        release(self.db, [(m.id, m.token or 0, m.owner.id) for m in msgs])
        self.leases.discard(m.id for m in msgs)
        if count:
            self.w._stats.count("released", len(msgs))

    def _run(self, msg: Message) -> None:
        q = msg.owner
        call = task_call(msg.payload)
        if call is None:
            ctx = JobContext(self.db, msg.id, "?", q.name, msg.attempts, msg.attempts, [], {},
                             msg.enqueued_at)
            why = JobError(None, "not a task message: the payload must be "
                                 "{'task': NAME, 'args': [...], 'kwargs': {...}}")
            self._settle(msg, ctx, None, Outcome("failed", 0.0, error=why), ran=False)
            return
        name, args, kwargs = call
        task = self.tasks.get(name)
        max_attempts = task.max_attempts if task else q.config.max_attempts
        ctx = JobContext(self.db, msg.id, name, q.name, msg.attempts, max_attempts, args, kwargs,
                         msg.enqueued_at)
        if task is None:
            why = JobError(None, f"unknown task {name!r}: no task of that name is registered in "
                                 f"this worker's application")
            self._settle(msg, ctx, None, Outcome("retrying", 0.0, error=why), ran=False)
            return
        if msg.cancel_requested:
            why = JobError("liteq.Cancelled", "cancelled before it started")
            self._settle(msg, ctx, task, Outcome("cancelled", 0.0, error=why), ran=False)
            return
        self.hooks.call("before_job", ctx)
        outcome, settled = self._execute(task, msg, ctx, args, kwargs)
        if outcome.state == "done" and not settled:
            self._done.append((msg, task, ctx, outcome))
        elif settled:
            self.leases.discard((msg.id,))
            self.hooks.call("after_job", ctx, outcome)
        else:
            self._settle(msg, ctx, task, outcome, ran=True)

    def _settle(self, msg: Message, ctx: JobContext, task: Task[Any, Any] | None,
                outcome: Outcome, ran: bool) -> None:
        self._flush()  # keep acks in order with this job's own transaction
        _settle(self.w, msg.owner, msg.id, msg.token or 0, msg.attempts, ctx, task, outcome, ran)
        self.leases.discard((msg.id,))

    def _execute(self, task: Task[Any, Any], msg: Message, ctx: JobContext,
                 args: list[Any], kwargs: dict[str, Any]) -> tuple[Outcome, bool]:
        ctx.started_at = self.store.clock()
        set_current_job(ctx)
        self.current = msg.id
        timeout = task.timeout
        if self.slot is not None:
            # The supervisor kills this process past the deadline (async tasks get a
            # moment more, so that wait_for can end them cleanly first).
            deadline = time.monotonic() + timeout + (0.5 if task.is_async else 0) \
                if timeout else 0.0
            self.slot.publish(running=(msg.id, msg.token or 0, msg.owner.id, deadline),
                              counts=self.w._stats.snapshot())
        elif timeout and not task.is_async:
            with self._lock:
                self._deadline = time.monotonic() + timeout
                self._interrupted = False
                self._running = ctx
        start = time.perf_counter()
        settled = False
        try:
            try:
                if task.atomic:
                    result, settled = self._atomic(task, msg, ctx, args, kwargs)
                    if not settled:
                        return Outcome("lost", time.perf_counter() - start), True
                elif task.is_async:
                    result = run_coroutine(self._event_loop(), task.fn(*args, **kwargs), timeout)
                else:
                    result = task.fn(*args, **kwargs)
            finally:
                if self._running is not None:
                    with self._lock:
                        self._running = None
                set_current_job(None)
                self.current = 0
        except Retry as sig:
            return Outcome("retrying", time.perf_counter() - start,
                           error=JobError("liteq.Retry", sig.reason), delay=sig.delay), False
        except Fail as sig:
            return Outcome("failed", time.perf_counter() - start,
                           error=JobError("liteq.Fail", sig.reason)), False
        except Cancelled as sig:
            return Outcome("cancelled", time.perf_counter() - start,
                           error=JobError("liteq.Cancelled", str(sig))), False
        except TaskTimeout:
            why = JobError("liteq.TaskTimeout", f"task {task.name} exceeded its timeout of "
                                                f"{timeout or 0:g} s")
            return Outcome("retrying", time.perf_counter() - start, error=why), False
        except BaseException as exc:  # SystemExit, KeyboardInterrupt ... fail the job only
            unfit = task.binding_error(args, kwargs) if isinstance(exc, TypeError) else None
            if unfit is not None:
                # The call itself could not be made: no attempt would do better.
                error = JobError("TypeError", f"the job's arguments do not fit the task: {unfit}; "
                                 f"failed without retrying (did the task's signature change "
                                 f"after the job was enqueued?)")
                return Outcome("failed", time.perf_counter() - start, error=error), False
            return Outcome("retrying", time.perf_counter() - start,
                           error=JobError.from_exception(exc, skip=1)), False
        finally:
            if self.slot is not None:
                self.slot.publish(running=(0, 0, 0, 0.0))
        return Outcome("done", time.perf_counter() - start, result=result), settled

    def _atomic(self, task: Task[Any, Any], msg: Message, ctx: JobContext, args: list[Any],
                kwargs: dict[str, Any]) -> tuple[Any, bool]:
        q = msg.owner
        start = time.perf_counter()
        with contextlib.suppress(_Lost), self.db.transaction():
            if task.is_async:
                result = run_coroutine(self._event_loop(), task.fn(*args, **kwargs), task.timeout)
            else:
                result = task.fn(*args, **kwargs)
            if self.store.ack(q.id, [(msg.id, msg.token or 0)], q.config.retention):
                logger.warning("job %d %s: its lease was lost before the ack; its writes "
                               "were rolled back and another worker runs it", msg.id, task.name)
                raise _Lost()  # rolls the task's own writes back with the ack
            self.store.save_results([self._result_row(
                msg, task, ctx, result, time.perf_counter() - start)])
            return result, True
        return None, False

    def _result_row(self, msg: Message, task: Task[Any, Any], ctx: JobContext,
                    result: Any, duration: float) -> tuple[Any, ...]:
        value = note = None
        if task.store_result:
            try:
                value = codec.encode(result, self.db.max_payload)
            except LiteqError as exc:
                note = f"the return value was not stored: {exc}"
                logger.warning("job %d %s: %s", msg.id, task.name, note)
        now = self.store.clock()
        return outcome_row(ctx, State.DONE, attempts=msg.attempts, now=now, ttl=task.result_ttl,
                           error=note, value=value, duration=duration)

    def _flush(self) -> None:
        """Ack the jobs that succeeded, with their results rows, in one transaction."""
        if not self._done:
            return
        done, self._done = self._done, []
        by_queue: dict[int, tuple[Queue, list[tuple[int, int]]]] = {}
        for msg, _task, _ctx, _outcome in done:
            by_queue.setdefault(msg.owner.id, (msg.owner, []))[1].append((msg.id, msg.token or 0))
        lost: set[int] = set()
        try:
            with self.db.transaction():
                for q, pairs in by_queue.values():
                    lost.update(self.store.ack(q.id, pairs, q.config.retention))
                self.store.save_results([self._result_row(m, t, c, o.result, o.duration)
                                         for m, t, c, o in done if m.id not in lost])
        except LiteqError:
            logger.exception("could not ack %d finished job(s); they will run again once "
                             "their leases run out", len(done))
            lost = {m.id for m, _t, _c, _o in done}
        for msg, task, ctx, outcome in done:
            if msg.id in lost:
                logger.warning("job %d %s finished, but its lease was lost: another worker "
                               "runs it again", msg.id, task.name)
                outcome.state = "lost"
            self.hooks.call("after_job", ctx, outcome)
        self.leases.discard(m.id for m, _t, _c, _o in done)

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        return self._loop

    def enforce_timeout(self, now: float) -> None:
        """Thread pool: raise TaskTimeout in this consumer's thread past the deadline."""
        with self._lock:
            if self._running is None or self._interrupted or now < self._deadline:
                return
            self._interrupted = True
            logger.warning("job %d %s ran past its timeout: raising TaskTimeout in its thread",
                           self._running.id, self._running.task)
            ctypes.pythonapi.PyThreadState_SetAsyncExc(
                ctypes.c_ulong(self.thread_id), ctypes.py_object(TaskTimeout))


class _Lost(Exception):
    """Internal: roll an atomic task's transaction back, its lease is gone."""


# -- the worker ----------------------------------------------------------------------------

class Worker(ProcessPool):
    """Runs the tasks registered on *db* from *queues*, until stopped.

    *queues* are served in order of preference (a claim takes from the first one
    that has due jobs); default: the queues of the registered tasks, in order of
    registration, or ``["default"]``. A served queue that does not exist is created
    at the start if a registered task uses it; any other is logged as a warning
    (a typo?) and left missing, and is served once something creates it.
    *concurrency* consumers run at once: threads
    (``pool="thread"``, default 4) or child processes (``pool="process"``, default
    one per CPU; Linux and macOS, by ``fork()``). *grace* seconds for running jobs to
    finish after a stop signal, *prefetch* the most jobs claimed at once, *burst* to
    stop once no job is due, *hooks* to add :class:`~liteq.Hook` objects,
    *summary_interval* seconds between summary log lines (0: none).

    ``pool="process"`` only: a child that has run *max_tasks_per_child* jobs, or
    whose resident memory is over *max_memory_per_child* MB after a job, finishes
    that job, gives back the jobs it claimed but did not start, and is replaced by
    a new child (for libraries that leak).
    """

    def __init__(self, db: Database, queues: Sequence[str] | None = None, *,
                 concurrency: int | None = None, pool: str = "thread",
                 hooks: Sequence[Hook] = (), grace: float = DEFAULT_GRACE,
                 prefetch: int = DEFAULT_PREFETCH, burst: bool = False,
                 summary_interval: float = 60.0, install_signals: bool = True,
                 max_tasks_per_child: int | None = None,
                 max_memory_per_child: float | None = None) -> None:
        if pool not in POOLS:
            raise InvalidArgument(f"pool must be 'thread' or 'process', got {pool!r}")
        self._set_child_limits(pool, max_tasks_per_child, max_memory_per_child)
        if pool == "process" and not hasattr(os, "fork"):
            raise InvalidArgument("pool='process' needs fork(), which this system lacks")
        self.db = db
        self.tasks = registry(db)
        if queues is None:
            queues = list(dict.fromkeys(t.queue for t in self.tasks.values())) or ["default"]
        if isinstance(queues, str) or not queues:
            raise InvalidArgument(f"queues must be a non-empty list of queue names, got {queues!r}")
        self.queues = [validate_name(q) for q in queues]
        self.pool = pool
        default = 4 if pool == "thread" else (os.cpu_count() or 1)
        self.concurrency = check_positive_int(default if concurrency is None else concurrency,
                                         "concurrency") or 1
        self.grace = check_seconds(grace, "grace") or 0.0
        self.prefetch = min(check_positive_int(prefetch, "prefetch") or 1, 1000)
        self.burst = bool(burst)
        self.summary_interval = check_seconds(summary_interval, "summary_interval") or 0.0
        self.install_signals = install_signals
        for h in hooks:
            if not isinstance(h, Hook):
                raise InvalidArgument(f"hooks must be liteq.Hook instances, got {h!r}")
        self._user_hooks = list(hooks)
        self._stats = StatsHook()
        self._hooks = HookRunner([LoggingHook(), self._stats, *self._user_hooks])
        self._stopping = False
        self._stop_now = False
        self._stop_deadline = 0.0
        self._signals = 0
        self._signal_name = ""
        self._announced = 0  # stop phases logged: 1 stopping, 2 stopping now
        self._running_jobs: Callable[[], int] = lambda: sum(1 for c in self._consumers
                                                            if c.current)
        self._pipes: tuple[int, int, int, int] | None = None
        self._counts: Callable[[], dict[str, int]] = self._stats.snapshot
        self._parent = os.getpid()
        self._consumers: list[_Consumer] = []
        self._threads: list[threading.Thread] = []

    # -- control ------------------------------------------------------------------------

    def run(self) -> None:
        """Serve until stopped (a signal, :meth:`stop`, or in *burst* mode no due job)."""
        if self._pipes is not None:
            raise InvalidArgument("this worker is already running")
        self._open_pipes()
        self._stopping = self._stop_now = False
        self._signals = self._announced = 0
        self._parent = os.getpid()
        old = self._install_signals()
        self._warn_missing_queues()
        self._warn_limits()
        self._hooks.call("on_worker_start", self)
        try:
            if self.pool == "thread":
                self._run_threads()
            else:
                self._run_processes()
        except KeyboardInterrupt:
            self.stop(now=True)
            raise
        finally:
            for signum, handler in old.items():
                signal.signal(signum, handler)
            self._hooks.call("on_worker_stop", self)
            self._close_pipes()

    def stop(self, now: bool = False) -> None:
        """Stop claiming; let running jobs finish within *grace* (or, with *now*,
        release them at once). Safe to call from any thread or a signal handler."""
        if now:
            self._stop_now = True
        if not self._stopping:
            self._stop_deadline = time.monotonic() + self.grace
            self._stopping = True
        if self._pipes is not None:
            for fd in (self._pipes[1], self._pipes[3]):
                with contextlib.suppress(OSError):
                    os.write(fd, b"x")

    def counts(self) -> dict[str, int]:
        """Jobs started, done, retried, failed, cancelled, released, lost so far."""
        return self._counts()

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._signals += 1
        self._signal_name = signal.Signals(signum).name
        self.stop(now=self._signals > 1)

    def _announce_stop(self) -> None:
        """Log, once per phase and within a supervisor tick of the signal (not in
        the handler, which may interrupt a log call), what stopping does now."""
        phase = 2 if self._stop_now else 1 if self._stopping else 0
        if phase <= self._announced:
            return
        running = self._running_jobs()
        jobs = f"{running} job{'s' if running != 1 else ''} running"
        why = f"{self._signal_name} received" if self._signal_name else "stop requested"
        if phase == 1:
            self._announced = 1
            if not running:
                logger.info("%s: stopping (no job running)", why)
            else:
                again = (f"; send {self._signal_name} or SIGINT again to stop now"
                         if self._signal_name else "")
                logger.warning("%s: stopping; %s may finish within %g s (the grace "
                               "period), then they are released for another worker%s",
                               why, jobs, self.grace, again)
        else:
            self._announced = 2
            logger.warning("%s again: stopping now; %s released for another worker",
                           self._signal_name or "stop", jobs)

    def _install_signals(self) -> dict[int, Any]:
        if not self.install_signals or threading.current_thread() is not threading.main_thread():
            return {}
        wanted = [signal.SIGTERM, signal.SIGINT]
        old: dict[int, Any] = {s: signal.getsignal(s) for s in wanted}
        for s in wanted:
            signal.signal(s, self._on_signal)
        if self.pool == "process":
            old[signal.SIGCHLD] = signal.getsignal(signal.SIGCHLD)
            signal.signal(signal.SIGCHLD, lambda *_: self._poke())
        return old

    def _poke(self) -> None:
        if self._pipes is not None:
            with contextlib.suppress(OSError):
                os.write(self._pipes[3], b"x")

    def _open_pipes(self) -> None:
        stop_r, stop_w = os.pipe()
        wake_r, wake_w = os.pipe()
        for fd in (stop_w, wake_r, wake_w):
            os.set_blocking(fd, False)
        self._pipes = (stop_r, stop_w, wake_r, wake_w)

    def _close_pipes(self) -> None:
        if any(t.is_alive() for t in self._threads):
            # A task still runs in an abandoned thread, which may yet wait on these
            # descriptors: leave them open rather than let the numbers be reused.
            self._pipes = None
            return
        if self._pipes is not None:
            for fd in self._pipes:
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._pipes = None

    def _idle_wait(self, waiter: Any, timeout: float) -> bool:
        """A consumer's wait for work: a commit, a stop, or *timeout*. True when
        woken by a commit (a hint: it may be anyone's, and not visible yet)."""
        assert self._pipes is not None
        if os.getpid() != self._parent and os.getppid() != self._parent:
            self.stop()  # a pool child whose supervisor is gone (where PDEATHSIG is not)
            return False
        if waiter.fd >= 0:
            readable, _, _ = select.select([waiter.fd, self._pipes[0]], [], [], timeout)
            return waiter.fd in readable
        return bool(waiter.wait(min(timeout, 0.05)))

    def _pause(self, seconds: float) -> None:
        assert self._pipes is not None
        select.select([self._pipes[0]], [], [], seconds)

    def _supervise_wait(self, timeout: float = _TICK) -> None:
        assert self._pipes is not None
        select.select([self._pipes[2]], [], [], timeout)
        with contextlib.suppress(BlockingIOError, OSError):
            while os.read(self._pipes[2], 4096):
                pass

    def existing_queues(self) -> list[Queue]:
        """The served queues that exist now, in order of preference."""
        return [self.db.queue(n) for n in self.queues if self.db.has_queue(n)]

    def _warn_missing_queues(self) -> None:
        """Create the missing queues that tasks use (before any child starts); warn
        about the others, probably mistyped, and leave them missing: a consumer
        serves one once something is put on it."""
        used = {t.queue for t in self.tasks.values()}
        for name in self.queues:
            if name in used:
                self.db.queue(name)
            elif not self.db.has_queue(name):
                logger.warning("queue %r does not exist and no task of this app uses it "
                               "(their queues: %s); it is served once something is put on "
                               "it: is the name right?", name, ", ".join(sorted(used)) or "none")

    def _warn_limits(self) -> None:
        for task in self.tasks.values():
            if task.queue in self.queues:
                limit = self.db.queue(task.queue).config.max_attempts
                if task.max_attempts > limit:
                    logger.warning("task %s has max_attempts=%d but its queue %r allows %d "
                                   "deliveries: raise the queue's with db.queue(%r, "
                                   "max_attempts=%d)", task.name, task.max_attempts,
                                   task.queue, limit, task.queue, task.max_attempts)

    def _periodic(self, state: dict[str, float]) -> None:
        now = time.monotonic()
        if self.summary_interval and now >= state["summary"]:
            seconds = now - state["last_summary"]
            state["summary"], state["last_summary"] = now + self.summary_interval, now
            self._hooks.call("on_summary", self, self.counts(), seconds)
        if now >= state["prune"]:
            state["prune"] = now + _PRUNE_EVERY
            try:
                self.db.prune_results()
            except LiteqError:
                logger.exception("pruning expired job results failed; trying again later")

    def _timers(self) -> dict[str, float]:
        now = time.monotonic()
        return {"summary": now + (self.summary_interval or 0), "last_summary": now,
                "prune": now}

    # -- thread pool --------------------------------------------------------------------

    def _run_threads(self) -> None:
        leases = _Leases(self.db, self.existing_queues())
        leases.start()
        self._consumers = [_Consumer(self, leases) for _ in range(self.concurrency)]
        self._threads = threads = [
            threading.Thread(target=c.run, name=f"liteq-worker-{i}", daemon=True)
            for i, c in enumerate(self._consumers)]
        for t in threads:
            t.start()
        timers = self._timers()
        try:
            while any(t.is_alive() for t in threads):
                self._announce_stop()
                if self._stop_now or (self._stopping and time.monotonic() > self._stop_deadline):
                    held = leases.items()
                    if held and not self._stop_now:
                        logger.warning("the grace period is over: releasing %d job(s) still "
                                       "running or claimed", len(held))
                    if held:
                        release(self.db, held)
                        leases.discard(mid for mid, _t, _q in held)
                        self._stats.count("released", len(held))
                    break
                now = time.monotonic()
                for c in self._consumers:
                    c.enforce_timeout(now)
                self._periodic(timers)
                self._supervise_wait()
        finally:
            self._stopping = True
            leases.stop()
            for t in threads:
                t.join(0.5)

    # -- process pool: the jobs' side (the supervisor is liteq/pool.py) ------------------

    def _consume(self, slot: Slot) -> None:
        """In a pool child: run one consumer until stopped, publishing into *slot*."""
        self._stats = StatsHook()
        self._hooks = HookRunner([LoggingHook(), self._stats, *self._user_hooks])
        slot.publish(counts=self._stats.snapshot())
        leases = _Leases(self.db, self.existing_queues())
        leases.start()
        consumer = _Consumer(self, leases, slot)
        try:
            consumer.run()
        finally:
            leases.stop()
            slot.publish(counts=self._stats.snapshot(), recycled=consumer.recycle)

    def _orphaned(self, pid: int, running: tuple[int, int, int], reason: str | None,
                  code: int, held: Held) -> int:
        """A pool child ended: settle the job it was running as a failed attempt (or,
        stopped on purpose, release it) and release the ones it held without running.
        Returns how many were released."""
        mid, token, qid = running
        try:
            if mid and reason != "stop":
                self._settle_orphan(mid, token, qid, reason, code)
                held = [h for h in held if h[0] != mid]
            extra = [running] if mid and reason == "stop" else []
            stale = release(self.db, held + extra)
            return max(0, len(held) + len(extra) - len(stale))
        except LiteqError:
            logger.exception("could not release the jobs of worker process %d; they run again "
                             "once their leases run out", pid)
            return 0

    def _settle_orphan(self, mid: int, token: int, qid: int, reason: str | None,
                       code: int) -> None:
        row = self.db.backend.message(mid)
        if row is None or row.token != token or row.state != State.LEASED:
            return  # it was settled after all
        q = self.db.queue_by_id(qid)
        call = task_call(_decode(row.payload))
        name, args, kwargs = call if call else ("?", [], {})
        task = self.tasks.get(name)
        ctx = JobContext(self.db, mid, name, q.name, row.attempts,
                         task.max_attempts if task else q.config.max_attempts, args, kwargs,
                         row.enqueued_at)
        if reason == "timeout" and task is not None and task.timeout:
            error = JobError("liteq.TaskTimeout", f"task {name} exceeded its timeout of "
                                            f"{task.timeout:g} s; its worker process was killed")
        else:
            what = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
            error = JobError(None, f"the worker process running it died ({what})")
        _settle(self, q, mid, token, row.attempts, ctx, task, Outcome("retrying", 0.0, error=error),
                ran=True)

    def __repr__(self) -> str:
        return (f"<Worker pool={self.pool} concurrency={self.concurrency} "
                f"queues={','.join(self.queues)}>")


def _decode(blob: bytes) -> Any:
    try:
        return codec.decode(blob)
    except LiteqError:
        return None
