"""Topics on PostgreSQL (issue 17, step B4; boundary plan 3.9): subscriptions (queues
with a topic and a pattern), the subscription-set version, and the atomic publish.

SQLite publishes under its single write lock, re-reading ``subs_version`` after
``BEGIN IMMEDIATE``: no subscribe or unsubscribe can commit between that read and the
inserts. Under READ COMMITTED with many writers that takes a lock of its own, one
transaction-scoped advisory lock per topic, keyed ``'liteq.topic:' || topic``:

* **publish** takes it *shared* for the topics of the subscriptions it routed to, then
  (a new statement, so a new snapshot) reads the version: if it moved, StaleRoutes and
  the publisher routes again. Publishers never wait for each other.
* **subscribe, unsubscribe, drop_expired_subscriptions** and ``delete_queue`` of a
  subscription take it *exclusive* before they change the set and bump the version. So
  none of them can commit between a publish's version check and its commit: a publish
  reaches exactly the subscriptions that existed when it committed, and no message is
  ever inserted into a deleted subscription (no foreign key needed: one would take a
  KEY SHARE lock on the queue row for every message inserted).

Why the lock is released only after the commit is visible: PostgreSQL ends a
transaction (its commit visible to new snapshots) before it releases its locks, so a
publish that obtained the lock after a subscribe reads the subscribe's version.

Lock order: the topic lock first (several topics in name order), then queue rows, then
message rows and depth stripes, everywhere (``delete_queue`` in queues.py too).

The subscription set is read in one statement (``subscriptions``): version and queues
from one snapshot, so a publisher never pairs a new version with an old set.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

from ...errors import InvalidArgument
from ..records import NewRow, QueueRecord, StaleRoutes, Subscriptions
from .queues import QueueVerbs, Statements

__all__ = ["TopicVerbs"]

_COLUMNS = ", ".join(f"q.{c}" for c in QueueRecord._fields)
_VERSION = "coalesce((SELECT value FROM {s}.meta WHERE key = 'subs_version'), 0)"

SQL_SUBS_VERSION = f"SELECT {_VERSION}"
# The version and the queues in one snapshot; no subscription leaves one row of NULLs.
SQL_SUBSCRIPTIONS = f"""
SELECT v.version, {_COLUMNS}
FROM (SELECT {_VERSION} AS version) AS v
LEFT JOIN {{s}}.queues AS q ON q.topic = %s
ORDER BY q.name
"""
SQL_TOPICS = "SELECT DISTINCT topic FROM {s}.queues WHERE topic IS NOT NULL ORDER BY topic"
SQL_TOPIC_LOCK = "SELECT pg_advisory_xact_lock(hashtext('liteq.topic:' || %s))"
# The topics of the routed subscriptions, locked shared in name order (one, normally).
SQL_ROUTES_LOCK = """
SELECT pg_advisory_xact_lock_shared(hashtext('liteq.topic:' || t.topic))
FROM (SELECT DISTINCT topic FROM {s}.queues
      WHERE id = ANY(%s::bigint[]) AND topic IS NOT NULL ORDER BY topic) AS t
