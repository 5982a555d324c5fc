"""The SQL of the workers registry, job progress, history, attempts and task search
(issue 21, schema version 4 and ``_V_OBS``): a module of its own so that ``base.py``
(the totals flush writes history), ``jobs.py`` (attempts pruned with results) and
``operating.py`` share it."""

from __future__ import annotations

from ..records import MessageRecord
from ..registry import HistoryRow, WorkerRecord
from .schema import TASK_NAME, TASK_PAYLOAD

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
  AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.id = progress.id AND m.qid <> 0)
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

# The dashboard's pages (keyset by id), two ways to the same rows. SORTED reads the
# state's partial index for the queue and sorts by id: its cost grows with the rows in
# that state (a finished state needs the literal ``state >= 3`` for msg_finished to
# apply). WALK follows the primary key from ``after`` and filters (the ``+`` keeps the
# planner off the partial indexes): its cost grows with the rows it steps over, small
# when the state is common. The engine counts up to BROWSE_SORT_MAX rows to choose.
# ``{filter}`` is "", a key or an error condition.
BROWSE_SORT_MAX = 200_000
_BROWSE_SORTED = (f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE qid = :qid AND state = :state "
                  "{finished} AND id > :after {filter} ORDER BY id LIMIT :n")
_BROWSE_WALK = (f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE +qid = :qid AND +state = :state "
                "AND id > :after {filter} ORDER BY id LIMIT :n")
_KEY = "AND key = :key"
_ERROR = "AND error IS :error"
SQL_BROWSE = _BROWSE_SORTED.format(finished="", filter="")
SQL_BROWSE_FINISHED = _BROWSE_SORTED.format(finished="AND state >= 3", filter="")
SQL_BROWSE_WALK = _BROWSE_WALK.format(filter="")
SQL_BROWSE_KEY_FINISHED = _BROWSE_SORTED.format(finished="AND state >= 3", filter=_KEY)
SQL_BROWSE_KEY_WALK = _BROWSE_WALK.format(filter=_KEY)
SQL_BROWSE_ERROR = _BROWSE_SORTED.format(finished="AND state >= 3", filter=_ERROR)
SQL_BROWSE_ERROR_WALK = _BROWSE_WALK.format(filter=_ERROR)
# An unfinished message's key is in msg_key (whose condition is ``state < 3``).
SQL_BROWSE_KEY = (f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE qid = :qid AND key = :key "
                  "AND state < 3 AND state = :state AND id > :after ORDER BY id LIMIT :n")
SQL_STATE_ROWS_UPTO = ("SELECT count(*) FROM (SELECT 1 FROM messages WHERE qid = :qid "
                       "AND state = :state {finished} LIMIT :cap)")
SQL_STATE_ROWS_UPTO_UNFINISHED = SQL_STATE_ROWS_UPTO.format(finished="")
SQL_STATE_ROWS_UPTO_FINISHED = SQL_STATE_ROWS_UPTO.format(finished="AND state >= 3")
# The dashboard's counts: each state's rows up to :cap, through the state's partial index
# (``state >= 3`` for msg_finished); the ready rows with their run_at (in msg_ready).
_UPTO = ("(SELECT count(*) FROM (SELECT 1 FROM messages WHERE qid = :qid AND state = {state} "
         "{finished} LIMIT :cap))")
SQL_STATE_COUNTS = f"""
SELECT r.n, {_UPTO.format(state=1, finished="")}, {_UPTO.format(state=2, finished="")},
  {_UPTO.format(state=3, finished="AND state >= 3")},
  {_UPTO.format(state=4, finished="AND state >= 3")},
  {_UPTO.format(state=5, finished="AND state >= 3")}, r.oldest,
  CASE WHEN q.max_depth IS NOT NULL OR q.count_depth THEN q.depth END, q.max_depth
FROM queues AS q,
  (SELECT count(*) AS n, min(run_at) AS oldest
   FROM (SELECT run_at FROM messages WHERE qid = :qid AND state = 0 LIMIT :cap)) AS r
WHERE q.id = :qid
"""
SQL_ERROR_GROUPS = """
SELECT error, count(*) AS n, max(id) FROM messages
WHERE qid = :qid AND state = :state AND state >= 3
GROUP BY error ORDER BY n DESC, error LIMIT :n
"""
SQL_DELETE_FINISHED = ("DELETE FROM messages WHERE id IN ({marks}) AND qid = ? AND state = ? "
                       "AND state >= 3")
# Charts: a queue's own counts (task ''): put, acked, and dead (every message of the
# queue that went dead, counted by the trigger history_failures), per bucket. The day's
# and week's charts read the hourly roll-ups (a week is 168 rows per queue, not 10,080).
_SUMS = """
SELECT {unit} / :width * :width AS b, sum(put), sum(acked), sum(dead), sum(failed)
FROM {table} WHERE {unit} >= :since AND task = '' AND (:qid IS NULL OR qid = :qid)
GROUP BY b ORDER BY b
"""
SQL_HISTORY_SUMS = _SUMS.format(unit="minute", table="history")
SQL_HOURS_SUMS = _SUMS.format(unit="hour * 60", table="history_hours").replace(
    "hour * 60 >= :since", "hour >= :since / 60")
# The run-time histogram: each (queue, task)'s rows summed over the window, from the
# hourly roll-ups (the window is days long; it starts at the hour of :since).
SQL_HISTORY_RUNS = """
SELECT qid, min(hour) * 60, task, sum(put), sum(acked), sum(failed), sum(dead), sum(runs),
       sum(run_total), max(run_max), sum(le_10ms), sum(le_100ms), sum(le_1s), sum(le_10s),
       sum(le_60s)
FROM history_hours WHERE hour >= :since / 60 AND task <> '' GROUP BY qid, task
ORDER BY qid, task
"""
SQL_HOURS_PRUNE = "DELETE FROM history_hours WHERE hour < ? / 60"

# Attempts (issue 21, _V_OBS): the rows of the attempts that did not end the job, then
# its results row as the last attempt (unless an attempts row has its number: a lease
# that ran out on the last attempt is both).
_ATTEMPT_COLUMNS = "id, attempt, worker, started_at, ended_at, outcome, error"
SQL_ATTEMPT_SAVE = f"INSERT OR REPLACE INTO attempts ({_ATTEMPT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
SQL_ATTEMPTS = f"""
SELECT {_ATTEMPT_COLUMNS} FROM attempts WHERE id = :id
UNION ALL
SELECT id, attempts, worker, started_at, coalesce(started_at + duration, finished_at),
       CASE state WHEN 3 THEN 'done' WHEN 4 THEN 'dead' ELSE 'cancelled' END, error
FROM results AS r WHERE id = :id
  AND NOT EXISTS (SELECT 1 FROM attempts AS a WHERE a.id = r.id AND a.attempt = r.attempts)
ORDER BY 2
"""
# Attempts of jobs whose message and results row are both gone (pruned with the result).
SQL_ATTEMPTS_PRUNE = """
DELETE FROM attempts
WHERE NOT EXISTS (SELECT 1 FROM messages m WHERE m.id = attempts.id AND m.qid <> 0)
  AND NOT EXISTS (SELECT 1 FROM results r WHERE r.id = attempts.id)
"""

# Search by task: msg_task holds (qid, task name, id) of every task payload, so a page
# of one task's messages is a range of it; the state is checked on each row.
SQL_BROWSE_TASK = (f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE qid = :qid "
                   f"AND {TASK_PAYLOAD} AND ({TASK_NAME}) = :task AND id > :after "
                   "AND state = :state ORDER BY id LIMIT :n")
