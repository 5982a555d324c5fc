"""Claims and leases on PostgreSQL (issue 17, step B2; boundary plan 3.1, 3.2, 3.4, 3.7).

* **The claim is one statement**: the ready rows are chosen in queue order and locked
  ``FOR UPDATE SKIP LOCKED`` in a CTE (one row: a scalar subquery, ``SQL_CLAIM_ONE``),
  and the UPDATE changes exactly those rows (still guarded on ``state``), so two
  consumers never hold one message and never wait for each other. One token per claim from the ``lease_token`` sequence, shared by the rows
  of a batch (as on SQLite, so a batch ack is one statement). RETURNING's order is
  unspecified: a batch is sorted in Python.
* **Maintenance** (promote due delayed messages, settle expired leases) runs in its own
  short transaction before a claim when the queue was not maintained for
  ``MAINTAIN_EVERY`` seconds by this process, and after a claim that came up short.
  Rows are taken ``FOR UPDATE SKIP LOCKED`` (two claimers settle different rows) and at
  most ``MAINTAIN_ROWS`` of each kind per transaction; every change re-checks the state.
  A lease whose deadline lies beyond now + the queue's lease + ``MAX_EXTEND`` is
  expired too (a clock that stepped back), as on SQLite.
* **Every later change is guarded by token and state**: ack, extend, heartbeat and
  release are one statement each; retry and fail lock the row (``FOR UPDATE``, token
  and state in the WHERE) before deciding. The common ack (one message, no retention)
  is one statement that deletes the row and releases its depth.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ...errors import LeaseLost
from ..due import SeenDue
from ..limits import held_due, held_probe, stats_with_limits
from ..records import QueueStats
from .depth import release_ctes
from .flow import FlowVerbs
from .queues import (
    CANCELLED,
    DEAD,
    DELAYED,
    LEASED,
    MAX_EXTEND,
    QUEUE_ORDER,
    READY,
    QueueVerbs,
    Statements,
)
from .queues_sql import state_is

__all__ = ["MessageVerbs", "MAINTAIN_EVERY", "MAINTAIN_ROWS", "lost_text"]

#: Claims settle delayed and expired messages of a queue at least this often (s).
MAINTAIN_EVERY = 0.05
#: ... and at most this many of each per transaction (the SQLite engine's bound).
MAINTAIN_ROWS = 1000

CLAIM_COLUMNS = (
    "id, token, attempts, payload, headers, priority, run_at, enqueued_at, key, rank, error, origin"
)
# Flow control (issue 19): a paused queue hands out nothing. The claim reads the flag
# in its own statement (an initplan, one primary-key lookup), so a claim that starts
# after pause() committed takes nothing whatever its process read before.
_NOT_PAUSED = "NOT (SELECT paused FROM {s}.queues WHERE id = %(qid)s)"
# The claim statements also hand out nothing from a queue with limits (its own rate
# limit, or jobs under a task's limits: ``limited``); such a queue is claimed by
# SQL_LIMITED_CLAIM, under the flow lock.
_CLAIMABLE = ("(SELECT NOT (paused OR limited) AND rate_limit IS NULL "
              "FROM {s}.queues WHERE id = %(qid)s)")
SQL_CLAIM = f"""
WITH c AS MATERIALIZED (
  SELECT id FROM {{s}}.messages WHERE qid = %(qid)s AND state = {READY} AND {_CLAIMABLE}
  ORDER BY {QUEUE_ORDER} LIMIT %(n)s FOR UPDATE SKIP LOCKED
)
UPDATE {{s}}.messages m
SET state = {LEASED}, token = (SELECT nextval('{{s}}.lease_token')), attempts = m.attempts + 1,
    lease_until = %(until)s
WHERE m.id = ANY(ARRAY(SELECT id FROM c)) AND {state_is(READY, 'm.')}
RETURNING {", ".join("m." + c for c in CLAIM_COLUMNS.split(", "))}
"""
# One message (get()): the pick is a scalar subquery (an InitPlan, run once) and the
# UPDATE finds the row by primary key, a plan that holds whatever the table held when
# it was made, so unlike SQL_CLAIM this one is prepared (a generic plan, never planned
# again: issue 17). The token is drawn for the one row.
SQL_CLAIM_ONE = f"""
UPDATE {{s}}.messages m
SET state = {LEASED}, token = nextval('{{s}}.lease_token'), attempts = m.attempts + 1,
    lease_until = %(until)s
