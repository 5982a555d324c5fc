"""Flow control on SQLite (issue 19): pausing a queue.

The flag lives in the queue's row (``queues.paused``, schema version 3). The claim
statements read it themselves (``sql.py``: ``SQL_CLAIM_NEXT``, ``SQL_NEXT_READY``,
``SQL_CLAIM_SELECT``), under the write lock a claim holds: a claim that runs after
``pause()`` committed takes nothing, whatever its process read a moment before. A
resume is a commit, which wakes waiting consumers as a put does (the ``-wal`` write).
"""

from __future__ import annotations

from .base import StoreBase
from .sql import SQL_SET_PAUSED

__all__ = ["FlowVerbs"]


class FlowVerbs(StoreBase):
    """Pause and resume (a mixin of SQLiteBackend)."""

    def set_paused(self, qid: int, paused: bool) -> bool:
        with self.write() as cur:
            cur.execute(SQL_SET_PAUSED, (int(paused), qid))
            return bool(cur.connection.changes())
