"""Task jobs: results rows, cancellation of running jobs, released leases."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..records import MessageRecord, ResultRecord
from .base import StoreBase
from .opsql import SQL_ATTEMPTS_PRUNE
from .sql import (
    SQL_CANCEL,
    SQL_CANCEL_FLAG,
    SQL_CANCEL_LEASED,
    SQL_JOB_MESSAGES,
    SQL_MESSAGE,
    SQL_ORPHAN_RESULTS,
    SQL_RELEASE,
    SQL_RELEASE_LEASE,
    SQL_RESULT_GET,
    SQL_RESULT_PRUNE,
    SQL_RESULT_PUT,
    chunk_sizes,
    sql_result_put,
)
from .workflow_sql import SQL_WF_KEEP_EXPIRING

#: The length of a results row without its ``worker`` (written by no worker: a job
#: cancelled before it ran), which gets None.
_WITHOUT_WORKER = len(ResultRecord._fields) - 1


class JobVerbs(StoreBase):
    """What the task layer needs beyond plain messages."""

    # -- task results -----------------------------------------------------------------

    def save_results(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Record job outcomes ``(id, task, state, value, error, attempts, finished_at,
        expires_at, queue, call, enqueued_at, started_at, duration[, worker])`` (see
        ``task.outcome_row``); joins the caller's transaction (so it can commit with
        the ack)."""
        if any(len(r) == _WITHOUT_WORKER for r in rows):
            rows = [(*r, None) if len(r) == _WITHOUT_WORKER else r for r in rows]
        with self.write() as cur:
            if len(rows) == 1:
                cur.execute(SQL_RESULT_PUT, rows[0])
                return
            at = 0
            for n in chunk_sizes(len(rows)):
                cur.execute(sql_result_put(n), [x for r in rows[at:at + n] for x in r])
                at += n

    def result(self, mid: int) -> ResultRecord | None:
        with self.read() as cur:
            rows = cur.execute(SQL_RESULT_GET, (mid,)).fetchall()
        return ResultRecord._make(rows[0]) if rows else None

    def job(self, mid: int) -> tuple[MessageRecord | None, ResultRecord | None]:
        """The job's message and results rows, read in one snapshot (so a job that
        finishes meanwhile is seen either running or finished, never neither)."""
        with self.read() as cur:
            message = cur.execute(SQL_MESSAGE, (mid,)).fetchall()
            result = cur.execute(SQL_RESULT_GET, (mid,)).fetchall()
        return (MessageRecord._make(message[0]) if message else None,
                ResultRecord._make(result[0]) if result else None)

    def job_messages(self, states: Sequence[int], before: int, n: int) -> list[MessageRecord]:
        """Message rows with ``id < before`` in one of *states*, newest first."""
        sql = SQL_JOB_MESSAGES.replace("{marks}", ",".join("?" * len(states)))
        with self.read() as cur:
            return [MessageRecord._make(r) for r in cur.execute(sql, (before, *states, n)).fetchall()]

    def orphan_results(self, state: int | None, before: int, n: int, *,
                       queue: str | None = None, task: str | None = None
                       ) -> list[ResultRecord]:
        """Results rows with ``id < before`` (in *state*, on *queue*, of *task*, when
        given) whose message is gone, newest first."""
        where: list[str] = []
        params: list[Any] = [before]
        for column, value in (("state", state), ("queue", queue), ("task", task)):
            if value is not None:
                where.append(f"AND r.{column} = ?")
                params.append(value)
        sql = SQL_ORPHAN_RESULTS.replace("{where}", " ".join(where))
        with self.read() as cur:
            return [ResultRecord._make(r) for r in cur.execute(sql, (*params, n)).fetchall()]

    def release(self, qid: int, items: Sequence[tuple[int, int]]) -> list[int]:
        """Give leased messages ``(id, token)`` back, ready at once and without counting
        the attempt; return the ids whose token was stale (left unchanged)."""
        lost = []
        with self.write() as cur:
            for mid, token in items:
                cur.execute(SQL_RELEASE_LEASE, (mid, token))
                if not cur.connection.changes():
                    lost.append(mid)
        return lost

    def prune_results(self, before: float) -> int:
        with self.write() as cur:
            # A parent's success kept in its results row goes onto the edges still
            # reading it before the row goes (workflow_sql.py, WFKEEP_SCHEMA).
            cur.execute(SQL_WF_KEEP_EXPIRING, (before,))
            cur.execute(SQL_RESULT_PRUNE, (before,))
            n = int(cur.connection.changes())
            # The attempts of jobs now gone go with their results (and those of plain
            # messages whose leases ran out, once the message is gone).
            cur.execute(SQL_ATTEMPTS_PRUNE)
            return n

    def request_cancel(self, mid: int) -> str:
        """Cancel a job's message: ``"cancelled"`` if it had not started, ``"requested"``
        if it is running (the flag survives restarts), ``"finished"`` otherwise."""
        with self.write() as cur:
            now = self.clock()
            rows = cur.execute(SQL_CANCEL, {"id": mid, "now": now}).fetchall()
            if rows:
                cur.execute(SQL_RELEASE, {"n": 1, "qid": rows[0][0]})
                return "cancelled"
            cur.execute(SQL_CANCEL_LEASED, (mid,))
            if cur.connection.changes():
                return "requested"
            return "finished"

    def cancel_requested(self, mid: int) -> bool:
        with self.read() as cur:
            rows = cur.execute(SQL_CANCEL_FLAG, (mid,)).fetchall()
        return bool(rows and rows[0][0])
