"""The verbs the PostgreSQL engine does not have yet, each raising NotImplementedError.

Grouped by the step of issue 17 that writes them (boundary plan, section 4, B1-B5).
A lane defines its verbs in its own module (a mixin placed before :class:`Pending` in
``PostgresBackend``'s bases, so its methods win) and deletes its block here. The
signatures are ``Backend``'s, so ``PostgresBackend`` can be instantiated and checked
against the interface today (``tests/test_postgres_engine.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ..base import Backend
from ..records import (
    Fire,
    MessageRecord,
    NewRow,
    QueueRecord,
    QueueStats,
    ScheduleRecord,
    ScheduleRun,
    State,
    Subscriptions,
)

__all__ = ["Pending"]


def _not_yet(verb: str) -> NotImplementedError:
    return NotImplementedError(f"{verb}() is not yet on PostgreSQL (issue 17, steps B1-B5)")


class Pending(Backend):
    """Every verb not yet written for PostgreSQL (see the module docstring)."""

    # -- B1: queues, put, depth stripes and administration (queues.py, depth.py, queries/queues.sql)
    def queue_row(self, name: str) -> QueueRecord | None:
        raise _not_yet('queue_row')

    def queue_row_by_id(self, qid: int) -> QueueRecord | None:
        raise _not_yet('queue_row_by_id')

    def ensure_queue(
        self,
        name: str,
        defaults: dict[str, Any],
        updates: dict[str, Any],
    ) -> QueueRecord:
        raise _not_yet('ensure_queue')

    def create_queue(self, name: str, options: dict[str, Any]) -> QueueRecord:
        raise _not_yet('create_queue')

    def queue_names(self) -> list[str]:
        raise _not_yet('queue_names')

    def delete_queue(self, qid: int) -> None:
        raise _not_yet('delete_queue')

    def room(self, qid: int) -> tuple[int, int | None]:
        raise _not_yet('room')

    def stats(self, qid: int) -> QueueStats:
        raise _not_yet('stats')

    def put(self, qid: int, rows: Sequence[NewRow], *, force: bool = False) -> list[int]:
        raise _not_yet('put')

    def put_ready(self, qid: int, priority: int, payload: bytes) -> int:
        raise _not_yet('put_ready')

    def redrive(self, qid: int, limit: int | None) -> int:
        raise _not_yet('redrive')

    def cancel(self, mid: int) -> bool:
        raise _not_yet('cancel')

    def retry_finished(self, mid: int) -> bool:
        raise _not_yet('retry_finished')

    def purge(self, qid: int, state: State | None) -> int:
        raise _not_yet('purge')

    def prune(self, qid: int, before: float) -> int:
        raise _not_yet('prune')

    def message(self, mid: int) -> MessageRecord | None:
        raise _not_yet('message')

    def peek(self, qid: int, state: State | None, n: int) -> list[MessageRecord]:
        raise _not_yet('peek')

    # -- B2: claims and leases (messages.py, queries/messages.sql)
    def claim(self, qid: int, n: int, lease: float) -> tuple[list[tuple[Any, ...]], float]:
        raise _not_yet('claim')

    def probe(self, qid: int) -> tuple[bool, float]:
        raise _not_yet('probe')

    def next_due(self, qid: int) -> float:
        raise _not_yet('next_due')

    def expire(self, qid: int) -> None:
        raise _not_yet('expire')

    def ack(self, qid: int, items: Iterable[tuple[int, int]], retention: float) -> list[int]:
        raise _not_yet('ack')

    def retry(
        self,
        qid: int,
        mid: int,
        token: int,
        delay: float | Callable[[int], float],
        error: str | None,
    ) -> bool:
        raise _not_yet('retry')

    def extend(self, mid: int, token: int, seconds: float) -> float:
        raise _not_yet('extend')

    def heartbeat(
        self,
        items: Sequence[tuple[int, int]],
        seconds: float,
    ) -> tuple[list[int], list[int]]:
        raise _not_yet('heartbeat')

    def fail(self, qid: int, mid: int, token: int, reason: str) -> None:
        raise _not_yet('fail')

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

    # -- B4: topics (topics.py, queries/topics.sql)
    def subs_version(self) -> int:
        raise _not_yet('subs_version')

    def subscriptions(self, topic: str) -> Subscriptions:
        raise _not_yet('subscriptions')

    def topics(self) -> list[str]:
        raise _not_yet('topics')

    def subscribe(
        self,
        topic: str,
        name: str,
        pattern: str,
        defaults: dict[str, Any],
        updates: dict[str, Any],
    ) -> QueueRecord:
        raise _not_yet('subscribe')

    def unsubscribe(self, qid: int) -> None:
        raise _not_yet('unsubscribe')

    def touch_subscription(self, qid: int, expires_at: float) -> bool:
        raise _not_yet('touch_subscription')

    def drop_expired_subscriptions(self) -> int:
        raise _not_yet('drop_expired_subscriptions')

    def publish(self, version: int, deliveries: dict[int, list[NewRow]]) -> int:
        raise _not_yet('publish')
