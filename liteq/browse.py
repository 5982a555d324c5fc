"""Looking through a queue page by page, and acting on chosen messages (the web
dashboard's reads and writes, issue 21).

Pages are keyset pages by id (``id > after``): a page deep in a big queue costs what the
first one does, and a message put meanwhile never shifts one page's rows onto the next.
A search by task reads the payloads, so it looks at no more than *scan* messages per
page and says where it stopped (the task name lives inside the CBOR payload, where no
index reaches).
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

__all__ = ["Page", "page", "dead_groups", "redrive_ids", "purge_ids", "matching_ids",
           "SCAN_LIMIT"]

#: Most messages one task search reads for one page.
SCAN_LIMIT = 2000


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
    dedup *key*, or of *task* (read from at most *scan* payloads), when given."""
    code = _state(state)
    backend = q.db.backend
    if task is None:
        rows = backend.browse(q.id, code, after, n + 1, key=key)
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
