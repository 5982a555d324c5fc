"""The schedule and topic verbs every storage engine implements (a part of
:class:`liteq.backends.base.Backend`, kept in a module of its own as the operating and
workflow verbs are; the records are :mod:`.records`')."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from .records import Fire, NewRow, QueueRecord, ScheduleRecord, ScheduleRun, Subscriptions

__all__ = ["ScheduleTopicVerbs"]


class ScheduleTopicVerbs(ABC):
    """Schedules (cron and intervals, fired once across processes) and topics
    (subscriptions and fan-out)."""

    # -- schedules --------------------------------------------------------------------

    @abstractmethod
    def schedule_upsert(self, values: dict[str, Any]) -> ScheduleRecord:
        """Create schedule ``values["name"]`` enabled, or replace its timing, target
        and payload (id, created_at, enabled and history kept); the row after.
        *values*: name, kind, spec, tz, target, queue, payload, misfire, misfire_cap,
        next_run_at. A replacement whose timing (kind, spec, tz) equals the stored one
        keeps the stored next_run_at (the given one is ignored): decided inside this
        one write, so that it holds with concurrent writers."""

    @abstractmethod
    def schedule(self, name: str) -> ScheduleRecord | None:
        """The schedule named *name*, or None."""

    @abstractmethod
    def schedules(self) -> list[ScheduleRecord]:
        """Every schedule, by name."""

    @abstractmethod
    def schedule_delete(self, name: str) -> bool:
        """Delete the schedule and its history atomically; False if there was none.
        Messages it already enqueued stay."""

    @abstractmethod
    def schedule_enable(self, name: str, enabled: bool, next_run_at: float | None) -> bool:
        """Pause or resume; *next_run_at* None keeps it. False if no such schedule."""

    @abstractmethod
    def schedule_runs(self, name: str, limit: int) -> list[ScheduleRun]:
        """The schedule's newest *limit* fires, newest first."""

    @abstractmethod
    def prune_schedule_runs(self, keep: int = 1000, older_than: float | None = None) -> int:
        """Delete each schedule's runs but the newest *keep*, and any fired more than
        *older_than* seconds ago; how many. Safe: a past fire is never planned again."""

    @abstractmethod
    def next_schedule_due(self) -> float:
        """The earliest next_run_at of an enabled schedule (``inf`` if none)."""

    @abstractmethod
    def schedule_tick(
        self,
        plan: Callable[[ScheduleRecord, float], tuple[list[float], float | None]],
        *,
        only: str | None = None,
        fire_now: bool = False,
        limits: tuple[int, int, float] | None = None,
    ) -> list[Fire]:
        """Fire every due enabled schedule once per fire time (guarantee 8), with any
        number of schedulers on the database and no leader.

        ``plan(record, now)`` (pure; called under the transaction's locks) gives
        ``(fire_times, next_run_at)`` for each due schedule. Each fire is recorded in
        the runs history, unique per (schedule, fire time), and put with
        ``force=True`` and key ``schedule:NAME:FIRE_AT`` (its queue created with
        default options if missing); next_run_at advances in the same transaction.
        *only* ticks that one schedule, due or not (``plan`` decides); with *fire_now*
        it fires once at now and keeps its next_run_at.
        *limits* ``(rows, fires, seconds)`` bound one call whatever the stored rows say:
        at most *rows* due schedules (earliest first), and no further schedule once
        *fires* fires were made or *seconds* have run; what is left stays due.
        """

    # -- topics ---------------------------------------------------------------------

    @abstractmethod
    def subs_version(self) -> int:
        """The subscription-set version (0 before any): bumped by every subscribe,
        unsubscribe and expiry, so a publisher re-reads routes only when it moved."""

    @abstractmethod
    def subscriptions(self, topic: str) -> Subscriptions:
        """The topic's subscription queues and the version, read in one snapshot."""

    @abstractmethod
    def topics(self) -> list[str]:
        """Every topic with at least one subscription, sorted."""

    @abstractmethod
    def subscribe(
        self, topic: str, name: str, pattern: str, defaults: dict[str, Any], updates: dict[str, Any]
    ) -> QueueRecord:
        """Create subscription queue *name* of *topic* (from *defaults*) or update its
        *pattern* and the *updates* columns; bumps the version; atomic. Raises
        InvalidArgument if *name* is a queue that is not a subscription of *topic*.
        # later (A6): *defaults* is a ``QueueOptions``."""

    @abstractmethod
    def unsubscribe(self, qid: int) -> None:
        """Delete the subscription queue and its messages, and bump the version,
        atomically: no publish routed under the old version can commit into it."""

    @abstractmethod
    def touch_subscription(self, qid: int, expires_at: float) -> bool:
        """Renew a temporary subscription's own lease to *expires_at*; False if gone."""

    @abstractmethod
    def drop_expired_subscriptions(self) -> int:
        """Delete subscriptions whose expires_at passed (their owner died), with their
        messages, bumping the version; how many. Cheap when there are none."""

    @abstractmethod
    def publish(self, version: int, deliveries: dict[int, list[NewRow]]) -> int:
        """Put each subscription's rows (``{qid: rows}``, as :meth:`put`) in one
        transaction: all subscriptions get them or none do; how many ids.

        Raises StaleRoutes (an internal signal, not a LiteqError: the caller re-reads
        :meth:`subscriptions` and retries) if the version is no longer *version* when
        the transaction holds its locks, and QueueFull naming the first full
        subscription.
        """