WHERE m.id = (
  SELECT id FROM {{s}}.messages WHERE qid = %(qid)s AND state = {READY} AND {_CLAIMABLE}
  ORDER BY {QUEUE_ORDER} LIMIT 1 FOR UPDATE SKIP LOCKED
) AND {state_is(READY, 'm.')}
RETURNING {", ".join("m." + c for c in CLAIM_COLUMNS.split(", "))}
"""
# A queue with limits is claimed by the function claim_limited (made by schema.py's
# _V_FLOW2; flow.py's docstring says why a function): one round trip. Rows: the claim
# columns, then the lease deadline and (on the one row of a claim that leased
# nothing: id NULL) until when the buckets are empty; none if the queue has no limits.
SQL_LIMITED_CLAIM = """
SELECT * FROM {s}.claim_limited(%(qid)s::bigint, %(n)s::bigint, %(now)s::float8,
    %(lease)s::float8, %(known)s::boolean)
"""
# Maintenance's common case in one statement: promote the due delayed rows (locked
# SKIP LOCKED, at most MAINTAIN_ROWS) and say whether any lease has run out. Only then does
# a transaction lock and settle the expired ones (SQL_EXPIRED).
_HORIZON = "%(now)s + %(max_extend)s + (SELECT lease FROM {s}.queues WHERE id = %(qid)s)"
SQL_PROMOTE = f"""
WITH p AS MATERIALIZED (
  SELECT id FROM {{s}}.messages WHERE qid = %(qid)s AND state = {DELAYED} AND run_at <= %(now)s
  ORDER BY run_at LIMIT {MAINTAIN_ROWS} FOR UPDATE SKIP LOCKED
), u AS (
  UPDATE {{s}}.messages m SET state = {READY}
  WHERE m.id = ANY(ARRAY(SELECT id FROM p)) AND {state_is(DELAYED, 'm.')}
  RETURNING 1
)
SELECT (SELECT count(*) FROM u),
  EXISTS (SELECT 1 FROM {{s}}.messages WHERE qid = %(qid)s AND state = {LEASED}
          AND lease_until <= %(now)s)
  OR EXISTS (SELECT 1 FROM {{s}}.messages WHERE qid = %(qid)s AND state = {LEASED}
             AND lease_until > {_HORIZON})
"""
# Two range reads of msg_leased (one OR would read every lease), then the rows locked
# with the condition checked again on their newest version (a lease extended or
# finished meanwhile is skipped).
SQL_EXPIRED = f"""
SELECT id, attempts, cancel FROM {{s}}.messages
WHERE id IN (
  (SELECT id FROM {{s}}.messages WHERE qid = %(qid)s AND state = {LEASED}
     AND lease_until <= %(now)s ORDER BY lease_until LIMIT {MAINTAIN_ROWS})
  UNION ALL
  (SELECT id FROM {{s}}.messages WHERE qid = %(qid)s AND state = {LEASED}
     AND lease_until > {_HORIZON} LIMIT {MAINTAIN_ROWS}))
AND {state_is(LEASED)} AND (lease_until <= %(now)s OR lease_until > {_HORIZON})
LIMIT {MAINTAIN_ROWS}
FOR UPDATE SKIP LOCKED
"""
SQL_CANCEL_EXPIRED = f"""
UPDATE {{s}}.messages SET state = {CANCELLED}, token = NULL, lease_until = NULL,
    finished_at = %s, error = 'cancelled while running; lease expired'
WHERE id = ANY(%s) AND {state_is(LEASED)}
"""
SQL_UNLEASE = f"""
UPDATE {{s}}.messages SET state = {READY}, token = NULL, lease_until = NULL, error = 'lease expired'
WHERE id = ANY(%s) AND {state_is(LEASED)}
"""
_NEXT_DUE = f"""least(
  (SELECT min(run_at) FROM {{s}}.messages WHERE qid = %(qid)s AND state = {DELAYED}),
  (SELECT min(lease_until) FROM {{s}}.messages WHERE qid = %(qid)s AND state = {LEASED}))"""
SQL_NEXT_DUE = f"SELECT {_NEXT_DUE}"
SQL_PROBE = f"""
SELECT EXISTS (SELECT 1 FROM {{s}}.messages WHERE qid = %(qid)s AND state = {READY})
       AND {_NOT_PAUSED}, {_NEXT_DUE}
