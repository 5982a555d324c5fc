"""The verbs the PostgreSQL engine does not have yet, each raising NotImplementedError.

Grouped by the step of issue 17 that writes them (boundary plan, section 4, B1-B5).
A lane defines its verbs in its own module (a mixin placed before :class:`Pending` in
``PostgresBackend``'s bases, so its methods win) and deletes its block here. The
signatures are ``Backend``'s, so ``PostgresBackend`` can be instantiated and checked
against the interface today (``tests/test_postgres_engine.py``).
"""

from __future__ import annotations

from typing import Any

from ..base import Backend
from ..records import NewRow, QueueRecord, Subscriptions

__all__ = ["Pending"]


def _not_yet(verb: str) -> NotImplementedError:
    return NotImplementedError(f"{verb}() is not yet on PostgreSQL (issue 17, steps B1-B5)")


class Pending(Backend):
    """Every verb not yet written for PostgreSQL (see the module docstring)."""

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