"""
SQL_SUB_TOPIC = "SELECT topic FROM {s}.queues WHERE id = %s"
SQL_TOUCH = "UPDATE {s}.queues SET expires_at = %s WHERE id = %s RETURNING id"
SQL_EXPIRED_TOPICS = """
SELECT DISTINCT topic FROM {s}.queues
WHERE topic IS NOT NULL AND expires_at IS NOT NULL AND expires_at < %s ORDER BY topic
"""
# Re-read under the topics' locks: a subscription renewed meanwhile is not taken.
SQL_EXPIRED_LOCK = """
SELECT id FROM {s}.queues
WHERE topic = ANY(%s::text[]) AND expires_at IS NOT NULL AND expires_at < %s
ORDER BY id FOR UPDATE
"""


class TopicVerbs(QueueVerbs):
    """Subscriptions and publishing (a mixin of PostgresBackend)."""

    @cached_property
    def ts(self) -> Statements:
        """This module's statements for this backend's schema (built on first use)."""
        return Statements(globals(), self.schema)

    def subs_version(self) -> int:
        return int(self.conns.statement(self.ts.subs_version)[0][0])

    def subscriptions(self, topic: str) -> Subscriptions:
        rows = self.conns.statement(self.ts.subscriptions, (topic,))
        subs = [QueueRecord._make(r[1:]) for r in rows if r[1] is not None]
        return Subscriptions(int(rows[0][0]), subs)

    def topics(self) -> list[str]:
        return [r[0] for r in self.conns.statement(self.ts.topics)]

    def subscribe(
        self, topic: str, name: str, pattern: str, defaults: dict[str, Any], updates: dict[str, Any]
    ) -> QueueRecord:
        with self.conns.tx() as cur:
            cur.execute(self.ts.topic_lock, (topic,))
            # A savepoint inside this transaction: created (with its stripes) or updated.
            row = self.ensure_queue(
                name, {**defaults, "topic": topic, "pattern": pattern}, {**updates, "pattern": pattern}
            )
            if row.topic != topic:
                # Checked after the upsert: a plain queue of that name created
                # meanwhile is seen here, and raising rolls the update back.
                raise InvalidArgument(
                    f"queue {name!r} exists and is not a subscription of topic {topic!r}"
                )
            cur.execute(self.qs.subs_bump)
        return row

    def unsubscribe(self, qid: int) -> None:
        with self.conns.tx() as cur:
            cur.execute(self.ts.sub_topic, (qid,))
            found = cur.fetchall()
            if found and found[0][0] is not None:
                cur.execute(self.ts.topic_lock, (found[0][0],))
            self._drop_subscription(cur, qid)
            cur.execute(self.qs.subs_bump)

    def touch_subscription(self, qid: int, expires_at: float) -> bool:
        return bool(self.conns.statement(self.ts.touch, (expires_at, qid)))

    def drop_expired_subscriptions(self) -> int:
        # Publishers call this every few seconds: one read when nothing expired.
        if not self.conns.statement(self.ts.expired_topics, (self.clock(),)):
            return 0
        with self.conns.tx() as cur:
            cur.execute(self.ts.expired_topics, (self.clock(),))
            topics = [r[0] for r in cur.fetchall()]
            for topic in topics:  # in name order: two droppers never deadlock
                cur.execute(self.ts.topic_lock, (topic,))
            # After the locks: waiting for them must not age a subscription.
            cur.execute(self.ts.expired_lock, (topics, self.clock()))
            ids = [int(r[0]) for r in cur.fetchall()]
            for qid in ids:
                self._drop_subscription(cur, qid)
            if ids:
                cur.execute(self.qs.subs_bump)
        return len(ids)

    def publish(self, version: int, deliveries: dict[int, list[NewRow]]) -> int:
        added: dict[int, int] = {}
        total = 0
        with self.conns.tx() as cur:
            cur.execute(self.ts.routes_lock, (list(deliveries),))
            # A new statement: a snapshot taken after the locks were granted.
            cur.execute(self.ts.subs_version)
            if int(cur.fetchall()[0][0]) != version:
                raise StaleRoutes()
            now = self.clock()
            for qid, rows in deliveries.items():
                ids, added[qid] = self.put_rows(cur, qid, rows, now, False)
                total += len(ids)
        for qid, n in added.items():
            self._tally(qid, n, 0)
        return total

    def _drop_subscription(self, cur: Any, qid: int) -> None:
        # Messages, then stripes, then the queue row (the lock order of depth.py).
        cur.execute(self.qs.purge_all, (qid,))
        cur.execute(self.qs.stripes_delete, (qid,))
        cur.execute(self.qs.queue_delete, (qid,))
