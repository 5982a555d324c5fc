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
* **Modules.** This one is the orchestration (signals, stopping, the thread pool,
  a pool child's side); a consumer's claim/run/ack loop is :mod:`liteq.consumer`,
  the heartbeat and releasing leases :mod:`liteq.leases`, settling a job that did
  not succeed :mod:`liteq.settle`.
* **Side effects exactly once.** A task registered with ``atomic=True`` runs inside
  the transaction that acks it: its ``db.execute(...)`` writes commit with the ack or
  not at all, so a crash at any moment makes it run again from scratch.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from . import codec
from .aio.worker import AsyncPool
from .backends.records import State
from .consumer import Consumer
from .errors import InvalidArgument, LiteqError
from .fdwait import wait_readable
from .history import HistoryHook
from .hooks import Hook, HookRunner, LoggingHook, StatsHook, logger
from .job import task_call
from .leases import Leases, release
from .outage import Outage
from .pool import Held, ProcessPool, Slot
from .queue import Queue
from .registry import DEFAULT_HEARTBEAT, HISTORY_WINDOW, Registration
from .running import JobContext, JobError, Outcome
from .settle import settle
from .task import registry
from .validate import check_positive_int, check_seconds, validate_name

if TYPE_CHECKING:
    from .database import Database
    from .turns import Turn

__all__ = ["Worker", "release", "DEFAULT_GRACE", "DEFAULT_PREFETCH", "POOLS"]

POOLS = ("thread", "process", "asyncio")
#: Seconds running jobs get to finish after the first stop signal. Below the 30 s
#: that systemd and Kubernetes wait before SIGKILL, leaving time to release leases.
DEFAULT_GRACE = 20.0
#: Most messages one consumer claims at a time.
DEFAULT_PREFETCH = 100
#: Jobs one ``pool="asyncio"`` process runs at once unless *concurrency* says otherwise.
DEFAULT_ASYNC_CONCURRENCY = 100
_TICK = 0.1  # the supervisor's polling period (timeouts, children, summaries)
_PRUNE_EVERY = 60.0

# -- the worker ----------------------------------------------------------------------------

class Worker(ProcessPool):
    """Runs the tasks registered on *db* from *queues*, until stopped.

    *queues* are served in order of preference (a claim takes from the first one
    that has due jobs); default: the queues of the registered tasks, in order of
    registration, or ``["default"]``. A served queue that does not exist is created
    at the start if a registered task uses it; any other is logged as a warning
    (a typo?) and left missing, and is served once something creates it.
    *concurrency* consumers run at once: threads
    (``pool="thread"``, default 4), child processes (``pool="process"``, default
    one per CPU; Linux and macOS, by ``fork()``) or jobs on one event loop
    (``pool="asyncio"``, default 100: ``async def`` tasks as coroutines, sync ones in
    a bounded thread pool; see :mod:`liteq.aio.worker`). *grace* seconds for running jobs to
    finish after a stop signal, *prefetch* the most jobs claimed at once, *burst* to
    stop once no job is due, *hooks* to add :class:`~liteq.Hook` objects,
    *summary_interval* seconds between summary log lines (0: none).

    ``pool="process"`` only: a child that has run *max_tasks_per_child* jobs, or
    whose resident memory is over *max_memory_per_child* MB after a job, finishes
    that job, gives back the jobs it claimed but did not start, and is replaced by
    a new child (for libraries that leak).

    The worker records itself in the database's workers registry (``liteq workers``)
    and rewrites that row every *heartbeat* seconds with the jobs it runs; its jobs'
    outcomes and run times go to the per-minute history.
    """

    def __init__(self, db: Database, queues: Sequence[str] | None = None, *,
                 concurrency: int | None = None, pool: str = "thread",
                 hooks: Sequence[Hook] = (), grace: float = DEFAULT_GRACE,
                 prefetch: int = DEFAULT_PREFETCH, burst: bool = False,
                 summary_interval: float = 60.0, install_signals: bool = True,
                 max_tasks_per_child: int | None = None,
                 max_memory_per_child: float | None = None,
                 heartbeat: float = DEFAULT_HEARTBEAT) -> None:
        if pool not in POOLS:
            raise InvalidArgument(f"pool must be 'thread', 'process' or 'asyncio', got {pool!r}")
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
        default = {"thread": 4, "asyncio": DEFAULT_ASYNC_CONCURRENCY}.get(pool, os.cpu_count() or 1)
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
        self._history = HistoryHook(db)
        self._hooks = HookRunner([LoggingHook(), self._stats, self._history, *self._user_hooks])
        self.heartbeat = check_seconds(heartbeat, "heartbeat") or DEFAULT_HEARTBEAT
        self._registration: Registration | None = None
        #: The ids of the jobs running now (set by the pool that runs them).
        self._running_ids: Callable[[], list[int]] = lambda: [c.current for c in self._consumers]
        #: Whether the database answers: an outage is logged once for all consumers.
        self.outage = Outage("worker", logger)
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
        self._consumers: list[Consumer] = []
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
        self._registration = Registration(
            self.db, "worker", queues=self.queues, pool=self.pool,
            concurrency=self.concurrency, interval=self.heartbeat,
            running=lambda: self._running_ids(), counts=self.counts)
        try:
            self._registration.start()
            if self.pool == "thread":
                self._run_threads()
            elif self.pool == "asyncio":
                AsyncPool(self).run()
            else:
                self._run_processes()
        except KeyboardInterrupt:
            self.stop(now=True)
            raise
        finally:
            for signum, handler in old.items():
                signal.signal(signum, handler)
            self._hooks.call("on_worker_stop", self)
            self._registration.stop()
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
            readable = wait_readable([waiter.fd, self._pipes[0]], timeout)
            return waiter.fd in readable
        return bool(waiter.wait(min(timeout, 0.05)))

    def _idle_wait_turn(self, turn: Turn, timeout: float) -> bool:
        """A consumer's wait for its turn to wait for commits (``liteq.turns``): True
        once it holds the turn (look now), False on a stop or after *timeout*."""
        assert self._pipes is not None
        if os.getpid() != self._parent and os.getppid() != self._parent:
            self.stop()
            return False
        return turn.wait(timeout, also=(self._pipes[0],))

    def _pause(self, seconds: float) -> None:
        pipes = self._pipes
        if pipes is None:  # stopped meanwhile (its pipes closed): nothing to wait for
            return
        wait_readable([pipes[0]], seconds)

    def _supervise_wait(self, timeout: float = _TICK) -> None:
        assert self._pipes is not None
        wait_readable([self._pipes[2]], timeout)
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
        if self._registration is not None:
            self._registration.maybe_beat()
        if self.summary_interval and now >= state["summary"]:
            seconds = now - state["last_summary"]
            state["summary"], state["last_summary"] = now + self.summary_interval, now
            self._hooks.call("on_summary", self, self.counts(), seconds)
        if now >= state["prune"]:
            state["prune"] = now + _PRUNE_EVERY
            try:
                self.db.prune_results()
                self.db.backend.prune_progress(self.db.clock() - HISTORY_WINDOW)
                self.db.backend.prune_history(int((self.db.clock() - HISTORY_WINDOW) // 60))
            except LiteqError:
                logger.exception("pruning expired job results failed; trying again later")

    def _timers(self) -> dict[str, float]:
        now = time.monotonic()
        return {"summary": now + (self.summary_interval or 0), "last_summary": now,
                "prune": now}

    # -- thread pool --------------------------------------------------------------------

    def _run_threads(self) -> None:
        leases = Leases(self.db, self.existing_queues())
        leases.start()
        self._consumers = [Consumer(self, leases) for _ in range(self.concurrency)]
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
        self._history = HistoryHook(self.db)
        self._hooks = HookRunner([LoggingHook(), self._stats, self._history, *self._user_hooks])
        self.outage = Outage("worker process", logger)  # the parent's lock stays there
        slot.publish(counts=self._stats.snapshot())
        leases = Leases(self.db, self.existing_queues())
        leases.start()
        consumer = Consumer(self, leases, slot)
        try:
            consumer.run()
        finally:
            leases.stop()
            self._history.flush()
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
        settle(self, q, mid, token, row.attempts, ctx, task, Outcome("retrying", 0.0, error=error),
                ran=True)

    def __repr__(self) -> str:
        return (f"<Worker pool={self.pool} concurrency={self.concurrency} "
                f"queues={','.join(self.queues)}>")


def _decode(blob: bytes) -> Any:
    try:
        return codec.decode(blob)
    except LiteqError:
        return None
