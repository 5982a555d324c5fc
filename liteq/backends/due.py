"""What each engine's last look saw due (issue 23: more consumers must not lower
throughput).

A claim that comes up short maintains the queue (promotes its due delayed messages,
settles its expired leases) and looks again, so a consumer woken at a delayed message's
time claims it at once. With several idle consumers, most claims come up short, and
each one's maintenance was a statement (PostgreSQL) or a write transaction (SQLite:
the write lock that producers and busy consumers wait for) that found nothing to do.

A probe and ``next_due`` read the earliest time a delayed message falls due or a lease
runs out. A short claim now skips its maintenance when such a look, at most
:data:`FRESH` seconds old, saw nothing due before now. A delayed message put since
(with an earlier time) or a lease shorter than that window is then settled by the next
maintenance every claim still runs every ``MAINTAIN_EVERY`` seconds, or by the claim
that follows the commit's wake-up (whose probe sees it): at most ``FRESH`` late.
"""

from __future__ import annotations

__all__ = ["FRESH", "SeenDue"]

#: How long a look's answer stands in for maintenance (s): the engines' MAINTAIN_EVERY.
FRESH = 0.05


class SeenDue:
    """Per queue: the due time the last look saw, and when (the store's clock)."""

    def __init__(self) -> None:
        self._seen: dict[int, tuple[float, float]] = {}

    def saw(self, qid: int, due: float, now: float) -> None:
        self._seen[qid] = (due, now)

    def recent(self, qid: int, now: float) -> float | None:
        """The due time a look at most FRESH seconds ago saw, or None."""
        seen = self._seen.get(qid)
        return seen[0] if seen is not None and 0 <= now - seen[1] < FRESH else None

    def nothing_due(self, qid: int, now: float) -> bool:
        """True if a look at most FRESH seconds ago saw nothing due before *now*."""
        seen = self._seen.get(qid)
        return seen is not None and now < seen[0] and 0 <= now - seen[1] < FRESH
