"""Back pressure on PostgreSQL: the striped depth counter (issue 17, boundary plan 3.6).

SQLite keeps a queue's depth in one ``queues.depth`` cell, race-free because SQLite has
one writer. On PostgreSQL one counter row would make every producer of a queue wait
for the previous one's commit (measured, 4 durable producers: 439 puts/s against 1,269
striped and 1,437 with no counter at all). So the count lives in
``depth_stripes(qid, stripe, cap, used)``: :data:`STRIPES` rows per queue.

**The invariant.** ``sum(used)`` over a queue's stripes is its number of unfinished
messages (ready, delayed, leased), and for a bounded queue ``sum(cap) = max_depth`` and
``used <= cap`` on every stripe after every non-forced reservation, so ``sum(used) <=
max_depth`` without anyone reading all the stripes: no overshoot under any number of
concurrent producers.

* **Reserve** (a put of n new rows, after inserting them, in the same transaction):
  add n to one stripe with room, taken ``FOR UPDATE SKIP LOCKED`` (two producers never
  wait for each other while some stripe has room). None with room (or all busy): the
  slow path locks every stripe of the queue in stripe order, and with everything
  locked the sum is exact: QueueFull if ``sum(used) + n > max_depth``, else the caps are
  re-spread (each stripe gets an equal share of the free room) and the rows counted.
* **Release** (ack, cancel, bury, purge): subtract from any unlocked stripe, or, when
  every stripe is busy, wait for the last one (see the lock order below). ``used`` may
  go below 0 on one stripe; the invariant still holds (``used <= cap`` only gets
  truer).
* **Forced** reservations (dead letters, redrive, schedules: never refused) take the
  slow path. Past max_depth by ``excess``, each cap becomes ``used - excess``: a put
  fits on a stripe only after ``excess`` + 1 releases there, by which time the queue
  is below max_depth (see :func:`spread`).
* **Every queue is counted**, bounded or not (unbounded ones have ``cap`` NULL): so a
  put or an ack never has to ask "is this queue counted?", whose answer could change
  between the question and the insert (SQLite reads it under its write lock; here it
  would need a lock shared by every put). The cost is one stripe-row update per put
  and per ack in the same statement (the 1,437 -> 1,269 above, ~12%); ``room()`` and
  ``stats()`` read 16 small rows instead of counting messages. ``count_depth`` is
  stored (so ``liteq copy`` keeps it) and means nothing more here.
* **Missing stripes** (a queue made by a path that does not create them) are created by
  the first slow path, which counts the queue's unfinished messages once under the
  lock of the new rows.

**One stripe, chosen once.** The stripe a statement locks ``SKIP LOCKED`` is picked by
an uncorrelated scalar subquery (an InitPlan: evaluated once per execution), never a
subquery joined in ``FROM``: a plan with that subquery on the inner side of a nested
loop re-runs it per outer row, and each re-run skips the rows this statement already
updated and locks another stripe, so one put counted itself on several stripes (and
``SQL_PUT_READY``'s ``INSERT ... FROM r`` inserted a message per stripe). Found by the
queue model under load, when the planner's statistics for a young table changed; the
same rule holds for every locking subquery feeding a write (``AS MATERIALIZED`` CTEs
in messages.py). ``tests/test_postgres_plans.py`` checks the plans.

Lock order, everywhere: message rows first, then stripes (a transaction holding a
stripe never waits for a message row), and a transaction waits for a stripe only in
stripe order (the slow path) or for the queue's *last* stripe (a release that found
every stripe busy). A release's ``SKIP LOCKED`` pick can leave stripes locked that it
did not update: READ COMMITTED's recheck of a row updated meanwhile (measured: 3 of 520
fallbacks held one or two such stripes). Its fallback used to wait for stripe 0, which a
slow path takes first and then waits, in order, for the stripe the release holds: a
deadlock, seen about once per run of ``tests/test_backend_queues.py``'s racing test
(the server broke it after ``deadlock_timeout`` and the verb was retried). Waiting for
the last stripe instead cannot close a cycle: whoever holds it is a slow path that holds
every stripe and waits for none, or a pick that waits for nothing more.

**Why 16 stripes.** A producer waits only when every stripe is locked at once, so the
count should exceed the writers of one queue committing at the same moment: 16 covers a
server's worth of cores with room to spare. More stripes cost every ``room()`` and
re-spread more rows, and a bounded queue's free room is split 16 ways, so a nearly full
queue takes the slow path more often; fewer than the concurrent producers makes them
queue on the stripes as they would on one row.
"""

