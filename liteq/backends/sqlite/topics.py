"""Topics: subscriptions (queues with a pattern) and the atomic publish."""

from __future__ import annotations

from typing import Any

from ...errors import (
    InvalidArgument,
)
from ..records import QueueRecord, StaleRoutes, Subscriptions
from .queues import QueueVerbs
from .sql import (
    SQL_EXPIRED_SUBS,
    SQL_PURGE_ALL,
    SQL_QUEUE_BY_NAME,
    SQL_QUEUE_DELETE,
    SQL_RECOUNT,
    SQL_SUBS_BUMP,
    SQL_SUBS_VERSION,
    SQL_SUBSCRIPTIONS,
    SQL_TOPICS,
)


class TopicVerbs(QueueVerbs):
    """Subscriptions and publishing."""

    # -- topics ---------------------------------------------------------------------

    def subs_version(self) -> int:
        with self.read() as cur:
            rows = cur.execute(SQL_SUBS_VERSION).fetchall()
        return int(rows[0][0]) if rows else 0

    def subscriptions(self, topic: str) -> Subscriptions:
        """``(version, rows)``: the subscription set of *topic* and its version."""
        with self.read() as cur:
            rows = cur.execute(SQL_SUBS_VERSION).fetchall()
            version = int(rows[0][0]) if rows else 0
            subs = [QueueRecord._make(r) for r in cur.execute(SQL_SUBSCRIPTIONS, (topic,)).fetchall()]
        return Subscriptions(version, subs)

    def topics(self) -> list[str]:
        with self.read() as cur:
            return [r[0] for r in cur.execute(SQL_TOPICS).fetchall()]

    def subscribe(
        self, topic: str, name: str, pattern: str, defaults: dict[str, Any], updates: dict[str, Any]
    ) -> QueueRecord:
        """Create (or update the pattern and options of) subscription queue *name*."""
        with self.write() as cur:
            existing = cur.execute(SQL_QUEUE_BY_NAME, (name,)).fetchall()
            if existing and existing[0][11] != topic:
                raise InvalidArgument(
                    f"queue {name!r} exists and is not a subscription of topic {topic!r}"
                )
            self._create_queue(cur, name, {**defaults, "topic": topic, "pattern": pattern})
            cols = {**updates, "pattern": pattern}
            sets = ", ".join(f"{col} = :{col}" for col in cols)
            cur.execute(f"UPDATE queues SET {sets} WHERE name = :name", {**cols, "name": name})
            cur.execute(SQL_SUBS_BUMP)
            row = QueueRecord._make(cur.execute(SQL_QUEUE_BY_NAME, (name,)).fetchall()[0])
            if "max_depth" in updates or "count_depth" in updates:
                cur.execute(SQL_RECOUNT, {"qid": row[0]})
            return row

    def unsubscribe(self, qid: int) -> None:
        with self.write() as cur:
            cur.execute(SQL_PURGE_ALL, {"qid": qid})
            cur.execute(SQL_QUEUE_DELETE, (qid,))
            cur.execute(SQL_SUBS_BUMP)

    def touch_subscription(self, qid: int, expires_at: float) -> bool:
        """Renew a temporary subscription's own lease; False if it is gone."""
        with self.write() as cur:
            cur.execute("UPDATE queues SET expires_at = ? WHERE id = ?", (expires_at, qid))
            return bool(cur.connection.changes())

    def drop_expired_subscriptions(self) -> int:
        """Delete temporary subscriptions whose own lease ran out (their owner died)."""
        with self.read() as cur:
            if not cur.execute(SQL_EXPIRED_SUBS, (self.clock(),)).fetchall():
                return 0
        with self.write() as cur:
            now = self.clock()  # after BEGIN IMMEDIATE: a wait for the lock must not age it
            ids = [r[0] for r in cur.execute(SQL_EXPIRED_SUBS, (now,)).fetchall()]
            for qid in ids:
                cur.execute(SQL_PURGE_ALL, {"qid": qid})
                cur.execute(SQL_QUEUE_DELETE, (qid,))
            if ids:
                cur.execute(SQL_SUBS_BUMP)
        return len(ids)

    def publish(
        self,
        version: int,
        deliveries: dict[int, list[tuple[int, bytes | None, float, bytes, bytes | None, str | None]]],
    ) -> int:
        """Insert each subscription's rows in one transaction: all or nothing.

        Raises :class:`StaleRoutes` if the subscription set is no longer *version*
        (the caller re-routes), and QueueFull naming the first full subscription.
        """
        total = 0
        with self.write() as cur:
            now = self.clock()  # after BEGIN IMMEDIATE: a wait for the lock must not age it
            rows = cur.execute(SQL_SUBS_VERSION).fetchall()
            if (int(rows[0][0]) if rows else 0) != version:
                raise StaleRoutes()
            added = {}
            for qid, msgs in deliveries.items():
                ids, added[qid] = self._put(cur, qid, msgs, now, False)
                total += len(ids)
        for qid, n in added.items():
            self._tally(qid, n, 0)
        return total
