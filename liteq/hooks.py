"""Hooks: extend the worker without changing it (dramatiq's middleware, smaller).

::

    class Timing(liteq.Hook):
        def after_job(self, job, outcome):
            statsd.timing(f"task.{job.task}", outcome.duration)

    liteq.Worker(db, hooks=[Timing()]).run()

Every method does nothing by default: override the ones you need. A hook that
raises is logged and otherwise ignored; it never fails a job or stops the worker.

Where they run: ``on_worker_start``, ``on_worker_stop`` and ``on_summary`` in the
process that called ``Worker.run()``; the job hooks (``before_job``, ``after_job``,
``on_retry``, ``on_failure``) in the thread that runs the job, which with
``pool="process"`` is a child process, so state a hook keeps is per process.
``on_summary`` receives counts summed over every process.

The worker's own logging (:class:`LoggingHook`) and counters (:class:`StatsHook`)
are hooks too, installed before the ones you pass.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from .counters import COUNTERS, logger
from .task import JobContext, JobError, Outcome

if TYPE_CHECKING:
    from .database import Database

__all__ = ["Hook", "LoggingHook", "StatsHook", "HookRunner", "WorkerInfo", "COUNTERS", "logger"]


class WorkerInfo(Protocol):
    """What a hook sees of the :class:`liteq.Worker` that calls it (a protocol, so that
    this module needs no import of the worker, which imports it)."""

    #: The database it serves.
    db: Database
    #: The registered tasks, by name.
    tasks: dict[str, Any]
    #: Names of the queues it consumes.
    queues: list[str]
    #: ``"thread"``, ``"process"`` or ``"async"``.
    pool: str
    #: Jobs run at once.
    concurrency: int | None

    def counts(self) -> dict[str, int]:
        """Jobs started, done, retried, failed, cancelled, released, lost so far."""
        ...


class Hook:
    """Base class of worker hooks; every method is a no-op."""

    def on_worker_start(self, worker: WorkerInfo) -> None:
        """The worker is about to claim its first job."""

    def on_worker_stop(self, worker: WorkerInfo) -> None:
        """The worker stopped (every job finished or was released)."""

    def before_job(self, job: JobContext) -> None:
        """A job is about to run (in the thread that runs it)."""

    def after_job(self, job: JobContext, outcome: Outcome) -> None:
        """A job's run ended, however it ended (see :class:`~liteq.task.Outcome`).

        Called once the outcome is committed: successful jobs are acked in
        batches, so this may come after the next job of the batch started."""

    def on_retry(self, job: JobContext, error: JobError, delay: float) -> None:
        """A run failed and the job will be tried again in *delay* seconds."""

    def on_failure(self, job: JobContext, error: JobError) -> None:
        """The job failed for good (it is dead, with *error* kept)."""

    def on_summary(self, worker: WorkerInfo, counts: dict[str, int], seconds: float) -> None:
        """Periodically (``summary_interval``): *counts* are totals since the worker
        started, summed over its processes; *seconds* since the previous summary."""


class HookRunner:
    """Calls one method on every hook that overrides it, logging what they raise."""

    def __init__(self, hooks: Sequence[Hook]) -> None:
        self.hooks = list(hooks)
        # Only the hooks that override a method are called for it: with the default
        # hooks, a job pays for three or four calls.
        self._bound: dict[str, list[Callable[..., Any]]] = {}
        for name in ("on_worker_start", "on_worker_stop", "before_job", "after_job",
                     "on_retry", "on_failure", "on_summary"):
            base = getattr(Hook, name)
            self._bound[name] = [getattr(h, name) for h in self.hooks
                                 if getattr(type(h), name, base) is not base]

    def call(self, name: str, *args: Any) -> None:
        for method in self._bound[name]:
            try:
                method(*args)
            except BaseException:  # a hook never takes the worker down
                logger.exception("hook %s.%s raised; ignored",
                                 type(getattr(method, "__self__", method)).__name__, name)

    def wants(self, name: str) -> bool:
        return bool(self._bound[name])


class StatsHook(Hook):
    """Counts jobs by how they ended (per process; the worker sums them)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts = dict.fromkeys(COUNTERS, 0)
        self.busy = 0.0  # seconds spent running jobs

    def before_job(self, job: JobContext) -> None:
        with self._lock:
            self.counts["started"] += 1

    def after_job(self, job: JobContext, outcome: Outcome) -> None:
        key = {"done": "done", "retrying": "retried", "failed": "failed",
               "cancelled": "cancelled", "released": "released", "lost": "lost"}[outcome.state]
        with self._lock:
            self.counts[key] += 1
            self.busy += outcome.duration

    def count(self, key: str, n: int = 1) -> None:
        """Count a job that ended without running (unknown task, released unstarted)."""
        with self._lock:
            self.counts[key] += n

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 10 else f"{seconds:.1f} s"


