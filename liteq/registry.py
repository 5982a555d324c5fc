"""Who is working (issue 21): each worker and scheduler records itself in the database,
and its jobs' outcomes feed the per-minute history.

* :class:`Registration`: the row a worker or scheduler keeps in the ``workers`` table:
  written at the start, rewritten by the heartbeat the process already has (its
  supervisor's periodic tick; one row write per *interval*, default
  :data:`DEFAULT_HEARTBEAT` seconds), deleted on a clean exit. A process killed without
  a word leaves its row behind: readers call it *gone* once its heartbeat is older than
  their staleness threshold (:func:`is_gone`), and rows silent for
  :data:`FORGET_AFTER` are deleted by the next registration.
* :class:`HistoryHook`: counts each job's outcome and run time per queue, task and
  minute, and adds them to the ``history`` table from the process that ran the jobs,
  at most every :data:`HISTORY_EVERY` seconds (and when it stops). The queue's own put
  and acked counts come from the engines' totals flush.
* :func:`workers`: the registry as plain dicts (``liteq workers``, metrics).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from .backends.registry import HISTORY_BUCKETS, HistoryRow, WorkerRecord
from .context import Context
from .errors import LiteqError
from .hooks import Hook
from .running import JobContext, Outcome

__all__ = ["Registration", "HistoryHook", "workers", "is_gone", "DEFAULT_HEARTBEAT",
           "DEFAULT_STALE", "HISTORY_EVERY", "HISTORY_WINDOW", "FORGET_AFTER"]

#: Seconds between a worker's registry writes.
DEFAULT_HEARTBEAT = 5.0
#: A registry row whose heartbeat is older than this many seconds is shown as gone.
DEFAULT_STALE = 30.0
#: Seconds between a process's history writes.
HISTORY_EVERY = 5.0
#: How long per-minute history is kept (seconds): 7 days.
HISTORY_WINDOW = 7 * 86400.0
#: A gone worker's row is deleted after this many seconds of silence: 1 day.
FORGET_AFTER = 86400.0


def is_gone(row: WorkerRecord, now: float, stale: float = DEFAULT_STALE) -> bool:
    """True when *row*'s last heartbeat is more than *stale* seconds old."""
    return now - row.heartbeat_at > stale


class Registration:
    """A worker's (or scheduler's) registry row, kept fresh by :meth:`beat`.

    *running* returns the ids of the jobs running now; *counts* the process's counters
    (``done``, ``failed``, see :data:`liteq.counters.COUNTERS`).
    """

    def __init__(self, db: Context, kind: str, *, queues: list[str], pool: str,
                 concurrency: int, interval: float = DEFAULT_HEARTBEAT,
                 running: Callable[[], list[int]] = list,
                 counts: Callable[[], dict[str, int]] = dict) -> None:
        from . import __version__

        self.db = db
        host = socket.gethostname()
        self.id = f"{host}:{os.getpid()}:{secrets.token_hex(3)}"
        self.interval = interval
        self._running = running
        self._counts = counts
        self._since: dict[int, float] = {}
        self._next = 0.0
        now = db.clock()
        self.row = WorkerRecord(self.id, kind, host, os.getpid(), ",".join(queues), pool,
                                concurrency, __version__, now, now, interval, "[]", 0, 0)

    def start(self) -> None:
        """Write the row (and forget rows silent for a day)."""
        self.db.backend.prune_workers(self.db.clock() - FORGET_AFTER)
        self.beat()

    def due(self) -> bool:
        """Whether a heartbeat is due now (checked by the supervisor's tick)."""
        return time.monotonic() >= self._next

    def beat(self) -> None:
        """Rewrite the row: heartbeat time, running jobs (with since when), totals."""
        self._next = time.monotonic() + self.interval
        now = self.db.clock()
        ids = [i for i in self._running() if i]
        self._since = {i: self._since.get(i, now) for i in ids}
        counts = self._counts()
        self.row = self.row._replace(
            heartbeat_at=now, jobs=json.dumps([[i, self._since[i]] for i in ids]),
            done=int(counts.get("done", 0)), failed=int(counts.get("failed", 0)))
        self.db.backend.save_worker(self.row)

    def maybe_beat(self) -> None:
        """:meth:`beat` when due; a failure is left for the next one (the row is only
        for people looking)."""
        if self.due():
            try:
                self.beat()
            except LiteqError:
                self._next = time.monotonic() + self.interval

    def stop(self) -> None:
        """Remove the row (a clean exit)."""
        try:
            self.db.backend.remove_worker(self.id)
        except LiteqError:
            pass  # left behind: shown as gone once stale, forgotten after a day


def workers(db: Context, stale: float = DEFAULT_STALE) -> list[dict[str, Any]]:
    """The registry as dicts, oldest first: every column, ``jobs`` as a list of
    ``{"id", "since", "progress", "note"}`` and ``state`` ``"alive"`` or ``"gone"``
    (heartbeat older than *stale* seconds)."""
    rows = db.backend.workers()
    now = db.clock()
    ids = [int(j[0]) for r in rows for j in json.loads(r.jobs)]
    progress = db.backend.progress(ids)
    out = []
    for r in rows:
        jobs = []
        for mid, since in json.loads(r.jobs):
            p = progress.get(int(mid))
            jobs.append({"id": int(mid), "since": since,
                         "progress": None if p is None else p.fraction,
                         "note": None if p is None else p.note})
        entry: dict[str, Any] = r._asdict()
        entry["queues"] = [q for q in r.queues.split(",") if q]
        entry["jobs"] = jobs
        entry["state"] = "gone" if is_gone(r, now, stale) else "alive"
        out.append(entry)
    return out


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
