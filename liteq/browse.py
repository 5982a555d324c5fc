"""Looking through a queue page by page, and acting on chosen messages (the web
dashboard's reads and writes, issue 21).

Pages are keyset pages by id (``id > after``): a page deep in a big queue costs what the
first one does, and a message put meanwhile never shifts one page's rows onto the next.
A search by task reads the engine's index of task names (``msg_task``: the name sits at
a fixed place in a task payload's CBOR, see the engines' schema ``_V_OBS``); only with a
dedup key as well does it read payloads, at most *scan* per page, and say where it
stopped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from .backends.records import STATES, State
from .backends.registry import ErrorGroup
from .context import Context
from .errors import InvalidArgument
from .job import task_call
from .queue import Message, Queue, inspectable

__all__ = ["Page", "page", "Counts", "counts", "dead_groups", "redrive_ids", "purge_ids",
           "matching_ids", "SCAN_LIMIT", "COUNT_CAP"]

#: Most messages one task search reads for one page.
SCAN_LIMIT = 2000
#: The pages count each state up to this many messages and show more as "100,000+"
#: (``liteq stats`` and ``/metrics`` count exactly): a page of a queue of a million
#: messages then costs what one of 100,000 does.
COUNT_CAP = 100_000


@dataclass
class Counts:
    """A queue's messages per state as a page shows them: exact up to :attr:`cap`."""

    #: The queue's name.
    queue: str
    #: Messages per state name; ``cap + 1`` means more than *cap*.
    states: dict[str, int]
    #: Unfinished messages: the depth counter where the queue keeps one (exact), else
    #: the sum of the ready, delayed and leased counts (at least, when one is over).
    depth: int
    #: True when :attr:`depth` is exact.
    depth_exact: bool
    #: The queue's ``max_depth`` (None: unbounded).
    max_depth: int | None
    #: Seconds the oldest ready message has waited (None: none ready); past the cap,
    #: the oldest of those counted (so it has waited at least that long).
    oldest_ready_age: float | None
    #: Where counting stops.
    cap: int

    def over(self, state: str) -> bool:
        """True when *state* holds more than :attr:`cap` messages."""
        return self.states[state] > self.cap

    def text(self, state: str) -> str:
        """The count of *state* as a page shows it: ``1,234`` or ``100,000+``."""
        return f"{self.cap:,}+" if self.over(state) else f"{self.states[state]:,}"

    def depth_text(self) -> str:
        """The depth as a page shows it (``+`` when only a lower bound is known)."""
        return f"{self.depth:,}" if self.depth_exact else f"{self.depth:,}+"

    @property
    def capped(self) -> bool:
        """True when some count stopped at the cap."""
        return any(n > self.cap for n in self.states.values())


def counts(q: Queue, cap: int | None = None) -> Counts:
    """*q*'s messages per state, each counted up to *cap* (default :data:`COUNT_CAP`;
    through the state's index, at most *cap* + 1 entries each); the depth counter where
    one is kept."""
    cap = COUNT_CAP if cap is None else cap
    c = q.db.backend.count_states(q.id, cap)
    states = {s.label: int(getattr(c, s.label)) for s in State}
    unfinished = [states[s] for s in ("ready", "delayed", "leased")]
    exact = c.depth is not None or all(n <= cap for n in unfinished)
    depth = c.depth if c.depth is not None else sum(min(n, cap) for n in unfinished)
    oldest = None if c.oldest_ready_at is None else max(0.0, q.db.clock() - c.oldest_ready_at)
    return Counts(q.name, states, depth, exact, c.max_depth, oldest, cap)


@dataclass
class Page:
    """One page of a queue's messages in one state."""

    messages: list[Message] = field(default_factory=list)
    #: Where the next page starts (``after=``), or None on the last page.
    next_after: int | None = None
    #: Messages read to find these (a task search reads more than it shows).
    scanned: int = 0


def _state(state: str) -> State:
    try:
        return STATES[state]
    except KeyError:
        raise InvalidArgument(
            f"state must be one of {', '.join(STATES)}, got {state!r}") from None


def page(q: Queue, state: str = "ready", *, after: int = 0, n: int = 50,
         key: str | None = None, task: str | None = None,
         scan: int = SCAN_LIMIT) -> Page:
    """Up to *n* messages of *q* in *state* with ``id > after``, by id; only those with
    dedup *key*, or of *task*, when given (both: the key's messages, with their task
    read from at most *scan* payloads)."""
    code = _state(state)
    backend = q.db.backend
    if task is None or key is None:
        if task is None:
            rows = backend.browse(q.id, code, after, n + 1, key=key)
        else:
            rows = backend.browse_task(q.id, code, task, after, n + 1)
        more = len(rows) > n
        msgs = [inspectable(q, r) for r in rows[:n]]
        return Page(msgs, msgs[-1].id if more and msgs else None, len(rows[:n]))
    out = Page()
    cursor = after
    while out.scanned < scan:
        rows = backend.browse(q.id, code, cursor, min(200, scan - out.scanned), key=key)
        if not rows:
            return out
        for r in rows:
            out.scanned += 1
            cursor = r.id
            msg = inspectable(q, r)
            call = task_call(msg.payload)
            if call is not None and call[0] == task:
                out.messages.append(msg)
                if len(out.messages) == n:
                    out.next_after = cursor
                    return out
    out.next_after = cursor  # stopped at the scan limit: more may match further on
    return out


def dead_groups(q: Queue, n: int = 50) -> list[ErrorGroup]:
    """The dead messages of *q* grouped by error text, most common first."""
    return q.db.backend.error_groups(q.id, State.DEAD, n)


def matching_ids(q: Queue, error: str | None, *, limit: int = 100_000) -> list[int]:
    """The ids of *q*'s dead messages whose error text is *error* (at most *limit*)."""
    ids: list[int] = []
    after = 0
    while len(ids) < limit:
        rows = q.db.backend.browse(q.id, State.DEAD, after, min(1000, limit - len(ids)),
                                   error=error)
        if not rows:
            break
        ids += [r.id for r in rows]
        after = rows[-1].id
    return ids


def redrive_ids(db: Context, q: Queue, ids: Sequence[int]) -> int:
    """Make those of *ids* that are dead messages of *q* ready again (as
    ``liteq retry``); how many."""
    done = 0
    for mid in ids:
        row = db.backend.message(mid)
        if row is not None and row.qid == q.id and row.state == State.DEAD:
            done += db.backend.retry_finished(mid)
    return done


def purge_ids(q: Queue, ids: Sequence[int]) -> int:
    """Delete those of *ids* that are dead messages of *q*; how many."""
    done = 0
    for start in range(0, len(ids), 500):
        done += q.db.backend.delete_finished(q.id, list(ids[start:start + 500]), State.DEAD)
    return done
