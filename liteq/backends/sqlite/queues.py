"""Queue rows, putting messages (dedup keys, back pressure), and administration:
redrive, cancel, purge, prune, peek, stats."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import apsw

from ...errors import (
    InvalidArgument,
    LiteqError,
    QueueFull,
)
from ...options import default_columns
from ...validate import MAX_EXTEND
from ..records import MessageRecord, NewRow, QueueRecord, QueueStats
from .base import StoreBase
from .schema import DELAYED, DONE, READY
from .sql import (
    SQL_CANCEL,
    SQL_DEAD_IDS,
    SQL_DEPTH,
    SQL_FIND_KEY,
    SQL_FINISHED_ROW,
    SQL_INSERT,
    SQL_INSERT_UNCOUNTED,
    SQL_INSERT_UNCOUNTED_MANY,
    SQL_MESSAGE,
    SQL_PEEK,
    SQL_PEEK_ALL,
    SQL_PRUNE,
    SQL_PURGE_ALL,
    SQL_PURGE_STATE,
    SQL_QUEUE_BY_ID,
    SQL_QUEUE_BY_NAME,
    SQL_QUEUE_DELETE,
    SQL_QUEUE_INSERT,
    SQL_QUEUE_NAMES,
    SQL_RECOUNT,
    SQL_RELEASE,
    SQL_RESERVE,
    SQL_RESERVE_FORCE,
    SQL_REVIVE,
    SQL_STATS,
    SQL_SUBS_BUMP,
    SQL_UNFINISHED,
)
from .workflow_sql import SQL_WF_PURGING


class QueueVerbs(StoreBase):
    """Queues and what happens to messages outside a lease."""

    # -- queues ---------------------------------------------------------------------

    def queue_row(self, name: str) -> QueueRecord | None:
        with self.read() as cur:
            rows = cur.execute(SQL_QUEUE_BY_NAME, (name,)).fetchall()
        return QueueRecord._make(rows[0]) if rows else None

    def queue_row_by_id(self, qid: int) -> QueueRecord | None:
        with self.read() as cur:
            rows = cur.execute(SQL_QUEUE_BY_ID, (qid,)).fetchall()
        return QueueRecord._make(rows[0]) if rows else None

    def ensure_queue(
        self, name: str, defaults: dict[str, Any], updates: dict[str, Any]
    ) -> QueueRecord:
        """Create queue *name* with *defaults* if missing, then apply *updates*."""
        row = self.queue_row(name)
        if row is not None and not updates:
            return row
        with self.write() as cur:
            self._create_queue(cur, name, defaults)
            if updates:
                sets = ", ".join(f"{col} = :{col}" for col in updates)
                cur.execute(f"UPDATE queues SET {sets} WHERE name = :name", {**updates, "name": name})
            row = QueueRecord._make(cur.execute(SQL_QUEUE_BY_NAME, (name,)).fetchall()[0])
            if "max_depth" in updates or "count_depth" in updates:
                cur.execute(SQL_RECOUNT, {"qid": row[0]})
        return row

    def create_queue(self, name: str, options: dict[str, Any]) -> QueueRecord:
        """Create queue *name* with *options* (full column values), or raise
        InvalidArgument if it exists: one transaction, so two creators cannot race."""
        with self.write() as cur:
            if cur.execute("SELECT 1 FROM queues WHERE name = ?", (name,)).fetchall():
                raise InvalidArgument(f"queue {name!r} already exists")
            qid = self._create_queue(cur, name, options)
            if options.get("max_depth") is not None or options.get("count_depth"):
                cur.execute(SQL_RECOUNT, {"qid": qid})
            return QueueRecord._make(cur.execute(SQL_QUEUE_BY_ID, (qid,)).fetchall()[0])

    def _create_queue(self, cur: Any, name: str, options: dict[str, Any]) -> int:
        cur.execute(SQL_QUEUE_INSERT, {**options, "name": name, "now": self.clock()})
        return int(cur.execute("SELECT id FROM queues WHERE name = ?", (name,)).fetchall()[0][0])

    def queue_names(self) -> list[str]:
        with self.read() as cur:
            return [r[0] for r in cur.execute(SQL_QUEUE_NAMES).fetchall()]

    def delete_queue(self, qid: int) -> None:
        with self.write() as cur:
            cur.execute(SQL_WF_PURGING, {"qid": qid, "state": None})  # cancels dependents
            cur.execute(SQL_PURGE_ALL, {"qid": qid})
            topics = [topic for (topic,) in cur.execute(SQL_QUEUE_DELETE, (qid,))]
            if topics and topics[0] is not None:
                # A publisher caches its routes until subs_version moves: without the
                # bump it would keep routing to the deleted queue's id.
                cur.execute(SQL_SUBS_BUMP)

    # -- put ------------------------------------------------------------------------

    def put(
        self,
        qid: int,
        rows: Sequence[tuple[int, bytes | None, float, bytes, bytes | None, str | None]],
        *,
        force: bool = False,
    ) -> list[int]:
        """Insert messages ``(priority, rank, run_at, payload, headers, key)`` in one transaction.

        A row whose key matches an unfinished message (or an earlier row of the
        same batch) gets that message's id and is not inserted. Raises QueueFull,
        writing nothing, if the new rows do not fit under max_depth.
        """
        if len(rows) > 1 and not force:
            ids = self._put_plain_batch(qid, rows)
            if ids is not None:
                return ids
        return self._put_locked(qid, rows, force)

    def _put_locked(self, qid: int, rows: Sequence[NewRow], force: bool) -> list[int]:
        """:meth:`put`'s full path: keys, the depth counter, delayed rows."""
        with self.write() as cur:
            now = self.clock()  # after BEGIN IMMEDIATE: a wait for the lock must not age it
            ids, added = self._put(cur, qid, rows, now, force)
        self._tally(qid, added, 0)
        return ids

    def put_ready(self, qid: int, priority: int, payload: bytes) -> int:
        """The common put: one message due now, with no key, headers or rank.

        One autocommit statement while the queue keeps no depth counter
        (``SQL_INSERT_UNCOUNTED``), else the full path of :meth:`put`.
        """
        group = self.group
        if group is not None and not self.conn().in_transaction:
            return group.put_ready(qid, priority, payload)  # shares a commit: group.py
        # Read before the statement takes the lock; harmless for a put (the message is
        # due at once either way), unlike a lease deadline.
        now = self.clock()
        mid = self.insert(SQL_INSERT_UNCOUNTED, (qid, priority, now, payload))
        if mid is None:
            return self.put(qid, [(priority, None, now, payload, None, None)])[0]
        if self.totals.put_one(qid):  # _tally, inlined
            self._totals_due()
        return mid

    def put_ready_group(self, puts: Sequence[tuple[int, int, bytes]]) -> list[int | LiteqError]:
        """Write the :meth:`put_ready` calls ``(qid, priority, payload)`` that a group
        commit gathered (``group.py``) in one transaction; each one's id, or the error
        that refused it alone (a full queue, a deleted queue: nothing of it written).
        An error of the transaction itself is raised: none of them was written."""
        out: list[int | LiteqError] = []
        with self.write() as cur:
            now = self.clock()  # after BEGIN IMMEDIATE, as in put()
            conn = cur.connection
            for qid, priority, payload in puts:
                cur.execute(SQL_INSERT_UNCOUNTED, (qid, priority, now, payload))
                if conn.changes():
                    out.append(conn.last_insert_rowid())
                    continue
                try:  # a counted queue: the full path, which writes nothing if it refuses
                    out.append(self._put(cur, qid, [(priority, None, now, payload, None, None)],
                                         now, False)[0][0])
                except LiteqError as exc:
                    out.append(exc)
        for (qid, _, _), outcome in zip(puts, out, strict=True):
            if not isinstance(outcome, LiteqError):
                self._tally(qid, 1, 0)
        return out

    def put_ready_many(self, qid: int, priority: int, payloads: Sequence[bytes]) -> list[int]:
        # Queue.put_many's common batch, handed over as bare payloads: no row tuples
        # to build and check again (~1,250 instructions a message of ~17k, the
        # put_batch loop of bench/instructions.py).
        now = self.clock()  # before the statement: harmless for due-now rows (put_ready)
        ids = self._insert_uncounted(qid, priority, now, now, payloads)
        if ids is None:  # a counted queue (or gone): the full path
            ids = self._put_locked(qid, [(priority, None, now, p, None, None) for p in payloads],
                                   False)
        return ids

    def _put_plain_batch(
        self,
        qid: int,
        rows: Sequence[tuple[int, bytes | None, float, bytes, bytes | None, str | None]],
    ) -> list[int] | None:
        """The common batch (one priority, due now, no key, headers or rank) into a
        queue that keeps no depth counter, as one autocommit statement
        (``SQL_INSERT_UNCOUNTED_MANY``); None if *rows* or the queue are not that."""
        priority, _, run_at, _, _, _ = rows[0]
        now = self.clock()  # before the statement: harmless for due-now rows (put_ready)
        if run_at > now:
            return None
        for p, rank, r, _, headers, key in rows:
            if key is not None or headers is not None or rank is not None or p != priority or r != run_at:
                return None
        return self._insert_uncounted(qid, priority, run_at, now, [row[3] for row in rows])

    def _insert_uncounted(self, qid: int, priority: int, run_at: float, now: float,
                          payloads: Sequence[bytes]) -> list[int] | None:
        """*payloads* as one autocommit statement (``SQL_INSERT_UNCOUNTED_MANY``); their
        ids, or None if the queue keeps a depth counter (or is gone): nothing written."""
        n = self.change(SQL_INSERT_UNCOUNTED_MANY,
                        (qid, priority, run_at, now, apsw.carray(tuple(payloads))))
        if not n:
            return None
        last: int = self.conn().last_insert_rowid()
        self._tally(qid, n, 0)
        return list(range(last - n + 1, last + 1))

    def _put(
        self,
        cur: Any,
        qid: int,
        rows: Sequence[tuple[int, bytes | None, float, bytes, bytes | None, str | None]],
        now: float,
        force: bool,
    ) -> tuple[list[int], int]:
        ids: list[int | None] = [None] * len(rows)
        new: list[tuple[Any, ...]] = []
        new_index: list[int] = []
        seen: dict[str, int] = {}
        for i, (priority, rank, run_at, payload, headers, key) in enumerate(rows):
            if key is not None:
                if key in seen:
                    ids[i] = -1 - seen[key]  # resolved after insert
                    continue
                found = cur.execute(SQL_FIND_KEY, (qid, key)).fetchall()
                if found:
                    ids[i] = found[0][0]
                    continue
                seen[key] = len(new)
            state = DELAYED if run_at > now else READY
            new.append((qid, state, priority, rank, run_at, payload, headers, key, now))
            new_index.append(i)
        if new:
            self._reserve(cur, qid, len(new), force)
            if len(new) == 1:
                cur.execute(SQL_INSERT, new[0])
            else:
                cur.executemany(SQL_INSERT, new)
            # max(id) + 1 for each row under the single write lock: the ids are consecutive.
            last = cur.connection.last_insert_rowid()
            first = last - len(new) + 1
            for k, i in enumerate(new_index):
                ids[i] = first + k
        out: list[int] = []
        for value in ids:
            assert value is not None
            out.append(first + (-1 - value) if value < 0 else value)
        return out, len(new)

    def _reserve(self, cur: Any, qid: int, n: int, force: bool) -> None:
        if force:
            cur.execute(SQL_RESERVE_FORCE, {"n": n, "qid": qid})
            return
        if cur.execute(SQL_RESERVE, {"n": n, "qid": qid}).fetchall():
            return
        row = cur.execute(SQL_DEPTH, (qid,)).fetchall()
        if not row:
            raise LiteqError(f"queue id {qid} no longer exists (it was deleted)")
        depth, max_depth, name, _ = row[0]
        if max_depth is None:
            return  # unbounded and not counted: no counter to keep
        raise QueueFull(name, depth, max_depth, n)

    def room(self, qid: int) -> tuple[int, int | None]:
        """``(unfinished messages, max_depth)`` of a queue, read without a write lock:
        the counter for a bounded queue, an index count for an unbounded one."""
        with self.read() as cur:
            row = cur.execute(SQL_DEPTH, (qid,)).fetchall()
            if not row:
                raise LiteqError(f"queue id {qid} no longer exists (it was deleted)")
            depth, max_depth, _, counted = row[0]
            if max_depth is None and not counted:
                depth = cur.execute(SQL_UNFINISHED, {"qid": qid}).fetchall()[0][0]
        return int(depth), max_depth

    # -- administration -------------------------------------------------------------

    def redrive(self, qid: int, limit: int | None) -> int:
        """Make dead messages of *qid* ready again (attempts reset); return how many."""
        with self.write() as cur:
            rows = cur.execute(
                SQL_DEAD_IDS, {"qid": qid, "limit": -1 if limit is None else limit}
            ).fetchall()
            self._revive(cur, rows)
        return len(rows)

    def _revive(self, cur: Any, rows: list[Any]) -> None:
        # One row at a time, so that two revived messages with one key see each other.
        now = self.clock()
        for mid, qid, key in rows:
            cur.execute(SQL_REVIVE, {"id": mid, "qid": qid, "key": key, "now": now})
        if rows:
            cur.execute(SQL_RESERVE_FORCE, {"n": len(rows), "qid": rows[0][1]})

    def cancel(self, mid: int) -> bool:
        """Cancel a ready or delayed message; False if it is leased or finished."""
        with self.write() as cur:
            rows = cur.execute(SQL_CANCEL, {"id": mid, "now": self.clock()}).fetchall()
            if rows:
                cur.execute(SQL_RELEASE, {"n": 1, "qid": rows[0][0]})
        return bool(rows)

    def retry_finished(self, mid: int) -> bool:
        """Make a dead or cancelled message ready again; False if it is neither."""
        with self.write() as cur:
            rows = cur.execute(SQL_FINISHED_ROW, (mid,)).fetchall()
            self._revive(cur, rows)
        return bool(rows)

    def purge(self, qid: int, state: int | None) -> int:
        """Delete messages of *qid* (all, or in one state); return how many."""
        with self.write() as cur:
            conn = cur.connection
            cur.execute(SQL_WF_PURGING, {"qid": qid, "state": state})  # cancels dependents
            if state is None:
                unfinished = cur.execute("SELECT depth FROM queues WHERE id = ?", (qid,)).fetchall()[0][0]
                cur.execute(SQL_PURGE_ALL, {"qid": qid})
                n = conn.changes()
                cur.execute("UPDATE queues SET depth = 0 WHERE id = ?", (qid,))
                del unfinished
            else:
                cur.execute(SQL_PURGE_STATE, {"qid": qid, "state": state})
                n = conn.changes()
                if state < DONE and n:
                    cur.execute(SQL_RELEASE, {"n": n, "qid": qid})
        return n

    def prune(self, qid: int, before: float) -> int:
        """Delete done and cancelled messages of *qid* finished before *before*."""
        with self.write() as cur:
            cur.execute(SQL_PRUNE, {"qid": qid, "before": before})
            return int(cur.connection.changes())

    def message(self, mid: int) -> MessageRecord | None:
        with self.read() as cur:
            rows = cur.execute(SQL_MESSAGE, (mid,)).fetchall()
        return MessageRecord._make(rows[0]) if rows else None

    def peek(self, qid: int, state: int | None, n: int) -> list[MessageRecord]:
        with self.read() as cur:
            if state is None:
                rows = cur.execute(SQL_PEEK_ALL, {"qid": qid, "n": n}).fetchall()
            else:
                rows = cur.execute(SQL_PEEK, {"qid": qid, "state": state, "n": n}).fetchall()
        return [MessageRecord._make(r) for r in rows]

    def stats(self, qid: int) -> QueueStats:
        """Exact counts per state (``state >= DONE AND state = X`` lets the partial
        index msg_finished serve the finished states), depth, max_depth, totals."""
        with self.read() as cur:
            rows = cur.execute(SQL_STATS, {"qid": qid, "now": self.clock(),
                                           "max_extend": MAX_EXTEND}).fetchall()
        if not rows:
            raise LiteqError(f"queue id {qid} no longer exists (it was deleted)")
        row = list(rows[0])
        if row[8] is None and not row[11]:
            row[7] = row[0] + row[2] + row[3]  # no counter kept: depth from the counts
        del row[11]  # count_depth; expired leases are now row[11]
        enqueued, finished = self.totals.of(qid)
        row[9] += enqueued
        row[10] += finished
        return QueueStats(*row)


def default_queue_options() -> dict[str, Any]:
    """Column values for a queue created implicitly (e.g. as a dead-letter target):
    the declared defaults (:func:`liteq.options.default_columns`)."""
    return default_columns()
