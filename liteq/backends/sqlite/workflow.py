"""Workflows on SQLite: inserting a workflow's edges and reading them back. What settles
them is the schema's triggers (``workflow_sql.py``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ...errors import LiteqError
from ..workflow import WAITING_AT, WfEdge, WfNode
from .base import StoreBase
from .schema import CANCELLED, DEAD, DONE
from .sql import IDS_PER_STATEMENT
from .workflow_sql import (
    SQL_WF_COUNT,
    SQL_WF_COUNT_SOME,
    SQL_WF_EDGE_SELECT,
    SQL_WF_KEEP_ONE,
    SQL_WF_RELEASE,
    sql_wf_done,
    sql_wf_keep,
)

__all__ = ["WorkflowVerbs", "among", "settle_done"]

SQL_WF_JOB = "INSERT INTO wf_jobs (id, workflow, unmet, delay) VALUES (?, ?, ?, ?)"
SQL_WF_EDGE = "INSERT INTO wf_edges (parent, child, pos, allow_failure) VALUES (?, ?, ?, ?)"
SQL_WF_FLAG = "UPDATE messages SET wf = 1 WHERE id = ? AND wf IS NULL"
SQL_WF_HOLD = f"UPDATE messages SET state = 1, run_at = {WAITING_AT!r} WHERE id = ?"
SQL_WF_PARENT_MESSAGE = "SELECT state, origin FROM messages WHERE id = ? AND qid <> 0"
SQL_WF_PARENT_RESULT = "SELECT state, value, error FROM results WHERE id = ?"
# Settling one new edge at once (its parent had already ended): a failure fires
# wf_block or wf_settle (it names error); a success is counted by wf_link (_count_done).
SQL_WF_SETTLE = """
UPDATE wf_edges SET value = ?, error = ?, outcome = ? WHERE parent = ? AND child = ?
"""
# Which of these jobs have dependents, and their children. It runs at every worker's
# ack, plain ones included: it reads the primary key's index alone (a join with the
# counters opened three tables at every ack, DISTINCT built a temporary index) and is
# short (apsw hashes the text at every execution: a statement of 250 characters cost a
# plain one-by-one ack 1.3k instructions more). Measured with bench_chord.py.
SQL_WF_AMONG = "SELECT parent, child FROM wf_edges WHERE parent IN ({})"
# One job's edges, with their rowids (wf_done_one), and the success of one edge by it.
_EDGES_OF = "SELECT rowid, child FROM wf_edges WHERE parent = ?"
_DONE_AT = "UPDATE wf_edges SET value = ?2, outcome = 'done' WHERE rowid = ?1 AND outcome IS NULL"
# Which parents of an ack are still there, done: retained acks (wf_end_done settled
# their edges already).
SQL_WF_RETAINED = f"SELECT id FROM messages WHERE id IN ({{}}) AND state = {DONE}"
# A parent whose edges a retained ack already settled (wf_end_done): only its result.
SQL_WF_DONE_VALUE = "UPDATE wf_edges SET value = ? WHERE parent = ? AND outcome = 'done'"
# The success of one parent acked by a DELETE.
SQL_WF_DONE_ONE = sql_wf_done(1)
SQL_WF_PARENTS = SQL_WF_EDGE_SELECT + "WHERE e.child = ? ORDER BY e.pos"
SQL_WF_CHILDREN = SQL_WF_EDGE_SELECT + "WHERE e.parent = ? ORDER BY e.child"
SQL_WF_WORKFLOW = "SELECT workflow FROM wf_jobs WHERE id = ?"
SQL_WF_MEMBERS = "SELECT id FROM wf_jobs WHERE workflow = ? ORDER BY id"
# Jobs gone altogether (at most 1000 per statement, oldest first).
SQL_WF_GONE = """
SELECT j.id FROM wf_jobs j
WHERE NOT EXISTS (SELECT 1 FROM messages m WHERE m.id = j.id AND m.qid <> 0)
  AND NOT EXISTS (SELECT 1 FROM results r WHERE r.id = j.id)
