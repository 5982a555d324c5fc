"""The workers registry, job progress, per-minute history (with its hourly roll-ups),
job attempts and task search on SQLite (issue 21; the verbs of
:class:`~liteq.backends.registry.OperatingVerbs`, schema versions 4 and ``_V_OBS``)."""

from __future__ import annotations

from collections.abc import Sequence

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
from .base import StoreBase
from .opsql import (
    BROWSE_SORT_MAX,
    SQL_ATTEMPT_SAVE,
    SQL_ATTEMPTS,
    SQL_BROWSE,
    SQL_BROWSE_ERROR,
    SQL_BROWSE_ERROR_WALK,
    SQL_BROWSE_FINISHED,
    SQL_BROWSE_KEY,
    SQL_BROWSE_KEY_FINISHED,
    SQL_BROWSE_KEY_WALK,
    SQL_BROWSE_TASK,
    SQL_BROWSE_WALK,
    SQL_DELETE_FINISHED,
    SQL_ERROR_GROUPS,
    SQL_HISTORY,
    SQL_HISTORY_ADD,
    SQL_HISTORY_PRUNE,
    SQL_HISTORY_RUNS,
    SQL_HISTORY_SUMS,
    SQL_HOURS_PRUNE,
    SQL_HOURS_SUMS,
    SQL_PROGRESS_GET,
    SQL_PROGRESS_PRUNE,
    SQL_PROGRESS_SET,
    SQL_STATE_COUNTS,
    SQL_STATE_ROWS_UPTO_FINISHED,
    SQL_STATE_ROWS_UPTO_UNFINISHED,
    SQL_WORKER_REMOVE,
    SQL_WORKER_SAVE,
    SQL_WORKERS,
    SQL_WORKERS_PRUNE,
)

__all__ = ["OperatingVerbs"]