class LoggingHook(Hook):
    """Log lines through ``logging.getLogger("liteq.worker")``.

    One line per job start and finish at DEBUG (with its "run time"), retries at
    WARNING (with the "retry delay" before the next attempt), failures at ERROR (with the traceback), and the worker's start, stop
    and periodic summary at INFO. Every job line carries ``job_id``, ``task``,
    ``attempt`` (and ``duration``, ``state``) as ``extra`` fields for structured
    handlers.
    """

    def __init__(self, log: logging.Logger = logger) -> None:
        self.log = log

    def before_job(self, job: JobContext) -> None:
        if self.log.isEnabledFor(logging.DEBUG):
            self.log.debug("job %d %s started (attempt %d of %d)", job.id, job.task,
                           job.attempts, job.max_attempts,
                           extra={"job_id": job.id, "task": job.task, "attempt": job.attempts})

    def after_job(self, job: JobContext, outcome: Outcome) -> None:
        if self.log.isEnabledFor(logging.DEBUG):
            self.log.debug("job %d %s %s (run time %s)", job.id, job.task, outcome.state,
                           _ms(outcome.duration),
                           extra={"job_id": job.id, "task": job.task, "attempt": job.attempts,
                                  "state": outcome.state, "duration": outcome.duration})

    def on_retry(self, job: JobContext, error: JobError, delay: float) -> None:
        self.log.warning("job %d %s attempt %d of %d failed: %s; next attempt in %.3g s "
                         "(retry delay)", job.id, job.task, job.attempts, job.max_attempts,
                         error, delay,
                         extra={"job_id": job.id, "task": job.task, "attempt": job.attempts,
                                "state": "retrying", "error": str(error), "delay": delay})

    def on_failure(self, job: JobContext, error: JobError) -> None:
        tail = f"\n{error.traceback.rstrip()}" if error.traceback else ""
        self.log.error("job %d %s failed after %d attempt(s): %s%s", job.id, job.task,
                       job.attempts, error, tail,
                       extra={"job_id": job.id, "task": job.task, "attempt": job.attempts,
                              "state": "failed", "error": str(error)})

    def on_worker_start(self, worker: WorkerInfo) -> None:
        served = sorted(t.name for t in worker.tasks.values() if t.queue in worker.queues)
        others = len(worker.tasks) - len(served)
        more = f" (and {others} on queues not served)" if others else ""
        self.log.info("worker started: pool=%s concurrency=%d queues=%s tasks=%s%s db=%s",
                      worker.pool, worker.concurrency, ",".join(worker.queues),
                      ",".join(served) or "none", more, worker.db.path,
                      extra={"tasks": served})

    def on_worker_stop(self, worker: WorkerInfo) -> None:
        counts = worker.counts()
        self.log.info("worker stopped: %d done, %d retried, %d failed, %d cancelled, "
                      "%d released", counts["done"], counts["retried"], counts["failed"],
                      counts["cancelled"], counts["released"])

    def on_summary(self, worker: WorkerInfo, counts: dict[str, int], seconds: float) -> None:
        last = getattr(self, "_last", None) or dict.fromkeys(COUNTERS, 0)
        self._last = dict(counts)
        delta = {k: counts[k] - last.get(k, 0) for k in COUNTERS}
        finished = delta["done"] + delta["failed"] + delta["cancelled"]
        rate = finished / seconds if seconds > 0 else 0.0
        self.log.info("summary: %d done, %d retried, %d failed, %d cancelled in the last "
                      "%.0f s (%.1f jobs/s); %d done since start",
                      delta["done"], delta["retried"], delta["failed"], delta["cancelled"],
                      seconds, rate, counts["done"],
                      extra={"counts": delta, "rate": rate, "totals": dict(counts)})
