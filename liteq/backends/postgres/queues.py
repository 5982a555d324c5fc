"""Queues, putting messages (ids, dedup keys, back pressure) and administration on
PostgreSQL (issue 17, step B1; boundary plan 3.3, 3.5, 3.6, 3.10).

What differs from SQLite, where concurrent writers make its algorithms unsafe:

* **Ids** come from the identity sequence before the insert (``nextval`` for each new
  row, sorted), then the rows go in with their ids through ``unnest`` arrays: unique
  and in the caller's order, not necessarily consecutive (another producer's ids may
  lie between them).
* **Dedup keys**: ``INSERT ... ON CONFLICT (qid, key) WHERE key IS NOT NULL AND state
  < 3 DO NOTHING`` on the ``msg_key`` index, then the holder's id. A holder that
  finished in between leaves neither: the insert is tried again.
* **Back pressure**: the striped counter of :mod:`.depth`, reserved after the insert in
  the same transaction (only rows actually inserted count; QueueFull rolls the insert
  back), for a counted queue only (one with max_depth or count_depth: ``queues.counted``).
* **create_queue** is ``INSERT ... ON CONFLICT DO NOTHING RETURNING id``: no row means
  another creator won.
* **The common put** (:meth:`QueueVerbs.put_ready`) is one statement: reserve on a
  stripe with room and insert, or nothing (then the full path).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import psycopg

from ...errors import InvalidArgument, LiteqError
from ...validate import MAX_EXTEND
from ..base import Backend
from ..records import MessageRecord, NewRow, QueueRecord, QueueStats, State
from ..totals import PendingTotals
from . import queues_sql
from .connection import Connections
from .depth import Depth
from .queues_sql import CANCELLED, DEAD, DELAYED, DONE, LEASED, QUEUE_ORDER, READY
from .schema import qualify

__all__ = ["QueueVerbs", "Statements", "DEFAULT_QUEUE_OPTIONS", "OPTION_COLUMNS", "MAX_EXTEND",
           "QUEUE_ORDER", "READY", "DELAYED", "LEASED", "DONE", "DEAD", "CANCELLED"]

#: A lease whose deadline lies further ahead than the queue's lease plus this counts as
#: expired (a deadline set before the wall clock stepped back); the SQLite engine's
#: rule (issue 16 item 8).

#: Column values of a queue created implicitly (a dead-letter target), as on SQLite.
DEFAULT_QUEUE_OPTIONS: dict[str, Any] = {
    "max_depth": None, "lease": 30.0, "max_attempts": 5, "dead_letter": None,
    "retention": 0.0, "backoff_base": 1.0, "backoff_factor": 2.0, "backoff_max": 300.0,
    "backoff_jitter": 0.1, "topic": None, "pattern": None, "expires_at": None,
    "count_depth": False, "rate_limit": None, "rate_burst": None,
}
#: The option columns ``ensure_queue`` may update (names are spliced into SQL: only these).
OPTION_COLUMNS = frozenset(DEFAULT_QUEUE_OPTIONS)

class Statements:
    """A module's ``SQL_*`` constants with the schema filled in, as attributes named
    without the prefix (``statements.insert_keyed``): built once per backend."""

    def __init__(self, constants: dict[str, Any], schema: str) -> None:
        for name, text in constants.items():
            if name.startswith("SQL_") and isinstance(text, str):
                setattr(self, name[4:].lower(), qualify(text, schema))

    def __getattr__(self, name: str) -> str:  # for the type checker: every attribute is SQL
        raise AttributeError(name)


class SizedTexts:
    """Statements with a batch size written into their text in place of ``%(n)s``, one
    text per size, for at most :attr:`most` sizes (then None: send the statement with
    ``n`` as a parameter, unprepared). With the size a parameter, PostgreSQL's generic
    plan guesses the rows (1,000 for ``generate_series``, a tenth of the table for a
    ``LIMIT``), so it keeps planning every call (the batch put: ~150 us of planning per
    call) or plans a trap (the batch claim: connection.py's docstring); with the size in
    the text the generic plan is right and the statement can be prepared."""

    def __init__(self, most: int = 16) -> None:
        self.most = most
        self._texts: dict[tuple[str, int], str] = {}

    def get(self, sql: str, n: int) -> str | None:
        text = self._texts.get((sql, n))
        if text is None and len(self._texts) < self.most:
            text = self._texts[(sql, n)] = sql.replace("%(n)s", str(int(n)))
        return text


class QueueVerbs(Backend):
    """Queue rows, put, back pressure and administration (a mixin of PostgresBackend)."""

    conns: Connections
    schema: str
    busy_timeout: float
    clock: Callable[[], float]
    # From the Notifier mixin (notifier.py): NOTIFY at the commit of a put, throttled.
    notify: Callable[[Any, int], None]
    notify_wanted: Callable[[int], bool]
    throttled_done: Callable[[int], None]
    notify_sql: str
    wake_channel: str
    # From MessageVerbs: queues whose next empty claim asks for their limits.
    limits_changed: set[int]

    def setup_core(self) -> None:
        """Build this backend's statements and per-process state (called once, at open)."""
        self.qs = Statements(vars(queues_sql), self.schema)
        self.depth = Depth(lambda sql: qualify(sql, self.schema))
        self.totals = PendingTotals()
        #: Batch statements with their size in the text (the put here, the claim in
        #: messages.py): preparable, with generic plans that hold.
        self.sized = SizedTexts(most=32)
        #: Queues whose plain put (SQL_PUT_PLAIN) found them counted: put_ready sends
        #: them SQL_PUT_READY at once. Only a hint for speed: either statement checks
        #: the flag itself (a queue switched off later keeps the slower statement).
        self.seen_counted: set[int] = set()

    # -- queues ---------------------------------------------------------------------

    def queue_row(self, name: str) -> QueueRecord | None:
        rows = self.conns.statement(self.qs.queue_by_name, (name,))
        return QueueRecord._make(rows[0]) if rows else None

    def queue_row_by_id(self, qid: int) -> QueueRecord | None:
        rows = self.conns.statement(self.qs.queue_by_id, (qid,))
        return QueueRecord._make(rows[0]) if rows else None

    def ensure_queue(
        self, name: str, defaults: dict[str, Any], updates: dict[str, Any]
    ) -> QueueRecord:
        row = self.queue_row(name)
        if row is not None and not updates:
            return row
        _check_columns(updates)
        counts = updates.get("max_depth") is not None or bool(updates.get("count_depth"))
        with self.conns.tx() as cur:
            qid = self.create_queue_row(cur, name, defaults)
            created = qid is not None
            if counts and not created:
                cur.execute(self.qs.queue_counted, (name,))
                # Never cleared: a queue counted now stays counted (depth.py). Else the
                # switch: every writer of messages waited for, and kept out until our
                # commit, before the row is touched (the lock order: messages first).
                # (No row: deleted since the insert found it; the read below says so.)
                counts = any(not counted for (counted,) in cur.fetchall())
                if counts:
                    self.depth.lock_writers(cur, self.busy_timeout)
            if updates:
                sets = ", ".join(f"{col} = %({col})s" for col in updates)
                cur.execute(
                    qualify(f"UPDATE {{s}}.queues SET {sets} WHERE name = %(name)s", self.schema),
                    {**_options(updates), "name": name},
                )
            cur.execute(self.qs.queue_by_name, (name,))
            row = QueueRecord._make(cur.fetchall()[0])
            if counts:  # newly counted: made so, and counted from the messages
                self.depth.count_anew(cur, row.id)
            elif created or "max_depth" in updates:
                self.depth.respread(cur, row.id)  # the caps follow max_depth
            if "rate_limit" in updates or "rate_burst" in updates:
                self.limits_changed.add(row.id)
        return row

    def create_queue(self, name: str, options: dict[str, Any]) -> QueueRecord:
        with self.conns.tx() as cur:
            qid = self.create_queue_row(cur, name, options)
            if qid is None:
                raise InvalidArgument(f"queue {name!r} already exists")
            self.depth.respread(cur, qid)
            cur.execute(self.qs.queue_by_id, (qid,))
            return QueueRecord._make(cur.fetchall()[0])

    def create_queue_row(self, cur: Any, name: str, options: dict[str, Any]) -> int | None:
        """Insert queue *name* with *options* in the caller's transaction; its id, or
        None if it existed (the caller then makes its stripes, or finds them)."""
        values = {**DEFAULT_QUEUE_OPTIONS, **_options(options), "name": name, "now": self.clock()}
        values["counted"] = values["max_depth"] is not None or values["count_depth"]
        cur.execute(self.qs.queue_insert, values)
        found = cur.fetchall()
        return int(found[0][0]) if found else None

    def queue_id(self, cur: Any, name: str) -> int:
        """The id of queue *name*, created with default options if missing (a
        dead-letter target), in the caller's transaction."""
        qid = self.create_queue_row(cur, name, DEFAULT_QUEUE_OPTIONS)
        if qid is not None:
            self.depth.respread(cur, qid)
            return qid
        cur.execute(self.qs.queue_id, (name,))
        return int(cur.fetchall()[0][0])

    def queue_names(self) -> list[str]:
        return [r[0] for r in self.conns.statement(self.qs.queue_names)]

    def delete_queue(self, qid: int) -> None:
        with self.conns.tx() as cur:
            # A queue's topic never changes: read without a lock, so the topic lock is
            # taken before the queue row's, in the order subscribe takes them (topics.py).
            cur.execute(self.qs.queue_topic, (qid,))
            found = cur.fetchall()
            topic = found[0][0] if found else None
            if topic is not None:
                # The topic's publishers hold this lock shared while they route: none
                # can commit into the queue after it is gone (boundary plan 3.9).
                cur.execute(self.qs.topic_lock, (topic,))
            cur.execute(self.qs.queue_lock, (qid,))
            cur.execute(self.qs.wf_purging,
                        {"qid": qid, "state": None, "channel": self.wake_channel})
            cur.execute(self.qs.purge_all, (qid,))
            cur.execute(self.qs.stripes_delete, (qid,))
            cur.execute(self.qs.queue_delete, (qid,))
            if topic is not None:
                # A publisher caches its routes until subs_version moves.
                cur.execute(self.qs.subs_bump)

    # -- put ------------------------------------------------------------------------

    def put(self, qid: int, rows: Sequence[NewRow], *, force: bool = False) -> list[int]:
        if not force and rows and all(r[5] is None for r in rows):
            now = self.clock()
            priority, rank, run_at = first = rows[0][:3]
            if rank is None and run_at <= now and all(r[:3] == first and r[4] is None
                                                      for r in rows):
                # The common batch: one priority, due now, no rank or headers.
                return self._put_plain_many(qid, priority, run_at, now, [r[3] for r in rows])
            found = self._put_many(qid, len(rows), {
                "qid": qid, "n": len(rows), "now": now,
                "priorities": [r[0] for r in rows], "ranks": [r[1] for r in rows],
                "run_ats": [r[2] for r in rows], "payloads": [r[3] for r in rows],
                "headers": [r[4] for r in rows],
            })
            if found:
                self._tally(qid, len(rows), 0)
                # In no order: the smallest is the first payload's (queues_sql.py).
                return sorted(int(r[0]) for r in found)
        return self._put_full(qid, rows, force)

    def put_ready_many(self, qid: int, priority: int, payloads: Sequence[bytes]) -> list[int]:
        now = self.clock()  # put()'s common batch without the rows to build and check
        return self._put_plain_many(qid, priority, now, now, payloads)

    def _put_plain_many(self, qid: int, priority: int, run_at: float, now: float,
                        payloads: Sequence[bytes]) -> list[int]:
        """The common batch in one statement (SQL_PUT_MANY_PLAIN), else the full path."""
        found = self._put_many(qid, len(payloads), {
            "qid": qid, "n": len(payloads), "now": now, "priority": priority,
            "run_at": run_at, "payloads": list(payloads)}, plain=True)
        if found:
            self._tally(qid, len(payloads), 0)
            return sorted(int(r[0]) for r in found)  # the smallest is the first payload's
        return self._put_full(qid, [(priority, None, run_at, p, None, None) for p in payloads],
                              False)

    def _put_full(self, qid: int, rows: Sequence[NewRow], force: bool) -> list[int]:
        """put()'s full path: keys, a full queue or busy stripes, delayed rows."""
        with self.conns.tx() as cur:
            ids, added = self.put_rows(cur, qid, rows, self.clock(), force)
        self._tally(qid, added, 0)
        return ids

    def put_ready(self, qid: int, priority: int, payload: bytes) -> int:
        now = self.clock()
        params = {"qid": qid, "priority": priority, "now": now, "payload": payload}
        qs, counted = self.qs, qid in self.seen_counted
        notify = self.notify_wanted(qid)
        if notify:
            params["channel"] = self.wake_channel
            plain, ready = qs.put_plain_notify, qs.put_ready_notify
        else:
            plain, ready = qs.put_plain, qs.put_ready
        try:
            found = self.conns.hot(ready if counted else plain, params)
            if not found and not counted:  # counted now (or gone): reserve on a stripe
                self.seen_counted.add(qid)
                found = self.conns.hot(ready, params)
        finally:
            if not notify:
                self.throttled_done(qid)  # its trailing NOTIFY follows this commit
        if not found:
            # Straight to the full path (put()'s one-statement try would ask the
            # throttle again, and a refused put would leave a trailing NOTIFY behind).
            return self._put_full(qid, [(priority, None, now, payload, None, None)], False)[0]
        if self.totals.put_one(qid):  # _tally(qid, 1, 0) without the lock
            self._totals_due()
        return int(found[0][0])

    def put_rows(
        self, cur: Any, qid: int, rows: Sequence[NewRow], now: float, force: bool
    ) -> tuple[list[int], int]:
        """Insert *rows* into *qid* in the caller's transaction (dedup keys, depth);
        ``(ids in row order, how many were inserted)``. For publish and schedules too."""
        cur.execute(self.qs.new_ids, (len(rows),))
        fresh = sorted(int(r[0]) for r in cur.fetchall())
        ids: list[int] = [0] * len(rows)
        seen: dict[str, int] = {}
        plain: list[int] = []
        added = 0
        for i, (priority, rank, run_at, payload, headers, key) in enumerate(rows):
            state = DELAYED if run_at > now else READY
            if key is None:
                ids[i] = fresh[i]
                plain.append(i)
                continue
            if key in seen:
                ids[i] = seen[key]
                continue
            values = {"id": fresh[i], "qid": qid, "state": state, "priority": priority,
                      "rank": rank, "run_at": run_at, "payload": payload, "headers": headers,
                      "key": key, "now": now}
            while True:
                cur.execute(self.qs.insert_keyed, values)
                if cur.fetchall():
                    ids[i] = fresh[i]
                    added += 1
                    break
                cur.execute(self.qs.find_key, (qid, key))
                holder = cur.fetchall()
                if holder:  # else it finished in between: try the insert again
                    ids[i] = int(holder[0][0])
                    break
            seen[key] = ids[i]
        if plain:
            cur.execute(self.qs.insert_many, {
                "qid": qid, "now": now,
                "ids": [ids[i] for i in plain],
                "states": [DELAYED if rows[i][2] > now else READY for i in plain],
                "priorities": [rows[i][0] for i in plain],
                "ranks": [rows[i][1] for i in plain],
                "run_ats": [rows[i][2] for i in plain],
                "payloads": [rows[i][3] for i in plain],
                "headers": [rows[i][4] for i in plain],
            })
            added += len(plain)
        self.depth.reserve(cur, qid, added, force)
        if added:
            self.notify(cur, qid)
        return ids, added

    def _put_many(self, qid: int, n: int, params: dict[str, Any],
                  plain: bool = False) -> list[tuple[Any, ...]]:
        """The batch put's one statement (ids first in its rows; none: take the full
        path), with the NOTIFY that wakes consumers in it when the throttle wants one
        (see notifier.py). *plain*: the common batch's statement (SQL_PUT_MANY_PLAIN)."""
        qs = self.qs
        if self.notify_wanted(qid):
            params["channel"] = self.wake_channel
            sql = qs.put_many_plain_notify if plain else qs.put_many_notify
            return self.conns.statement(self.sized.get(sql, n) or sql, params)
        sql = qs.put_many_plain if plain else qs.put_many
        try:
            return self.conns.statement(self.sized.get(sql, n) or sql, params)
        finally:
            self.throttled_done(qid)

    def room(self, qid: int) -> tuple[int, int | None]:
        found = self.conns.statement(self.qs.room, (qid,))
        if not found:
            raise LiteqError(f"queue id {qid} no longer exists (it was deleted)")
        depth, max_depth = found[0]
        return int(depth), max_depth

    # -- administration -------------------------------------------------------------

    def redrive(self, qid: int, limit: int | None) -> int:
        with self.conns.tx() as cur:
            cur.execute(self.qs.dead_ids, (qid, limit))
            rows = cur.fetchall()
            self.revive(cur, rows)
        return len(rows)

    def revive(self, cur: Any, rows: Sequence[tuple[int, int, str | None]]) -> None:
        """Make finished messages ``(id, qid, key)`` READY again (attempts reset), in the
        caller's transaction; a key an unfinished message holds is given up."""
        now = self.clock()
        for mid, _qid, key in rows:
            values = {"id": mid, "now": now, "drop_key": False}
            if key is None:
                cur.execute(self.qs.revive, values)
                continue
            # The unique index decides (a holder may be committing right now): try with
            # the key under a savepoint, and without it if another message holds it.
            cur.execute("SAVEPOINT liteq_revive", prepare=False)
            try:
                cur.execute(self.qs.revive, values)
            except psycopg.errors.UniqueViolation:
                cur.execute("ROLLBACK TO SAVEPOINT liteq_revive", prepare=False)
                cur.execute(self.qs.revive, {**values, "drop_key": True})
            cur.execute("RELEASE SAVEPOINT liteq_revive", prepare=False)
        for qid in {r[1] for r in rows}:
            self.depth.reserve(cur, qid, sum(1 for r in rows if r[1] == qid), force=True)
            self.notify(cur, qid)

    def cancel(self, mid: int) -> bool:
        with self.conns.tx() as cur:
            cur.execute(self.qs.cancel, (self.clock(), mid))
            rows = cur.fetchall()
            if rows:
                self.depth.release(cur, rows[0][0], 1)
        return bool(rows)

    def retry_finished(self, mid: int) -> bool:
        with self.conns.tx() as cur:
            cur.execute(self.qs.finished_row, (mid,))
            rows = cur.fetchall()
            self.revive(cur, rows)
        return bool(rows)

    def purge(self, qid: int, state: State | None) -> int:
        """Delete the queue's messages (all, or in *state*); the depth drops by the
        unfinished ones deleted. (SQLite sets its counter to 0 after purging all;
        here a put committing meanwhile keeps its own count, so 0 could undercount.)"""
        with self.conns.tx() as cur:
            # Their dependents are cancelled ("parent job N was purged").
            cur.execute(self.qs.wf_purging, {"qid": qid, "channel": self.wake_channel,
                                             "state": None if state is None else int(state)})
            if state is None:
                cur.execute(self.qs.purge_all, (qid,))
                n, unfinished = cur.fetchall()[0]
            else:
                cur.execute(self.qs.purge_state, (qid, int(state)))
                n = cur.rowcount
                unfinished = n if state < DONE else 0
            self.depth.release(cur, qid, int(unfinished))
        return int(n)

    def prune(self, qid: int, before: float) -> int:
        with self.conns.tx() as cur:
            cur.execute(self.qs.prune, (qid, before))
            return int(cur.rowcount)

    def message(self, mid: int) -> MessageRecord | None:
        rows = self.conns.statement(self.qs.message, (mid,))
        return MessageRecord._make(rows[0]) if rows else None

    def peek(self, qid: int, state: State | None, n: int) -> list[MessageRecord]:
        if state is None:
            rows = self.conns.statement(self.qs.peek_all, (qid, n))
        else:
            rows = self.conns.statement(self.qs.peek, (qid, int(state), n))
        return [MessageRecord._make(r) for r in rows]

    def stats(self, qid: int) -> QueueStats:
        rows = self.conns.statement(
            self.qs.stats, {"qid": qid, "now": self.clock(), "max_extend": MAX_EXTEND}
        )
        if not rows:
            raise LiteqError(f"queue id {qid} no longer exists (it was deleted)")
        row = list(rows[0])
        if row[7] is None:
            row[7] = row[0] + row[2] + row[3]  # no stripes yet: depth from the counts
        row[7] = int(row[7])
        enqueued, finished = self.totals.of(qid)
        row[9] += enqueued
        row[10] += finished
        return QueueStats(*row)

    # -- totals (statistics) ----------------------------------------------------------

    def _tally(self, qid: int, enqueued: int, finished: int) -> None:
        # After the commit, so a rolled-back operation is not counted.
        if self.totals.add(qid, enqueued, finished):
            self._totals_due()

    def _totals_due(self) -> None:
        """A totals write is due: write them now unless inside a transaction."""
        if self.conns.get().info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
            try:
                self.flush_totals()
            except LiteqError:
                pass  # statistics only; kept for the next flush

    def flush_totals(self) -> None:
        """Write this process's put/ack totals now (one statement); kept on failure."""
        pending = self.totals.take()
        if not pending:
            return
        try:
            self.conns.statement(self.qs.totals, (
                list(pending), [e for e, _ in pending.values()], [f for _, f in pending.values()],
                int(self.clock() // 60)
            ))
        except BaseException:
            self.totals.give_back(pending)
            raise


def _options(values: dict[str, Any]) -> dict[str, Any]:
    """Option values as PostgreSQL's columns take them (``count_depth`` is boolean)."""
    if "count_depth" in values:
        return {**values, "count_depth": bool(values["count_depth"])}
    return values


def _check_columns(updates: dict[str, Any]) -> None:
    unknown = set(updates) - OPTION_COLUMNS
    if unknown:
        raise InvalidArgument(f"not queue options: {', '.join(sorted(unknown))}")
