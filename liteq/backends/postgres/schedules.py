"""Schedules on PostgreSQL (issue 17, step B3; boundary plan 3.8): rows, history, and a
tick that fires each (schedule, fire time) exactly once with any number of schedulers
on any number of hosts, and no leader. The same verbs and records as
``liteq/backends/sqlite/schedules.py``; what differs is how each stays right without
SQLite's single writer (READ COMMITTED, row locks).

How a tick fires once:

* **Due rows are locked** ``FOR UPDATE SKIP LOCKED``: two schedulers ticking at once
  take disjoint sets of schedules and never wait for each other. A row another tick
  advanced and committed after this statement's snapshot is re-checked on its newest
  version (READ COMMITTED's recheck), so it is no longer due and is left out.
* **The runs row is the proof**: ``INSERT INTO schedule_runs ... ON CONFLICT (schedule,
  fire_at) DO NOTHING RETURNING id``; no row back means the fire was made already, and
  nothing is put for it. The row locks make this a second guard, as on SQLite.
* **Put and advance commit together**: the fires go through ``put_rows(...,
  force=True)`` with the key ``schedule:NAME:FIRE_AT`` and ``next_run_at`` moves in the
  same transaction; a scheduler killed mid-tick leaves the schedule due and nothing fired.

The tick works in three phases so that it never deadlocks with another tick: first, in
schedule order (earliest due first, as the *limits* promise), it plans each row and
inserts its runs rows; then it finds (or creates, with default options) the queues in
name order and puts every fire, one ``put_rows`` per queue **in queue id order** (a
forced put locks all of its queue's depth stripes until the commit, so two ticks
firing into the same two queues in opposite orders would wait for each other; a tick
creating a queue holds its row and stripes, which no other tick can see before the
commit, and waits only for creations later in name order); last, one statement each
writes the job ids into the runs rows and advances the schedules. Round trips of a tick that fires nothing: BEGIN, the locking select,
COMMIT.

``schedule_upsert`` decides in its one statement (``ON CONFLICT (name) DO UPDATE SET
next_run_at = CASE ...``) whether the timing changed, on the row it locked: right with
concurrent writers, where a read before the write would not be. ``schedule_delete``
deletes the schedule and then, in a second statement of the same transaction, its
history: one statement would delete the runs its snapshot saw, and miss those of a
tick that committed while the delete waited for the schedule's row lock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import cached_property
from typing import Any

from ..records import Fire, NewRow, ScheduleRecord, ScheduleRun
from .queues import QueueVerbs, Statements

__all__ = ["ScheduleVerbs"]

_COLUMNS = (
    "id, name, kind, spec, tz, target, queue, payload, misfire, misfire_cap, enabled, "
    "next_run_at, last_run_at, last_job_id, created_at, updated_at"
)

SQL_UPSERT = f"""
INSERT INTO {{s}}.schedules AS s (name, kind, spec, tz, target, queue, payload, misfire,
    misfire_cap, enabled, next_run_at, created_at, updated_at)
VALUES (%(name)s, %(kind)s, %(spec)s, %(tz)s, %(target)s, %(queue)s, %(payload)s, %(misfire)s,
    %(misfire_cap)s, true, %(next_run_at)s, %(now)s, %(now)s)
ON CONFLICT (name) DO UPDATE SET kind = excluded.kind, spec = excluded.spec,
    tz = excluded.tz, target = excluded.target, queue = excluded.queue,
    payload = excluded.payload, misfire = excluded.misfire,
    misfire_cap = excluded.misfire_cap, updated_at = excluded.updated_at,
    -- Unchanged timing keeps the planned next fire; s is the locked, newest version.
    next_run_at = CASE WHEN s.kind = excluded.kind AND s.spec = excluded.spec
                            AND s.tz IS NOT DISTINCT FROM excluded.tz
                       THEN s.next_run_at ELSE excluded.next_run_at END
RETURNING {_COLUMNS}
"""
SQL_GET = f"SELECT {_COLUMNS} FROM {{s}}.schedules WHERE name = %s"
# Byte order, as SQLite sorts text (a database's collation may sort otherwise).
SQL_ALL = f'SELECT {_COLUMNS} FROM {{s}}.schedules ORDER BY name COLLATE "C"'
SQL_DELETE = "DELETE FROM {s}.schedules WHERE name = %s"
SQL_RUNS_DELETE = "DELETE FROM {s}.schedule_runs WHERE schedule = %s"
SQL_ENABLE = """
UPDATE {s}.schedules SET enabled = %(enabled)s,
    next_run_at = coalesce(%(next_run_at)s, next_run_at), updated_at = %(now)s
