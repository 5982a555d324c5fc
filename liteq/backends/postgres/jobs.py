"""Task jobs on PostgreSQL (issue 17, step B3): results rows, cancellation of running
jobs, released leases. The same verbs and records as ``liteq/backends/sqlite/jobs.py``;
what differs is how each stays right under concurrent writers (READ COMMITTED, no single
writer lock).

Round trips (outside ``db.transaction()``; inside it every statement also pays its
savepoint, see ``Connections.statement``):

* one statement, one round trip: ``save_results`` (any number of rows: one ``INSERT ...
  SELECT FROM unnest(...)``), ``result``, ``job`` (message and results row read by one
  statement, hence one snapshot), ``job_messages``, ``orphan_results``, ``prune_results``,
  ``release`` (any number of leases: one ``UPDATE ... FROM unnest(...)``),
  ``cancel_requested``;
* ``request_cancel``: BEGIN, the cancel, COMMIT (three round trips) for a running or
  finished job; one not started yet also frees its depth (one stripe's decrement, which
  finds no row where the queue has no stripes): four. Not a hot path; the depth release
  must commit with the cancel.

Concurrency:

* ``request_cancel`` decides from the row it locks, in one ``UPDATE`` whose ``CASE``
  reads the newest version of the row (READ COMMITTED re-reads a row another transaction
  changed meanwhile): a READY/DELAYED message becomes CANCELLED, a LEASED one gets its
  cancel flag. Two statements (cancel if ready, else flag if leased) would answer
  "finished" for a message that a worker released between them.
* ``release`` is guarded by token and state like every change to a leased message: a
  stale token changes nothing and its id comes back.
* ``save_results`` keeps the last of several rows for one id (as SQLite's
  ``executemany`` of ``INSERT ... ON CONFLICT DO UPDATE`` does): PostgreSQL refuses to
  update one row twice in one statement.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import Any, NamedTuple

from ..records import MessageRecord, ResultRecord, State
from .connection import Connections
from .depth import Depth
from .schema import qualify

__all__ = ["JobVerbs"]

_RESULT_COLUMNS = ("id", "task", "state", "value", "error", "attempts", "finished_at",
                   "expires_at", "queue", "call", "enqueued_at", "started_at", "duration", "worker")
# PostgreSQL's type of each results column, in ResultRecord order (for unnest's arrays).
_RESULT_TYPES = ("bigint", "text", "integer", "bytea", "text", "bigint", "double precision",
                 "double precision", "text", "bytea", "double precision", "double precision",
                 "double precision", "text")
_MESSAGE_COLUMNS = ("id", "qid", "state", "priority", "run_at", "payload", "headers", "key",
                    "attempts", "enqueued_at", "lease_until", "token", "error", "finished_at",
                    "origin", "rank", "cancel", "flow", "flow_key")
_N_MESSAGE = len(_MESSAGE_COLUMNS)


def _columns(alias: str, names: Sequence[str]) -> str:
    return ", ".join(f"{alias}.{c}" for c in names)


_UPSERT = ", ".join(f"{c} = excluded.{c}" for c in _RESULT_COLUMNS[1:])
SQL_RESULT_PUT = f"""
INSERT INTO {{s}}.results ({", ".join(_RESULT_COLUMNS)})
VALUES ({", ".join("%s" for _ in _RESULT_COLUMNS)})
ON CONFLICT (id) DO UPDATE SET {_UPSERT}
"""
SQL_RESULT_PUT_MANY = f"""
INSERT INTO {{s}}.results ({", ".join(_RESULT_COLUMNS)})
SELECT * FROM unnest({", ".join(f"%b::{t}[]" for t in _RESULT_TYPES)})
ON CONFLICT (id) DO UPDATE SET {_UPSERT}
"""
SQL_RESULT_GET = f"SELECT {', '.join(_RESULT_COLUMNS)} FROM {{s}}.results WHERE id = %s"
# One statement reads both rows in one snapshot: a job finishing meanwhile (its ack
# deletes the message in the transaction that writes the results row) is seen running
# or finished, never neither. The first 17 columns are the message's.
SQL_JOB = f"""
SELECT {_columns("m", _MESSAGE_COLUMNS)}, {_columns("r", _RESULT_COLUMNS)}
FROM (SELECT %s::bigint AS id) AS k
LEFT JOIN {{s}}.messages AS m ON m.id = k.id
LEFT JOIN {{s}}.results AS r ON r.id = k.id
"""
SQL_JOB_MESSAGES = f"""
SELECT {", ".join(_MESSAGE_COLUMNS)} FROM {{s}}.messages
WHERE id < %(before)s AND state = ANY(%(states)s::integer[])
ORDER BY id DESC LIMIT %(n)s
"""
# The optional filters as "NULL or equal": with plan_cache_mode = force_custom_plan
# (every liteq session) the planner sees the values and drops the unused ones.
SQL_ORPHAN_RESULTS = f"""
SELECT {_columns("r", _RESULT_COLUMNS)} FROM {{s}}.results AS r
WHERE r.id < %(before)s
  AND (%(state)s::integer IS NULL OR r.state = %(state)s)
  AND (%(queue)s::text IS NULL OR r.queue = %(queue)s)
  AND (%(task)s::text IS NULL OR r.task = %(task)s)
  AND NOT EXISTS (SELECT 1 FROM {{s}}.messages AS m WHERE m.id = r.id)
