"""Leases a worker process holds: giving them back (:func:`release`) and renewing them
(:class:`Leases`, one heartbeat thread per process, every third of the queue's lease,
so that a task longer than the lease is not run twice)."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from .errors import StorageError
from .hooks import logger
from .outage import Outage
from .queue import Message, Queue

if TYPE_CHECKING:
    from .database import Database

__all__ = ["Leases", "release"]

# -- releasing leases -----------------------------------------------------------------


def release(db: Database, items: Iterable[tuple[int, int, int]]) -> list[int]:
    """Give leased messages ``(id, token, qid)`` back, ready at once, without counting
    the attempt; return the ids whose token was stale (left unchanged)."""
    by_queue: dict[int, list[tuple[int, int]]] = {}
    for mid, token, qid in items:
        by_queue.setdefault(qid, []).append((mid, token))
    return [mid for qid, pairs in by_queue.items() for mid in db.backend.release(qid, pairs)]


# -- the heartbeat ----------------------------------------------------------------------

class Leases:
    """The leases this process holds, renewed by one thread in one transaction."""

    def __init__(self, db: Database, queues: Sequence[Queue]) -> None:
        self.db = db
        self.queues = list(queues)
        self._held: dict[int, tuple[int, int]] = {}  # id -> (token, qid)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._outage = Outage("heartbeat", logger)

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
                self._outage.ok()
            except StorageError as exc:  # the database is away: logged once
                self._outage.failed(exc)  # the beat keeps its pace
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