"""

# Rows found by pairs (id, token): %(ids)b and %(tokens)b, each id once (by_id() splits
# the rare list with an id twice). The ids are the primary key's condition, each row's
# token is the one at its id's place. Joined to unnest(ids, tokens) instead, a generic
# plan made on a small table read the whole primary key (or all of msg_leased) and
# filtered the join, each batch's cost growing with the table (issue 17, session 15).
_PAIRED = ("m.id = ANY(%(ids)b::bigint[])"
           " AND m.token = (%(tokens)b::bigint[])[array_position(%(ids)b::bigint[], m.id)]")

# The common ack in one statement: delete, then release the depth on a stripe (any
# unlocked one, else wait for the last, stripe 15: depth.py's lock order). Returns
# whether a row was deleted.
SQL_ACK_ONE = f"""
WITH d AS (
  DELETE FROM {{s}}.messages WHERE id = %(id)s AND token = %(token)s AND {state_is(LEASED)}
  RETURNING qid
), {release_ctes("1", "EXISTS (SELECT 1 FROM d)")}
SELECT (SELECT count(*) FROM d), (SELECT count(*) FROM r1) + (SELECT count(*) FROM r2)
"""
# The ack of one message of a queue not seen counted: the delete alone, guarded by the
# flag as SQL_ACK_ONE reads it (queues.SQL_PUT_PLAIN says why). No row: a stale token,
# or the queue is counted now (or gone); ack_one() then sends SQL_ACK_ONE, which tells
# them apart and releases the depth.
SQL_ACK_PLAIN = f"""
DELETE FROM {{s}}.messages WHERE id = %(id)s AND token = %(token)s AND {state_is(LEASED)}
  AND NOT (SELECT counted FROM {{s}}.queues WHERE id = %(qid)s)
RETURNING 1
"""
# A batch ack with no retention in one statement, as SQL_ACK_ONE: the rows deleted, then
# the depth stripe released by their number (any unlocked stripe, else the last one:
# depth.py's lock order), one round trip instead of BEGIN, DELETE, release and COMMIT.
SQL_ACK_MANY = f"""
WITH d AS (
  DELETE FROM {{s}}.messages m WHERE {_PAIRED} AND {state_is(LEASED, 'm.')}
  RETURNING m.id
), n AS MATERIALIZED (SELECT count(*) AS n FROM d),
{release_ctes("(SELECT n FROM n)", "(SELECT n FROM n) > 0")}
SELECT id FROM d
"""


def by_id(pairs: Iterable[tuple[int, int]]) -> list[list[tuple[int, int]]]:
    """*pairs* (id, token) in parts with each id once, for _PAIRED's statements: as many
    parts as an id is given times, almost always one."""
    parts: list[dict[int, int]] = []
    for mid, token in pairs:
        for part in parts:
            if mid not in part:
                part[mid] = token
                break
        else:
            parts.append({mid: token})
    return [list(part.items()) for part in parts]


def matched(pairs: Iterable[tuple[int, int]], run: Callable[[dict[str, Any]], list[Any]],
            ) -> tuple[list[Any], list[tuple[int, int]]]:
    """*run* (a _PAIRED statement, given ``ids`` and ``tokens``, whose rows start with the
    id) for each part of *pairs*: (the rows, the pairs no row answered)."""
    rows: list[Any] = []
    left: list[tuple[int, int]] = []
    for part in by_id(pairs):
        got = run({"ids": [mid for mid, _ in part], "tokens": [token for _, token in part]})
        found = {r[0] for r in got}
        rows += got
        left += [pair for pair in part if pair[0] not in found]
    return rows, left


def _leaf(sql: str) -> str:
    """An ack's DELETE (*sql*) that leaves a job with dependents (``wf``) alone: a hand
    ack's, whose jobs with dependents take the path that settles them (_ack_parents)."""
    guard = f"{state_is(LEASED)}\n"
    assert sql.count(guard) == 1, sql
    return sql.replace(guard, f"{state_is(LEASED)} AND wf IS NULL\n")


