"""The NOTIFY throttle of the PostgreSQL engine's put path (moved out of notifier.py,
whose module docstring says how wake-up works): leading and trailing edge per queue and
process, a trailing notification only after the puts it stands for are done."""

from __future__ import annotations

import math

__all__ = ["LATE", "SLACK", "WINDOW", "Throttle"]

#: The throttle's window per queue and process (seconds): at most one notification each.
WINDOW = 0.001
#: A trailing notification waits for the throttled puts in flight at most this long
#: past its due time (seconds); see "Every hint follows its commit".
LATE = 0.05
#: How late the listener thread may send a sendable trailing notification (seconds):
#: while puts keep coming it looks at the throttle at most this far apart instead of
#: being poked by them (see ``Listener.done``).
SLACK = 0.003


class Throttle:
    """Leading and trailing edge, per queue: :meth:`ask` says whether a put notifies now;
    when it says no, one trailing notification is due :data:`WINDOW` later, once the
    puts it stands for are done (:meth:`done`, :meth:`take_due`). Not thread-safe:
    :class:`Listener` calls it under its lock."""

    __slots__ = ("window", "late", "active_at", "_last", "_trailing", "_inflight", "_owed")

    def __init__(self, window: float = WINDOW, late: float = LATE) -> None:
        self.window = window
        self.late = late
        self._last: dict[int, float] = {}  # qid -> when its last notification was sent
        self._trailing: dict[int, float] = {}  # qid -> when its trailing one is due
        self._inflight: dict[int, int] = {}  # qid -> throttled puts not yet done
        self._owed: set[int] = set()  # sent while some were in flight: one more after
        #: When a put last met a trailing notification (scheduled one, was throttled by
        #: it or took it over) or finished a throttled put: the listener lingers
        #: awake-ish (looks every ``SLACK``) for a while after, instead of being poked.
        self.active_at = -math.inf

    def ask(self, qid: int, now: float) -> bool:
        """True: notify in this transaction. False: a trailing notification is (now)
        scheduled; see :meth:`next_due` (and :meth:`hold` for the put it stands for)."""
        due = self._trailing.get(qid)
        if due is not None:
            self.active_at = now
            if now < due or self._inflight.get(qid):
                return False
            # Due, and every put it stands for is done: this put's own notification,
            # delivered at its commit (after theirs), stands for them as well, and a
            # steady stream of puts notifies from the producer once per window without
            # the listener thread.
            del self._trailing[qid]
            self._last[qid] = now
            return True
        last = self._last.get(qid)
        if last is None or now - last >= self.window:
            self._last[qid] = now
            if len(self._last) > 4096:  # forget quiet queues
                self._last = {q: t for q, t in self._last.items() if now - t < self.window}
            return True
        # A window after this put, not after the last notification: its commit, a round
        # trip away, should land before the trailing notification does.
        self._trailing[qid] = now + self.window
        self.active_at = now
        return False

    def hold(self, qid: int) -> None:
        """A put that :meth:`ask` throttled is in flight: the trailing notification
        waits for its :meth:`done` (at most :attr:`late` past its due time)."""
        self._inflight[qid] = self._inflight.get(qid, 0) + 1

    def done(self, qid: int, now: float) -> bool:
        """A throttled put of *qid* committed or failed; True if a trailing
        notification may be due now (the listener should look)."""
        self.active_at = now
        left = self._inflight.get(qid, 0) - 1
        if left > 0:
            self._inflight[qid] = left
            return False
        self._inflight.pop(qid, None)
        if qid in self._owed:
            self._owed.discard(qid)
            self._trailing.setdefault(qid, now)
        return qid in self._trailing

    def sendable_at(self, qid: int) -> float:
        """When *qid*'s trailing notification may be sent (monotonic); inf if none."""
        due = self._trailing.get(qid)
        return math.inf if due is None else self._sendable(qid, due)

    def _sendable(self, qid: int, due: float) -> float:
        return due + self.late if self._inflight.get(qid) else due

    def next_due(self) -> float | None:
        """When the earliest trailing notification may be sent (monotonic), or None."""
        if not self._trailing:
            return None
        return min(self._sendable(q, t) for q, t in self._trailing.items())

    def take_due(self, now: float) -> list[int]:
        """The queues whose trailing notification is due, counted as sent now."""
        due = [q for q, t in self._trailing.items() if self._sendable(q, t) <= now]
        for q in due:
            del self._trailing[q]
            self._last[q] = now
            if self._inflight.get(q):
                self._owed.add(q)
        return due

    def put_back(self, qids: list[int]) -> None:
        """Trailing notifications that could not be sent: due again at once."""
        for q in qids:
            self._trailing[q] = 0.0
