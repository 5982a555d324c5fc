"""Workflows on SQLite: inserting a workflow's edges and reading them back. What settles
them is the schema's triggers (``workflow_sql.py``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..workflow import WAITING_AT, WfEdge, WfNode
from .base import StoreBase
from .schema import CANCELLED, DEAD, DONE
from .sql import IDS_PER_STATEMENT

__all__ = ["WorkflowVerbs"]

_EDGE_COLUMNS = "parent, child, pos, allow_failure, outcome, value, error"
SQL_WF_JOB = "INSERT INTO wf_jobs (id, workflow, unmet, delay) VALUES (?, ?, ?, ?)"
SQL_WF_EDGE = "INSERT INTO wf_edges (parent, child, pos, allow_failure) VALUES (?, ?, ?, ?)"
SQL_WF_FLAG = "UPDATE messages SET wf = 1 WHERE id = ? AND wf IS NULL"
SQL_WF_HOLD = f"UPDATE messages SET state = 1, run_at = {WAITING_AT!r} WHERE id = ?"
SQL_WF_PARENT_MESSAGE = "SELECT state, origin FROM messages WHERE id = ?"
SQL_WF_PARENT_RESULT = "SELECT state, value, error FROM results WHERE id = ?"
# Settling one new edge at once (its parent had already ended) fires wf_settle.
SQL_WF_SETTLE = """
UPDATE wf_edges SET value = ?, error = ?, outcome = ? WHERE parent = ? AND child = ?
"""
# (A retained ack already settled them, by the trigger: then only the value is added.)
SQL_WF_DONE = """
UPDATE wf_edges SET value = ?, outcome = 'done' WHERE parent = ? AND coalesce(outcome, 'done') = 'done'
"""
SQL_WF_PARENTS = f"SELECT {_EDGE_COLUMNS} FROM wf_edges WHERE child = ? ORDER BY pos"
SQL_WF_CHILDREN = f"SELECT {_EDGE_COLUMNS} FROM wf_edges WHERE parent = ? ORDER BY child"
SQL_WF_WORKFLOW = "SELECT workflow FROM wf_jobs WHERE id = ?"
SQL_WF_MEMBERS = "SELECT id FROM wf_jobs WHERE workflow = ? ORDER BY id"
# Jobs gone altogether (at most 1000 per statement, oldest first).
SQL_WF_GONE = """
SELECT j.id FROM wf_jobs j
WHERE NOT EXISTS (SELECT 1 FROM messages m WHERE m.id = j.id)
  AND NOT EXISTS (SELECT 1 FROM results r WHERE r.id = j.id)
ORDER BY j.id LIMIT 1000
"""
SQL_WF_FORGET_EDGES = "DELETE FROM wf_edges WHERE child = ?"
SQL_WF_FORGET_JOB = "DELETE FROM wf_jobs WHERE id = ?"

_OUTCOMES = {DONE: "done", DEAD: "failed", CANCELLED: "cancelled"}


def _edge(row: Sequence[Any]) -> WfEdge:
    return WfEdge(row[0], row[1], row[2], bool(row[3]), row[4], row[5], row[6])


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
            for parent, child, _pos, _allow in edges:
                if parent in ended:
                    outcome, value, error = ended[parent]
                    cur.execute(SQL_WF_SETTLE, (value if outcome == "done" else None, error,
                                                outcome, parent, child))
        return []

    def wf_parents_among(self, ids: Sequence[int]) -> set[int]:
        found: set[int] = set()
        with self.read() as cur:
            for i in range(0, len(ids), IDS_PER_STATEMENT):
                part = ids[i:i + IDS_PER_STATEMENT]
                marks = ",".join("?" * len(part))
                found.update(r[0] for r in cur.execute(
                    f"SELECT DISTINCT parent FROM wf_edges WHERE parent IN ({marks})",
                    part).fetchall())
        return found

    def wf_done(self, items: Sequence[tuple[int, bytes | None]]) -> None:
        with self.write() as cur:
            cur.executemany(SQL_WF_DONE, [(value, mid) for mid, value in items])

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
