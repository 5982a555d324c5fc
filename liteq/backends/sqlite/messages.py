"""Claims and leases: claim, expiry, ack, retry (nack), extend, heartbeat, fail,
and burying a message in its dead-letter place."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from operator import itemgetter
from typing import Any

import apsw

from ...errors import (
    LeaseLost,
    StorageError,
)
from ...validate import MAX_EXTEND
from ..limits import held_due, held_probe, stats_with_limits
from ..records import QueueStats
from .base import MAINTAIN_EVERY, MAINTAIN_ROWS, lost_text
from .flow import FlowVerbs
from .queues import QueueVerbs, default_queue_options
from .schema import CANCELLED, DELAYED, READY
from .sql import (
    IDS_PER_STATEMENT,
    SQL_ACK_DELETE,
    SQL_ACK_DELETE_WF,
    SQL_ACK_LEAF,
    SQL_ACK_RETAIN,
    SQL_ACK_UNCOUNTED,
    SQL_BURY_HERE,
    SQL_BURY_MOVE,
    SQL_CANCEL_EXPIRED,
    SQL_CLAIM_NEXT,
    SQL_CLAIM_ONE,
    SQL_CLAIM_SELECT,
    SQL_DUE_DELAYED,
    SQL_EXPIRED,
    SQL_EXTEND,
    SQL_GET_LEASED,
    SQL_NEXT_DUE,
    SQL_NEXT_READY,
    SQL_PROBE,
    SQL_PROMOTE,
    SQL_QUEUE_BY_ID,
    SQL_RELEASE,
    SQL_RESERVE_FORCE,
    SQL_RETRY,
    SQL_TARGET_LIMITED,
    SQL_UNLEASE,
    sql_ack_many,
    sql_claim_ids,
)
from .workflow import among, settle_done


class MessageVerbs(QueueVerbs, FlowVerbs):
    """A message's life under a lease."""

    # -- claim and expiry -----------------------------------------------------------

    def claim(self, qid: int, n: int, lease: float) -> tuple[list[tuple[Any, ...]], float]:
        """Lease up to *n* due messages of queue *qid* in one transaction.

        Returns ``(rows, lease_until)``: rows in ``CLAIM_COLUMNS`` order, sorted as
        the queue orders them, and the deadline stored for their leases (taken
        after the write lock was granted, so waiting for it does not shorten them).

        Due delayed messages are promoted and expired leases released (or buried
        after their last attempt) in the same transaction: always when the claim
        comes up short, and otherwise at most every ``MAINTAIN_EVERY`` seconds per
        queue and process (so a due delayed message may wait that long behind
        ready ones of lower priority under load).
        """
        # On the store's clock (injectable), so a test that moves time sees expiry at
        # once; a clock stepping backwards also triggers maintenance.
        maintained = 0 <= self.clock() - self._maintained.get(qid, -1e18) < MAINTAIN_EVERY
        if qid in self.limited_queues:
            return self._claim_with_limits(qid, n, lease, maintained)
        if n == 1 and maintained:
            # The common claim in one statement (SQL_CLAIM_NEXT): the deadline is read
            # inside it, after the write lock was granted.
            found = self.statement(SQL_CLAIM_NEXT, (qid, lease))
            if found:
                *row, until = found[0]
                return [tuple(row)], until
            if self.seen_due.nothing_due(qid, now := self.clock()):
                return [], now + lease  # none ready, none due (a fresh probe said so)
            maintained = False  # none ready: settle delayed and expired ones, look again
        return self._claim_locked(qid, n, lease, maintained)

    def claim_one(self, qid: int, lease: float) -> tuple[Any, ...] | None:
        """:meth:`claim` of one message: SQL_CLAIM_NEXT's row as it comes (lease_until
        last), or None; the same statements and maintenance as ``claim(qid, 1, lease)``."""
        if qid not in self.limited_queues and (
                0 <= self.clock() - self._maintained.get(qid, -1e18) < MAINTAIN_EVERY):
            hot = self._local.hot or self._hot()  # self.statement(), inlined: a call less
            try:
                found = hot[1].execute(SQL_CLAIM_NEXT, (qid, lease)).fetchall()
            except apsw.Error as exc:
                raise self._failure(hot[0], exc) from exc
            if found:
                row: tuple[Any, ...] = found[0]
                return row
            if self.seen_due.nothing_due(qid, self.clock()):
                return None  # none ready, none due: no write transaction to maintain
            rows, until = self._claim_locked(qid, 1, lease, False)
        else:
            rows, until = self.claim(qid, 1, lease)
        return (*rows[0], until) if rows else None

    def _claim_locked(self, qid: int, n: int, lease: float,
                      maintained: bool) -> tuple[list[tuple[Any, ...]], float]:
        """claim() in a write transaction: maintenance when due (or *maintained* is
        false), the claim, and maintenance again if it came up short."""
        with self.write() as cur:
            now = self.clock()  # after BEGIN IMMEDIATE: a wait for the lock must not age it
            tick = now
            if maintained:  # a batch claim (n > 1): look again now that the lock is ours
                maintained = 0 <= tick - self._maintained.get(qid, -1e18) < MAINTAIN_EVERY
            params = {"qid": qid, "n": n, "token": _new_token()}
            until = now + lease
            if not maintained:
                self._maintained[qid] = tick
                self._maintain(cur, qid, now)
                rows = self._claim_rows(cur, params, until)
            else:
                rows = self._claim_rows(cur, params, until)
                if len(rows) < n and not self.seen_due.nothing_due(qid, now):
                    self._maintained[qid] = tick
                    if self._maintain(cur, qid, now):
                        params["n"] = n - len(rows)
                        more = self._claim_rows(cur, params, until)
                        if rows and more:
                            # Two claims' rows, each in queue order: merge them.
                            rows = sorted(rows + more, key=_claim_order)
                        else:
                            rows = rows or more
            if not rows:
                # The plain statements take nothing from a queue with limits.
                limited = self.claim_limited(cur, qid, n, now, until, params["token"])
                if limited is not None:
                    self.limited_queues.add(qid)
                    rows = limited
        return rows, until

    def _claim_with_limits(self, qid: int, n: int, lease: float,
                           maintained: bool) -> tuple[list[tuple[Any, ...]], float]:
        """claim() on a queue this process saw with limits: straight to the limited
        claim, maintained as a plain claim is (every MAINTAIN_EVERY, and when short)."""
        with self.write() as cur:
            now = self.clock()  # after BEGIN IMMEDIATE: a wait for the lock must not age it
            until = now + lease
            token = _new_token()
            if not maintained:
                self._maintained[qid] = now
                self._maintain(cur, qid, now)
            rows = self.claim_limited(cur, qid, n, now, until, token)
            if rows is None:  # its limits are gone (a rate limit removed), or it is paused
                self.limited_queues.discard(qid)
                rows = self._claim_rows(cur, {"qid": qid, "n": n, "token": token}, until)
            elif not rows and maintained:
                self._maintained[qid] = now
                if self._maintain(cur, qid, now):
                    rows = self.claim_limited(cur, qid, n, now, until, token) or []
        return rows, until

    def _claim_rows(self, cur: Any, params: dict[str, Any], until: float) -> list[Any]:
        # Every cursor is read to the end: a half-read one keeps the lock.
        if params["n"] == 1:
            found = cur.execute(SQL_NEXT_READY, (params["qid"],)).fetchall()
            if not found:
                return []
            return list(cur.execute(SQL_CLAIM_ONE, (found[0][0], until)).fetchall())
        rows = list(cur.execute(SQL_CLAIM_SELECT, params).fetchall())
        head = (params["token"], until)
        changes = cur.connection.changes
        for i in range(0, len(rows), IDS_PER_STATEMENT):
            part = rows[i:i + IDS_PER_STATEMENT]
            cur.execute(sql_claim_ids(len(part)), (*head, *[r[0] for r in part]))
            # The write lock makes the selected rows the updated ones; should that ever
            # not hold, handing out rows nobody leased would deliver them twice: roll back.
            if changes() != len(part):
                raise StorageError(
                    f"a batch claim on queue {params['qid']} selected {len(part)} ready "
                    f"message(s) but leased {changes()}; nothing was claimed, try again")
        return rows

    def expire(self, qid: int) -> None:
        """Promote due delayed messages and release expired leases of queue *qid*
        (in transactions of at most MAINTAIN_ROWS of each)."""
        while True:
            with self.write() as cur:
                now = self.clock()  # after BEGIN IMMEDIATE: a wait for the lock must not age it
                self._maintain(cur, qid, now)
            if qid not in self._behind:
                return

    def _maintain(self, cur: Any, qid: int, now: float) -> bool:
        """Promote due delayed rows and settle expired leases, at most MAINTAIN_ROWS of
        each; True if any row changed. With more left, the queue is in ``_behind``
        and its next claim maintains again at once."""
        promoted = 0
        if cur.execute(SQL_DUE_DELAYED, {"qid": qid, "now": now}).fetchall():
            cur.execute(SQL_PROMOTE, {"qid": qid, "now": now, "most": MAINTAIN_ROWS})
            promoted = cur.connection.changes()
        expired = cur.execute(SQL_EXPIRED, {"qid": qid, "now": now, "max_extend": MAX_EXTEND,
                                            "most": MAINTAIN_ROWS}).fetchall()
        if promoted >= MAINTAIN_ROWS or len(expired) >= MAINTAIN_ROWS:
            self._behind.add(qid)
            self._maintained.pop(qid, None)
        else:
            self._behind.discard(qid)
        if not expired:
            return promoted > 0
        qrow = cur.execute(SQL_QUEUE_BY_ID, (qid,)).fetchall()[0]
        max_attempts = qrow[4]
        for mid, attempts, cancel in expired:
            if cancel:
                cur.execute(SQL_CANCEL_EXPIRED, {"id": mid, "now": now})
                cur.execute(SQL_RELEASE, {"n": 1, "qid": qid})
            elif attempts >= max_attempts:
                self._bury(cur, qrow, mid, "lease expired", now)
            else:
                cur.execute(SQL_UNLEASE, {"id": mid, "error": "lease expired"})
        return True

    def next_due(self, qid: int) -> float:
        """The earliest time a delayed message falls due or a lease runs out (inf if none)."""
        now = self.clock()  # before the look: its answer is at least this fresh
        with self.read() as cur:
            value = cur.execute(SQL_NEXT_DUE, {"qid": qid}).fetchall()[0][0]
        due = float(value) if value is not None else float("inf")
        self.seen_due.saw(qid, due, now)
        return held_due(self.held, qid, due)

    def probe(self, qid: int) -> tuple[bool, float]:
        """Without the write lock: is a message of queue *qid* ready, and when does the
        next delayed message fall due or lease run out (inf if none)?"""
        now = self.clock()  # before the look: its answer is at least this fresh
        with self.read() as cur:
            ready, value = cur.execute(SQL_PROBE, {"qid": qid}).fetchall()[0]
        due = float(value) if value is not None else float("inf")
        self.seen_due.saw(qid, due, now)
        if qid in self.held:  # an empty bucket: nothing to claim until its next token
            return held_probe(self.held, qid, bool(ready), due, now)
        return bool(ready), due

    def stats(self, qid: int) -> QueueStats:
        return stats_with_limits(super().stats(qid), self.limit_stats(qid))

    # -- finishing ------------------------------------------------------------------

    def ack(self, qid: int, items: Iterable[tuple[int, int]], retention: float,
            settle: bool = False) -> list[int]:
        """Finish leased messages ``(id, token)``; return the ids whose token was stale."""
        pairs = list(items)
        if len(pairs) == 1 and retention <= 0:
            if self.change(SQL_ACK_LEAF if settle else SQL_ACK_UNCOUNTED, pairs[0]):
                self._tally(qid, 0, 1)
                return []
        return self._ack_locked(qid, pairs, retention, settle)

    def ack_one(self, qid: int, mid: int, token: int, retention: float,
                settle: bool = False) -> bool:
        """:meth:`ack` of one message; True if its token was stale."""
        if retention <= 0:
            hot = self._local.hot or self._hot()  # self.change(), inlined: a call less
            try:
                hot[1].execute(SQL_ACK_LEAF if settle else SQL_ACK_UNCOUNTED, (mid, token))
            except apsw.Error as exc:
                raise self._failure(hot[0], exc) from exc
            if hot[0].changes():
                if self.totals.ack_one(qid):  # _tally, inlined
                    self._totals_due()
                return False
        return bool(self._ack_locked(qid, [(mid, token)], retention, settle))

    def _ack_locked(self, qid: int, pairs: list[tuple[int, int]], retention: float,
                    settle: bool = False) -> list[int]:
        """ack() in a write transaction (a counted queue, a kept message, a batch, a
        stale token, or with *settle* a job that has dependents): the stale ids."""
        settle = settle and retention <= 0  # a kept job's ending settles its own
        if len(pairs) > 1:
            try:
                done = self._ack_by_claim(qid, _ids_by_token(pairs), retention, settle)
            except _StaleInBatch:
                # Rolled back: find which ones, one statement each (the same (id, token)
                # twice is acked once).
                pairs = list(dict.fromkeys(pairs))
            else:
                self._tally(qid, 0, done)
                return []
        with self.write() as cur:
            changes = cur.connection.changes
            lost = []
            parents = []
            now = self.clock() if retention > 0 else 0.0  # after BEGIN IMMEDIATE
            for mid, token in pairs:
                if retention > 0:
                    cur.execute(SQL_ACK_RETAIN, (now, mid, token))
                elif settle:
                    deleted = cur.execute(SQL_ACK_DELETE_WF, (mid, token)).fetchall()
                    if not deleted:
                        lost.append(mid)
                    elif deleted[0][0]:
                        parents.append(mid)
                    continue
                else:
                    cur.execute(SQL_ACK_DELETE, (mid, token))
                if not changes():
                    lost.append(mid)
            done = len(pairs) - len(lost)
            if done:
                cur.execute(SQL_RELEASE, {"n": done, "qid": qid})
            if parents:  # succeeded with no result: their dependents get None
                settle_done(cur, [(mid, None) for mid in parents], among(cur, parents))
        self._tally(qid, 0, done)
        return lost

    def _ack_by_claim(self, qid: int, by_token: dict[int, list[int]], retention: float,
                      leaf: bool = False) -> int:
        """Ack the ids of each token in *by_token* with one statement per token (the
        messages of a batch claim share its token); raise _StaleInBatch, changing
        nothing, if any token is stale (or with *leaf*, any job has dependents)."""
        expected = sum(map(len, by_token.values()))
        with self.write() as cur:
            changes = cur.connection.changes
            retain = retention > 0
            head = (self.clock(),) if retain else ()  # after BEGIN IMMEDIATE
            done = 0
            for token, ids in by_token.items():
                for i in range(0, len(ids), IDS_PER_STATEMENT):
                    chunk = ids[i:i + IDS_PER_STATEMENT]
                    cur.execute(sql_ack_many(len(chunk), retain, leaf), (*head, *chunk, token))
                    done += changes()
            if done != expected:
                raise _StaleInBatch
            cur.execute(SQL_RELEASE, {"n": done, "qid": qid})
        return done

    def retry(
        self, qid: int, mid: int, token: int, delay: float | Callable[[int], float], error: str | None
    ) -> bool:
        """Give a leased message back for another delivery after *delay* seconds,
        or bury it if that was its last attempt (or cancel it if cancellation was
        requested meanwhile). Returns False if it will not be delivered again."""
        with self.write() as cur:
            now = self.clock()  # after BEGIN IMMEDIATE: a wait for the lock must not age it
            found = cur.execute(SQL_GET_LEASED, {"id": mid, "token": token}).fetchall()
            if not found:
                raise LeaseLost(lost_text(mid), [mid])
            attempts, cancel = found[0]
            if cancel:
                # Cancellation was asked while it ran: no more attempts.
                cur.execute(
                    f"UPDATE messages SET state = {CANCELLED}, finished_at = ?, token = NULL, "
                    f"lease_until = NULL, error = ? WHERE id = ?",
                    (now, error, mid),
                )
                cur.execute(SQL_RELEASE, {"n": 1, "qid": qid})
                return False
            qrow = cur.execute(SQL_QUEUE_BY_ID, (qid,)).fetchall()[0]
            if attempts >= qrow[4]:
                self._bury(cur, qrow, mid, error or f"gave up after {attempts} attempts", now)
                return False
            seconds = delay(attempts) if callable(delay) else delay
            run_at = now + seconds
            cur.execute(
                SQL_RETRY,
                {
                    "state": DELAYED if seconds > 0 else READY,
                    "run_at": run_at,
                    "error": error,
                    "id": mid,
                    "token": token,
                },
            )
            return True

    def extend(self, mid: int, token: int, seconds: float) -> float:
        """Move the lease deadline to now + *seconds*; return the new deadline."""
        with self.write() as cur:
            until = self.clock() + seconds  # after BEGIN IMMEDIATE: see claim()
            cur.execute(SQL_EXTEND, {"until": until, "id": mid, "token": token})
            if not cur.connection.changes():
                raise LeaseLost(lost_text(mid), [mid])
        return until

    def heartbeat(
        self, items: Sequence[tuple[int, int]], seconds: float
    ) -> tuple[list[int], list[int]]:
        """Extend many leases ``(id, token)`` to now + *seconds* in one transaction.

        Returns ``(lost, cancel)``: ids whose token was stale (nothing changed), and
        ids whose cancellation was requested meanwhile.
        """
        lost: list[int] = []
        cancel: list[int] = []
        with self.write() as cur:
            until = self.clock() + seconds  # after BEGIN IMMEDIATE: see claim()
            for mid, token in items:
                rows = cur.execute(
                    SQL_EXTEND + " RETURNING cancel", {"until": until, "id": mid, "token": token}
                ).fetchall()
                if not rows:
                    lost.append(mid)
                elif rows[0][0]:
                    cancel.append(mid)
        return lost, cancel

    def fail(self, qid: int, mid: int, token: int, reason: str) -> None:
        """Bury a leased message now (no more attempts), keeping *reason*."""
        with self.write() as cur:
            now = self.clock()  # after BEGIN IMMEDIATE: a wait for the lock must not age it
            if not cur.execute(SQL_GET_LEASED, {"id": mid, "token": token}).fetchall():
                raise LeaseLost(lost_text(mid), [mid])
            qrow = cur.execute(SQL_QUEUE_BY_ID, (qid,)).fetchall()[0]
            self._bury(cur, qrow, mid, reason, now)

    def _bury(self, cur: Any, qrow: Sequence[Any], mid: int, reason: str, now: float) -> None:
        qid, name, dead_letter = qrow[0], qrow[1], qrow[5]
        if dead_letter is None:
            cur.execute(SQL_BURY_HERE, {"id": mid, "error": reason, "now": now})
            cur.execute(SQL_RELEASE, {"n": 1, "qid": qid})
            return
        target = cur.execute("SELECT id FROM queues WHERE name = ?", (dead_letter,)).fetchall()
        if target:
            tid = target[0][0]
        else:
            tid = self._create_queue(cur, dead_letter, default_queue_options())
        # Dead-lettering never fails for lack of room: losing the message would be
        # worse than a dead-letter queue over its max_depth.
        cur.execute(
            SQL_BURY_MOVE,
            {"target": tid, "error": reason, "origin": name, "now": now, "id": mid},
        )
        cur.execute(SQL_RELEASE, {"n": 1, "qid": qid})
        cur.execute(SQL_RESERVE_FORCE, {"n": 1, "qid": tid})
        cur.execute(SQL_TARGET_LIMITED, {"target": tid, "id": mid})


