"""The NOTIFY throttle of the PostgreSQL engine's put path (moved out of notifier.py,
whose module docstring says how wake-up works): leading and trailing edge per queue and
process, a trailing notification only after the puts it stands for are done.

**The window widens under a fast stream** (session 16). A queue whose puts from this
process came faster than :data:`FAST` (2,000 a second) between its last two
notifications gets one notification per :data:`WIDE` (8 ms) instead of per
:data:`WINDOW` (1 ms), until they come slower again; a put after a pause of a wide
window notifies at once, as any leading edge does. Every notification costs every
listening process a wake-up (its listening session on the server, its listening thread,
and its turn holder: ``liteq.turns``), and at such rates most of them woke a consumer
for one message. Measured with ``bench/pg_mp_cost.py`` (1 producer, 4 consumer
processes, 2 cores, three alternated rounds), as fast as the producer can: 2,407-2,964
-> 2,692-2,999 messages a second (medians 2,469 -> 2,785; 1 + 2: 3,703 -> 3,881).
Paced at 300 and 1,000 a second nothing changes (enqueue-to-claim p50 1.1-1.2 ms: those
streams keep the 1 ms window). Paced at 2,000 a second the producer now keeps up (1,669
-> 1,862 a second) and p50 goes 1.04 -> 1.75 ms (p99 5.0 -> 9.4 ms). A fixed 5 ms
window had cost the paced streams too (p50 1.2 -> 3.4 ms at 300 a second)."""

from __future__ import annotations

import math

__all__ = ["FAST", "LATE", "SLACK", "WIDE", "WINDOW", "Throttle"]

#: The throttle's window per queue and process (seconds): at most one notification each.
WINDOW = 0.001
#: A trailing notification waits for the throttled puts in flight at most this long
#: past its due time (seconds); see "Every hint follows its commit".
LATE = 0.05
#: How late the listener thread may send a sendable trailing notification (seconds):
#: while puts keep coming it looks at the throttle at most this far apart instead of
#: being poked by them (see ``Listener.done``).
SLACK = 0.003
#: Puts a second of one queue from one process, between two of its notifications, from
#: which its window is :data:`WIDE` (see the module docstring).
FAST = 2000.0
#: The window of a queue whose puts come faster than :data:`FAST` (seconds).
WIDE = 0.008


class Throttle:
    """Leading and trailing edge, per queue: :meth:`ask` says whether a put notifies now;
    when it says no, one trailing notification is due :data:`WINDOW` later, once the
    puts it stands for are done (:meth:`done`, :meth:`take_due`). Not thread-safe:
    :class:`Listener` calls it under its lock."""

    __slots__ = ("window", "late", "wide", "fast", "active_at", "_last", "_trailing",
                 "_inflight", "_owed", "_wide", "_puts")

    def __init__(self, window: float = WINDOW, late: float = LATE, wide: float = WIDE,
                 fast: float = FAST) -> None:
        self.window = window
        self.late = late
        self.wide = max(wide, window)
        self.fast = fast
        self._last: dict[int, float] = {}  # qid -> when its last notification was sent
        self._trailing: dict[int, float] = {}  # qid -> when its trailing one is due
        self._inflight: dict[int, int] = {}  # qid -> throttled puts not yet done
        self._owed: set[int] = set()  # sent while some were in flight: one more after
        self._wide: set[int] = set()  # queues whose window is wide now
        self._puts: dict[int, int] = {}  # qid -> puts asked about since its last notification
        #: When a put last met a trailing notification (scheduled one, was throttled by
        #: it or took it over) or finished a throttled put: the listener lingers
        #: awake-ish (looks every ``SLACK``) for a while after, instead of being poked.
        self.active_at = -math.inf

    def width(self, qid: int) -> float:
        """*qid*'s window now (seconds)."""
        return self.wide if qid in self._wide else self.window

    def _sent(self, qid: int, now: float) -> None:
        """A notification of *qid* goes out now: its window from the rate of the puts
        since the one before."""
        last = self._last.get(qid)
        puts = self._puts.pop(qid, 0)
        if last is not None and now > last and puts >= self.fast * (now - last):
            self._wide.add(qid)
        else:
            self._wide.discard(qid)
        self._last[qid] = now

    def ask(self, qid: int, now: float) -> bool:
        """True: notify in this transaction. False: a trailing notification is (now)
        scheduled; see :meth:`next_due` (and :meth:`hold` for the put it stands for)."""
        self._puts[qid] = self._puts.get(qid, 0) + 1
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
            self._sent(qid, now)
            return True
        last = self._last.get(qid)
        width = self.width(qid)
        if last is None or now - last >= width:
            self._sent(qid, now)
            if len(self._last) > 4096:  # forget quiet queues
                self._last = {q: t for q, t in self._last.items() if now - t < self.wide}
                self._wide &= self._last.keys()
                self._puts = {q: n for q, n in self._puts.items() if q in self._last}
            return True
        # At least a window after this put, not only after the last notification: its
        # commit, a round trip away, should land before the trailing notification does.
        self._trailing[qid] = max(now + self.window, last + width)
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
            self._sent(q, now)
            if self._inflight.get(q):
                self._owed.add(q)
        return due

    def put_back(self, qids: list[int]) -> None:
        """Trailing notifications that could not be sent: due again at once."""
        for q in qids:
            self._trailing[q] = 0.0
