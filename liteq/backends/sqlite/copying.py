"""``liteq copy`` on SQLite: export rows in id order from one read snapshot, import them
with their ids, then rebuild the counters (the driver is ``liteq/copy.py``).

SQLite facts this relies on:

* A read transaction sees one snapshot from its first read to its end (WAL mode), so
  the whole export is consistent however long it takes; meanwhile checkpoints cannot
  move the ``-wal`` file back to its start, so it grows while writers work.
* ``INSERT ... ON CONFLICT (id) DO NOTHING`` skips only a row whose id is there (not
  ``INSERT OR IGNORE``, which would also skip a row breaking another constraint).
* ``messages`` gives a new row ``max(id) + 1`` and keeps its largest id ever handed out
  as a *tombstone* row (qid 0: schema.py, ``_V_IDS``) when that message is gone. The
  tombstone is no message: it is neither exported nor counted, but its id is in the
  counters (``max(id)``), and the destination gets one above every copied id when the
  source handed out more (acked messages, whose results rows may have been copied). The
  other tables reuse ``max(id) + 1``, which is past every copied id.
* Lease tokens are random 64-bit values, not a sequence: nothing to move.
* ``wf_edges`` has no id: it goes over by child (``WfEdgeRow``), every edge of a child in
  one chunk. Inserting copied edges and ``wf_jobs`` rows fires no trigger (they fire on
  updates), so the counters arrive as the snapshot had them; ``messages.wf`` is rebuilt
  from the edges at the end.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from ...errors import InvalidArgument
from ..records import State
from ..tables import COPY_TABLES, FLAGS, ROW_TYPES, Counters, check_table
from .base import StoreBase
from .workflow_sql import SQL_WF_EDGE_SELECT

__all__ = ["CopyVerbs"]

_MARK = "copy:"


def _columns(table: str) -> str:
    return ", ".join(f'"{c}"' for c in ROW_TYPES[table]._fields)


SQL_EXPORT = {t: f"SELECT {_columns(t)} FROM {t} WHERE id > ? ORDER BY id LIMIT ?"
              for t in COPY_TABLES}
SQL_EXTENT = {t: f"SELECT count(*), coalesce(max(id), 0) FROM {t}" for t in COPY_TABLES}
# Not the tombstone (qid 0).
SQL_EXPORT["messages"] = SQL_EXPORT["messages"].replace("WHERE id > ?", "WHERE id > ? AND qid <> 0")
SQL_EXTENT["messages"] += " WHERE qid <> 0"
SQL_IMPORT = {
    t: f"INSERT INTO {t} ({_columns(t)}) VALUES "
       f"({', '.join('?' * len(ROW_TYPES[t]._fields))}) ON CONFLICT (id) DO NOTHING"
    for t in COPY_TABLES
}
# The edges of the next *limit* children (a chunk may hold more rows than that), as
# their children read them: a success kept in its parent's results row (WFKEEP_SCHEMA)
# arrives settled on the edge, which every engine reads.
SQL_EXPORT["wf_edges"] = SQL_WF_EDGE_SELECT + """WHERE e.child IN (
    SELECT DISTINCT child FROM wf_edges WHERE child > ? ORDER BY child LIMIT ?)
ORDER BY e.child, e.parent
"""
SQL_EXTENT["wf_edges"] = "SELECT count(*), coalesce(max(child), 0) FROM wf_edges"
SQL_IMPORT["wf_edges"] = SQL_IMPORT["wf_edges"].replace("(id)", "(parent, child)")
# A job's attempts, the next *limit* jobs' at a time (keyed by (id, attempt)).
SQL_EXPORT["attempts"] = f"""
SELECT {_columns("attempts")} FROM attempts WHERE id IN (
    SELECT DISTINCT id FROM attempts WHERE id > ? ORDER BY id LIMIT ?)
ORDER BY id, attempt
"""
SQL_IMPORT["attempts"] = SQL_IMPORT["attempts"].replace("(id)", "(id, attempt)")
SQL_WF_FLAGS = "UPDATE messages SET wf = 1 WHERE wf IS NULL AND id IN (SELECT parent FROM wf_edges)"
# The largest message id ever handed out: the tombstone's, when that message is gone.
SQL_COUNTERS = """
SELECT max(coalesce((SELECT max(id) FROM messages), 0),
           coalesce((SELECT max(id) FROM results), 0)),
       coalesce((SELECT value FROM meta WHERE key = 'subs_version'), 0)