ORDER BY r.id DESC LIMIT %(n)s
"""
# The attempts of jobs now gone go with their results (and those of plain messages
# whose leases ran out, once the message is gone); every part of one statement sees one
# snapshot, hence "deleted here or has none".
SQL_RESULT_PRUNE = """
WITH gone AS (
    DELETE FROM {s}.results WHERE expires_at IS NOT NULL AND expires_at < %s RETURNING id
), tried AS (
    DELETE FROM {s}.attempts AS t
    WHERE (t.id IN (SELECT id FROM gone)
           OR NOT EXISTS (SELECT 1 FROM {s}.results AS r WHERE r.id = t.id))
      AND NOT EXISTS (SELECT 1 FROM {s}.messages AS m WHERE m.id = t.id)
)
SELECT count(*) FROM gone
"""
# One row lock decides: the CASEs read the version of the row the UPDATE locked (the
# newest, when another transaction changed it meanwhile), so a message claimed or
# released concurrently gets the answer that matches its state at that moment.
# RETURNING state: CANCELLED = it had not started, LEASED = the flag was set.
SQL_REQUEST_CANCEL = f"""
UPDATE {{s}}.messages SET
    state = CASE WHEN state = {State.LEASED:d} THEN state ELSE {State.CANCELLED:d} END,
    finished_at = CASE WHEN state = {State.LEASED:d} THEN finished_at ELSE %(now)s END,
    cancel = cancel OR state = {State.LEASED:d}
WHERE id = %(id)s AND state IN ({State.READY:d}, {State.DELAYED:d}, {State.LEASED:d})
RETURNING qid, state
"""
SQL_CANCEL_FLAG = "SELECT cancel FROM {s}.messages WHERE id = %s"


class _Statements(NamedTuple):
    """This module's statements with one backend's schema filled in."""

    result_put: str
    result_put_many: str
    result_get: str
    job: str
    job_messages: str
    orphan_results: str
    result_prune: str
    request_cancel: str
    cancel_flag: str


_SOURCES = _Statements(SQL_RESULT_PUT, SQL_RESULT_PUT_MANY, SQL_RESULT_GET, SQL_JOB,
                       SQL_JOB_MESSAGES, SQL_ORPHAN_RESULTS, SQL_RESULT_PRUNE,
                       SQL_REQUEST_CANCEL,
                       SQL_CANCEL_FLAG)

# Results columns whose values are sent as double precision / bigint: a Python int in
# a float column (or an IntEnum) would otherwise make unnest's array of mixed types.
_FLOATS = frozenset(i for i, t in enumerate(_RESULT_TYPES) if t == "double precision")
_INTS = frozenset(i for i, t in enumerate(_RESULT_TYPES) if t in ("bigint", "integer"))


def _result_params(row: Sequence[Any]) -> list[Any]:
    """A results row's values as PostgreSQL takes them (ints and floats normalized)."""
    if len(row) == len(_RESULT_COLUMNS) - 1:
        row = (*row, None)  # a row without its worker (written by no worker)
    if len(row) != len(_RESULT_COLUMNS):
        raise ValueError(
            f"a results row has {len(_RESULT_COLUMNS)} values ({', '.join(_RESULT_COLUMNS)}), "
            f"got {len(row)}"
        )
    out = list(row)
    for i, v in enumerate(out):
        if v is None:
            continue
        if i in _FLOATS:
            out[i] = float(v)
        elif i in _INTS:
            out[i] = int(v)
    return out


