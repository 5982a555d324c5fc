"""Put/ack totals (statistics) counted in memory and written about once a second, the
same on every engine: each engine's ``_tally`` adds after its commit (a rolled-back
operation is not counted) and its ``flush_totals`` writes what :meth:`PendingTotals.take`
hands over, giving it back on failure (statistics only: never lost, never an error for
the operation that counted)."""

from __future__ import annotations

import threading
import time

__all__ = ["TOTALS_EVERY", "PendingTotals"]

#: Seconds between writes of the totals (a write carries every queue's counts).
TOTALS_EVERY = 1.0


class PendingTotals:
    """The counts not yet written, per queue id: ``[enqueued, finished]``."""

    __slots__ = ("_counts", "_at", "_lock", "_puts", "_acks")

    def __init__(self) -> None:
        self._counts: dict[int, list[int]] = {}
        self._at = time.monotonic()
        self._lock = threading.Lock()
        # The one-message counts of the hot paths (put_one, ack_one), without the lock:
        # a list per queue that gets one item per count. list.append, len() and
        # ``del marks[:n]`` are each one C call under the GIL, so a fold (under the
        # lock) takes exactly the n items it saw and leaves those appended meanwhile.
        self._puts: dict[int, list[None]] = {}
        self._acks: dict[int, list[None]] = {}

    def add(self, qid: int, enqueued: int, finished: int) -> bool:
        """Count; True when a write is due (at most once per :data:`TOTALS_EVERY`)."""
        # acquire/release rather than ``with``, and the clock read outside the lock:
        # ~200 ns less per put and per ack (two threads both told a write is due only
        # flush twice, each taking what is pending then).
        lock = self._lock
        lock.acquire()
        try:
            t = self._counts.get(qid)
            if t is None:
                self._counts[qid] = [enqueued, finished]
            else:
                t[0] += enqueued
                t[1] += finished
        finally:
            lock.release()
        now = time.monotonic()
        if now - self._at < TOTALS_EVERY:
            return False
        self._at = now
        return True

    def put_one(self, qid: int) -> bool:
        """``add(qid, 1, 0)`` without the lock (one put): ~1.6k instructions less."""
        return self._mark(self._puts, qid)

    def ack_one(self, qid: int) -> bool:
        """``add(qid, 0, 1)`` without the lock (one ack): ~1.6k instructions less."""
        return self._mark(self._acks, qid)

    def _mark(self, lists: dict[int, list[None]], qid: int) -> bool:
        """One message counted in *lists* (``_puts`` or ``_acks``), folded later under
        the lock; then add()'s "time to write the totals?"."""
        marks = lists.get(qid)
        if marks is None:
            marks = lists.setdefault(qid, [])
        marks.append(None)
        now = time.monotonic()  # as in add()
        if now - self._at < TOTALS_EVERY:
            return False
        self._at = now
        return True

    def _fold(self) -> None:
        """Move the one-message counts into ``_counts`` (the lock held)."""
        for column, lists in ((0, self._puts), (1, self._acks)):
            for qid, marks in list(lists.items()):
                n = len(marks)
                if n:
                    del marks[:n]  # only the n counted: later appends stay for the next fold
                    t = self._counts.setdefault(qid, [0, 0])
                    t[column] += n

    def of(self, qid: int) -> tuple[int, int]:
        """What *qid* counted and is not written yet (for ``stats()``)."""
        with self._lock:
            self._fold()
            t = self._counts.get(qid)
            return (t[0], t[1]) if t else (0, 0)

    def take(self) -> dict[int, list[int]]:
        """Everything counted so far, to write now (the caller gives it back on failure)."""
        with self._lock:
            self._fold()
            pending, self._counts = self._counts, {}
            return pending

    def give_back(self, pending: dict[int, list[int]]) -> None:
        """Counts a failed write took: kept for the next one."""
        with self._lock:
            for qid, (e, f) in pending.items():
                t = self._counts.setdefault(qid, [0, 0])
                t[0] += e
                t[1] += f
