"""The workers registry, job progress, per-minute history (with hourly roll-ups), job
attempts and task search on PostgreSQL (issue 21; the verbs of
:class:`~liteq.backends.registry.OperatingVerbs`, schema version 3 and ``_V_OBS``). Each
verb is one statement; ``add_history`` adds any number of rows in one ``INSERT ...
SELECT FROM unnest(...)``, sorted by key so that two writers lock rows in one order."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cached_property

from ...errors import LiteqError
from ..records import MessageRecord
from ..registry import (
    AttemptRecord,
    ErrorGroup,
    HistoryRow,
    HistorySums,
    ProgressRecord,
    StateCounts,
    WorkerRecord,
)
from .connection import Connections
from .obs_sql import TASK_NAME, TASK_PAYLOAD
from .queues import Statements
from .schema import qualify

__all__ = ["OperatingVerbs"]

_WORKER_COLUMNS = ", ".join(WorkerRecord._fields)
_HISTORY_COLUMNS = ", ".join(HistoryRow._fields)
_HISTORY_TYPES = ("bigint", "bigint", "text", "bigint", "bigint", "bigint", "bigint", "bigint",
                  "float8", "float8", "bigint", "bigint", "bigint", "bigint", "bigint")
_ADDED = ("put", "acked", "failed", "dead", "runs", "run_total", "le_10ms", "le_100ms",
          "le_1s", "le_10s", "le_60s")

SQL_WORKER_SAVE = f"""
INSERT INTO {{s}}.workers ({_WORKER_COLUMNS})
VALUES ({", ".join("%s" for _ in WorkerRecord._fields)})
ON CONFLICT (id) DO UPDATE SET
    {", ".join(f"{c} = excluded.{c}" for c in WorkerRecord._fields[1:])}
"""
SQL_WORKER_REMOVE = "DELETE FROM {s}.workers WHERE id = %s"
SQL_WORKERS = f"SELECT {_WORKER_COLUMNS} FROM {{s}}.workers ORDER BY started_at, id"
SQL_WORKERS_PRUNE = "DELETE FROM {s}.workers WHERE heartbeat_at < %s"

SQL_PROGRESS_SET = """
INSERT INTO {s}.progress (id, fraction, note, at) VALUES (%s, %s, %s, %s)
ON CONFLICT (id) DO UPDATE SET fraction = excluded.fraction, note = excluded.note,
    at = excluded.at
"""
SQL_PROGRESS_GET = "SELECT id, fraction, note, at FROM {s}.progress WHERE id = ANY(%s::bigint[])"
SQL_PROGRESS_PRUNE = """
DELETE FROM {s}.progress p WHERE p.at < %s
  AND NOT EXISTS (SELECT 1 FROM {s}.messages m WHERE m.id = p.id)
  AND NOT EXISTS (SELECT 1 FROM {s}.results r WHERE r.id = p.id)
"""

SQL_HISTORY_ADD = f"""
INSERT INTO {{s}}.history AS h ({_HISTORY_COLUMNS})
SELECT * FROM unnest({", ".join(f"%s::{t}[]" for t in _HISTORY_TYPES)})
    AS u({_HISTORY_COLUMNS})
ORDER BY minute, qid, task
ON CONFLICT (minute, qid, task) DO UPDATE SET
    {", ".join(f"{c} = h.{c} + excluded.{c}" for c in _ADDED)},
    run_max = greatest(h.run_max, excluded.run_max)
