"""The verbs the PostgreSQL engine does not have yet, each raising NotImplementedError.

Grouped by the step of issue 17 that writes them (boundary plan, section 4, B1-B5).
A lane defines its verbs in its own module (a mixin placed before :class:`Pending` in
``PostgresBackend``'s bases, so its methods win) and deletes its block here. The
signatures are ``Backend``'s, so ``PostgresBackend`` can be instantiated and checked
against the interface today (``tests/test_postgres_engine.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..base import Backend
from ..records import (
    Fire,
    ScheduleRecord,
    ScheduleRun,
)

__all__ = ["Pending"]


def _not_yet(verb: str) -> NotImplementedError:
    return NotImplementedError(f"{verb}() is not yet on PostgreSQL (issue 17, steps B1-B5)")


class Pending(Backend):
    """Every verb not yet written for PostgreSQL (see the module docstring)."""

    # -- B3: schedules (schedules.py; the jobs verbs and release are in jobs.py)
    def schedule_upsert(self, values: dict[str, Any]) -> ScheduleRecord:
        raise _not_yet('schedule_upsert')

    def schedule(self, name: str) -> ScheduleRecord | None:
        raise _not_yet('schedule')

    def schedules(self) -> list[ScheduleRecord]:
        raise _not_yet('schedules')

    def schedule_delete(self, name: str) -> bool:
        raise _not_yet('schedule_delete')

    def schedule_enable(self, name: str, enabled: bool, next_run_at: float | None) -> bool:
        raise _not_yet('schedule_enable')

    def schedule_runs(self, name: str, limit: int) -> list[ScheduleRun]:
        raise _not_yet('schedule_runs')

    def prune_schedule_runs(self, keep: int = 1000, older_than: float | None = None) -> int:
        raise _not_yet('prune_schedule_runs')

    def next_schedule_due(self) -> float:
        raise _not_yet('next_schedule_due')

    def schedule_tick(
        self,
        plan: Callable[[ScheduleRecord, float], tuple[list[float], float | None]],
        *,
        only: str | None = None,
        fire_now: bool = False,
        limits: tuple[int, int, float] | None = None,
    ) -> list[Fire]:
        raise _not_yet('schedule_tick')
