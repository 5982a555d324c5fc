"""Flow control on SQLite (issue 19): pausing a queue, rate limits, concurrency caps.

**Pause.** The flag lives in the queue's row (``queues.paused``, schema version 3). The
claim statements read it themselves (``sql.py``: ``SQL_CLAIM_NEXT``, ``SQL_NEXT_READY``,
``SQL_CLAIM_SELECT``), under the write lock a claim holds: a claim that runs after
``pause()`` committed takes nothing, whatever its process read a moment before. A
resume is a commit, which wakes waiting consumers as a put does (the ``-wal`` write).

**Limits** (``_V_FLOW2``). Those same statements hand out nothing from a queue with a
rate limit or with jobs under a task's limits (``queues.limited``): the claim then
comes here (:meth:`FlowVerbs.claim_limited`), still inside its ``BEGIN IMMEDIATE``.
The write lock makes every count exact: a job is taken only if its flow's leases
that have not run out are fewer than the cap, and a token is taken from the queue's
and the flow's buckets (rows in the file, refilled by the clock) as it is claimed. A
job held back is neither claimed nor counted as an attempt. When a claim finds
nothing because a bucket is empty, the time of its next token is kept in memory per
queue (:attr:`held`): ``probe`` reports nothing ready until then and ``next_due``
includes it, so waiting consumers sleep instead of taking the write lock in vain.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...flow import FlowSpec
from .base import StoreBase
from .sql import (
    SQL_FLOW_INSERT,
    SQL_FLOW_MARK,
    SQL_FLOW_NEXT_TOKEN,
    SQL_FLOW_TAKE,
    SQL_FLOW_UPDATE,
    SQL_FLOWS,
    SQL_LIMIT_STATS,
    SQL_LIMITED_SELECT,
    SQL_QUEUE_LIMITED,
    SQL_QUEUE_LIMITS,
    SQL_QUEUE_TAKE,
    SQL_SET_PAUSED,
    sql_claim_ids,
)

__all__ = ["FlowVerbs", "bucket"]

# ONE_CAPPED: a claim takes at most one job under a concurrency cap (after the jobs
# before it in queue order). A worker's consumer runs the jobs of its claim one after
# another, so a batch of capped jobs would hold slots doing nothing while others wait.


def bucket(rate: float, burst: float | None, tokens: float, refilled_at: float,
           now: float) -> float:
    """Tokens in a bucket now: *tokens* at *refilled_at*, refilled at *rate* a second up
    to *burst* (a new bucket, 0 tokens at time 0, is full)."""
    top = float(burst) if burst is not None else 1.0
    return min(top, tokens + max(0.0, now - refilled_at) * rate)


class FlowVerbs(StoreBase):
    """Pause, resume and the limits (a mixin of SQLiteBackend)."""

    #: Per queue: until when its claims find every bucket they need empty (set by a
    #: limited claim that took nothing; the next one that takes anything clears it).
    held: dict[int, float]
    #: The task limits this process wrote (once each: later jobs only name them).
    flows_written: set[FlowSpec]

    def set_paused(self, qid: int, paused: bool) -> bool:
        with self.write() as cur:
            cur.execute(SQL_SET_PAUSED, (int(paused), qid))
            return bool(cur.connection.changes())

    def set_flow(self, qid: int, ids: Sequence[int], spec: FlowSpec, key: str | None) -> None:
        rate = None if spec.rate is None else spec.rate.rate
        burst = None if spec.rate is None else spec.rate.burst
        with self.write() as cur:
            cur.execute(SQL_FLOW_INSERT, (spec.name, spec.max_concurrency, rate, burst))
            if spec not in self.flows_written:
                cur.execute(SQL_FLOW_UPDATE, {"cap": spec.max_concurrency, "rate": rate,
                                              "burst": burst, "name": spec.name})
                self.flows_written.add(spec)
            for mid in ids:
                cur.execute(SQL_FLOW_MARK, {"name": spec.name, "key": key or "", "id": mid})
            cur.execute(SQL_QUEUE_LIMITED, (qid,))

    def claim_limited(self, cur: Any, qid: int, n: int, now: float, until: float,
                      token: int) -> list[Any] | None:
        """Inside a claim's transaction (*now* read after BEGIN IMMEDIATE): up to *n*
        messages of queue *qid* that no limit holds back, in queue order, leased until
        *until* with *token*; None if the queue has no limits (or is paused: the plain
        claim's answer stands)."""
        paused, limited, rate, burst, tokens, refilled_at = \
            cur.execute(SQL_QUEUE_LIMITS, (qid,)).fetchall()[0]
        if paused or not (limited or rate is not None):
            return None
        budget, have = n, float(n)
        if rate is not None:
            have = bucket(rate, burst, tokens, refilled_at, now)
            if have < 1:
                self.held[qid] = now + (1 - have) / rate
                return []
            budget = min(n, int(have))
        found = cur.execute(SQL_LIMITED_SELECT, {"qid": qid, "n": budget, "now": now,
                                                 "token": token}).fetchall()
        rows: list[Any] = []
        changes = cur.connection.changes
        for *row, flow, capped, rated in found:
            if rated:
                cur.execute(SQL_FLOW_TAKE, {"flow": flow, "now": now})
                if not changes():
                    continue  # its bucket ran dry within this claim
            rows.append(tuple(row))
            if capped:
                break  # ONE_CAPPED
        if rows:
            cur.execute(sql_claim_ids(len(rows)), (token, until, *[r[0] for r in rows]))
            self.held.pop(qid, None)
            if rate is not None:
                cur.execute(SQL_QUEUE_TAKE, {"qid": qid, "tokens": have - len(rows), "now": now})
            return rows
        wait = cur.execute(SQL_FLOW_NEXT_TOKEN, {"now": now}).fetchall()[0][0]
        if wait is None:
            self.held.pop(qid, None)
        else:
            self.held[qid] = now + wait
        return rows

    def limit_stats(self, qid: int) -> tuple[int, int, float | None]:
        """``(running, held, tokens)``: leased jobs under a task's limits, ready ones
        that a task's limits hold back now, and the tokens in the queue's own bucket
        (None: the queue has no rate limit)."""
        with self.read() as cur:
            now = self.clock()
            found = cur.execute(SQL_QUEUE_LIMITS, (qid,)).fetchall()
            if not found or not (found[0][1] or found[0][2] is not None):
                return 0, 0, None  # no limits: no need to read its messages
            _, _, rate, burst, tokens, refilled_at = found[0]
            running, held = cur.execute(SQL_LIMIT_STATS, {"qid": qid, "now": now}).fetchall()[0]
        have = None if rate is None else bucket(rate, burst, tokens, refilled_at, now)
        return int(running), int(held), have

    def flows(self) -> list[tuple[str, int | None, float | None, float | None, float, int]]:
        """Every task's limits: ``(name, max_concurrency, rate, burst, tokens, running)``."""
        with self.read() as cur:
            rows = cur.execute(SQL_FLOWS, (self.clock(),)).fetchall()
        return [(r[0], r[1], r[2], r[3], float(r[4] if r[4] is not None else 0), int(r[5]))
                for r in rows]
