"""The tables ``liteq copy`` moves between engines, and the records their rows travel as.

A copy reads each table of the source in id order (``Backend.export_rows``) and writes
the same rows, ids kept, into the destination (``Backend.import_rows``). What is not a
row of these tables is either derived and rebuilt by the destination (the depth counter:
``queues.depth`` on SQLite, ``depth_stripes`` on PostgreSQL) or carried as
:class:`Counters` (the id and token sequences, the subscription-set version).

Rows are engine-neutral: every field means the same on both engines (times as epoch
seconds, payloads as CBOR bytes). Flags (``count_depth``, ``cancel``, ``enabled``) leave
an engine as it stores them (0/1 on SQLite, booleans on PostgreSQL: equal in Python)
and each engine converts them on import.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ..errors import InvalidArgument
from .records import MessageRecord, ResultRecord, ScheduleRecord
from .registry import AttemptRecord
from .workflow import WfEdgeRow, WfJobRow

__all__ = ["COPY_TABLES", "ROW_TYPES", "FLAGS", "QueueRow", "FlowRow", "RunRow", "Counters",
           "check_table"]


class QueueRow(NamedTuple):
    """A queue's whole row, as copied (a :class:`~liteq.backends.records.QueueRecord`
    plus its totals and creation time; the depth counter is rebuilt, not copied)."""

    id: int
    name: str
    max_depth: int | None
    lease: float
    max_attempts: int
    dead_letter: str | None
    retention: float
    backoff_base: float
    backoff_factor: float
    backoff_max: float
    backoff_jitter: float
    topic: str | None
    pattern: str | None
    expires_at: float | None
    count_depth: bool
    #: Messages ever put (statistics).
    enqueued: int
    #: Messages ever acked (statistics).
    finished: int
    created_at: float
    #: Paused: nothing is claimed (flow control, issue 19).
    paused: bool = False
    #: The queue's rate limit, claims per second, and its burst (None: no limit).
    rate_limit: float | None = None
    rate_burst: float | None = None
    #: The queue ever received a job under a task's limits (its claims check them).
    limited: bool = False


class FlowRow(NamedTuple):
    """A task's limits (the ``flows`` table, issue 19), as copied; the bucket starts
    full on the destination."""

    id: int
    #: The task's name.
    name: str
    #: Most of its jobs leased at once (per concurrency key); None: no cap.
    max_concurrency: int | None
    #: Tokens per second; None: no rate limit.
    rate: float | None
    #: The most tokens its bucket holds.
    burst: float | None


class RunRow(NamedTuple):
    """One row of a schedule's fire history, as copied (a
    :class:`~liteq.backends.records.ScheduleRun` with its id and schedule name)."""

    id: int
    schedule: str
    fire_at: float
    fired_at: float
    job_id: int | None


class Counters(NamedTuple):
    """What a copy carries besides rows, so that the destination never hands out an id
    or token the source already did (``Backend.export_counters``)."""

    #: The highest message id the source ever issued (acked messages' ids included):
    #: new messages on the destination get higher ids, so they never meet a copied
    #: job's results row.
    message_id: int
    #: The last lease token the source issued from a sequence (PostgreSQL); None where
    #: tokens are random 64-bit values (SQLite).
    token: int | None
    #: The subscription-set version (topics), 0 before any subscription.
    subs_version: int


#: The tables in the order a copy moves them (queues and flows before the messages
#: that name them). ``messages.wf`` (a job has dependents) is derived from ``wf_edges``
#: and rebuilt by the destination.
COPY_TABLES: tuple[str, ...] = ("queues", "flows", "messages", "wf_jobs", "wf_edges",
                                "results", "attempts", "schedules", "schedule_runs")

#: The record each table's rows are exported as; its fields are the table's columns.
ROW_TYPES: dict[str, Any] = {
    "queues": QueueRow,
    "flows": FlowRow,
    "messages": MessageRecord,
    "wf_jobs": WfJobRow,
    "wf_edges": WfEdgeRow,
    "results": ResultRecord,
    # Keyed by (id, attempt): a copy pages it by job id, all of a job's attempts in the
    # same chunk (as wf_edges by child).
    "attempts": AttemptRecord,
    "schedules": ScheduleRecord,
    "schedule_runs": RunRow,
}

#: The flag columns of each table (0/1 on SQLite, boolean on PostgreSQL).
FLAGS: dict[str, tuple[str, ...]] = {
    "queues": ("count_depth", "paused", "limited"),
    "messages": ("cancel",),
    "wf_edges": ("allow_failure",),
    "schedules": ("enabled",),
}


def check_table(table: object) -> str:
    """*table* if it is one :data:`COPY_TABLES` names, else InvalidArgument."""
    if table not in COPY_TABLES:
        raise InvalidArgument(
            f"table must be one of {', '.join(COPY_TABLES)}, got {table!r}"
        )
    return str(table)
