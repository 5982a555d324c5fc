"""Waking a waiting consumer soon after another process commits: the re-look rule,
the same on every engine.

The engine's :class:`~liteq.backends.base.Waiter` (``Backend.waiter()``; on SQLite,
inotify on the ``-wal`` file, see ``liteq.backends.sqlite.notifier``) delivers hints
that another connection may have committed. Hints can be spurious, and on SQLite early
(sent before the commit is visible), so the caller always bounds each wait and looks
again by the rule of :class:`Looks` (no re-looks where ``Waiter.early`` is False).
Of several idle consumers of one queue on a host, only the one holding the turn waits
for hints; the others wait for the turn (``liteq.turns``).
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["Looks", "RECHECK_AFTER"]


#: After a wake-up whose look without the lock found nothing, look again after these
#: waits (s), then sleep until the next wake-up. A commit becomes visible microseconds
#: after its WAL write at synchronous=NORMAL, ~1-3 ms after it at FULL (the fsync).
RECHECK_AFTER = (0.0002, 0.0008, 0.002, 0.004)


class Looks:
    """How a waiting consumer sleeps after an empty look; shared by
    ``Queue.get_many(wait=...)`` and the worker's idle consumers.

    A hint comes when a commit writes the WAL, before the commit is visible, so a look
    after a wake-up (without the write lock) may miss it: it is repeated after each of
    ``RECHECK_AFTER``, from the start again when another commit wakes the consumer
    meanwhile (a commit landing late in one schedule could otherwise outlast it and wait
    for the periodic re-check). After a wait that timed out the next look claims
    (:attr:`claim`): only a claim promotes due delayed messages and expired leases.
    """

    __slots__ = ("claim", "_rechecks", "_short", "_after")

    def __init__(self, claim: bool, hinted: bool, early: bool = True) -> None:
        #: The next look claims (takes the write lock) instead of probing.
        self.claim = claim
        # A waiter whose hints never precede their commit (``Waiter.early`` False:
        # PostgreSQL's NOTIFY) needs no re-looks: an empty look after a hint is final.
        self._after = RECHECK_AFTER if early else ()
        self._rechecks = 0 if hinted else len(self._after)
        self._short = False

    def sleep(self, wait: Callable[[float], bool], timeout: float, relook: bool = True) -> None:
        """After an empty look: ``wait(seconds)`` (True when woken by a hint) briefly
        while re-looks are left and *relook* (the look found nothing ready), else up
        to *timeout*."""
        self.woke(wait(self.delay(timeout, relook)))

    def delay(self, timeout: float, relook: bool = True) -> float:
        """The next wait's length, for callers that wait on their own (``liteq.aio``
        awaits the hint instead of blocking); report how it ended with :meth:`woke`."""
        self._short = not self.claim and relook and self._rechecks < len(self._after)
        return min(timeout, self._after[self._rechecks]) if self._short else timeout

    def woke(self, woken: bool) -> None:
        """The wait of :meth:`delay` ended: by a hint (*woken*) or its timeout."""
        if self._short:
            self._rechecks = 0 if woken else self._rechecks + 1
        else:
            self.claim = not woken
            self._rechecks = 0
