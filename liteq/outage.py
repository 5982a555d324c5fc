"""Riding out a database outage in the long-running loops (the worker's consumers and
heartbeat, the scheduler): log it once, back off, go on when the database answers.

A PostgreSQL restart makes every call fail for a second or so (the server is down,
then each thread's connection is replaced). Logging a traceback per failed poll would
bury the one line that matters, so :class:`Outage` logs the first failure as a
warning, later ones of the same outage at debug level, and one line when a call
succeeds again. Between tries the loop waits :meth:`Outage.failed`'s answer: 0.1 s
doubling to :data:`MOST` (a few seconds: the outage of a restart is short, and a
worker that waits longer than that leaves its leases to run out for nothing).
"""

from __future__ import annotations

import logging
import threading
import time

__all__ = ["FIRST", "MOST", "Outage"]

#: The first pause after a failure, and the longest (seconds).
FIRST = 0.1
MOST = 3.0


class Outage:
    """One loop's (or several threads') view of whether the database answers;
    thread-safe, so a worker's consumers share one and log an outage once."""

    def __init__(self, what: str, logger: logging.Logger, first: float = FIRST,
                 most: float = MOST) -> None:
        self.what = what
        self.logger = logger
        self.first = first
        self.most = most
        self._lock = threading.Lock()
        self._since: float | None = None
        self._pause = first
        #: Failed calls in the current outage (0 while the database answers).
        self.failures = 0

    def failed(self, exc: BaseException) -> float:
        """Note a failed call; the seconds to wait before the next try."""
        with self._lock:
            self.failures += 1
            if self._since is None:
                self._since = time.monotonic()
                self._pause = self.first
                self.logger.warning(
                    "%s: the database does not answer (%s); trying again with pauses of up to "
                    "%g s, and saying so once it answers", self.what, exc, self.most)
            else:
                self.logger.debug("%s: still failing: %s", self.what, exc)
            pause = self._pause
            self._pause = min(self._pause * 2, self.most)
            return pause

    def ok(self) -> None:
        """Note a call that succeeded: ends the outage (logged) if there was one."""
        if self._since is None:  # the common case, without the lock
            return
        with self._lock:
            if self._since is None:
                return
            self.logger.warning("%s: the database answers again, after %.1f s and %d failed "
                                "call(s)", self.what, time.monotonic() - self._since,
                                self.failures)
            self._since = None
            self.failures = 0
