"""Flow control on PostgreSQL (issue 19): pausing a queue, rate limits, concurrency caps.

**Pause.** The flag lives in the queue's row (``queues.paused``, migration 2). The claim
reads it inside its own statement (``messages.py``: ``SQL_CLAIM``), so a claim whose
statement starts after ``pause()`` committed takes nothing, whatever its process read a
moment before. (A claim statement already running when the pause commits finishes with
the snapshot it started with: it is ordered before the pause.) A resume sends the
NOTIFY a put sends, so waiting consumers look at once.

**Limits** (migration ``_V_FLOW2``). The plain claim statements take nothing from a
queue with a rate limit or with jobs under a task's limits (``queues.limited``); its
claims come here (:meth:`FlowVerbs.claim_limited`), which takes
``pg_advisory_xact_lock`` on the schema's flow key first, so limited claims run one
after another and a count of a key's leases or a bucket's tokens can never race
another claim. One lock for all limited queues of the schema, not one per (queue,
key): a task's cap and bucket span queues, and one lock cannot deadlock. Unlimited
queues never take it. An empty bucket is remembered per queue as on SQLite
(:attr:`held`), so waiting consumers sleep until its next token.

**One round trip: a function, not a statement.** The claim is the plpgsql function
``claim_limited`` (made by ``schema.py``'s ``_V_FLOW2``): the lock, the queue's
limits, the pick, a token per rated job, the lease and the queue's bucket, called
with one ``SELECT`` (it was BEGIN, the lock and five to seven statements, COMMIT: a
get+ack cost 2.1-5.3x a plain one, now 0.8-1.4x in most runs;
``tests/test_postgres_limited_claim.py`` counts the round trips). The lock is held
for that one call's server time, a fraction of a millisecond, which bounds limited
claims to some thousands a second per database, plenty for work that needs limiting. Not one statement with CTEs, because a
statement reads with one snapshot taken when it starts, before its lock is granted:
a claim that waited for the lock would count leases and tokens as they were before
the claims it waited for committed, and overshoot a cap or a rate. Inside a function
each statement takes a new snapshot (READ COMMITTED), so every statement after the
lock sees every earlier limited claim committed. A function also keeps the claim's
steps (a token per job until its bucket runs dry, stop after the first capped job)
as plain steps rather than window arithmetic. The lease deadline is counted from the
caller's clock (which tests replace) plus the time the lock was waited for, if it was
(``pg_try_advisory_xact_lock`` first: no wait, no server clock in the answer).
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
#: claim_limited's column after the claim's twelve (messages.py: CLAIM_COLUMNS): the
#: lease deadline; the next one, until when the buckets are empty.
LEASE_UNTIL = 12
SQL_QUEUE_LIMITS = """
SELECT paused, limited, rate_limit, rate_burst, tokens, refilled_at FROM {s}.queues WHERE id = %s
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
                AND r.lease_until + 0 > %(now)s) < f.max_concurrency)
       AND (f.rate IS NULL OR {FLOW_TOKENS} >= 1)
    FROM {{s}}.flows f WHERE f.id = c.flow), true))
"""
SQL_FLOWS = f"""
SELECT f.name, f.max_concurrency, f.rate, f.burst, {FLOW_TOKENS},
  (SELECT count(*) FROM {{s}}.messages r WHERE r.flow = f.id AND r.state = 2
     AND r.lease_until + 0 > %(now)s)  -- through msg_flow_leased: schema._LIMITED_PICK
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
    #: Queues this process gave limits (or resumed) since their last claim: that claim
    #: asks claim_limited even if it did not maintain (see MessageVerbs.claim).
    limits_changed: set[int]
    # From MessageVerbs: the engine's statements (SQL_LIMITED_CLAIM).
    ms: Any

    def _q(self, sql: str) -> str:
        return qualify(sql, self.schema)

    def set_paused(self, qid: int, paused: bool) -> bool:
        with self.conns.tx() as cur:
            cur.execute(self._q(SQL_SET_PAUSED), (bool(paused), qid))
            found = bool(cur.fetchall())
            self.limits_changed.add(qid)
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
        self.limits_changed.add(qid)

    def mark_limited(self, cur: Any, target: int, ids: list[int]) -> None:
        """Dead-lettering moved *ids* to queue *target*: limited, if any has limits."""
        cur.execute(self._q(SQL_TARGET_LIMITED), (target, ids))

    def claim_limited(self, qid: int, n: int, lease: float,
                      known: bool = False) -> tuple[list[tuple[Any, ...]], float] | None:
        """After the plain claim found nothing (or straight away for a queue *known* to
        have limits): up to *n* messages of queue *qid* that no limit holds back, in
        queue order, with their lease deadline; None if the queue has no limits or is
        paused (the plain claim's answer stands). One round trip: the function
        ``claim_limited`` (see the module docstring)."""
        rows = self.conns.statement(self.ms.limited_claim, {
            "qid": qid, "n": n, "now": self.clock(), "lease": lease, "known": known})
        if not rows:
            return None
        until = float(rows[0][LEASE_UNTIL])
        if rows[0][0] is None:  # nothing leased: until when a bucket is empty (or none)
            held = rows[0][LEASE_UNTIL + 1]
            if held is None:
                self.held.pop(qid, None)
            else:
                self.held[qid] = float(held)
            return [], until
        self.held.pop(qid, None)
        return [tuple(r[:LEASE_UNTIL]) for r in rows], until

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