from __future__ import annotations

from typing import Any

from ...errors import LiteqError, QueueFull
from ..records import State

__all__ = ["STRIPES", "Depth", "release_ctes", "spread"]

#: Stripes per queue (see the module docstring for why 16).
STRIPES = 16

_UNFINISHED = f"state < {int(State.DONE)}"

# Reserve n on one stripe with room that nobody holds; a session starts its search at
# a stripe of its own (its backend pid), so producers spread without a random().
SQL_RESERVE = """
UPDATE {s}.depth_stripes d SET used = d.used + %(n)s
WHERE d.qid = %(qid)s AND d.stripe = (
  SELECT stripe FROM {s}.depth_stripes
  WHERE qid = %(qid)s AND (cap IS NULL OR used + %(n)s <= cap)
  ORDER BY (stripe + pg_backend_pid()) %% 16 LIMIT 1 FOR UPDATE SKIP LOCKED)
RETURNING d.used
"""


# Release n on any stripe nobody holds, else wait for the last stripe (the second form
# runs only when the first found none: both are in one statement, so release is one
# round trip; why the last, not the first: the lock order in the module docstring).
def release_ctes(amount: str, when: str | None = None) -> str:
    """The CTEs ``r1, r2`` of a release of *amount* (an SQL expression) from queue
    ``%(qid)s``'s stripes, when *when* (an SQL condition) holds: ``r1`` on any unlocked
    stripe, else ``r2`` on the last one (why the last: the lock order above). Written
    once for every statement that finishes messages (this module's release, the single
    and the batch ack in messages.py), which put it after the writes it counts."""
    guard = f" AND {when}" if when else ""
    return f"""r1 AS (
  UPDATE {{s}}.depth_stripes ds SET used = ds.used - {amount}
  WHERE ds.qid = %(qid)s{guard} AND ds.stripe = (
    SELECT stripe FROM {{s}}.depth_stripes WHERE qid = %(qid)s
    ORDER BY (stripe + pg_backend_pid()) %% {STRIPES} LIMIT 1 FOR UPDATE SKIP LOCKED)
  RETURNING 1
), r2 AS (
  UPDATE {{s}}.depth_stripes SET used = used - {amount}
  WHERE qid = %(qid)s AND stripe = {STRIPES - 1}{guard}
    AND NOT EXISTS (SELECT 1 FROM r1)
  RETURNING 1
)"""


SQL_RELEASE = f"WITH {release_ctes('%(n)s')}\nSELECT 1\n"
SQL_LOCK_ALL = """
SELECT stripe, used FROM {s}.depth_stripes WHERE qid = %s ORDER BY stripe FOR UPDATE
"""
SQL_QUEUE = "SELECT name, max_depth FROM {s}.queues WHERE id = %s"
SQL_CREATE = """
INSERT INTO {s}.depth_stripes (qid, stripe, cap, used)
SELECT %s, g, NULL, 0 FROM generate_series(0, 15) AS g
ON CONFLICT (qid, stripe) DO NOTHING
"""
SQL_COUNT = f"SELECT count(*) FROM {{s}}.messages WHERE qid = %s AND {_UNFINISHED}"
SQL_SPREAD = """
UPDATE {s}.depth_stripes d SET used = u.used, cap = u.cap
FROM unnest(%(stripes)s::int[], %(used)s::bigint[], %(caps)s::bigint[]) AS u(stripe, used, cap)
WHERE d.qid = %(qid)s AND d.stripe = u.stripe
"""

