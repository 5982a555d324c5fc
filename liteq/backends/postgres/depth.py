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
* **Only counted queues pay** (``queues.counted``, issue 17's "a queue without
  max_depth should not pay for the depth counter"): a queue is counted from the moment
  it has ``max_depth`` or ``count_depth``, and only a counted queue has stripes. Every
  statement that reserves or releases reads the flag itself, in the statement that
  writes the messages (a CTE ``SELECT counted FROM queues WHERE id = ...``, asked by a
  one-time filter of the stripe update, so that its stripe pick never runs), so an
  uncounted queue's put
  is one INSERT and its ack one DELETE, with no stripe row read, locked or written.
  ``room()`` and ``stats()`` count an uncounted queue's messages instead (one range
  read of a partial index per state, the figures a counter would give).
* **Switching a queue to counted** (:meth:`Depth.count_anew`, when ``ensure_queue``
  gives an uncounted queue a max_depth or count_depth) is one transaction: ``LOCK TABLE
  messages IN SHARE MODE``, then the flag set, the stripes made and filled from a count
  of the queue's unfinished messages (caps from max_depth), then COMMIT. Why no put or
  ack can be missed or counted twice:

  - SHARE conflicts with the ROW EXCLUSIVE lock that every INSERT, UPDATE and DELETE
    of ``messages`` takes on the table before it runs and holds until its transaction
    ends. So the LOCK waits for every transaction that has written messages (its
    writes are committed, hence in the count, or rolled back), and every statement
    that would write messages waits until the switch commits.
  - A waiting statement reads the flag with a snapshot taken after its locks were
    granted: in READ COMMITTED each statement takes a fresh snapshot, and it is taken
    after the statement's table locks (checked in PostgreSQL's source, tcop: the locks
    of every relation a statement names are taken at parse analysis or, for a prepared
    statement, by ``GetCachedPlan`` in ``exec_bind_message`` / ``exec_simple_query``;
    the execution snapshot comes later, in ``PortalStart`` for a plain SELECT and in
    ``PortalRunMulti``, which calls ``GetTransactionSnapshot()`` per statement, for an
    INSERT/UPDATE/DELETE or a WITH holding one; the snapshot ``exec_bind_message``
    pushes before ``GetCachedPlan`` is only for reading the parameters and planning and
    is popped before the portal runs). A commit is visible before its locks go
    (xact.c, ``CommitTransaction``: ``ProcArrayEndTransaction`` "must be done _before_
    releasing locks we hold"), so that snapshot sees ``counted = true`` and the new
    stripes: the put reserves room on them.
  - A transaction that holds ROW EXCLUSIVE on messages therefore sees one value of the
    flag for as long as it holds it: the rule for statements that read it after the
    transaction's first write (``reserve`` and ``release`` after a put's INSERT, a
    bury's UPDATE): they read it after that write, never before.
  - The flag is never cleared (but by the migration, under its ACCESS EXCLUSIVE lock
    on queues: schema.py): a queue whose max_depth is removed stays counted (caps
    NULL), as it was before this change, so the flag read before the lock (to decide
    whether to lock) can be trusted when it says counted. Switching off would need the
    same lock; not done (a queue bounded once is likely to be bounded again).

  The lock blocks every writer of every queue for the switch's duration (a count of
  the queue's unfinished rows, each state through its partial index), once per
  queue: an uncounted queue declared with a max_depth. An existing queue declared
  again with the same max_depth is already counted and takes no lock. While the LOCK
  waits, writers queue behind it too, so it waits at most ``LOCK_TRY`` (50 ms) at a
  time and lets them through between tries (:meth:`Depth.lock_writers`): a long
  transaction that wrote messages delays the switch, not every producer.
* **Missing stripes** (a counted queue made by a path that does not create them) are
  created by the first slow path, which counts the queue's unfinished messages once
  under the lock of the new rows.

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

import time
from typing import Any

import psycopg

from ...errors import LiteqError, QueueFull
from ..records import State

__all__ = ["COUNTED", "COUNTED_CTE", "RESERVE_CTES", "STRIPES", "Depth", "release_ctes", "spread", "unfinished_count"]

#: Stripes per queue (see the module docstring for why 16).
STRIPES = 16
#: The longest one try of the switch's LOCK waits (s): writers wait at most this long
#: behind it (:meth:`Depth.lock_writers`).
LOCK_TRY = 0.05


def unfinished_count(qid: str) -> str:
    """An SQL expression: queue *qid*'s (an SQL expression) unfinished messages, one
    count per state, each a range read of that state's partial index (``state < 3``
    matches none of them: the planner scans the whole table, every queue's rows)."""
    return " + ".join(
        f"(SELECT count(*) FROM {{s}}.messages WHERE qid = {qid} AND state = {int(st)})"
        for st in (State.READY, State.DELAYED, State.LEASED))


#: Whether queue ``%(qid)s`` is counted, read by the statement that writes its messages
#: (NULL when the queue is gone; why this is race-free: the module docstring): the CTE
#: ``cq`` every such statement starts with (one primary-key lookup however often the
#: statement asks), and the scalar subquery that asks (an InitPlan, run once).
COUNTED_CTE = "cq AS (SELECT counted FROM {s}.queues WHERE id = %(qid)s)"
COUNTED = "(SELECT counted FROM cq)"

# Reserve n on one stripe with room that nobody holds; a session starts its search at
# a stripe of its own (its backend pid), so producers spread without a random().
# Also says whether the queue is counted (NULL: gone), so an uncounted queue's reserve
# is this one statement, which touches no stripe.
#: The CTEs ``cq`` and ``r`` of a reservation of %(n)s on one stripe with room (a
#: counted queue only; ``r`` returns a row if it reserved), shared with SQL_PUT_MANY.
RESERVE_CTES = f"""{COUNTED_CTE}, r AS (
  UPDATE {{s}}.depth_stripes d SET used = d.used + %(n)s
  WHERE d.qid = %(qid)s AND {COUNTED} AND d.stripe = (
    SELECT stripe FROM {{s}}.depth_stripes
    WHERE qid = %(qid)s AND (cap IS NULL OR used + %(n)s <= cap)
    ORDER BY (stripe + pg_backend_pid()) %% 16 LIMIT 1 FOR UPDATE SKIP LOCKED)
  RETURNING 1
)"""
SQL_RESERVE = f"""
WITH {RESERVE_CTES}
SELECT {COUNTED}, EXISTS (SELECT 1 FROM r)
"""


# Release n on any stripe nobody holds, else wait for the last stripe (the second form
# runs only when the first found none: both are in one statement, so release is one
# round trip; why the last, not the first: the lock order in the module docstring).
def release_ctes(amount: str, when: str | None = None) -> str:
    """The CTEs ``cq, r1, r2`` of a release of *amount* (an SQL expression) from queue
    ``%(qid)s``'s stripes, when *when* (an SQL condition) holds and the queue is
    counted: ``r1`` on any unlocked stripe, else ``r2`` on the last one (why the last:
    the lock order above). Written once for every statement that finishes messages
    (this module's release, the single and the batch ack in messages.py), which put it
    after the writes it counts."""
    guard = f" AND {COUNTED}" + (f" AND {when}" if when else "")
    return f"""{COUNTED_CTE}, r1 AS (
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
SQL_QUEUE = "SELECT name, max_depth, counted FROM {s}.queues WHERE id = %s"
# The switch to counted (module docstring): every writer of messages waited for, and
# kept out until the commit.
SQL_LOCK_WRITERS = "LOCK TABLE {s}.messages IN SHARE MODE"
SQL_SET_COUNTED = "UPDATE {s}.queues SET counted = true WHERE id = %s"
SQL_CREATE = """
INSERT INTO {s}.depth_stripes (qid, stripe, cap, used)
SELECT %s, g, NULL, 0 FROM generate_series(0, 15) AS g
ON CONFLICT (qid, stripe) DO NOTHING
"""
SQL_COUNT = f"SELECT {unfinished_count('%(qid)s')}"
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
        self.lock_writers_sql = qualify(SQL_LOCK_WRITERS)
        self.set_counted_sql = qualify(SQL_SET_COUNTED)

    def reserve(self, cur: Any, qid: int, n: int, force: bool = False) -> None:
        """Count *n* new unfinished messages of *qid* (already inserted, moved or
        revived by this transaction: the flag is read after that write, see the module
        docstring), or raise QueueFull (the caller rolls back) unless *force*. Nothing
        for an uncounted queue. LiteqError if the queue is gone."""
        if n <= 0:
            return
        if not force:
            # Under a savepoint: a stripe the search locked and then found full on its
            # newest version stays locked (READ COMMITTED's recheck); holding it into
            # the slow path, which locks every stripe in order, would deadlock with
            # another slow path. Rolling back to the savepoint lets it go.
            cur.execute("SAVEPOINT liteq_reserve", prepare=False)
            cur.execute(self.reserve_sql, {"n": n, "qid": qid})
            counted, reserved = cur.fetchall()[0]
            if reserved or counted is False:
                cur.execute("RELEASE SAVEPOINT liteq_reserve", prepare=False)
                return
            cur.execute("ROLLBACK TO SAVEPOINT liteq_reserve", prepare=False)
            cur.execute("RELEASE SAVEPOINT liteq_reserve", prepare=False)
        self.respread(cur, qid, add=n, force=force, inserted=n)

    def respread(
        self, cur: Any, qid: int, *, add: int = 0, force: bool = True, inserted: int = 0,
        recount: bool = False,
    ) -> None:
        """The slow path: lock every stripe of *qid* (creating them if missing), check
        *add* more against max_depth unless *force*, and spread the count and the
        free room over the stripes again. Also after max_depth changed. *recount*: the
        count comes from the messages, not the stripes. Nothing for an uncounted queue."""
        cur.execute(self.lock_all_sql, (qid,))
        stripes = cur.fetchall()
        # Read after the stripes are locked: a max_depth change commits before us.
        cur.execute(self.queue_sql, (qid,))
        found = cur.fetchall()
        if not found:
            raise LiteqError(f"queue id {qid} no longer exists (it was deleted)")
        name, max_depth, counted = found[0]
        if not counted:
            return
        if recount or not stripes:
            cur.execute(self.create_sql, (qid,))
            cur.execute(self.lock_all_sql, (qid,))
            cur.fetchall()
            # New stripes: count the queue once (our own new rows are counted by add).
            cur.execute(self.count_sql, {"qid": qid})
            stripes = [(0, int(cur.fetchall()[0][0]) - inserted)]
        total = sum(int(used) for _, used in stripes)
        if not force and max_depth is not None and total + add > max_depth:
            raise QueueFull(name, max(total, 0), max_depth, add)
        used, caps = spread(total + add, max_depth)
        cur.execute(self.spread_sql, {"qid": qid, "stripes": list(range(STRIPES)),
                                      "used": used, "caps": caps})

    def count_anew(self, cur: Any, qid: int) -> None:
        """Make *qid* counted, in the caller's transaction: its stripes made and filled
        from a count of its unfinished messages, caps from max_depth. The caller took
        :meth:`lock_writers` first, unless the queue is new in this transaction (then
        no other session can write its messages yet)."""
        cur.execute(self.set_counted_sql, (qid,))
        self.respread(cur, qid, recount=True)

    def lock_writers(self, cur: Any, patience: float) -> None:
        """Wait for every transaction that wrote messages, and keep new writers out
        until the caller's commit (the switch to counted: module docstring).

        A LOCK that waits queues every later writer behind it, so behind one long
        transaction (an application's, holding a put) it would stall every put, claim
        and ack of the schema for as long. So it waits at most :data:`LOCK_TRY` at a
        time (its own ``lock_timeout``, under a savepoint), letting the writers
        through between tries, for up to *patience* seconds in all; then
        LockNotAvailable (DatabaseBusy), as any lock held past busy_timeout."""
        cur.execute("SELECT current_setting('lock_timeout')")
        saved = cur.fetchall()[0][0]
        deadline = time.monotonic() + patience
        pause = 0.005
        while True:
            cur.execute("SAVEPOINT liteq_switch", prepare=False)
            try:
                cur.execute(f"SET LOCAL lock_timeout = '{round(LOCK_TRY * 1000)}ms'", prepare=False)
                cur.execute(self.lock_writers_sql, prepare=False)
            except psycopg.errors.LockNotAvailable:
                cur.execute("ROLLBACK TO SAVEPOINT liteq_switch", prepare=False)
                cur.execute("RELEASE SAVEPOINT liteq_switch", prepare=False)
                if time.monotonic() + pause > deadline:
                    raise
                time.sleep(pause)
                pause = min(pause * 2, 0.1)
                continue
            cur.execute("RELEASE SAVEPOINT liteq_switch", prepare=False)
            cur.execute("SELECT set_config('lock_timeout', %s, true)", (saved,), prepare=False)
            cur.fetchall()
            return

    def release(self, cur: Any, qid: int, n: int) -> None:
        """Uncount *n* messages of *qid* that finished in this transaction."""
        if n > 0:
            cur.execute(self.release_sql, {"n": n, "qid": qid})