WHERE name = %(name)s
"""
SQL_RUNS = """
SELECT fire_at, fired_at, job_id FROM {s}.schedule_runs WHERE schedule = %s
ORDER BY fire_at DESC LIMIT %s
"""
# A fire time before a schedule's next_run_at is never planned again, so a run row is
# history only and may go whenever.
SQL_RUNS_PRUNE = """
WITH old AS (
    SELECT id FROM (
        SELECT id, fired_at,
               row_number() OVER (PARTITION BY schedule ORDER BY fire_at DESC) AS n
        FROM {s}.schedule_runs
    ) r WHERE n > %(keep)s OR fired_at < %(before)s
), gone AS (
    DELETE FROM {s}.schedule_runs WHERE id IN (SELECT id FROM old) RETURNING 1
)
SELECT count(*) FROM gone
"""
SQL_NEXT = """
SELECT min(next_run_at) FROM {s}.schedules WHERE enabled AND next_run_at IS NOT NULL
"""
SQL_DUE = f"""
SELECT {_COLUMNS} FROM {{s}}.schedules
WHERE enabled AND next_run_at IS NOT NULL AND next_run_at <= %s
ORDER BY next_run_at LIMIT %s
FOR UPDATE SKIP LOCKED
"""
# "Run now" waits for a tick holding the row instead of skipping it.
SQL_LOCK_ONE = f"SELECT {_COLUMNS} FROM {{s}}.schedules WHERE name = %s FOR UPDATE"
SQL_RUN_INSERT = """
INSERT INTO {s}.schedule_runs (schedule, fire_at, fired_at) VALUES (%s, %s, %s)
ON CONFLICT (schedule, fire_at) DO NOTHING
RETURNING id
"""
SQL_RUN_JOBS = """
UPDATE {s}.schedule_runs r SET job_id = u.job_id
FROM unnest(%s::bigint[], %s::bigint[]) AS u(id, job_id) WHERE r.id = u.id
"""
SQL_ADVANCE = """
UPDATE {s}.schedules s SET next_run_at = u.next_run_at,
    last_run_at = coalesce(u.last_run_at, s.last_run_at),
    last_job_id = coalesce(u.last_job_id, s.last_job_id)
FROM unnest(%s::bigint[], %s::float8[], %s::float8[], %s::bigint[])
     AS u(id, next_run_at, last_run_at, last_job_id)
