"""Flow control on PostgreSQL (issue 19): pausing a queue, rate limits, concurrency caps.

**Pause.** The flag lives in the queue's row (``queues.paused``, migration 2). The claim
reads it inside its own statement (``messages.py``: ``SQL_CLAIM``), so a claim whose
statement starts after ``pause()`` committed takes nothing, whatever its process read a
moment before. (A claim statement already running when the pause commits finishes with
the snapshot it started with: it is ordered before the pause.) A resume sends the
NOTIFY a put sends, so waiting consumers look at once.

**Limits** (migration ``_V_FLOW2``). The plain claim statements take nothing from a
queue with a rate limit or with jobs under a task's limits (``queues.limited``); its
claims come here (:meth:`FlowVerbs.claim_limited`): one transaction that first takes
``pg_advisory_xact_lock`` on the schema's flow key, so limited claims run one after
another (each statement then sees every earlier one committed: READ COMMITTED) and a
count of a key's leases or a bucket's tokens can never race another claim. One lock
for all limited queues of the schema, not one per (queue, key): a task's cap and
bucket span queues, and one lock cannot deadlock. Limited claims are short (a few
statements), so this bounds limited claims to some hundreds a second per database,
plenty for work that needs limiting; unlimited queues never take it. An empty bucket is
remembered per queue as on SQLite (:attr:`held`), so waiting consumers sleep until its
next token.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ...flow import FlowSpec
from ..base import Backend
from .connection import Connections
from .schema import qualify

__all__ = ["FlowVerbs", "SQL_SET_PAUSED", "FLOW_TOKENS", "bucket"]

SQL_SET_PAUSED = "UPDATE {s}.queues SET paused = %s WHERE id = %s RETURNING id"

# A bucket's tokens now: what it held, refilled at its rate since, up to its burst.
FLOW_TOKENS = "least(f.burst, f.tokens + (%(now)s - f.refilled_at) * f.rate)"
SQL_FLOW_LOCK = "SELECT pg_advisory_xact_lock(hashtext('liteq.flow:' || %s))"
SQL_QUEUE_LIMITS = """
SELECT paused, limited, rate_limit, rate_burst, tokens, refilled_at FROM {s}.queues WHERE id = %s
"""
SQL_QUEUE_TAKE = "UPDATE {s}.queues SET tokens = %(tokens)s, refilled_at = %(now)s WHERE id = %(qid)s"
# A claimed message takes a token from its flow's bucket; no row: the bucket ran dry
# within this claim (the message stays ready).
SQL_FLOW_TAKE = """
UPDATE {s}.flows SET tokens = least(burst, tokens + (%(now)s - refilled_at) * rate) - 1,
    refilled_at = %(now)s
WHERE id = %(flow)s AND least(burst, tokens + (%(now)s - refilled_at) * rate) >= 1
RETURNING id
"""
SQL_FLOW_NEXT_TOKEN = f"""
SELECT min((1 - {FLOW_TOKENS}) / f.rate) FROM {{s}}.flows f
WHERE f.rate IS NOT NULL AND {FLOW_TOKENS} < 1
"""
# A task's limits: the row is made once (DO NOTHING takes no lock on an existing row,
# so producers do not queue on it); its values are updated once per process.
SQL_FLOW_INSERT = """
INSERT INTO {s}.flows (name, max_concurrency, rate, burst) VALUES (%s, %s, %s, %s)
ON CONFLICT (name) DO NOTHING
"""
SQL_FLOW_UPDATE = """
UPDATE {s}.flows SET max_concurrency = %(cap)s, rate = %(rate)s, burst = %(burst)s
WHERE name = %(name)s AND (max_concurrency, rate, burst)
    IS DISTINCT FROM (%(cap)s::bigint, %(rate)s::float8, %(burst)s::float8)
