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

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from .backends.base import Waiter
    from .turns import Turn

__all__ = ["Looks", "RECHECK_AFTER", "wait_and_claim"]

_T = TypeVar("_T")


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


def wait_and_claim(
    claim: Callable[[], list[_T]],
    probe: Callable[[], tuple[bool, float]],
    next_due: Callable[[], float],
    clock: Callable[[], float],
    waiter: Waiter,
    turn: Turn | None,
    deadline: float,
) -> list[_T]:
    """``Queue.get_many(wait=...)`` after its first claim found nothing: wait for work
    until *deadline* (monotonic) and claim it; ``[]`` if none came. *probe* looks
    without the write lock (is anything ready, and the next due time), *next_due* is
    the queue's next delayed message or lease expiry, *clock* the store's. *turn* is
    this thread's place among the queue's idle consumers (``liteq.turns``), passed on
    when the wait ends, after the claim that ended it committed."""
    # Arm, and look once more without the write lock. A hint drained by that arm() is
    # a commit since the claim that may not be visible yet: re-look as after a wake-up.
    # No hint: sleep long after an empty look.
    hinted = waiter.arm()
    looks = Looks(claim=False, hinted=hinted, early=waiter.early)
    # Where hints follow their commits (``early`` False: PostgreSQL's NOTIFY), a look
    # after an empty one is worth a statement only after a hint: none since means no
    # commit since has been announced, and one that is will end the wait. So no look
    # right after the empty claim (or after taking the turn) unless a hint came.
    later = not waiter.early
    try:
        while True:
            due_at = None
            if looks.claim:
                ready = True
            elif later and not hinted:
                ready = False  # nothing announced since the last empty look: sleep
            else:
                # Woken by a commit, which may be anyone's (another consumer's ack, a
                # put to another queue): look without the write lock first, so that
                # idle consumers do not queue on it behind the producers.
                ready, due_at = probe()
            if ready:
                msgs = claim()
                if msgs:
                    waiter.found()
                    return msgs
            left = deadline - time.monotonic()
            if left <= 0:
                return []
            # Sleep until a commit (hint), the next delayed message or lease expiry
            # that we know of, or a periodic re-check, whichever is first.
            if due_at is None:
                due_at = next_due()
            timeout = max(0.0, min(left, due_at - clock(), 1.0))
            if turn is None or turn.take():
                looks.sleep(waiter.wait, timeout, relook=not ready)
            else:
                # Another consumer's turn: wait for it (then look at once, as after a
                # hint) or for the timeout (then claim, as after any).
                looks.woke(turn.wait(looks.delay(timeout, relook=False)))
            # Arm before the next look: a commit landing between an empty look and the
            # wait is then already queued on the waiter, which returns at once.
            hinted = waiter.arm()
    finally:
        if turn is not None:
            turn.pass_on()
