"""The per-minute history a worker writes (issue 21): :class:`HistoryHook` counts each
job's outcome and run time per queue, task and minute, and adds them to the ``history``
table from the process that ran the jobs, at most every :data:`HISTORY_EVERY` seconds
(and when it stops). The queue's own rows (task ``''``) are the engines': put and acked
from the totals flush, failed and dead from a trigger on every failure (a worker's, a
``nack()``/``fail()`` by hand, a lease that ran out); each engine keeps hourly roll-ups
of all rows (``history_hours``) by triggers in the same transaction. Workers prune rows
older than :data:`liteq.registry.HISTORY_WINDOW`."""

from __future__ import annotations

import threading
import time
from typing import Any

from .backends.registry import HISTORY_BUCKETS, HistoryRow
from .context import Context
from .errors import LiteqError
from .hooks import Hook
from .running import JobContext, Outcome

__all__ = ["HistoryHook", "HISTORY_EVERY"]

#: Seconds between a process's history writes.
HISTORY_EVERY = 5.0


class HistoryHook(Hook):
    """Counts outcomes and run times per (queue, task, minute) and adds them to the
    history from the process that ran the jobs, at most every *every* seconds."""

    def __init__(self, db: Context, every: float = HISTORY_EVERY) -> None:
        self.db = db
        self.every = every
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, str, int], list[Any]] = {}
        self._next = time.monotonic() + every

    def after_job(self, job: JobContext, outcome: Outcome) -> None:
        field = {"done": 1, "retrying": 2, "failed": 3}.get(outcome.state)
        if field is None:
            return  # cancelled, released, lost: not a run that ended
        minute = int(self.db.clock() // 60)
        d = outcome.duration
        with self._lock:
            c = self._pending.setdefault((job.queue, job.task, minute),
                                         [0, 0, 0, 0, 0, 0.0, 0.0, 0, 0, 0, 0, 0])
            c[field] += 1
            c[4] += 1
            c[5] += d
            c[6] = max(c[6], d)
            for k, bound in enumerate(HISTORY_BUCKETS):
                if d <= bound:
                    c[7 + k] += 1
            due = time.monotonic() >= self._next
        if due:
            self.flush()

    def on_worker_stop(self, worker: Any) -> None:
        self.flush()

    def flush(self) -> None:
        """Add what was counted to the stored history now (kept on failure)."""
        with self._lock:
            pending, self._pending = self._pending, {}
            self._next = time.monotonic() + self.every
        if not pending:
            return
        rows = []
        try:
            for (queue, task, minute), c in pending.items():
                qid = self.db.queue(queue).id
                rows.append(HistoryRow(qid, minute, task, 0, c[1], c[2], c[3], c[4], c[5],
                                       c[6], *c[7:]))
            self.db.backend.add_history(rows)
        except LiteqError:
            with self._lock:  # statistics only: counted again at the next flush
                for key, c in pending.items():
                    mine = self._pending.setdefault(key, [0] * 7 + [0] * 5)
                    for k, v in enumerate(c):
                        mine[k] = max(mine[k], v) if k == 6 else mine[k] + v
