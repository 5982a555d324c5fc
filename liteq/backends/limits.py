"""What a queue's flow limits change in the answers of both engines (issue 19): a
probe's and ``next_due``'s when its buckets ran dry, and its stats.

Each engine remembers, per queue, until when its claims find every bucket they need
empty (``held``: queue id -> epoch seconds of the next token; the claims set and clear
it). Waiting consumers then sleep until that token instead of looking again and again.
"""

from __future__ import annotations

from .records import QueueStats

__all__ = ["held_probe", "held_due", "stats_with_limits"]


def held_probe(held: dict[int, float], qid: int, ready: bool, due: float,
               now: float) -> tuple[bool, float]:
    """A probe's ``(ready, due)`` for queue *qid*, corrected for its empty buckets: not
    ready before their next token, which is then due."""
    until = held.get(qid)
    if until is None or not ready or now >= until:
        return ready, due
    return False, min(due, until)


def held_due(held: dict[int, float], qid: int, due: float) -> float:
    """``next_due``'s answer for queue *qid*: its next token, if that comes first."""
    until = held.get(qid)
    return due if until is None else min(due, until)


def stats_with_limits(counts: QueueStats, limits: tuple[int, int, float | None]) -> QueueStats:
    """*counts* with the queue's ``(running, held, tokens)`` (``Backend.limit_stats``):
    when the queue's own bucket is empty, every ready message waits."""
    running, held, tokens = limits
    if tokens is not None and tokens < 1:
        held = counts.ready
    return counts._replace(limited_running=running, held=held)
