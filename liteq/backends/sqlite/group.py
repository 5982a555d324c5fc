"""Group commit: the plain puts of one process's threads share commits (issue 23).

At ``durability="full"`` every commit waits for an fsync, and SQLite's single writer
makes threads that put at once wait for each other's fsyncs in turn. Here a thread that
puts while another thread's commit is under way does not queue for the write lock: it
leaves its message with the :class:`GroupCommit`, and the next commit writes every
message left since, in one transaction. The first thread to arrive leads: it opens the
transaction on its own connection, inserts every waiting message, commits, hands each
caller its id (or its own error), and passes the lead to a thread that arrived meanwhile.

What does not change: a put returns only after the COMMIT that holds its message (a
crash loses nothing that was returned, and a batch is all-or-nothing); a put that fails
fails alone (a full queue refuses only the puts that do not fit: the depth check and
the insert of one message write nothing when it refuses); an error of the transaction
itself (the disk is full, the lock could not be had) reaches every put of that batch,
none of which was written. A put inside ``db.transaction()`` joins that transaction as
before, never a group.

Only :meth:`put_ready` (one message due now, no key, headers or rank: what ``Queue.put``
sends most) is grouped. It is on where it was measured to win: at ``durability="full"``
(``bench/bench_group.py``); at ``"normal"`` a commit costs no fsync and the Python work
of the puts, serialized by the GIL, is what limits them, so grouping only adds hand-offs.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence

from ...errors import LiteqError

__all__ = ["GroupCommit", "MAX_GROUP"]

#: The most puts one commit carries; the rest wait for the next.
MAX_GROUP = 1000


class _Put:
    """One waiting put: its message, then its id or its error."""

    __slots__ = ("qid", "priority", "payload", "result", "error", "done", "lead")

    def __init__(self, qid: int, priority: int, payload: bytes) -> None:
        self.qid = qid
        self.priority = priority
        self.payload = payload
        self.result = 0
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.lead = False  # woken to lead the next commit, not with an outcome


class GroupCommit:
    """Shares commits between the threads of one process that put into one file
    (see the module's text)."""

    def __init__(
        self, write: Callable[[Sequence[tuple[int, int, bytes]]], list[int | LiteqError]]
    ) -> None:
        #: Writes ``(qid, priority, payload)`` puts in one transaction; returns each
        #: one's id or its own error (``QueueVerbs.put_ready_group``).
        self.write = write
        self._lock = threading.Lock()
        self._waiting: list[_Put] = []
        self._leading = False
        self._pid = os.getpid()

    def put_ready(self, qid: int, priority: int, payload: bytes) -> int:
        """Put one message due now (see :meth:`QueueVerbs.put_ready`); return its id
        after the commit that holds it."""
        me = _Put(qid, priority, payload)
        with self._lock:
            if self._pid != os.getpid():  # a forked child: the parent's threads are gone
                self._waiting, self._leading, self._pid = [], False, os.getpid()
            self._waiting.append(me)
            lead = not self._leading
            self._leading = True
        if not lead:
            me.done.wait()
            if not me.lead:
                return self._outcome(me)
        self._lead()
        return self._outcome(me)

    @staticmethod
    def _outcome(me: _Put) -> int:
        if me.error is not None:
            raise me.error
        return me.result

    def _lead(self) -> None:
        """Commit what is waiting (this thread's own put is among it), then pass the lead."""
        with self._lock:
            batch = self._waiting[:MAX_GROUP]
            del self._waiting[:MAX_GROUP]
        try:
            self._commit(batch)
        except BaseException as exc:  # the transaction failed: nothing of it was written
            for put in batch:
                put.error = exc
        finally:
            with self._lock:
                nxt = self._waiting[0] if self._waiting else None
                self._leading = nxt is not None
            if nxt is not None:
                nxt.lead = True
                nxt.done.set()
            for put in batch:  # this thread's own event too: nobody waits on it
                put.done.set()

    def _commit(self, batch: list[_Put]) -> None:
        outcomes = self.write([(put.qid, put.priority, put.payload) for put in batch])
        for put, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, LiteqError):
                put.error = outcome
            else:
                put.result = outcome

    def __repr__(self) -> str:
        return f"<GroupCommit {len(self._waiting)} waiting{' (leading)' if self._leading else ''}>"