def spread(total: int, max_depth: int | None) -> tuple[list[int], list[int | None]]:
    """``(used, caps)`` per stripe for a queue holding *total* unfinished messages:
    the count and the free room each split evenly (the remainders on the first
    stripes); caps NULL when unbounded.

    Past *max_depth* (forced rows, ``excess`` over it) every cap is ``used - excess``:
    a stripe regains room only after ``excess`` releases of its own, which means the
    queue as a whole dropped below max_depth, so no put can overshoot while releases
    pay the excess off on whichever stripes they land (caps merely equal to ``used``
    would let the first release anywhere admit a put)."""
    used = [total // STRIPES + (1 if i < total % STRIPES else 0) for i in range(STRIPES)]
    if max_depth is None:
        return used, [None] * STRIPES
    if total > max_depth:
        excess = total - max_depth
        return used, [u - excess for u in used]
    free = max_depth - total
    caps: list[int | None] = [
        u + free // STRIPES + (1 if i < free % STRIPES else 0) for i, u in enumerate(used)
    ]
    return used, caps


class Depth:
    """The depth counter's statements for one schema (qualified once, at open)."""

    def __init__(self, qualify: Any) -> None:
        self.reserve_sql = qualify(SQL_RESERVE)
        self.release_sql = qualify(SQL_RELEASE)
        self.lock_all_sql = qualify(SQL_LOCK_ALL)
        self.queue_sql = qualify(SQL_QUEUE)
        self.create_sql = qualify(SQL_CREATE)
        self.count_sql = qualify(SQL_COUNT)
        self.spread_sql = qualify(SQL_SPREAD)

    def reserve(self, cur: Any, qid: int, n: int, force: bool = False) -> None:
        """Count *n* new unfinished messages of *qid* (already inserted, moved or
        revived by this transaction), or raise QueueFull (the caller rolls back)
        unless *force*. LiteqError if the queue is gone."""
        if n <= 0:
            return
        if not force:
            # Under a savepoint: a stripe the search locked and then found full on its
            # newest version stays locked (READ COMMITTED's recheck); holding it into
            # the slow path, which locks every stripe in order, would deadlock with
            # another slow path. Rolling back to the savepoint lets it go.
            cur.execute("SAVEPOINT liteq_reserve", prepare=False)
            cur.execute(self.reserve_sql, {"n": n, "qid": qid})
            if cur.fetchall():
                cur.execute("RELEASE SAVEPOINT liteq_reserve", prepare=False)
                return
            cur.execute("ROLLBACK TO SAVEPOINT liteq_reserve", prepare=False)
            cur.execute("RELEASE SAVEPOINT liteq_reserve", prepare=False)
        self.respread(cur, qid, add=n, force=force, inserted=n)

    def respread(
        self, cur: Any, qid: int, *, add: int = 0, force: bool = True, inserted: int = 0
    ) -> None:
        """The slow path: lock every stripe of *qid* (creating them if missing), check
        *add* more against max_depth unless *force*, and spread the count and the
        free room over the stripes again. Also after max_depth changed."""
        cur.execute(self.lock_all_sql, (qid,))
        stripes = cur.fetchall()
        # Read after the stripes are locked: a max_depth change commits before us.
        cur.execute(self.queue_sql, (qid,))
        found = cur.fetchall()
        if not found:
            raise LiteqError(f"queue id {qid} no longer exists (it was deleted)")
        name, max_depth = found[0]
        if not stripes:
            cur.execute(self.create_sql, (qid,))
            cur.execute(self.lock_all_sql, (qid,))
            cur.fetchall()
            # New stripes: count the queue once (our own new rows are counted by add).
            cur.execute(self.count_sql, (qid,))
            stripes = [(0, int(cur.fetchall()[0][0]) - inserted)]
        total = sum(int(used) for _, used in stripes)
        if not force and max_depth is not None and total + add > max_depth:
            raise QueueFull(name, max(total, 0), max_depth, add)
        used, caps = spread(total + add, max_depth)
        cur.execute(self.spread_sql, {"qid": qid, "stripes": list(range(STRIPES)),
                                      "used": used, "caps": caps})

    def release(self, cur: Any, qid: int, n: int) -> None:
        """Uncount *n* messages of *qid* that finished in this transaction."""
        if n > 0:
            cur.execute(self.release_sql, {"n": n, "qid": qid})