SQL_ACK_ONE_LEAF = _leaf(SQL_ACK_ONE)
SQL_ACK_PLAIN_LEAF = _leaf(SQL_ACK_PLAIN)
SQL_ACK_MANY_LEAF = _leaf(SQL_ACK_MANY)
# The same when every pair has one token (the messages of one batch claim), without
# looking each token up: in a batch ack of 100, 1.3-1.4 us of execution a message
# instead of 3.6 (and 2.3 as the join to unnest it replaced; raw's 1.0).
_ONE_TOKEN = "m.id = ANY(%(ids)b::bigint[]) AND m.token = %(token)s"
SQL_ACK_MANY1 = SQL_ACK_MANY.replace(_PAIRED, _ONE_TOKEN)
SQL_ACK_MANY1_LEAF = SQL_ACK_MANY_LEAF.replace(_PAIRED, _ONE_TOKEN)
SQL_ACK_RETAIN = f"""
UPDATE {{s}}.messages m SET state = 3, token = NULL, lease_until = NULL, finished_at = %(now)s
WHERE {_PAIRED} AND {state_is(LEASED, 'm.')}
RETURNING m.id
"""
SQL_GET_LEASED = f"""
SELECT attempts, cancel FROM {{s}}.messages WHERE id = %s AND token = %s AND {state_is(LEASED)}
FOR UPDATE
"""
SQL_CANCEL_LEASED = f"""
UPDATE {{s}}.messages SET state = {CANCELLED}, finished_at = %s, token = NULL,
    lease_until = NULL, error = %s
WHERE id = %s AND {state_is(LEASED)}
"""
SQL_RETRY = f"""
UPDATE {{s}}.messages SET state = %s, run_at = %s, token = NULL, lease_until = NULL, error = %s
WHERE id = %s AND token = %s AND {state_is(LEASED)}
"""
SQL_EXTEND = f"""
UPDATE {{s}}.messages SET lease_until = %s WHERE id = %s AND token = %s AND {state_is(LEASED)}
RETURNING id
"""
SQL_HEARTBEAT = f"""
UPDATE {{s}}.messages m SET lease_until = %(until)s
WHERE {_PAIRED} AND {state_is(LEASED, 'm.')}
RETURNING m.id, m.cancel
"""
SQL_RELEASE_LEASES = f"""
UPDATE {{s}}.messages m SET state = {READY}, token = NULL, lease_until = NULL,
    attempts = greatest(m.attempts - 1, 0)
WHERE {_PAIRED} AND {state_is(LEASED, 'm.')}
RETURNING m.id
"""
SQL_QUEUE_BURY = "SELECT id, name, max_attempts, dead_letter FROM {s}.queues WHERE id = %s"
SQL_BURY_HERE = f"""
UPDATE {{s}}.messages SET state = {DEAD}, token = NULL, lease_until = NULL, error = %s,
    finished_at = %s
WHERE id = ANY(%s) AND {state_is(LEASED)}
"""
SQL_BURY_MOVE = f"""
UPDATE {{s}}.messages SET qid = %s, state = {READY}, token = NULL, lease_until = NULL,
    attempts = 0, error = %s, origin = %s, run_at = %s, finished_at = NULL, key = NULL
WHERE id = ANY(%s) AND {state_is(LEASED)}
"""


def lost_text(mid: int) -> str:
    """LeaseLost's message for message *mid* (the SQLite engine's words)."""
    return (
        f"lease on message {mid} is lost: the token is stale (the lease ran out and the "
        f"message was claimed again, or it was finished, cancelled or purged)"
    )


