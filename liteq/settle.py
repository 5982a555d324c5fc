"""Settling a job that did not succeed: retry it, fail it or cancel it, with its
results row in the same transaction when the job is over; then call the hooks. Used by
the consumers and by the process pool's supervisor (for a job whose child died)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from .backends.records import State
from .backends.registry import AttemptRecord
from .errors import LeaseLost
from .hooks import logger
from .job import DEFAULT_RESULT_TTL
from .queue import Queue
from .running import JobContext, Outcome, outcome_row, worker_name
from .task import Task

if TYPE_CHECKING:
    from .database import Database
    from .hooks import HookRunner, StatsHook

__all__ = ["SettleHost", "settle"]


class SettleHost(Protocol):
    """What settling uses of the :class:`liteq.Worker` (a protocol, so that this
    module needs no import of the worker, which imports it)."""

    db: Database
    _hooks: HookRunner
    _stats: StatsHook


# -- settling a job that did not succeed ----------------------------------------------------

def settle(worker: SettleHost, q: Queue, mid: int, token: int, attempts: int,
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
                if store.retry(q.id, mid, token, outcome.delay, text):
                    # An attempt that did not end the job: its row in the timeline
                    # (the attempt that ends a job is its results row).
                    # Its end is its start plus its run time, as a results row's is.
                    started = ctx.started_at or None
                    ended = store.clock() if started is None else started + outcome.duration
                    store.save_attempts([AttemptRecord(
                        mid, attempts, worker_name(), started, ended, "retried", text)])
                else:
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