"""
SQL_HISTORY = f"""
SELECT {_HISTORY_COLUMNS} FROM {{s}}.history
WHERE minute >= %(since)s AND (%(qid)s::bigint IS NULL OR qid = %(qid)s)
ORDER BY minute, qid, task
"""
# The hourly roll-ups of the hours before the cut go with the minutes.
SQL_HISTORY_PRUNE = """
WITH hours AS (DELETE FROM {s}.history_hours WHERE hour < %(before)s / 60)
DELETE FROM {s}.history WHERE minute < %(before)s RETURNING 1
"""

_MESSAGE_COLUMNS = ", ".join(MessageRecord._fields)
# The dashboard's pages (keyset by id).
SQL_BROWSE = f"""
SELECT {_MESSAGE_COLUMNS} FROM {{s}}.messages
WHERE qid = %(qid)s AND state = %(state)s AND id > %(after)s ORDER BY id LIMIT %(n)s
"""
# A state with few rows in a big queue (45k delayed among 1M) must not be paged by
# walking the primary key from `after` (the planner's choice for SQL_BROWSE: 145 ms at
# 1M when those rows sit at the table's end). As on SQLite (opsql.py, SORTED and WALK),
# the engine counts the state's rows up to BROWSE_SORT_MAX through its partial index
# (the literal state lets the planner prove the index's condition) and, below that,
# reads them through that index and sorts: ``ORDER BY id + 0`` keeps the planner off
# the primary key's order.
BROWSE_SORT_MAX = 200_000
_FINISHED = {st: "AND state >= 3" if st >= 3 else "" for st in range(6)}
#: Per state: its rows of queue %(qid)s counted up to %(cap)s, through its index.
STATE_UPTO = {st: f"SELECT count(*) FROM (SELECT 1 FROM {{s}}.messages WHERE qid = %(qid)s "
                  f"AND state = {st} {_FINISHED[st]} LIMIT %(cap)s) AS c" for st in range(6)}
#: Per state: a page of its rows read through its index and sorted by id.
BROWSE_SORTED = {st: f"SELECT {_MESSAGE_COLUMNS} FROM {{s}}.messages WHERE qid = %(qid)s "
                     f"AND state = {st} {_FINISHED[st]} AND id > %(after)s "
                     f"ORDER BY id + 0 LIMIT %(n)s" for st in range(6)}
SQL_BROWSE_KEY = f"""
SELECT {_MESSAGE_COLUMNS} FROM {{s}}.messages
WHERE qid = %(qid)s AND key = %(key)s AND state = %(state)s AND id > %(after)s
ORDER BY id LIMIT %(n)s
"""
SQL_BROWSE_ERROR = f"""
SELECT {_MESSAGE_COLUMNS} FROM {{s}}.messages
WHERE qid = %(qid)s AND state = %(state)s AND error IS NOT DISTINCT FROM %(error)s
  AND id > %(after)s ORDER BY id LIMIT %(n)s
"""
SQL_ERROR_GROUPS = """
SELECT error, count(*) AS n, max(id) FROM {s}.messages WHERE qid = %(qid)s AND state = %(state)s
GROUP BY error ORDER BY n DESC, error LIMIT %(n)s
"""
# The dashboard's counts: each state's rows up to %(cap)s, each through its partial index
# (the literal state lets the planner prove the index's condition); the depth counter
# is the sum of the queue's stripes, kept only while max_depth or count_depth is set.
_UPTO = ("(SELECT count(*) FROM (SELECT 1 FROM {{s}}.messages WHERE qid = %(qid)s "
         "AND state = {state} {finished} LIMIT %(cap)s) AS c)")
SQL_STATE_COUNTS = f"""
SELECT r.n, {_UPTO.format(state=1, finished="")}, {_UPTO.format(state=2, finished="")},
  {_UPTO.format(state=3, finished="AND state >= 3")},
  {_UPTO.format(state=4, finished="AND state >= 3")},
  {_UPTO.format(state=5, finished="AND state >= 3")}, r.oldest,
  CASE WHEN q.max_depth IS NOT NULL OR q.count_depth
       THEN coalesce((SELECT sum(used) FROM {{s}}.depth_stripes WHERE qid = q.id), 0) END,
  q.max_depth
FROM {{s}}.queues AS q,
  (SELECT count(*) AS n, min(run_at) AS oldest
   FROM (SELECT run_at FROM {{s}}.messages WHERE qid = %(qid)s AND state = 0
         LIMIT %(cap)s) AS m) AS r
WHERE q.id = %(qid)s
"""
SQL_DELETE_FINISHED = """
DELETE FROM {s}.messages WHERE id = ANY(%s::bigint[]) AND qid = %s AND state = %s
  AND state >= 3 RETURNING 1
"""
# Charts: a queue's own counts (task ''), dead included (the trigger history_failures);
# whole hours from the hourly roll-ups.
_SUMS = """
SELECT {unit} / %(width)s * %(width)s AS b, sum(put), sum(acked), sum(dead), sum(failed)
FROM {{s}}.{table} WHERE {since} AND task = ''
  AND (%(qid)s::bigint IS NULL OR qid = %(qid)s)
GROUP BY b ORDER BY b
"""
SQL_HISTORY_SUMS = _SUMS.format(unit="minute", table="history", since="minute >= %(since)s")
SQL_HOURS_SUMS = _SUMS.format(unit="hour * 60", table="history_hours",
                              since="hour >= %(since)s / 60")
SQL_HISTORY_RUNS = """
SELECT qid, min(hour) * 60, task, sum(put), sum(acked), sum(failed), sum(dead), sum(runs),
       sum(run_total), max(run_max), sum(le_10ms), sum(le_100ms), sum(le_1s), sum(le_10s),
       sum(le_60s)
