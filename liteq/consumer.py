"""One consumer of the worker: claims a batch, runs its jobs one after another in
one thread (of the thread pool, or of a pool child), and acks the successful ones
together with their results rows. See :mod:`liteq.worker` for how it fits."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import math
import threading
import time
from typing import TYPE_CHECKING, Any, Protocol

from . import codec, workflow
from .backends.records import State
from .errors import DatabaseBusy, LiteqError, StorageError
from .hooks import logger
from .job import task_call
from .leases import Leases, release
from .outage import Outage
from .pool import Slot
from .queue import Message, Queue
from .running import (
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
from .settle import SettleHost, settle
from .task import Task
from .wake import Looks

if TYPE_CHECKING:
    from .hooks import HookRunner
    from .turns import Turn

__all__ = ["Consumer", "ConsumerHost"]

_BATCH_SECONDS = 0.05  # aim for about this much work per claim
_FLUSH_SECONDS = 0.05  # ack finished jobs at least this often within a batch
_HOLD_SECONDS = 0.5  # a batch still unstarted after this long goes back to the queue
_LOOK_FOR_QUEUES = 0.1  # how often a consumer looks for served queues that are missing
_FLUSH_TRIES = 6  # acks tried this often while the database is away (~6 s of pauses)


class ConsumerHost(SettleHost, Protocol):
    """What a consumer uses of the :class:`liteq.Worker` (a protocol, so that this
    module needs no import of the worker, which imports it)."""

    tasks: dict[str, Task[Any, Any]]
    queues: list[str]
    burst: bool
    prefetch: int
    max_tasks_per_child: int | None
    _stopping: bool
    _hooks: HookRunner
    outage: Outage

    def stop(self, now: bool = False) -> None: ...
    def existing_queues(self) -> list[Queue]: ...
    def _pause(self, seconds: float) -> None: ...
    def _idle_wait(self, waiter: Any, timeout: float) -> bool: ...
    def _idle_wait_turn(self, turn: Turn, timeout: float) -> bool: ...
    def _child_spent(self, handled: int) -> int: ...


# -- one consumer -------------------------------------------------------------------------

class Consumer:
    """Claims, runs and acks in one thread (of the thread pool, or of a child)."""

    def __init__(self, worker: ConsumerHost, leases: Leases, slot: Slot | None = None) -> None:
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
                    self.w.outage.ok()
                    if not msgs:
                        if self.w.burst:
                            break
                        continue
                    self._work(msgs)
                except StorageError as exc:
                    if isinstance(exc, DatabaseBusy):
                        logger.exception("database busy in the worker; trying again in 1 s")
                        self.w._pause(1.0)
                        continue
                    # The database is away (a PostgreSQL restart, an I/O error): logged
                    # once per outage; what this consumer held runs again once its
                    # leases run out, unless it was settled before the error.
                    self.w._pause(self.w.outage.failed(exc))
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
        looks = Looks(claim=True, hinted=False, early=waiter.early)
        # Of the idle consumers of these queues on this host, the one holding the
        # turn waits for commits and the others for the turn (liteq.turns).
        turn: Turn | None = None
        turn_key = ""
        try:
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
                    due_at = min((store.wait_due(q.id) for q in self.queues), default=math.inf)
                timeout = max(0.0005, min(due_at - store.clock(), 1.0))
                key = ",".join(str(q.id) for q in self.queues)
                if key != turn_key:  # the first wait, or queues found since
                    if turn is not None:
                        turn.pass_on()
                    turn, turn_key = self.db.turn(key), key
                if turn is None or turn.take():
                    looks.sleep(lambda t: self.w._idle_wait(waiter, t), timeout)
                else:
                    # Another consumer's turn: wait for it (then look at once, as
                    # after a hint), for a stop, or for the timeout (then claim).
                    looks.woke(self.w._idle_wait_turn(turn, looks.delay(timeout, relook=False)))
        finally:
            if turn is not None:
                turn.pass_on()
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
        if "wf" in msg.payload:  # a workflow step: its parents' results come first
            args = [*workflow.inputs(self.db, msg.id, msg.payload["wf"]), *args]
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
        settle(self.w, msg.owner, msg.id, msg.token or 0, msg.attempts, ctx, task, outcome, ran)
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
            return timed_out(task.name, timeout or 0, start), False
        except BaseException as exc:  # SystemExit, KeyboardInterrupt ... fail the job only
            return raised(task, args, kwargs, exc, start), False
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
            # releases its dependents (the results row first: the result may be kept there)
            workflow.record(self.db, [(msg.id, result)], results_rows=True)
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
        for attempt in range(_FLUSH_TRIES):
            lost = set()
            try:
                with self.db.transaction():
                    for q, pairs in by_queue.values():
                        lost.update(self.store.ack(q.id, pairs, q.config.retention))
                    self.store.save_results([self._result_row(m, t, c, o.result, o.duration)
                                             for m, t, c, o in done if m.id not in lost])
                    # With the acks: the dependents of the jobs acked, with their results
                    # (after the results rows, where an engine may keep those results).
                    workflow.record(self.db, [(m.id, o.result) for m, _t, _c, o in done
                                              if m.id not in lost], results_rows=True)
                break
            except StorageError as exc:
                # The database is away (a PostgreSQL restart): try again while the
                # leases last. Safe even if the lost COMMIT had happened: the acks are
                # guarded by their tokens (a second one finds them gone, never acks
                # twice) and results rows are upserts.
                if isinstance(exc, DatabaseBusy) or attempt + 1 == _FLUSH_TRIES:
                    logger.exception("could not ack %d finished job(s); they will run again "
                                     "once their leases run out", len(done))
                    lost = {m.id for m, _t, _c, _o in done}
                    break
                self.w._pause(self.w.outage.failed(exc))
            except LiteqError:
                logger.exception("could not ack %d finished job(s); they will run again once "
                                 "their leases run out", len(done))
                lost = {m.id for m, _t, _c, _o in done}
                break
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

