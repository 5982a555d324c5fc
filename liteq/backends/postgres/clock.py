"""The database server's clock on PostgreSQL: every host sharing a database must agree
on lease and due times, so liteq reads the server's time, not the host's, without a
round trip per reading (the offset is measured by :meth:`Connections.measure_offset`)."""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["CLOCK_EVERY", "CLOCK_RETRY", "ServerClock"]

#: How often the server clock's offset is measured again (seconds).
CLOCK_EVERY = 60.0
#: After a failed or deferred measurement, try again this much later (seconds).
CLOCK_RETRY = 5.0


class ServerClock:
    """Epoch seconds by the database server's clock: this host's ``time.time()`` plus an
    offset measured at connect and again every :data:`CLOCK_EVERY` seconds, so every
    host sharing the database agrees on lease and due times without a round trip per
    reading. A measurement that cannot run now (the thread is inside a transaction, the
    server is away) keeps the last offset and is tried again later."""

    __slots__ = ("offset", "_due", "_measure", "_every")

    def __init__(self, measure: Callable[[], float | None], every: float = CLOCK_EVERY) -> None:
        self._measure = measure
        self._every = every
        #: Server minus local time, seconds.
        self.offset = 0.0
        self._due = 0.0
        self.refresh()

    def refresh(self) -> bool:
        """Measure the offset now; False (and the old offset kept) if it could not."""
        offset = self._measure()
        if offset is None:
            self._due = time.time() + min(CLOCK_RETRY, self._every)
            return False
        self.offset = offset
        self._due = time.time() + self._every
        return True

    def __call__(self) -> float:
        now = time.time()
        if now >= self._due:
            self.refresh()
            now = time.time()
        return now + self.offset
