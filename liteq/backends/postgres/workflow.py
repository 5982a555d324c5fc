"""Workflows on PostgreSQL: inserting a workflow's edges and reading them back (the
same verbs as ``../sqlite/workflow.py``). What settles the edges is the schema's
triggers (``workflow_sql.py``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import cached_property
from typing import Any, NamedTuple

from ..records import State
from ..workflow import WAITING_AT, WfEdge, WfNode
from .connection import Connections
from .schema import qualify
from .workflow_at_sql import (
    SQL_WF_ACK1,
    SQL_WF_ACK_MANY,
    SQL_WF_AMONG_AT,
    SQL_WF_DONE1_AT,
    SQL_WF_DONE_AT,
)
from .workflow_settle_sql import SQL_WF_APPLY
from .workflow_sql import SQL_WF_COUNT, SQL_WF_DONE

__all__ = ["WorkflowVerbs"]

_EDGE_COLUMNS = "parent, child, pos, allow_failure, outcome, value, error"
SQL_WF_JOBS = """
INSERT INTO {s}.wf_jobs (id, workflow, unmet, delay)
SELECT * FROM unnest(%b::bigint[], %b::bigint[], %b::bigint[], %b::double precision[])
"""
SQL_WF_EDGES = """
INSERT INTO {s}.wf_edges (parent, child, pos, allow_failure)
SELECT * FROM unnest(%b::bigint[], %b::bigint[], %b::bigint[], %b::boolean[])
"""
# Parents first, then children, each in id order: the row lock order of every writer.
SQL_WF_FLAG = "UPDATE {s}.messages SET wf = true WHERE id = ANY(%s) AND wf IS NULL"
SQL_WF_HOLD = f"UPDATE {{s}}.messages SET state = 1, run_at = {WAITING_AT!r} WHERE id = ANY(%s)"
# The parents that exist, locked before their state is read (in id order: parents first,
# then children, is every writer's order): a parent whose ack is in flight is waited for,
# and read as it ended, not as the running job the ack's commit would leave behind it (a
# child linked to it then would wait for an ending already past: tests/test_workflow_ack).
SQL_WF_LOCK = "SELECT id FROM {s}.messages WHERE id = ANY(%s) ORDER BY id FOR NO KEY UPDATE"
SQL_WF_PARENT = """
SELECT m.state, m.origin, r.state, r.value, r.error
FROM (SELECT %s::bigint AS id) AS p
LEFT JOIN {s}.messages m ON m.id = p.id LEFT JOIN {s}.results r ON r.id = p.id
"""
SQL_WF_SETTLE = """
UPDATE {s}.wf_edges SET value = %s, error = %s, outcome = %s WHERE parent = %s AND child = %s
"""
SQL_WF_PARENTS = f"SELECT {_EDGE_COLUMNS} FROM {{s}}.wf_edges WHERE child = %s ORDER BY pos"
SQL_WF_CHILDREN = f"SELECT {_EDGE_COLUMNS} FROM {{s}}.wf_edges WHERE parent = %s ORDER BY child"
SQL_WF_WORKFLOW = "SELECT workflow FROM {s}.wf_jobs WHERE id = %s"
SQL_WF_MEMBERS = "SELECT id FROM {s}.wf_jobs WHERE workflow = %s ORDER BY id"
# Jobs gone altogether, at most 1000 per statement, oldest first.
SQL_WF_PRUNE = """
WITH gone AS MATERIALIZED (
    SELECT j.id FROM {s}.wf_jobs j
    WHERE NOT EXISTS (SELECT 1 FROM {s}.messages m WHERE m.id = j.id)
      AND NOT EXISTS (SELECT 1 FROM {s}.results r WHERE r.id = j.id)
    ORDER BY j.id LIMIT 1000
), edges AS (
    DELETE FROM {s}.wf_edges WHERE child IN (SELECT id FROM gone)
)
DELETE FROM {s}.wf_jobs WHERE id IN (SELECT id FROM gone) RETURNING 1
"""

_OUTCOMES = {State.DONE: "done", State.DEAD: "failed", State.CANCELLED: "cancelled"}


#: The most result bytes the worker's ack sends with its lookup (wf_record, wf_done_one):
#: the plain jobs' results go for nothing, and large ones would cost more to send than
#: the round trip that the single call saves.
_SEND_UP_TO = 64 * 1024


def _as_is(value: Any) -> Any:
    return value


class _Among(dict[int, list[int]]):
    """What ``wf_parents_among`` found: each parent's children and, in ``at``, the rows
    (ctid) of those edges in the same order, for the ``wf_done`` of the same
    transaction to settle them without looking them up again (``workflow_at_sql.py``)."""

    __slots__ = ("at",)

    def __init__(self) -> None:
        super().__init__()
        self.at: dict[int, list[str]] = {}


class _Statements(NamedTuple):
    lock: str
    jobs: str
    edges: str
    flag: str
    hold: str
    parent: str
    settle: str
    among: str
    done: str
    ack1: str
    ack_many: str
    done_at: str
    done1_at: str
    apply: str
    counted: str
    parents: str
    children: str
    workflow: str
    members: str
    prune: str


_SOURCES = _Statements(SQL_WF_LOCK, SQL_WF_JOBS, SQL_WF_EDGES, SQL_WF_FLAG, SQL_WF_HOLD, SQL_WF_PARENT,
                       SQL_WF_SETTLE, SQL_WF_AMONG_AT, SQL_WF_DONE, SQL_WF_ACK1, SQL_WF_ACK_MANY,
                       SQL_WF_DONE_AT, SQL_WF_DONE1_AT,
                       SQL_WF_APPLY, SQL_WF_COUNT, SQL_WF_PARENTS,
                       SQL_WF_CHILDREN, SQL_WF_WORKFLOW, SQL_WF_MEMBERS, SQL_WF_PRUNE)


def _edge(row: Sequence[Any]) -> WfEdge:
    value = bytes(row[5]) if row[5] is not None else None
    return WfEdge(int(row[0]), int(row[1]), int(row[2]), bool(row[3]), row[4], value, row[6])


class WorkflowVerbs:
    """The workflow verbs (a mixin of ``PostgresBackend``, before ``Backend``)."""

    conns: Connections
    schema: str

    @cached_property
    def _wf_sql(self) -> _Statements:
        return _Statements(*(qualify(sql, self.schema) for sql in _SOURCES))

    def wf_link(self, nodes: Sequence[WfNode]) -> list[int]:
        sql = self._wf_sql
        new = {n.id for n in nodes}
        with self.conns.tx() as cur:
            ended: dict[int, tuple[str, bytes | None, str | None]] = {}
            missing: list[int] = []
            known = list(dict.fromkeys(p for n in nodes for p, _ in n.parents if p not in new))
            if known:
                cur.execute(sql.lock, (sorted(known),))
            for parent in known:
                cur.execute(sql.parent, (parent,))
                row = cur.fetchone()
                assert row is not None  # one row per parent, found or not
                m_state, origin, r_state, value, error = row
                blob = bytes(value) if value is not None else None
                if m_state is not None:
                    if m_state in _OUTCOMES or origin is not None:
                        ended[parent] = (_OUTCOMES.get(m_state, "failed"), blob, error)
                elif r_state is not None:
                    ended[parent] = (_OUTCOMES[r_state], blob, error)
                else:
                    missing.append(parent)
            if missing:
                return missing
            cur.execute(sql.jobs, ([n.id for n in nodes], [n.workflow for n in nodes],
                                   [len(n.parents) for n in nodes],
                                   [float(n.delay) for n in nodes]))
            edges = [(p, n.id, i, bool(allow)) for n in nodes
                     for i, (p, allow) in enumerate(n.parents)]
            if not edges:
                return []
            cur.execute(sql.edges, [list(c) for c in zip(*edges, strict=True)])
            cur.execute(sql.flag, (sorted({e[0] for e in edges}),))
            cur.execute(sql.hold, (sorted(n.id for n in nodes if n.parents),))
            succeeded: dict[int, int] = {}
            failed: list[tuple[int, int, bool, str]] = []
            for parent, child, _pos, allow in edges:
                if parent in ended:
                    outcome, value, error = ended[parent]
                    cur.execute(sql.settle, (value if outcome == "done" else None, error,
                                             outcome, parent, child))
                    if outcome == "done":  # counted here
                        succeeded[child] = succeeded.get(child, 0) + 1
                    else:  # cancels the child, or counts it down if allow_failure
                        failed.append((parent, child, allow, outcome))
            if failed:
                cur.execute(sql.apply, [*(list(c) for c in zip(*failed, strict=True)),
                                        self._wf_channel])
            if succeeded:
                kids = sorted(succeeded)
                cur.execute(sql.counted, {"children": kids, "counts": [succeeded[k] for k in kids],
                                        "channel": self._wf_channel})
        return []

    def wf_parents_among(self, ids: Sequence[int]) -> dict[int, list[int]]:
        found = _Among()
        at = found.at
        for parent, child, row in self.conns.statement(self._wf_sql.among, (list(ids),)):
            if parent in found:
                found[parent].append(child)
                at[parent].append(row)
            else:
                found[parent] = [child]
                at[parent] = [row]
        return found

    def wf_done_one(self, mid: int, value: Callable[[], bytes | None],
                    results_row: bool = False) -> None:
        # *results_row* changes nothing here: the result goes on the edges (a member's
        # ack is within 1.3x of a plain one with them, bench/results/chord.md).
        if not self.conns.in_transaction():
            super().wf_done_one(mid, value, results_row)  # type: ignore[misc]  # Backend, after this mixin
            return
        # In the ack's transaction: the lookup and the settling in one round trip (a
        # job without dependents pays the lookup, as wf_parents_among's; its result
        # encoded for nothing, a cost of the client's). A result past _SEND_UP_TO: the
        # lookup first, sent only if the job has dependents (as wf_record).
        result = value()
        if result is not None and len(result) > _SEND_UP_TO:
            super().wf_done_one(mid, lambda: result, results_row)  # type: ignore[misc]
            return
        self.conns.joined(self._wf_sql.ack1, {
            "parent": mid, "value": result, "channel": self._wf_channel})

    def wf_record(self, done: Sequence[tuple[int, Any]], encode: Callable[[Any], bytes | None],
                  results_rows: bool = False) -> None:
        if not done:
            return
        if not self.conns.in_transaction():
            super().wf_record(done, encode, results_rows)  # type: ignore[misc]  # Backend, after this mixin
            return
        # In the ack's transaction (the worker's flush): the lookup and the settling in
        # one round trip, joined to it (no savepoint). In id order, as wf_done's. Every
        # job's result goes, the plain ones' too: past _SEND_UP_TO bytes in all (large
        # results), the lookup first and only the parents' results, as before.
        items = sorted(done, key=lambda pair: pair[0]) if len(done) > 1 else done
        parents = [mid for mid, _r in items]
        values = [encode(r) for _m, r in items]
        if sum(len(v) for v in values if v is not None) > _SEND_UP_TO:
            super().wf_record(list(zip(parents, values, strict=True)),  # type: ignore[misc]
                              _as_is, results_rows)
            return
        self.conns.joined(self._wf_sql.ack_many, {
            "parents": parents, "values": values, "channel": self._wf_channel})

    def wf_done(self, items: Sequence[tuple[int, bytes | None]],
                children: Mapping[int, Sequence[int]], results_rows: bool = False) -> None:
        # One statement, one round trip, no savepoint of its own in the ack's
        # transaction (a failure rolls the ack back with it): the edges are read again
        # under the counters' locks (other workers ack concurrently).
        at = children.at if isinstance(children, _Among) else None
        if at is not None and self.conns.in_transaction():
            # In the ack's transaction, which holds the parents' rows: no child can be
            # linked to them since *children* was read (wf_link locks the parents
            # first), and the edges are where that read found them unless this
            # transaction moved them (the functions then settle them by key).
            if len(items) == 1:
                mid, value = items[0]
                kids = children.get(mid, ())
                if len(kids) == 1:  # a chord member, a chain's step
                    self.conns.joined(self._wf_sql.done1_at, {
                        "parent": mid, "child": kids[0], "value": value, "at": at[mid][0],
                        "channel": self._wf_channel})
                    return
            parents: list[int] = []
            values: list[bytes | None] = []
            rows: list[str] = []
            for mid, value in sorted(items) if len(items) > 1 else items:
                for row in at.get(mid, ()):
                    parents.append(mid)
                    values.append(value)
                    rows.append(row)
            if rows:
                self.conns.joined(self._wf_sql.done_at, {
                    "parents": parents, "values": values, "ats": rows,
                    "channel": self._wf_channel})
                return
        ordered = sorted(items) if len(items) > 1 else items
        self.conns.joined(self._wf_sql.done, {
            "parents": [mid for mid, _v in ordered], "values": [v for _m, v in ordered],
            "channel": self._wf_channel})

    @cached_property
    def _wf_channel(self) -> str | None:
        """The wake-up channel a released child is announced on (None: the schema's
        name is too long for one, the poll finds it)."""
        channel = f"liteq_{self.schema}"
        return channel if len(channel) <= 63 else None

    def wf_edges(self, mid: int) -> tuple[list[WfEdge], list[WfEdge]]:
        sql = self._wf_sql
        with self.conns.tx() as cur:
            cur.execute(sql.parents, (mid,))
            parents = [_edge(r) for r in cur.fetchall()]
            cur.execute(sql.children, (mid,))
            children = [_edge(r) for r in cur.fetchall()]
        return parents, children

    def wf_workflow(self, mid: int) -> int | None:
        rows = self.conns.statement(self._wf_sql.workflow, (mid,))
        return int(rows[0][0]) if rows else None

    def wf_members(self, workflow: int) -> list[int]:
        return [int(r[0]) for r in self.conns.statement(self._wf_sql.members, (workflow,))]

    def wf_prune(self) -> int:
        total = 0
        while True:
            n = len(self.conns.statement(self._wf_sql.prune))
            total += n
            if n < 1000:
                return total
