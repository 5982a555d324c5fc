"""Who is working (issue 21): each worker and scheduler records itself in the database,
and its jobs' outcomes feed the per-minute history.

* :class:`Registration`: the row a worker or scheduler keeps in the ``workers`` table:
  written at the start, rewritten by the heartbeat the process already has (its
  supervisor's periodic tick; one row write per *interval*, default
  :data:`DEFAULT_HEARTBEAT` seconds), deleted on a clean exit. A process killed without
  a word leaves its row behind: readers call it *gone* once its heartbeat is older than
  their staleness threshold (:func:`is_gone`), and rows silent for
  :data:`FORGET_AFTER` are deleted by the next registration.
* The per-minute history a worker writes is :mod:`liteq.history`'s; its window,
  :data:`HISTORY_WINDOW`, is here so readers need not import the worker's side.
* :func:`workers`: the registry as plain dicts (``liteq workers``, metrics).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import time
from collections.abc import Callable
from typing import Any

from .backends.registry import WorkerRecord
from .context import Context
from .errors import LiteqError
from .running import set_worker_name, worker_name
from .version import VERSION

__all__ = ["Registration", "workers", "is_gone", "DEFAULT_HEARTBEAT", "DEFAULT_STALE",
           "HISTORY_WINDOW", "FORGET_AFTER"]

#: Seconds between a worker's registry writes.
DEFAULT_HEARTBEAT = 5.0
#: A registry row whose heartbeat is older than this many seconds is shown as gone.
DEFAULT_STALE = 30.0
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
                                concurrency, VERSION, now, now, interval, "[]", 0, 0)

    def start(self) -> None:
        """Write the row (and forget rows silent for a day)."""
        self.db.backend.prune_workers(self.db.clock() - FORGET_AFTER)
        self.beat()
        if self.row.kind == "worker":
            set_worker_name(self.id)  # the jobs' attempts name this row

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
        if worker_name() == self.id:
            set_worker_name(None)
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