"""
SQL_FLOW_MARK = """
UPDATE {s}.messages SET flow = (SELECT id FROM {s}.flows WHERE name = %s), flow_key = %s
WHERE id = ANY(%s) AND state < 3 AND flow IS NULL
"""
SQL_QUEUE_LIMITED = "UPDATE {s}.queues SET limited = true WHERE id = %s AND NOT limited"
SQL_TARGET_LIMITED = """
UPDATE {s}.queues SET limited = true WHERE id = %s AND NOT limited
  AND EXISTS (SELECT 1 FROM {s}.messages WHERE id = ANY(%s) AND flow IS NOT NULL)
"""
SQL_LIMIT_STATS = f"""
SELECT
  (SELECT count(*) FROM {{s}}.messages WHERE qid = %(qid)s AND state = 2 AND flow IS NOT NULL),
  (SELECT count(*) FROM {{s}}.messages c
   WHERE c.qid = %(qid)s AND c.state = 0 AND c.flow IS NOT NULL AND NOT coalesce((
    SELECT (f.max_concurrency IS NULL OR (
              SELECT count(*) FROM {{s}}.messages r
              WHERE r.flow = c.flow AND r.flow_key = c.flow_key AND r.state = 2
                AND r.lease_until > %(now)s) < f.max_concurrency)
       AND (f.rate IS NULL OR {FLOW_TOKENS} >= 1)
    FROM {{s}}.flows f WHERE f.id = c.flow), true))
"""
SQL_FLOWS = f"""
SELECT f.name, f.max_concurrency, f.rate, f.burst, {FLOW_TOKENS},
  (SELECT count(*) FROM {{s}}.messages r WHERE r.flow = f.id AND r.state = 2
     AND r.lease_until > %(now)s)