ORDER BY j.id LIMIT 1000
"""
SQL_WF_FORGET_EDGES = "DELETE FROM wf_edges WHERE child = ?"
SQL_WF_FORGET_JOB = "DELETE FROM wf_jobs WHERE id = ?"

_OUTCOMES = {DONE: "done", DEAD: "failed", CANCELLED: "cancelled"}


def _edge(row: Sequence[Any]) -> WfEdge:
    return WfEdge(row[0], row[1], row[2], bool(row[3]), row[4], row[5], row[6])


def _count_done(cur: Any, children: dict[int, int]) -> None:
    """Each child ``{id: parents that just succeeded}`` has that many parents fewer to
    wait for; the last one releases it. In child id order (one writer on SQLite; the
    same order as PostgreSQL's). The common case, not the last parent, is one
    statement; the last one takes two more (the count, the release)."""
    for child in sorted(children) if len(children) > 1 else children:
        _count_down(cur, child, children[child])


def _count_down(cur: Any, child: int, n: int) -> None:
    """*child* has *n* parents fewer to wait for; released if none is left."""
    cur.execute(SQL_WF_COUNT_SOME, (n, child))
    if not cur.connection.changes():
        cur.execute(SQL_WF_COUNT, (n, child))
        cur.execute(SQL_WF_RELEASE, {"id": child})


def among(cur: Any, ids: Sequence[int]) -> dict[int, list[int]]:
    found: dict[int, list[int]] = {}
    for i in range(0, len(ids), IDS_PER_STATEMENT):
        part = ids[i:i + IDS_PER_STATEMENT]
        for parent, child in cur.execute(SQL_WF_AMONG.format(",".join("?" * len(part))), part):
            found.setdefault(parent, []).append(child)
    return found


def _keep(cur: Any, items: Sequence[tuple[int, bytes | None]],
          children: Mapping[int, Sequence[int]]) -> list[tuple[int, bytes | None]]:
    """The parents among *items* acked by a DELETE keep their success in the results
    rows this transaction wrote (WFKEEP_SCHEMA) and their children are counted; the
    others (retained acks: their rows stay, done) are returned, to settle on their
    edges."""
    settle = [(mid, value) for mid, value in items if children.get(mid)]
    kept = 0
    for i in range(0, len(settle), IDS_PER_STATEMENT):
        part = settle[i:i + IDS_PER_STATEMENT]
        cur.execute(sql_wf_keep(len(part)), [x for mid, v in part for x in (mid, _kept(v))])
        kept += cur.connection.changes()
    retained: set[int] = set()
    if kept < len(settle):  # rare: the queue keeps finished jobs
        for i in range(0, len(settle), IDS_PER_STATEMENT):
            ids = [mid for mid, _v in settle[i:i + IDS_PER_STATEMENT]]
            retained.update(r[0] for r in cur.execute(
                SQL_WF_RETAINED.format(",".join("?" * len(ids))), ids))
        if kept != len(settle) - len(retained):
            raise LiteqError("workflow: a parent acked by the worker has no results row "
                             "in its ack's transaction")  # the caller's contract broken
    counts: dict[int, int] = {}
    for mid, _v in settle:
        if mid not in retained:
            for child in children[mid]:
                counts[child] = counts.get(child, 0) + 1
    _count_done(cur, counts)
    return [(mid, value) for mid, value in settle if mid in retained]


def _kept(value: bytes | None) -> bytes:
    """A result as ``results.wf_value`` keeps it: X'' for none (set means succeeded)."""
    return b"" if value is None else value


def settle_done(cur: Any, items: Sequence[tuple[int, bytes | None]],
                children: Mapping[int, Sequence[int]], results_rows: bool = False) -> None:
    """The success of the parents *items* ``(id, CBOR result)``, acked in this
    transaction, with their *children* (:func:`among`): kept in their results rows when
    the transaction wrote them (*results_rows*), else on their edges."""
    if results_rows:
        items = _keep(cur, items, children)
        if not items:
            return
    changes = cur.connection.changes
    if len(items) == 1:
        # One job (a worker acking one by one): no lists to build. Python's share of
        # a chord member's ack was ~23k instructions of ~180k here (list and generator
        # comprehensions, slices; bench_chord.py --style one --instructions).
        mid, value = items[0]
        kids = children.get(mid)
        if not kids:
            return
        cur.execute(SQL_WF_DONE_ONE, (mid, value))
        if changes() != len(kids):
            _settled_fewer(cur, [(mid, value)], [(mid, child) for child in kids])
        elif len(kids) > 1:
            _count_done(cur, dict.fromkeys(kids, 1))
        else:
            _count_down(cur, kids[0], 1)
        return
    settle = [(mid, value) for mid, value in items if children.get(mid)]
    edges = [(mid, child) for mid, _v in settle for child in children[mid]]
    settled = 0
    for i in range(0, len(settle), IDS_PER_STATEMENT):
        part = settle[i:i + IDS_PER_STATEMENT]
        cur.execute(sql_wf_done(len(part)), [x for pair in part for x in pair])
        settled += changes()
    if settled < len(edges):
        _settled_fewer(cur, settle, edges)
        return
    counts: dict[int, int] = {}
    for _mid, child in edges:
        counts[child] = counts.get(child, 0) + 1
    _count_done(cur, counts)


def _settled_fewer(cur: Any, settle: Sequence[tuple[int, bytes | None]],
                   edges: list[tuple[int, int]]) -> None:
    """The settling statement changed fewer edges than the parents have: retained acks
    among them (their rows stay, done): wf_end_done settled all their edges already,
    in this transaction; a parent acked by a DELETE has all its edges still to settle.
    Rare: the worker acks by deleting unless the queue keeps finished jobs."""
    retained: set[int] = set()
    for i in range(0, len(settle), IDS_PER_STATEMENT):
        ids = [mid for mid, _v in settle[i:i + IDS_PER_STATEMENT]]
        retained.update(r[0] for r in cur.execute(
            SQL_WF_RETAINED.format(",".join("?" * len(ids))), ids))
    cur.executemany(SQL_WF_DONE_VALUE, [(v, mid) for mid, v in settle if mid in retained])
    counts: dict[int, int] = {}
    for mid, child in edges:
        if mid not in retained:
            counts[child] = counts.get(child, 0) + 1
    _count_done(cur, counts)


class WorkflowVerbs(StoreBase):
    """The workflow verbs (see :class:`liteq.backends.workflow.WorkflowVerbs`)."""

    def wf_link(self, nodes: Sequence[WfNode]) -> list[int]:
        new = {n.id for n in nodes}
        with self.write() as cur:
            ended: dict[int, tuple[str, bytes | None, str | None]] = {}
            missing: list[int] = []
            for parent in dict.fromkeys(p for n in nodes for p, _ in n.parents if p not in new):
                found = cur.execute(SQL_WF_PARENT_MESSAGE, (parent,)).fetchall()
                res = cur.execute(SQL_WF_PARENT_RESULT, (parent,)).fetchall()
                if found:
                    state, origin = found[0]
                    if state in _OUTCOMES or origin is not None:
                        outcome = _OUTCOMES.get(state, "failed")
                        ended[parent] = (outcome, res[0][1] if res else None,
                                         res[0][2] if res else None)
                elif res:
                    ended[parent] = (_OUTCOMES[res[0][0]], res[0][1], res[0][2])
                else:
                    missing.append(parent)
            if missing:
                return missing
            cur.executemany(SQL_WF_JOB, [(n.id, n.workflow, len(n.parents), float(n.delay))
                                         for n in nodes])
            edges = [(p, n.id, i, int(allow)) for n in nodes
                     for i, (p, allow) in enumerate(n.parents)]
            if not edges:
                return []
            cur.executemany(SQL_WF_EDGE, edges)
            cur.executemany(SQL_WF_FLAG, [(p,) for p in dict.fromkeys(e[0] for e in edges)])
            cur.executemany(SQL_WF_HOLD, [(n.id,) for n in nodes if n.parents])
            succeeded: dict[int, int] = {}
            for parent, child, _pos, _allow in edges:
                if parent in ended:
                    outcome, value, error = ended[parent]
                    cur.execute(SQL_WF_SETTLE, (value if outcome == "done" else None, error,
                                                outcome, parent, child))
                    if outcome == "done":
                        succeeded[child] = succeeded.get(child, 0) + 1
            _count_done(cur, succeeded)
        return []

    def wf_parents_among(self, ids: Sequence[int]) -> dict[int, list[int]]:
        with self.read() as cur:
            return among(cur, ids)

    def wf_done_one(self, mid: int, value: Callable[[], bytes | None],
                    results_row: bool = False) -> None:
        conn, cur = self._handles()
        if not conn.in_transaction or self._local.broken is not None:
            super().wf_done_one(mid, value, results_row)  # type: ignore[misc]  # Backend, after this mixin
            return
        # In the ack's transaction (the worker acking one job): the lookup on this
        # thread's cursor, with no read() of its own (a generator's context manager and
        # a new cursor: ~2k instructions of a plain ack's ~133k, bench_chord.py --style
        # one --instructions); the result encoded only for a parent.
        edges = cur.execute(_EDGES_OF, (mid,)).fetchall()
        if not edges:
            return
        result = value()
        changes = cur.connection.changes
        if results_row:  # the worker's: its success kept in the results row it wrote
            cur.execute(SQL_WF_KEEP_ONE, (mid, _kept(result)))
            if changes():
                if len(edges) == 1:
                    _count_down(cur, edges[0][1], 1)
                else:
                    _count_done(cur, {kid: 1 for _row, kid in edges})
                return
            # a retained ack (its row stays): on its edges, as without results rows
        if len(edges) == 1:  # a chord member, a chain's step: the edge by its rowid
            (row, kid), = edges
            cur.execute(_DONE_AT, (row, result))
            if not changes():  # settled already: a retained ack (wf_end_done)
                _settled_fewer(cur, [(mid, result)], [(mid, kid)])
                return
            _count_down(cur, kid, 1)
            return
        settle_done(cur, [(mid, result)], {mid: [kid for _row, kid in edges]})

    def wf_done(self, items: Sequence[tuple[int, bytes | None]],
                children: Mapping[int, Sequence[int]], results_rows: bool = False) -> None:
        # Set-wise (no trigger per edge, see WFACK_SCHEMA): one statement settles the
        # edges, then one counter update per child (and a release when it reaches 0).
        conn, cur = self._handles()
        if conn.in_transaction and self._local.broken is None:
            # In the ack's transaction (the worker's case), where *children* was read: no
            # other writer since, and no savepoint of its own (a SAVEPOINT and a RELEASE
            # less per ack). A statement that fails raises through that transaction,
            # which rolls back with the ack.
            settle_done(cur, items, children, results_rows)
            return
        with self.write() as cur:  # alone: read them again under the write lock
            settle_done(cur, items, among(cur, [mid for mid, _v in items]), results_rows)

    def wf_edges(self, mid: int) -> tuple[list[WfEdge], list[WfEdge]]:
        with self.read() as cur:
            parents = [_edge(r) for r in cur.execute(SQL_WF_PARENTS, (mid,)).fetchall()]
            children = [_edge(r) for r in cur.execute(SQL_WF_CHILDREN, (mid,)).fetchall()]
        return parents, children

    def wf_workflow(self, mid: int) -> int | None:
        with self.read() as cur:
            rows = cur.execute(SQL_WF_WORKFLOW, (mid,)).fetchall()
        return int(rows[0][0]) if rows else None

    def wf_members(self, workflow: int) -> list[int]:
        with self.read() as cur:
            return [int(r[0]) for r in cur.execute(SQL_WF_MEMBERS, (workflow,)).fetchall()]

    def wf_prune(self) -> int:
        total = 0
        while True:
            with self.write() as cur:
                gone = cur.execute(SQL_WF_GONE).fetchall()
                cur.executemany(SQL_WF_FORGET_EDGES, gone)
                cur.executemany(SQL_WF_FORGET_JOB, gone)
            total += len(gone)
            if len(gone) < 1000:
                return total