class JobVerbs:
    """What the task layer needs beyond plain messages (a mixin of ``PostgresBackend``,
    before ``Backend`` in its bases)."""

    conns: Connections
    schema: str
    clock: Any
    depth: Depth

    @cached_property
    def _jobs_sql(self) -> _Statements:
        # Qualified once per backend, on first use (the schema never changes).
        return _Statements(*(qualify(sql, self.schema) for sql in _SOURCES))

    # -- task results -----------------------------------------------------------------

    def save_results(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Record job outcomes (plain tuples in ResultRecord order, or records),
        replacing an id's earlier row; one statement, so atomic, and it joins the
        caller's transaction (the worker commits it with the ack)."""
        if not rows:
            return
        sql = self._jobs_sql
        if len(rows) == 1:
            self.conns.statement(sql.result_put, _result_params(rows[0]))
            return
        last: dict[int, list[Any]] = {}
        for row in rows:
            params = _result_params(row)
            last[params[0]] = params  # the last row of an id wins
        columns = [list(c) for c in zip(*last.values(), strict=True)]
        self.conns.statement(sql.result_put_many, columns)

    def result(self, mid: int) -> ResultRecord | None:
        """A job's results row, or None."""
        rows = self.conns.statement(self._jobs_sql.result_get, (mid,))
        return ResultRecord._make(rows[0]) if rows else None

    def job(self, mid: int) -> tuple[MessageRecord | None, ResultRecord | None]:
        """The job's message and results rows, read by one statement (one snapshot)."""
        row = self.conns.statement(self._jobs_sql.job, (mid,))[0]
        message = MessageRecord._make(row[:_N_MESSAGE]) if row[0] is not None else None
        result = ResultRecord._make(row[_N_MESSAGE:]) if row[_N_MESSAGE] is not None else None
        return message, result

    def job_messages(self, states: Sequence[int], before: int, n: int) -> list[MessageRecord]:
        """Message rows with ``id < before`` in one of *states*, newest first."""
        rows = self.conns.statement(
            self._jobs_sql.job_messages,
            {"before": before, "states": [int(s) for s in states], "n": n},
        )
        return [MessageRecord._make(r) for r in rows]

    def orphan_results(self, state: int | None, before: int, n: int, *,
                       queue: str | None = None, task: str | None = None
                       ) -> list[ResultRecord]:
        """Results rows with ``id < before`` (in *state*, on *queue*, of *task*, when
        given) whose message is gone, newest first."""
        rows = self.conns.statement(
            self._jobs_sql.orphan_results,
            {"before": before, "n": n, "queue": queue, "task": task,
             "state": None if state is None else int(state)},
        )
        return [ResultRecord._make(r) for r in rows]

    def prune_results(self, before: float) -> int:
        """Delete results rows that expired before *before*; how many."""
        return int(self.conns.statement(self._jobs_sql.result_prune, (before,))[0][0])

    # -- leases and cancellation ------------------------------------------------------

    def request_cancel(self, mid: int) -> str:
        """Cancel a job's message: ``"cancelled"`` if it had not started, ``"requested"``
        if it is running (the flag is stored in its row, so it survives restarts),
        ``"finished"`` otherwise (done, dead, cancelled or gone)."""
        sql = self._jobs_sql
        with self.conns.tx() as cur:
            cur.execute(sql.request_cancel, {"id": mid, "now": self.clock()})
            row = cur.fetchone()
            if row is None:
                return "finished"
            qid, state = row
            if state == State.LEASED:
                return "requested"
            # No longer counts against max_depth (the message row first, then a stripe).
            self.depth.release(cur, qid, 1)
            return "cancelled"

    def cancel_requested(self, mid: int) -> bool:
        """Whether cancellation was asked for this (running) message."""
        rows = self.conns.statement(self._jobs_sql.cancel_flag, (mid,))
        return bool(rows and rows[0][0])