FROM {s}.history_hours WHERE hour >= %(since)s / 60 AND task <> ''
GROUP BY qid, task ORDER BY qid, task
"""

# Attempts (see liteq/backends/sqlite/opsql.py).
_ATTEMPT_COLUMNS = "id, attempt, worker, started_at, ended_at, outcome, error"
_ATTEMPT_TYPES = ("bigint", "bigint", "text", "float8", "float8", "text", "text")
SQL_ATTEMPT_SAVE = f"""
INSERT INTO {{s}}.attempts ({_ATTEMPT_COLUMNS})
SELECT * FROM unnest({", ".join(f"%s::{t}[]" for t in _ATTEMPT_TYPES)})
ON CONFLICT (id, attempt) DO UPDATE SET worker = excluded.worker,
    started_at = excluded.started_at, ended_at = excluded.ended_at,
    outcome = excluded.outcome, error = excluded.error
"""
SQL_ATTEMPTS = f"""
SELECT {_ATTEMPT_COLUMNS} FROM {{s}}.attempts WHERE id = %(id)s
UNION ALL
SELECT id, attempts, worker, started_at, coalesce(started_at + duration, finished_at),
       CASE state WHEN 3 THEN 'done' WHEN 4 THEN 'dead' ELSE 'cancelled' END, error
FROM {{s}}.results AS r WHERE id = %(id)s
  AND NOT EXISTS (SELECT 1 FROM {{s}}.attempts AS a WHERE a.id = r.id AND a.attempt = r.attempts)
ORDER BY 2
"""
SQL_BROWSE_TASK = f"""
SELECT {_MESSAGE_COLUMNS} FROM {{s}}.messages
WHERE qid = %(qid)s AND {TASK_PAYLOAD} AND {TASK_NAME} = %(task)s AND id > %(after)s
  AND state = %(state)s ORDER BY id LIMIT %(n)s