_first = itemgetter(0)
_second = itemgetter(1)


def _ids_by_token(pairs: list[tuple[int, int]]) -> dict[int, list[int]]:
    """The ids of *pairs* ``(id, token)`` per token, each id once per token (so the same
    pair twice is acked once), in the order given. A batch claim's messages share one
    token: that case without a loop in Python (~1.3k instructions per message less)."""
    tokens = set(map(_second, pairs))
    if len(tokens) == 1:
        return {tokens.pop(): list(dict.fromkeys(map(_first, pairs)))}
    by_token: dict[int, dict[int, None]] = {}
    for mid, token in pairs:
        by_token.setdefault(token, {})[mid] = None
    return {token: list(ids) for token, ids in by_token.items()}


class _StaleInBatch(Exception):
    """A batch ack met a stale token: roll back, and ack one message at a time."""


def _new_token() -> int:
    """A fresh 64-bit lease token (as SQLite's random() gives: any signed 64-bit)."""
    return random.getrandbits(64) - (1 << 63)


def _claim_order(row: tuple[Any, ...]) -> tuple[Any, ...]:
    # SQL's ORDER BY priority DESC, rank, run_at, id (a NULL rank sorts before b"").
    return (-row[5], row[9] is not None, row[9] or b"", row[6], row[0])