WHERE s.id = u.id
"""


def _float(value: float | None) -> float | None:
    return None if value is None else float(value)


class ScheduleVerbs(QueueVerbs):
    """Schedules and their firing (a mixin of PostgresBackend, before ``Pending``)."""

    @cached_property
    def _schedules_sql(self) -> Statements:
        # Qualified once per backend, on first use (the schema never changes).
        return Statements(globals(), self.schema)

    # -- schedules --------------------------------------------------------------------

    def schedule_upsert(self, values: dict[str, Any]) -> ScheduleRecord:
        """Create or replace schedule ``values["name"]`` (its history is kept); one
        statement, which keeps next_run_at when the timing is unchanged."""
        params = {**values, "now": self.clock(), "next_run_at": _float(values["next_run_at"])}
        rows = self.conns.statement(self._schedules_sql.upsert, params)
        return ScheduleRecord._make(rows[0])

    def schedule(self, name: str) -> ScheduleRecord | None:
        rows = self.conns.statement(self._schedules_sql.get, (name,))
        return ScheduleRecord._make(rows[0]) if rows else None

    def schedules(self) -> list[ScheduleRecord]:
        return [ScheduleRecord._make(r) for r in self.conns.statement(self._schedules_sql.all)]

    def schedule_delete(self, name: str) -> bool:
        """Delete a schedule and its history; False if there was none."""
        sql = self._schedules_sql
        with self.conns.tx() as cur:
            cur.execute(sql.delete, (name,))
            gone = cur.rowcount > 0
            # A new statement, a new snapshot: it sees the runs of a tick that held the
            # row while the delete above waited for it.
            cur.execute(sql.runs_delete, (name,))
        return gone

    def schedule_enable(self, name: str, enabled: bool, next_run_at: float | None) -> bool:
        """Pause or resume (optionally moving ``next_run_at``); False if no such schedule."""
        sql = self._schedules_sql
        with self.conns.tx() as cur:
            cur.execute(sql.enable, {"enabled": bool(enabled), "next_run_at": _float(next_run_at),
                                     "now": self.clock(), "name": name})
            return cur.rowcount > 0

    def schedule_runs(self, name: str, limit: int) -> list[ScheduleRun]:
        rows = self.conns.statement(self._schedules_sql.runs, (name, limit))
        return [ScheduleRun._make(r) for r in rows]

    def prune_schedule_runs(self, keep: int = 1000, older_than: float | None = None) -> int:
        """Delete each schedule's runs but the newest *keep*, and any fired more than
        *older_than* seconds ago; return how many."""
        before = -1e18 if older_than is None else self.clock() - older_than
        rows = self.conns.statement(self._schedules_sql.runs_prune,
                                    {"keep": keep, "before": before})
        return int(rows[0][0])

    def next_schedule_due(self) -> float:
        """The earliest ``next_run_at`` of an enabled schedule (inf if none)."""
        value = self.conns.statement(self._schedules_sql.next)[0][0]
        return float(value) if value is not None else float("inf")

    def schedule_tick(
        self,
        plan: Callable[[ScheduleRecord, float], tuple[list[float], float | None]],
        *,
        only: str | None = None,
        fire_now: bool = False,
        limits: tuple[int, int, float] | None = None,
    ) -> list[Fire]:
        """Fire every due schedule once per fire time, in one transaction, alongside
        any number of other schedulers (see the module docstring for how).

        ``plan(row, now)`` returns ``(fire_times, next_run_at)`` for a due row (the
        misfire policy lives there). With *only* and *fire_now*, fires that schedule
        now, whatever its time (waiting for a tick that holds it). *limits* ``(rows,
        fires, seconds)`` bound the transaction: at most *rows* due schedules, the
        earliest first, and no further schedule once *fires* fires were recorded or
        *seconds* have run (always at least one); the rest stay due.
        """
        max_rows, max_fires, max_seconds = limits or (None, 0, 0.0)
        sql = self._schedules_sql
        added: dict[int, int] = {}
        with self.conns.tx() as cur:
            if only is not None:
                cur.execute(sql.lock_one, (only,))
                rows = cur.fetchall()
                now = self.clock()  # after the row lock was granted
            else:
                now = self.clock()  # SKIP LOCKED: the select never waits
                cur.execute(sql.due, (now, max_rows))
                rows = cur.fetchall()
            began = time.monotonic()
            # Phase 1, earliest due first: plan, and record each fire (the proof).
            taken: list[tuple[ScheduleRecord, list[float], float | None, list[tuple[int, float]]]] = []
            recorded = 0
            for done, row in enumerate(rows):
                if limits and done and (recorded >= max_fires
                                        or time.monotonic() - began >= max_seconds):
                    break  # bounded: the rest stay due (their locks go at the commit)
                rec = ScheduleRecord._make(row)
                if fire_now:
                    times, next_run_at = [now], rec.next_run_at
                else:
                    times, next_run_at = plan(rec, now)
                runs: list[tuple[int, float]] = []
                for fire_at in times:
                    cur.execute(sql.run_insert, (rec.name, float(fire_at), now))
                    found = cur.fetchall()
                    if found:  # else fired already (belt and braces)
                        runs.append((int(found[0][0]), float(fire_at)))
                recorded += len(runs)
                taken.append((rec, times, next_run_at, runs))
            if not taken:
                return []
            # Phase 2: the queues, found or created in name order, then the puts, one
            # per queue in queue id order (see the module docstring).
            qids: dict[str, int] = {}
            for queue in sorted({rec.queue for rec, _, _, runs in taken if runs}):
                cur.execute(self.qs.queue_id, (queue,))
                found = cur.fetchall()
                qids[queue] = int(found[0][0]) if found else self.queue_id(cur, queue)
            by_queue: dict[int, list[tuple[ScheduleRecord, int, float]]] = {}
            for rec, _, _, runs in taken:
                for run_id, fire_at in runs:
                    by_queue.setdefault(qids[rec.queue], []).append((rec, run_id, fire_at))
            job_of: dict[int, int] = {}
            for qid in sorted(by_queue):
                fires = by_queue[qid]
                new: list[NewRow] = [(0, None, now, rec.payload, None, f"schedule:{rec.name}:{fire_at!r}")
                                     for rec, _, fire_at in fires]
                ids, n = self.put_rows(cur, qid, new, now, True)
                added[qid] = n
                job_of.update((run_id, job) for (_, run_id, _), job in zip(fires, ids, strict=True))
            # Phase 3: the job ids into the history, and every schedule advanced.
            if job_of:
                cur.execute(sql.run_jobs, (list(job_of), list(job_of.values())))
            fired: list[Fire] = []
            ids_, nexts, lasts, last_jobs = [], [], [], []
            for rec, times, next_run_at, runs in taken:
                fired.extend(Fire(rec.name, fire_at, job_of[run_id]) for run_id, fire_at in runs)
                ids_.append(rec.id)
                nexts.append(_float(next_run_at))
                lasts.append(float(times[-1]) if times else None)
                last_jobs.append(job_of[runs[-1][0]] if runs else None)
            cur.execute(sql.advance, (ids_, nexts, lasts, last_jobs))
        for qid, n in added.items():
            self._tally(qid, n, 0)
        return fired