class OperatingVerbs(StoreBase):
    """Registry, progress and history: small rows, written by heartbeats and flushes."""

    def save_worker(self, row: WorkerRecord) -> None:
        with self.write() as cur:
            cur.execute(SQL_WORKER_SAVE, tuple(row))

    def remove_worker(self, wid: str) -> bool:
        with self.write() as cur:
            cur.execute(SQL_WORKER_REMOVE, (wid,))
            return bool(cur.connection.changes())

    def workers(self) -> list[WorkerRecord]:
        with self.read() as cur:
            return [WorkerRecord._make(r) for r in cur.execute(SQL_WORKERS).fetchall()]

    def prune_workers(self, before: float) -> int:
        with self.write() as cur:
            cur.execute(SQL_WORKERS_PRUNE, (before,))
            return int(cur.connection.changes())

    def set_progress(self, mid: int, fraction: float, note: str) -> None:
        with self.write() as cur:
            cur.execute(SQL_PROGRESS_SET, (mid, fraction, note, self.clock()))

    def progress(self, ids: Sequence[int]) -> dict[int, ProgressRecord]:
        if not ids:
            return {}
        sql = SQL_PROGRESS_GET.replace("{marks}", ",".join("?" * len(ids)))
        with self.read() as cur:
            return {r[0]: ProgressRecord._make(r) for r in cur.execute(sql, tuple(ids)).fetchall()}

    def prune_progress(self, before: float) -> int:
        with self.write() as cur:
            cur.execute(SQL_PROGRESS_PRUNE, (before,))
            return int(cur.connection.changes())

    def add_history(self, rows: Sequence[HistoryRow]) -> None:
        if not rows:
            return
        with self.write() as cur:
            cur.executemany(SQL_HISTORY_ADD, [tuple(r) for r in rows])

    def history(self, since_minute: int, qid: int | None = None) -> list[HistoryRow]:
        with self.read() as cur:
            rows = cur.execute(SQL_HISTORY, (since_minute, qid, qid)).fetchall()
        return [HistoryRow._make(r) for r in rows]

    def prune_history(self, before_minute: int) -> int:
        with self.write() as cur:
            cur.execute(SQL_HISTORY_PRUNE, (before_minute,))
            n = int(cur.connection.changes())
            cur.execute(SQL_HOURS_PRUNE, (before_minute,))
            return n

    def browse(self, qid: int, state: int, after: int, n: int, *, key: str | None = None,
               error: str | None = None) -> list[MessageRecord]:
        finished = state >= 3
        params: dict[str, object] = {"qid": qid, "state": int(state), "after": after, "n": n}
        with self.read() as cur:
            if key is not None and not finished:
                params["key"] = key
                sql = SQL_BROWSE_KEY  # msg_key: one probe
            else:
                # Sort the state's rows when they are few, else walk the primary key
                # (see opsql: SORTED and WALK); the count stops at BROWSE_SORT_MAX.
                upto = SQL_STATE_ROWS_UPTO_FINISHED if finished else SQL_STATE_ROWS_UPTO_UNFINISHED
                rows = cur.execute(upto, {"qid": qid, "state": int(state),
                                          "cap": BROWSE_SORT_MAX}).fetchall()
                walk = rows[0][0] >= BROWSE_SORT_MAX
                if key is not None:
                    params["key"] = key
                    sql = SQL_BROWSE_KEY_WALK if walk else SQL_BROWSE_KEY_FINISHED
                elif error is not None:
                    params["error"] = error
                    sql = SQL_BROWSE_ERROR_WALK if walk or not finished else SQL_BROWSE_ERROR
                elif walk:
                    sql = SQL_BROWSE_WALK
                else:
                    sql = SQL_BROWSE_FINISHED if finished else SQL_BROWSE
            return [MessageRecord._make(r) for r in cur.execute(sql, params).fetchall()]

    def error_groups(self, qid: int, state: int, n: int) -> list[ErrorGroup]:
        with self.read() as cur:
            rows = cur.execute(SQL_ERROR_GROUPS, {"qid": qid, "state": int(state), "n": n})
            return [ErrorGroup._make(r) for r in rows.fetchall()]

    def count_states(self, qid: int, cap: int) -> StateCounts:
        with self.read() as cur:
            rows = cur.execute(SQL_STATE_COUNTS, {"qid": qid, "cap": cap + 1}).fetchall()
        if not rows:
            raise LiteqError(f"queue id {qid} no longer exists (it was deleted)")
        return StateCounts._make(rows[0])

    def delete_finished(self, qid: int, ids: Sequence[int], state: int) -> int:
        if not ids:
            return 0
        sql = SQL_DELETE_FINISHED.replace("{marks}", ",".join("?" * len(ids)))
        with self.write() as cur:
            cur.execute(sql, (*ids, qid, int(state)))
            return int(cur.connection.changes())

    def history_sums(self, since_minute: int, width: int,
                     qid: int | None = None) -> list[HistorySums]:
        hourly = width % 60 == 0 and since_minute % 60 == 0
        with self.read() as cur:
            rows = cur.execute(SQL_HOURS_SUMS if hourly else SQL_HISTORY_SUMS,
                               {"since": since_minute, "width": int(width), "qid": qid}).fetchall()
        return [HistorySums._make(r) for r in rows]

    def history_runs(self, since_minute: int) -> list[HistoryRow]:
        with self.read() as cur:
            rows = cur.execute(SQL_HISTORY_RUNS, {"since": since_minute}).fetchall()
        return [HistoryRow._make(r) for r in rows]

    def save_attempts(self, rows: Sequence[AttemptRecord]) -> None:
        if not rows:
            return
        with self.write() as cur:
            cur.executemany(SQL_ATTEMPT_SAVE, [tuple(r) for r in rows])

    def attempts(self, mid: int) -> list[AttemptRecord]:
        with self.read() as cur:
            return [AttemptRecord._make(r) for r in cur.execute(SQL_ATTEMPTS, {"id": mid})]

    def browse_task(self, qid: int, state: int, task: str, after: int,
                    n: int) -> list[MessageRecord]:
        params = {"qid": qid, "state": int(state), "task": task.encode(), "after": after,
                  "n": n}
        with self.read() as cur:
            return [MessageRecord._make(r) for r in cur.execute(SQL_BROWSE_TASK, params)]
