"""Schedules: rows, history, and the one-transaction tick that fires each time once."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ..records import Fire, ScheduleRecord, ScheduleRun
from .queues import QueueVerbs, default_queue_options
from .sql import (
    SQL_RUN_INSERT,
    SQL_RUN_JOB,
    SQL_RUNS,
    SQL_RUNS_DELETE,
    SQL_RUNS_PRUNE,
    SQL_SCHEDULE_ADVANCE,
    SQL_SCHEDULE_ALL,
    SQL_SCHEDULE_DELETE,
    SQL_SCHEDULE_DUE,
    SQL_SCHEDULE_ENABLE,
    SQL_SCHEDULE_GET,
    SQL_SCHEDULE_NEXT,
    SQL_SCHEDULE_UPSERT,
)


class ScheduleVerbs(QueueVerbs):
    """Schedules and their firing."""

    # -- schedules ------------------------------------------------------------------

    def schedule_upsert(self, values: dict[str, Any]) -> ScheduleRecord:
        """Create or replace schedule ``values["name"]`` (its history is kept)."""
        with self.write() as cur:
            cur.execute(SQL_SCHEDULE_UPSERT, {**values, "now": self.clock()})
            return ScheduleRecord._make(cur.execute(SQL_SCHEDULE_GET, (values["name"],)).fetchall()[0])

    def schedule(self, name: str) -> ScheduleRecord | None:
        with self.read() as cur:
            rows = cur.execute(SQL_SCHEDULE_GET, (name,)).fetchall()
        return ScheduleRecord._make(rows[0]) if rows else None

    def schedules(self) -> list[ScheduleRecord]:
        with self.read() as cur:
            return [ScheduleRecord._make(r) for r in cur.execute(SQL_SCHEDULE_ALL).fetchall()]

    def schedule_delete(self, name: str) -> bool:
        """Delete a schedule and its history; False if there was none."""
        with self.write() as cur:
            cur.execute(SQL_SCHEDULE_DELETE, (name,))
            gone = cur.connection.changes() > 0
            cur.execute(SQL_RUNS_DELETE, (name,))
        return bool(gone)

    def schedule_enable(self, name: str, enabled: bool, next_run_at: float | None) -> bool:
        """Pause or resume (optionally moving ``next_run_at``); False if no such schedule."""
        with self.write() as cur:
            cur.execute(
                SQL_SCHEDULE_ENABLE,
                {"enabled": int(enabled), "next_run_at": next_run_at, "now": self.clock(),
                 "name": name},
            )
            return bool(cur.connection.changes())

    def schedule_runs(self, name: str, limit: int) -> list[ScheduleRun]:
        with self.read() as cur:
            return [ScheduleRun._make(r) for r in cur.execute(SQL_RUNS, (name, limit)).fetchall()]

    def prune_schedule_runs(self, keep: int = 1000, older_than: float | None = None) -> int:
        """Delete each schedule's runs but the newest *keep*, and any fired more than
        *older_than* seconds ago; return how many."""
        before = -1e18 if older_than is None else self.clock() - older_than
        with self.write() as cur:
            cur.execute(SQL_RUNS_PRUNE, {"keep": keep, "before": before})
            return int(cur.connection.changes())

    def next_schedule_due(self) -> float:
        """The earliest ``next_run_at`` of an enabled schedule (inf if none)."""
        with self.read() as cur:
            value = cur.execute(SQL_SCHEDULE_NEXT).fetchall()[0][0]
        return float(value) if value is not None else float("inf")

    def schedule_tick(
        self,
        plan: Callable[[ScheduleRecord, float], tuple[list[float], float | None]],
        *,
        only: str | None = None,
        fire_now: bool = False,
        limits: tuple[int, int, float] | None = None,
    ) -> list[Fire]:
        """Fire every due schedule once per fire time, in one transaction.

        ``plan(row, now)`` returns ``(fire_times, next_run_at)`` for a due row (the
        misfire policy lives there). Each fire time is recorded in schedule_runs
        (unique per schedule) and enqueued with the dedup key
        ``schedule:NAME:FIRE_AT``; ``next_run_at`` advances in the same transaction,
        so any number of schedulers on one file enqueue each fire exactly once.
        With *only* and *fire_now*, fires that schedule now, whatever its time.
        Returns a :class:`Fire` for each fire enqueued.

        *limits* ``(rows, fires, seconds)`` bound the transaction: it takes at most
        *rows* due schedules, the earliest first, and takes no more once it has
        enqueued *fires* fires or run for *seconds* (it always finishes the schedule
        at hand, and takes at least one). The schedules left are still due.
        """
        max_rows, max_fires, max_seconds = limits or (-1, 0, 0.0)
        fired: list[Fire] = []
        added: dict[int, int] = {}
        with self.write() as cur:
            now = self.clock()  # after BEGIN IMMEDIATE
            began = time.monotonic()
            if only is not None:
                rows = cur.execute(SQL_SCHEDULE_GET, (only,)).fetchall()
            else:
                rows = cur.execute(SQL_SCHEDULE_DUE, (now, max_rows)).fetchall()
            for done, row in enumerate(rows):
                if limits and done and (len(fired) >= max_fires
                                        or time.monotonic() - began >= max_seconds):
                    break  # bounded: the rest stay due for the next tick
                rec = ScheduleRecord._make(row)
                sid, name, queue_name, payload = rec.id, rec.name, rec.queue, rec.payload
                if fire_now:
                    times, next_run_at = [now], rec.next_run_at
                else:
                    times, next_run_at = plan(rec, now)
                qrow = cur.execute("SELECT id FROM queues WHERE name = ?", (queue_name,)).fetchall()
                qid = qrow[0][0] if qrow else self._create_queue(cur, queue_name, default_queue_options())
                last_job = None
                for fire_at in times:
                    cur.execute(SQL_RUN_INSERT, (name, fire_at, now))
                    if not cur.connection.changes():
                        continue  # already fired (belt and braces)
                    key = f"schedule:{name}:{fire_at!r}"
                    ids, n = self._put(cur, qid, [(0, None, now, payload, None, key)], now, True)
                    added[qid] = added.get(qid, 0) + n
                    last_job = ids[0]
                    cur.execute(SQL_RUN_JOB, (last_job, name, fire_at))
                    fired.append(Fire(name, fire_at, last_job))
                cur.execute(
                    SQL_SCHEDULE_ADVANCE,
                    {"next_run_at": next_run_at, "id": sid,
                     "last_run_at": times[-1] if times else None, "last_job_id": last_job},
                )
        for qid, n in added.items():
            self._tally(qid, n, 0)
        return fired
