"""The workflow verbs every engine implements (issue 20), and their records.

A workflow's jobs are ordinary messages; what makes one wait for others is two tables
each engine keeps: one row per dependent job (its workflow, the count of its parents that
have not ended, the delay it takes once released) and one per edge (parent, child). The
engines settle the edges in the transaction that ends a parent (see each engine's
``workflow_sql.py``); these verbs only insert a workflow and read it back.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

__all__ = ["WAITING_AT", "WfEdge", "WfNode", "WfJobRow", "WfEdgeRow", "WorkflowVerbs"]

#: ``run_at`` of a waiting job (a delayed message that never falls due: the year
#: ~31.7 million). A job is *waiting* when it is delayed with ``run_at >= WAITING_AT``.
WAITING_AT = 1e15


class WfNode(NamedTuple):
    """One job of a workflow being inserted: its id (its message is already put in this
    transaction), the workflow it joins, the delay it takes once released, and its
    parents ``(parent id, allow_failure)`` in order (empty: a root, runnable now)."""

    id: int
    workflow: int
    delay: float
    parents: tuple[tuple[int, bool], ...]


class WfEdge(NamedTuple):
    """One dependency: *child* runs after *parent* ended. ``outcome`` is None while the
    parent has not ended, else ``done``, ``failed``, ``cancelled`` or ``purged``;
    ``value`` is the parent's CBOR result when it succeeded (kept whatever its task's
    ``store_result``, until the child ended)."""

    parent: int
    child: int
    pos: int
    allow_failure: bool
    outcome: str | None
    value: bytes | None
    error: str | None


class WfJobRow(NamedTuple):
    """A ``wf_jobs`` row as ``liteq copy`` moves it: the counter of unmet parents goes
    over as it is, consistent with the edges of the same snapshot."""

    id: int
    workflow: int
    unmet: int
    delay: float
    cancelled_by: int | None


class WfEdgeRow(WfEdge):
    """A ``wf_edges`` row as ``liteq copy`` moves it (the fields of :class:`WfEdge`).
    The table has no id: a copy pages it by child, all the edges of one child in the
    same chunk, in (child, parent) order; :attr:`id` is the child, the key of its
    resume mark."""

    __slots__ = ()

    @property
    def id(self) -> int:
        """The key a copy pages by (the child)."""
        return self.child


class WorkflowVerbs(ABC):
    """Inserting and reading workflows (a base of :class:`~liteq.backends.base.Backend`)."""

    @abstractmethod
    def wf_link(self, nodes: Sequence[WfNode]) -> list[int]:
        """Inside the caller's transaction, after their messages were put: record the
        nodes and their edges, hold back every node that has parents (waiting), flag the
        parents, and settle at once the edges whose parent already ended. Returns the
        parent ids (not among *nodes*) that do not exist; the caller then rolls back."""

    @abstractmethod
    def wf_parents_among(self, ids: Sequence[int]) -> dict[int, list[int]]:
        """Which of these jobs have dependents, each with its children (one index
        lookup each). Jobs without dependents, the plain ones, are not in it."""

    @abstractmethod
    def wf_done(self, items: Sequence[tuple[int, bytes | None]],
                children: Mapping[int, Sequence[int]], results_rows: bool = False) -> None:
        """In the transaction that acked jobs ``(id, CBOR result)`` that have dependents,
        after the ack: their edges settle as succeeded, keeping the result (which
        releases the dependents whose last parent this was). *children* is what
        :meth:`wf_parents_among` returned for them in the same transaction (an engine
        whose writers run concurrently reads them again under its locks).

        *results_rows*: the same transaction wrote these jobs' results rows (done)
        before this call, as the worker does. An engine may then keep the result in
        that row rather than on every edge, and read it from there (SQLite: one page
        fewer in the commit of a chord member's ack); what :meth:`wf_edges` returns is
        the same either way."""

    def wf_done_one(self, mid: int, value: Callable[[], bytes | None],
                    results_row: bool = False) -> None:
        """In the transaction that acked job *mid* by a DELETE, after the ack: if it has
        dependents, its edges settle as succeeded with the result *value()* returns (its
        CBOR, called only if needed here). The worker acking one job per transaction.
        An engine may do the lookup and the settling in one statement (PostgreSQL).
        *results_row* as :meth:`wf_done`'s *results_rows*."""
        parents = self.wf_parents_among([mid])
        if parents:
            self.wf_done([(mid, value())], parents, results_row)

    def wf_record(self, done: Sequence[tuple[int, Any]], encode: Callable[[Any], bytes | None],
                  results_rows: bool = False) -> None:
        """In the transaction that acked jobs ``(id, result)``, after the ack: the
        dependents of those that have any are settled with their results
        (``encode(result)``: the CBOR of one, called for the jobs that need it here).
        The worker's flush: :meth:`wf_parents_among`, then :meth:`wf_done` of the parents
        found; an engine may look up and settle in one call (PostgreSQL: one round trip
        instead of two, every result encoded). *results_rows* as :meth:`wf_done`'s."""
        parents = self.wf_parents_among([mid for mid, _r in done])
        if parents:
            self.wf_done([(mid, encode(result)) for mid, result in done if mid in parents],
                         parents, results_rows)

    @abstractmethod
    def wf_edges(self, mid: int) -> tuple[list[WfEdge], list[WfEdge]]:
        """A job's edges: ``(to its parents, in order; to its children)``."""

    @abstractmethod
    def wf_workflow(self, mid: int) -> int | None:
        """The workflow a job belongs to (None: none)."""

    @abstractmethod
    def wf_members(self, workflow: int) -> list[int]:
        """The ids of a workflow's jobs, in id order."""

    @abstractmethod
    def wf_prune(self) -> int:
        """Delete the workflow records of jobs that are gone (no message, no results
        row): their own row, and the edges to their parents (the results they received).
        Edges to a job still there stay: it may still read them. How many jobs."""