class MessageVerbs(QueueVerbs, FlowVerbs):
    """A message's life under a lease (a mixin of PostgresBackend)."""

    def setup_core(self) -> None:
        super().setup_core()
        self.ms = Statements(globals(), self.schema)
        self._maintained: dict[int, float] = {}
        self._behind: set[int] = set()
        self.seen_due = SeenDue()  # what the last probe saw due, per queue (due.py)
        self.held = {}
        self.flows_written = set()
        self.limited_queues = set()
        self.limits_changed = set()

    # -- claim and maintenance --------------------------------------------------------

    def claim(self, qid: int, n: int, lease: float) -> tuple[list[tuple[Any, ...]], float]:
        now = self.clock()
        if not 0 <= now - self._maintained.get(qid, -1e18) < MAINTAIN_EVERY:
            self._maintained[qid] = now
            self._maintain(qid, now)
            maintained = due = True
        else:
            maintained = due = False
        until = now + lease
        if qid in self.limited_queues:  # seen with limits: straight to the limited claim
            limited = self.claim_limited(qid, n, lease, known=True)
            if limited is not None:
                rows, until = limited
                if not rows and not maintained:
                    self._maintained[qid] = now
                    if self._maintain(qid, now):
                        rows, until = self.claim_limited(qid, n, lease, known=True) or ([], until)
                return sorted(rows, key=_claim_order) if len(rows) > 1 else rows, until
            self.limited_queues.discard(qid)  # its limits are gone, or it is paused
        rows = self._take(qid, n, until)
        if len(rows) < n and not maintained and not self.seen_due.nothing_due(qid, now):
            self._maintained[qid] = now
            if self._maintain(qid, now):
                more = self._take(qid, n - len(rows), until)
                rows = rows + more if rows else more
        if not rows and (due or qid in self.limits_changed):
            # The plain statements take nothing from a queue with limits. Asked (a round
            # trip) when maintenance was due, so at most every MAINTAIN_EVERY per queue
            # and process (an empty queue's claims asked every time: 0.1 extra statements
            # per message at 1 producer + 4 consumers, measured), or after this process
            # set limits on the queue; limits set by another process are found at most
            # MAINTAIN_EVERY late.
            self.limits_changed.discard(qid)
            limited = self.claim_limited(qid, n, lease)
            if limited is not None:
                rows, until = limited
                self.limited_queues.add(qid)
        if len(rows) > 1:
            rows.sort(key=_claim_order)
        return rows, until

    def _take(self, qid: int, n: int, until: float) -> list[tuple[Any, ...]]:
        # The rows in binary: payloads as they are (text would send them as hex, which
        # the client decodes).
        if n == 1:  # prepared: its generic plan holds (SQL_CLAIM_ONE)
            return self.conns.hot(self.ms.claim_one, {"qid": qid, "until": until})
        # The batch claim with its LIMIT written in the text, so that its generic plan
        # knows it (with LIMIT as a parameter, the generic plan is the trap of
        # connection.py's docstring) and it can be prepared like the rest instead of
        # being planned on every call (~180 us, more than its execution's share per
        # message at 100: issue 17). One text per batch size (queues.SizedTexts); past
        # its limit, other sizes are sent unprepared, planned with their values.
        sql = self.sized.get(self.ms.claim, n)
        if sql is None:
            return self.conns.statement(
                self.ms.claim, {"qid": qid, "n": n, "until": until}, prepare=False, binary=True
            )
        return self.conns.statement(sql, {"qid": qid, "until": until}, binary=True)

    def expire(self, qid: int) -> None:
        while True:
            self._maintain(qid, self.clock())
            if qid not in self._behind:
                return

    def _maintain(self, qid: int, now: float) -> bool:
        """Promote due delayed rows and settle expired leases, at most MAINTAIN_ROWS of
        each; True if any row changed. One statement when no lease ran out; with more
        left the queue is marked behind, and its next claim maintains again."""
        params = {"qid": qid, "now": now, "max_extend": MAX_EXTEND}
        # Both picks have their LIMIT (MAINTAIN_ROWS) in the text, so their generic
        # plans hold and they are prepared: planned on every call, the promotion alone
        # took ~350 us of planning, and with four consumers it runs for every second or
        # fourth message (issue 17).
        promoted, lapsed = self.conns.statement(self.ms.promote, params)[0]
        expired: list[Any] = []
        if lapsed:
            with self.conns.tx() as cur:
                cur.execute(self.ms.expired, params)
                expired = cur.fetchall()
                if expired:
                    self._settle(cur, qid, expired, now)
        if promoted >= MAINTAIN_ROWS or len(expired) >= MAINTAIN_ROWS:
            self._behind.add(qid)
            self._maintained.pop(qid, None)
        else:
            self._behind.discard(qid)
        return bool(promoted or expired)

    def _settle(self, cur: Any, qid: int, expired: list[Any], now: float) -> None:
        # Rows locked by SQL_EXPIRED: cancellation asked -> CANCELLED, last attempt ->
        # buried, else READY again.
        cur.execute(self.ms.queue_bury, (qid,))
        qrow = cur.fetchall()[0]
        cancel = [mid for mid, _, c in expired if c]
        bury = [mid for mid, attempts, c in expired if not c and attempts >= qrow[2]]
        unlease = [mid for mid, attempts, c in expired if not c and attempts < qrow[2]]
        if cancel:
            cur.execute(self.ms.cancel_expired, (now, cancel))
            self.depth.release(cur, qid, cur.rowcount)
        if bury:
            self._bury(cur, qrow, bury, "lease expired", now)
        if unlease:
            cur.execute(self.ms.unlease, (unlease,))

    def next_due(self, qid: int) -> float:
        now = self.clock()  # before the look: its answer is at least this fresh
        value = self.conns.statement(self.ms.next_due, {"qid": qid})[0][0]
        due = float(value) if value is not None else float("inf")
        self.seen_due.saw(qid, due, now)
        return held_due(self.held, qid, due)

    def probe(self, qid: int) -> tuple[bool, float]:
        now = self.clock()  # before the look: its answer is at least this fresh
        ready, value = self.conns.statement(self.ms.probe, {"qid": qid})[0]
        due = float(value) if value is not None else float("inf")
        self.seen_due.saw(qid, due, now)
        if qid in self.held:  # an empty bucket: nothing to claim until its next token
            return held_probe(self.held, qid, bool(ready), due, now)
        return bool(ready), due

    def stats(self, qid: int) -> QueueStats:
        return stats_with_limits(super().stats(qid), self.limit_stats(qid))

    # -- finishing ------------------------------------------------------------------

    def ack_one(self, qid: int, mid: int, token: int, retention: float,
                settle: bool = False) -> bool:
        """:meth:`ack` of one message, straight to its one statement; True if stale."""
        if retention > 0:
            return bool(self.ack(qid, [(mid, token)], retention))
        params = {"id": mid, "token": token, "qid": qid}
        if qid not in self.seen_counted and self.conns.hot(
                self.ms.ack_plain_leaf if settle else self.ms.ack_plain, params):
            if self.totals.ack_one(qid):  # _tally(qid, 0, 1) without the lock
                self._totals_due()
            return False
        deleted, released = self.conns.hot(
            self.ms.ack_one_leaf if settle else self.ms.ack_one, params)[0]
        if deleted:
            if self.totals.ack_one(qid):
                self._totals_due()
            if released:
                self.seen_counted.add(qid)
        elif settle:  # a stale token, or a job with dependents
            return bool(self._ack_parents(qid, [(mid, token)]))
        return not deleted

    def ack(self, qid: int, items: Iterable[tuple[int, int]], retention: float,
            settle: bool = False) -> list[int]:
        pairs = list(items)
        if len(pairs) > 1:
            pairs = list(dict.fromkeys(pairs))  # the same (id, token) twice is acked once
        if not pairs:
            return []
        if len(pairs) == 1 and retention <= 0:
            mid, token = pairs[0]
            return [mid] if self.ack_one(qid, mid, token, retention, settle) else []
        if retention <= 0:
            many, many1 = ((self.ms.ack_many_leaf, self.ms.ack_many1_leaf) if settle
                           else (self.ms.ack_many, self.ms.ack_many1))

            def delete(params: dict[str, Any]) -> list[Any]:
                tokens = params["tokens"]
                token = tokens[0]
                if tokens.count(token) == len(tokens):  # one batch claim's
                    return self.conns.statement(
                        many1, {"ids": params["ids"], "token": token, "qid": qid})
                return self.conns.statement(many, params | {"qid": qid})

            rows, left = matched(pairs, delete)
            self._tally(qid, 0, len(rows))
            if settle and left:
                return self._ack_parents(qid, left)
            return list(dict.fromkeys(mid for mid, _ in left))
        with self.conns.tx() as cur:
            now = self.clock()

            def retain(params: dict[str, Any]) -> list[Any]:
                cur.execute(self.ms.ack_retain, params | {"now": now})
                return cur.fetchall()

            rows, left = matched(pairs, retain)
            self.depth.release(cur, qid, len(rows))
        self._tally(qid, 0, len(rows))
        return list(dict.fromkeys(mid for mid, _ in left))

    def _ack_parents(self, qid: int, pairs: list[tuple[int, int]]) -> list[int]:
        """A hand ack's pairs that its leaf statement left (stale tokens, or jobs with
        dependents): deleted, and the dependents of those deleted settled as succeeded
        with no result, in one transaction. The stale ids."""
        verbs: Any = self  # the backend, whose workflow verbs these are
        with self.conns.tx():
            lost = self.ack(qid, pairs, 0.0)
            acked = [mid for mid, _t in pairs if mid not in lost]
            parents = verbs.wf_parents_among(acked) if acked else {}
            if parents:
                verbs.wf_done([(mid, None) for mid in sorted(parents)], parents)
        return lost

    def retry(
        self, qid: int, mid: int, token: int, delay: float | Callable[[int], float], error: str | None
    ) -> bool:
        with self.conns.tx() as cur:
            now = self.clock()
            cur.execute(self.ms.get_leased, (mid, token))
            found = cur.fetchall()
            if not found:
                raise LeaseLost(lost_text(mid), [mid])
            attempts, cancel = found[0]
            if cancel:
                # Cancellation was asked while it ran: no more attempts.
                cur.execute(self.ms.cancel_leased, (now, error, mid))
                self.depth.release(cur, qid, 1)
                return False
            cur.execute(self.ms.queue_bury, (qid,))
            qrow = cur.fetchall()[0]
            if attempts >= qrow[2]:
                self._bury(cur, qrow, [mid], error or f"gave up after {attempts} attempts", now)
                return False
            seconds = delay(attempts) if callable(delay) else delay
            state = DELAYED if seconds > 0 else READY
            cur.execute(self.ms.retry, (state, now + seconds, error, mid, token))
            self.notify(cur, qid)  # ready again, or a new due time for the waiters
            return True

    def extend(self, mid: int, token: int, seconds: float) -> float:
        until = self.clock() + seconds
        if not self.conns.statement(self.ms.extend, (until, mid, token)):
            raise LeaseLost(lost_text(mid), [mid])
        return until

    def heartbeat(
        self, items: Sequence[tuple[int, int]], seconds: float
    ) -> tuple[list[int], list[int]]:
        if not items:
            return [], []
        until = self.clock() + seconds
        rows, left = matched(
            items, lambda p: self.conns.statement(self.ms.heartbeat, p | {"until": until}))
        alive = {mid: cancel for mid, cancel in rows}
        return [mid for mid, _ in left], [mid for mid, _ in items if alive.get(mid)]

    def fail(self, qid: int, mid: int, token: int, reason: str) -> None:
        with self.conns.tx() as cur:
            now = self.clock()
            cur.execute(self.ms.get_leased, (mid, token))
            if not cur.fetchall():
                raise LeaseLost(lost_text(mid), [mid])
            cur.execute(self.ms.queue_bury, (qid,))
            self._bury(cur, cur.fetchall()[0], [mid], reason, now)

    def release(self, qid: int, items: Sequence[tuple[int, int]]) -> list[int]:
        if not items:
            return []
        ids = [int(mid) for mid, _ in items]
        rows, _ = matched(((int(m), int(t)) for m, t in items),
                          lambda p: self.conns.statement(self.ms.release_leases, p))
        # Each released row answers one item: an item given twice finds its lease gone
        # the second time, as two releases one after the other would (SQLite's answer).
        left = {mid: 0 for mid in ids}
        for (mid,) in rows:
            left[mid] += 1
        lost = []
        for mid in ids:
            if left[mid]:
                left[mid] -= 1
            else:
                lost.append(mid)
        return lost

    def _bury(self, cur: Any, qrow: Sequence[Any], ids: list[int], reason: str, now: float) -> None:
        """Bury leased messages *ids* of queue *qrow* (locked by the caller): DEAD here,
        or moved READY to the dead-letter queue (made if missing, never refused for
        its max_depth: losing them would be worse than a queue over its bound)."""
        qid, name, _, dead_letter = qrow
        if dead_letter is None:
            cur.execute(self.ms.bury_here, (reason, now, ids))
            self.depth.release(cur, qid, cur.rowcount)
            return
        target = self.queue_id(cur, dead_letter)
        cur.execute(self.ms.bury_move, (target, reason, name, now, ids))
        moved = cur.rowcount
        self.depth.release(cur, qid, moved)
        self.depth.reserve(cur, target, moved, force=True)
        self.mark_limited(cur, target, ids)


def _claim_order(row: tuple[Any, ...]) -> tuple[Any, ...]:
    # SQL's ORDER BY priority DESC, rank NULLS FIRST, run_at, id.
    return (-row[5], row[9] is not None, row[9] or b"", row[6], row[0])