"""
# New ids above :n: a tombstone there, unless a row is already at or above it (the view's
# trigger, msg_tombstone_move, also deletes the previous tombstone).
SQL_IDS_ABOVE = """
INSERT INTO msg_tombstone (id) SELECT :n WHERE :n > coalesce((SELECT max(id) FROM messages), 0)
"""
SQL_SUBS_RAISE = """
INSERT INTO meta (key, value) VALUES ('subs_version', :v)
ON CONFLICT (key) DO UPDATE SET value = max(value, excluded.value)
"""
# The counter is kept only while the queue has a max_depth or count_depth (as
# SQL_RECOUNT does for one queue); one count per state, each a range of its index.
SQL_RECOUNT_ALL = f"""
UPDATE queues SET depth = CASE WHEN max_depth IS NULL AND NOT count_depth THEN 0 ELSE
  (SELECT count(*) FROM messages WHERE qid = queues.id AND state = {int(State.READY)}) +
  (SELECT count(*) FROM messages WHERE qid = queues.id AND state = {int(State.DELAYED)}) +
  (SELECT count(*) FROM messages WHERE qid = queues.id AND state = {int(State.LEASED)}) END
"""
SQL_MARKS = "SELECT key, value FROM meta WHERE substr(key, 1, 5) = 'copy:'"
SQL_MARK = """
INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value
"""


class CopyVerbs(StoreBase):
    """The copying verbs of :class:`~liteq.backends.base.Backend` (a mixin of
    SQLiteBackend)."""

    @contextmanager
    def copy_snapshot(self) -> Iterator[None]:
        if self.conn().in_transaction:
            raise InvalidArgument("copy_snapshot() cannot run inside db.transaction()")
        with self.read() as cur:
            # The snapshot starts at the first read, not at BEGIN: take it now.
            cur.execute("SELECT 1 FROM queues LIMIT 1").fetchall()
            yield

    def export_rows(self, table: str, after_id: int, limit: int) -> list[tuple[Any, ...]]:
        make = ROW_TYPES[check_table(table)]._make
        with self.read() as cur:
            return [make(r) for r in cur.execute(SQL_EXPORT[table], (after_id, limit))]

    def export_extent(self, table: str) -> tuple[int, int]:
        with self.read() as cur:
            count, top = cur.execute(SQL_EXTENT[check_table(table)]).fetchall()[0]
        return int(count), int(top)

    def export_counters(self) -> Counters:
        with self.read() as cur:
            message_id, subs = cur.execute(SQL_COUNTERS).fetchall()[0]
        return Counters(message_id=int(message_id), token=None, subs_version=int(subs))

    def import_rows(self, table: str, rows: Sequence[tuple[Any, ...]]) -> int:
        fields = ROW_TYPES[check_table(table)]._fields
        flags = [fields.index(name) for name in FLAGS.get(table, ())]
        if flags:
            rows = [_ints(row, flags) for row in rows]
        conn = self.conn()
        with self.write() as cur:
            before = conn.total_changes()
            cur.executemany(SQL_IMPORT[table], rows)
            return int(conn.total_changes() - before)

    def import_counters(self, counters: Counters) -> None:
        with self.write() as cur:
            top = cur.execute(SQL_COUNTERS).fetchall()[0][0]
            n = max(int(top), int(counters.message_id))
            cur.execute(SQL_IDS_ABOVE, {"n": n})
            cur.execute(SQL_SUBS_RAISE, {"v": int(counters.subs_version)})
            cur.execute(SQL_RECOUNT_ALL)
            cur.execute(SQL_WF_FLAGS)

    def copy_marks(self) -> dict[str, int]:
        with self.read() as cur:
            return {key[len(_MARK):]: int(value) for key, value in cur.execute(SQL_MARKS)}

    def set_copy_mark(self, name: str, value: int) -> None:
        with self.write() as cur:
            cur.execute(SQL_MARK, (_MARK + name, int(value)))


def _ints(row: tuple[Any, ...], at: list[int]) -> tuple[Any, ...]:
    values = list(row)
    for i in at:
        values[i] = int(bool(values[i]))
    return tuple(values)