FROM {{s}}.flows f ORDER BY f.name COLLATE "C"
"""


def bucket(rate: float, burst: float | None, tokens: float, refilled_at: float,
           now: float) -> float:
    """Tokens in a bucket now (a new bucket, 0 tokens at time 0, is full)."""
    top = float(burst) if burst is not None else 1.0
    return min(top, tokens + max(0.0, now - refilled_at) * rate)


class FlowVerbs(Backend):
    """Pause, resume and the limits (a mixin of PostgresBackend)."""

    conns: Connections
    schema: str
    clock: Callable[[], float]
    # From the Notifier mixin (notifier.py).
    notify_sql: str

    #: Per queue: until when its claims find its buckets empty (see the docstring);
    #: made by MessageVerbs.setup_core.
    held: dict[int, float]
    #: The task limits this process wrote (once each).
    flows_written: set[FlowSpec]
    #: Queues this process saw with limits (their claims go straight to claim_limited).
    limited_queues: set[int]
    # From MessageVerbs: the engine's statements (SQL_LIMITED_SELECT, SQL_LIMITED_LEASE).
    ms: Any

    def _q(self, sql: str) -> str:
        return qualify(sql, self.schema)

    def set_paused(self, qid: int, paused: bool) -> bool:
        with self.conns.tx() as cur:
            cur.execute(self._q(SQL_SET_PAUSED), (bool(paused), qid))
            found = bool(cur.fetchall())
            if found and not paused:
                # Unthrottled: every waiter must look now, not after the next put.
                cur.execute(self.notify_sql, (str(qid),))
            return found

    def set_flow(self, qid: int, ids: Sequence[int], spec: FlowSpec, key: str | None) -> None:
        rate = None if spec.rate is None else spec.rate.rate
        burst = None if spec.rate is None else spec.rate.burst
        with self.conns.tx() as cur:
            cur.execute(self._q(SQL_FLOW_INSERT), (spec.name, spec.max_concurrency, rate, burst))
            if spec not in self.flows_written:
                cur.execute(self._q(SQL_FLOW_UPDATE), {
                    "cap": spec.max_concurrency, "rate": rate, "burst": burst,
                    "name": spec.name})
                self.flows_written.add(spec)
            cur.execute(self._q(SQL_FLOW_MARK), (spec.name, key or "", list(ids)))
            cur.execute(self._q(SQL_QUEUE_LIMITED), (qid,))

    def mark_limited(self, cur: Any, target: int, ids: list[int]) -> None:
        """Dead-lettering moved *ids* to queue *target*: limited, if any has limits."""
        cur.execute(self._q(SQL_TARGET_LIMITED), (target, ids))

    def claim_limited(self, qid: int, n: int, lease: float,
                      known: bool = False) -> tuple[list[tuple[Any, ...]], float] | None:
        """After the plain claim found nothing (or straight away for a queue *known* to
        have limits): up to *n* messages of queue *qid* that no limit holds back, in
        queue order, with their lease deadline; None if the queue has no limits or is
        paused (the plain claim's answer stands)."""
        if not known:  # a look without the lock first: most empty queues have no limits
            found = self.conns.statement(self._q(SQL_QUEUE_LIMITS), (qid,))
            if not found or found[0][0] or not (found[0][1] or found[0][2] is not None):
                return None
        with self.conns.tx() as cur:
            cur.execute(SQL_FLOW_LOCK, (self.schema,))
            now = self.clock()  # after the lock: waiting for it must not shorten the lease
            until = now + lease
            cur.execute(self._q(SQL_QUEUE_LIMITS), (qid,))
            found = cur.fetchall()
            if not found:
                return None
            paused, limited, rate, burst, tokens, refilled_at = found[0]
            if paused or not (limited or rate is not None):
                return None
            budget, have = n, float(n)
            if rate is not None:
                have = bucket(rate, burst, tokens, refilled_at, now)
                if have < 1:
                    self.held[qid] = now + (1 - have) / rate
                    return [], until
                budget = min(n, int(have))
            cur.execute(self.ms.limited_select, {"qid": qid, "n": budget, "now": now},
                        prepare=False)
            ids: list[int] = []
            for mid, flow, capped, rated in cur.fetchall():
                if rated:
                    cur.execute(self._q(SQL_FLOW_TAKE), {"flow": flow, "now": now})
                    if not cur.fetchall():
                        continue  # its bucket ran dry within this claim
                ids.append(mid)
                if capped:
                    break  # one capped job per claim, as on SQLite (sqlite/flow.py)
            if ids:
                cur.execute(self.ms.limited_lease, {"ids": ids, "until": until},
                            prepare=False)
                rows = [tuple(r) for r in cur.fetchall()]
                self.held.pop(qid, None)
                if rate is not None:
                    cur.execute(self._q(SQL_QUEUE_TAKE),
                                {"qid": qid, "tokens": have - len(rows), "now": now})
                return rows, until
            cur.execute(self._q(SQL_FLOW_NEXT_TOKEN), {"now": now}, prepare=False)
            wait = cur.fetchall()[0][0]
        if wait is None:
            self.held.pop(qid, None)
        else:
            self.held[qid] = now + float(wait)
        return [], until

    def held_until(self, qid: int, ready: bool, due: float) -> tuple[bool, float]:
        """A probe's ``(ready, due)`` corrected for an empty bucket of the queue."""
        until = self.held.get(qid)
        if until is None or not ready or self.clock() >= until:
            return ready, due
        return False, min(due, until)

    def limit_stats(self, qid: int) -> tuple[int, int, float | None]:
        found = self.conns.statement(self._q(SQL_QUEUE_LIMITS), (qid,))
        if not found or not (found[0][1] or found[0][2] is not None):
            return 0, 0, None
        now = self.clock()
        _, _, rate, burst, tokens, refilled_at = found[0]
        running, held = self.conns.statement(
            self._q(SQL_LIMIT_STATS), {"qid": qid, "now": now}, prepare=False)[0]
        have = None if rate is None else bucket(rate, burst, tokens, refilled_at, now)
        return int(running), int(held), have

    def flows(self) -> list[tuple[str, int | None, float | None, float | None, float, int]]:
        rows = self.conns.statement(self._q(SQL_FLOWS), {"now": self.clock()}, prepare=False)
        return [(r[0], r[1], r[2], r[3], float(r[4] if r[4] is not None else 0), int(r[5]))
                for r in rows]
