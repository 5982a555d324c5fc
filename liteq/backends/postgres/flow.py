"""Flow control on PostgreSQL (issue 19): pausing a queue.

The flag lives in the queue's row (``queues.paused``, migration 2). The claim reads it
inside its own statement (``messages.py``: ``SQL_CLAIM``), so a claim whose statement
starts after ``pause()`` committed takes nothing, whatever its process read a moment
before. (A claim statement already running when the pause commits finishes with the
snapshot it started with: it is ordered before the pause.) A resume sends the NOTIFY a
put sends, so waiting consumers look at once.
"""

from __future__ import annotations

from ..base import Backend
from .connection import Connections
from .schema import qualify

__all__ = ["FlowVerbs", "SQL_SET_PAUSED"]

SQL_SET_PAUSED = "UPDATE {s}.queues SET paused = %s WHERE id = %s RETURNING id"


class FlowVerbs(Backend):
    """Pause and resume (a mixin of PostgresBackend)."""

    conns: Connections
    schema: str
    # From the Notifier mixin (notifier.py).
    notify_sql: str

    def set_paused(self, qid: int, paused: bool) -> bool:
        with self.conns.tx() as cur:
            cur.execute(qualify(SQL_SET_PAUSED, self.schema), (bool(paused), qid))
            found = bool(cur.fetchall())
            if found and not paused:
                # Unthrottled: every waiter must look now, not after the next put.
                cur.execute(self.notify_sql, (str(qid),))
            return found