"""


def _merged(rows: Sequence[HistoryRow]) -> list[HistoryRow]:
    """*rows* with one row per key: PostgreSQL refuses to update a row twice in one
    statement."""
    merged: dict[tuple[int, int, str], HistoryRow] = {}
    for r in rows:
        key = (r.minute, r.qid, r.task)
        old = merged.get(key)
        if old is None:
            merged[key] = r
        else:
            merged[key] = old._replace(
                **{c: getattr(old, c) + getattr(r, c) for c in _ADDED},
                run_max=max(old.run_max, r.run_max))
    return list(merged.values())


class OperatingVerbs:
    """Registry, progress and history (a mixin of PostgresBackend)."""

    conns: Connections
    schema: str
    clock: Callable[[], float]

    @cached_property
    def _operating_sql(self) -> Statements:
        return Statements(globals(), self.schema)

    @cached_property
    def _sorted_sql(self) -> dict[int, tuple[str, str]]:
        return {st: (qualify(STATE_UPTO[st], self.schema), qualify(BROWSE_SORTED[st], self.schema))
                for st in range(6)}

    def save_worker(self, row: WorkerRecord) -> None:
        self.conns.statement(self._operating_sql.worker_save, tuple(row))

    def remove_worker(self, wid: str) -> bool:
        return bool(self.conns.statement(self._operating_sql.worker_remove + " RETURNING 1",
                                         (wid,)))

    def workers(self) -> list[WorkerRecord]:
        return [WorkerRecord._make(r) for r in self.conns.statement(self._operating_sql.workers)]

    def prune_workers(self, before: float) -> int:
        sql = self._operating_sql.workers_prune + " RETURNING 1"
        return len(self.conns.statement(sql, (before,)))

    def set_progress(self, mid: int, fraction: float, note: str) -> None:
        self.conns.statement(self._operating_sql.progress_set,
                             (mid, float(fraction), note, self.clock()))

    def progress(self, ids: Sequence[int]) -> dict[int, ProgressRecord]:
        if not ids:
            return {}
        rows = self.conns.statement(self._operating_sql.progress_get, (list(ids),))
        return {int(r[0]): ProgressRecord._make(r) for r in rows}

    def prune_progress(self, before: float) -> int:
        return len(self.conns.statement(self._operating_sql.progress_prune + " RETURNING 1",
                                        (before,)))

    def add_history(self, rows: Sequence[HistoryRow]) -> None:
        if not rows:
            return
        merged = _merged(rows)
        columns = [list(col) for col in zip(*merged, strict=True)]
        self.conns.statement(self._operating_sql.history_add, columns)

    def history(self, since_minute: int, qid: int | None = None) -> list[HistoryRow]:
        rows = self.conns.statement(self._operating_sql.history,
                                    {"since": since_minute, "qid": qid})
        return [HistoryRow._make(r) for r in rows]

    def prune_history(self, before_minute: int) -> int:
        return len(self.conns.statement(self._operating_sql.history_prune,
                                        {"before": before_minute}))

    def browse(self, qid: int, state: int, after: int, n: int, *, key: str | None = None,
               error: str | None = None) -> list[MessageRecord]:
        params: dict[str, object] = {"qid": qid, "state": int(state), "after": after, "n": n}
        if key is not None:
            sql, params["key"] = self._operating_sql.browse_key, key
        elif error is not None:
            sql, params["error"] = self._operating_sql.browse_error, error
        else:
            sql = self._operating_sql.browse
            sorted_sql = self._sorted_sql.get(int(state))
            if sorted_sql is not None:
                upto, page = sorted_sql
                few = self.conns.statement(upto, {"qid": qid, "cap": BROWSE_SORT_MAX},
                                           prepare=False)[0][0] < BROWSE_SORT_MAX
                if few:
                    sql = page
        return [MessageRecord._make(r) for r in self.conns.statement(sql, params, prepare=False)]

    def error_groups(self, qid: int, state: int, n: int) -> list[ErrorGroup]:
        rows = self.conns.statement(self._operating_sql.error_groups,
                                    {"qid": qid, "state": int(state), "n": n}, prepare=False)
        return [ErrorGroup(r[0], int(r[1]), int(r[2])) for r in rows]

    def count_states(self, qid: int, cap: int) -> StateCounts:
        rows = self.conns.statement(self._operating_sql.state_counts,
                                    {"qid": qid, "cap": cap + 1}, prepare=False)
        if not rows:
            raise LiteqError(f"queue id {qid} no longer exists (it was deleted)")
        r = rows[0]
        return StateCounts(int(r[0]), int(r[1]), int(r[2]), int(r[3]), int(r[4]), int(r[5]),
                           r[6], None if r[7] is None else int(r[7]), r[8])

    def delete_finished(self, qid: int, ids: Sequence[int], state: int) -> int:
        if not ids:
            return 0
        return len(self.conns.statement(self._operating_sql.delete_finished,
                                        ([int(i) for i in ids], qid, int(state))))

    def history_sums(self, since_minute: int, width: int,
                     qid: int | None = None) -> list[HistorySums]:
        hourly = width % 60 == 0 and since_minute % 60 == 0
        sql = self._operating_sql.hours_sums if hourly else self._operating_sql.history_sums
        rows = self.conns.statement(sql, {"since": since_minute, "width": int(width), "qid": qid})
        return [HistorySums(*(int(v) for v in r)) for r in rows]

    def history_runs(self, since_minute: int) -> list[HistoryRow]:
        rows = self.conns.statement(self._operating_sql.history_runs, {"since": since_minute})
        # sum() of bigint is numeric in PostgreSQL: back to int and float here.
        return [HistoryRow._make([int(r[0]), int(r[1]), r[2], *(int(v) for v in r[3:8]),
                                  float(r[8]), float(r[9]), *(int(v) for v in r[10:])])
                for r in rows]

    def save_attempts(self, rows: Sequence[AttemptRecord]) -> None:
        if not rows:
            return
        last = {(r.id, r.attempt): r for r in rows}  # one row per key in one statement
        columns = [list(col) for col in zip(*last.values(), strict=True)]
        self.conns.statement(self._operating_sql.attempt_save, columns)

    def attempts(self, mid: int) -> list[AttemptRecord]:
        rows = self.conns.statement(self._operating_sql.attempts, {"id": mid})
        return [AttemptRecord(int(r[0]), int(r[1]), *r[2:]) for r in rows]

    def browse_task(self, qid: int, state: int, task: str, after: int,
                    n: int) -> list[MessageRecord]:
        params = {"qid": qid, "state": int(state), "task": task.encode(), "after": after,
                  "n": n}
        return [MessageRecord._make(r) for r in self.conns.statement(
            self._operating_sql.browse_task, params, prepare=False)]
