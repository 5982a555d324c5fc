"""The SQL of the workers registry, job progress and history (issue 21, schema version
4): a module of its own so that ``base.py`` (the totals flush writes history) and
``operating.py`` share it."""

from __future__ import annotations

from ..records import MessageRecord
from ..registry import HistoryRow, WorkerRecord

_WORKER_COLUMNS = ", ".join(WorkerRecord._fields)
_HISTORY_COLUMNS = ", ".join(HistoryRow._fields)
#: A message's columns, in :class:`MessageRecord`'s order.
MESSAGE_COLUMNS = ", ".join(MessageRecord._fields)
_ADDED = ("put", "acked", "failed", "dead", "runs", "run_total", "le_10ms", "le_100ms",
          "le_1s", "le_10s", "le_60s")

SQL_WORKER_SAVE = (f"INSERT OR REPLACE INTO workers ({_WORKER_COLUMNS}) "
                   f"VALUES ({', '.join('?' * len(WorkerRecord._fields))})")
SQL_WORKER_REMOVE = "DELETE FROM workers WHERE id = ?"
SQL_WORKERS = f"SELECT {_WORKER_COLUMNS} FROM workers ORDER BY started_at, id"
SQL_WORKERS_PRUNE = "DELETE FROM workers WHERE heartbeat_at < ?"

SQL_PROGRESS_SET = "INSERT OR REPLACE INTO progress (id, fraction, note, at) VALUES (?, ?, ?, ?)"
SQL_PROGRESS_GET = "SELECT id, fraction, note, at FROM progress WHERE id IN ({marks})"
SQL_PROGRESS_PRUNE = """
DELETE FROM progress WHERE at < ?
  AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.id = progress.id)
  AND NOT EXISTS (SELECT 1 FROM results r WHERE r.id = progress.id)
"""

SQL_HISTORY_ADD = f"""
INSERT INTO history ({_HISTORY_COLUMNS})
VALUES ({", ".join("?" * len(HistoryRow._fields))})
ON CONFLICT (minute, qid, task) DO UPDATE SET
    {", ".join(f"{c} = {c} + excluded.{c}" for c in _ADDED)},
    run_max = max(run_max, excluded.run_max)
"""
SQL_HISTORY = (f"SELECT {_HISTORY_COLUMNS} FROM history WHERE minute >= ? "
               f"AND (? IS NULL OR qid = ?) ORDER BY minute, qid, task")
SQL_HISTORY_PRUNE = "DELETE FROM history WHERE minute < ?"

# The dashboard's pages (keyset by id). ``state = :state`` stays a parameter: its value
# picks the partial index, as in SQL_PEEK.
SQL_BROWSE = (f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE qid = :qid AND state = :state "
              f"AND id > :after ORDER BY id LIMIT :n")
SQL_BROWSE_KEY = (f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE qid = :qid AND key = :key "
                  f"AND state = :state AND id > :after ORDER BY id LIMIT :n")
SQL_BROWSE_ERROR = (f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE qid = :qid "
                    f"AND state = :state AND error IS :error AND id > :after ORDER BY id LIMIT :n")
SQL_ERROR_GROUPS = """
SELECT error, count(*) AS n, max(id) FROM messages WHERE qid = :qid AND state = :state
GROUP BY error ORDER BY n DESC, error LIMIT :n
"""
SQL_DELETE_FINISHED = ("DELETE FROM messages WHERE id IN ({marks}) AND qid = ? AND state = ? "
                       "AND state >= 3")
