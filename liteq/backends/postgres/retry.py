"""Which PostgreSQL verbs are tried again, once, on a new connection after the server
went away in the middle of them (issue 17: a restart must not need the application's
processes restarted).

A connection the server ended while it sat idle is replaced before anything is sent
on it (``connection.ended``): that is the common case after a restart, and it needs no
retry, since nothing had been sent. This module is about a loss *during* a call, when
the statement may or may not have run. Three kinds of verb:

* **reads** (:data:`READS`): always tried again; a read changes nothing.
* **guarded writes** (:data:`GUARDED`): tried again whatever happened to the first try,
  because a second application changes nothing more. Ack, nack (``retry``), extend,
  heartbeat, fail and release act only on the row that still holds the caller's lease
  token: if the first try committed, the second finds the token gone and says the lease
  was lost (``LeaseLost``, or the id in the "lost" list); the message was finished once,
  never twice. Results rows are upserts, renewing a subscription sets a time,
  enabling a schedule sets a flag, expiring leases settles what is still expired.
* **everything else** (puts, claims, publishes, ticks, administration): tried again
  only when nothing of the first try can have been committed: the loss came before
  ``COMMIT`` of a multi-statement transaction, which the server rolled back. A loss
  during an autocommit statement or a ``COMMIT`` leaves the outcome unknown, and the
  caller gets :class:`~liteq.ConnectionLost` with ``maybe_committed=True``. A put
  retried by the caller with the same dedup ``key`` returns the first try's id if that
  one committed; a claim whose answer was lost leaves its messages leased to no one,
  and they come back when that lease runs out (at least once, as after a crash).

Never inside the application's ``db.transaction()``: the server rolled the whole block
back, and a verb tried again on a new connection would commit on its own what the block
meant to commit together, so every later call of the block fails instead (see
``connection.py``). Never for a verb called by another verb: only the outermost call
is tried again, as a whole, so that no inner write commits outside the transaction of
the verb that called it. A failure to connect is not tried again at once (a server
that refuses now refuses a millisecond later too; ``connect_timeout`` would double).

A deadlock or serialization failure (``DatabaseBusy`` with ``rolled_back``) is tried
again once for every verb, under the same two conditions: the server rolled the verb's
own transaction back, so nothing of the first try committed. (Deadlocks between a full
queue's all-stripes slow path and other depth writers are rare but were seen under
load: depth.py.)

The cost on the hot paths is one Python call and a thread-local counter per verb,
well under a microsecond against a round trip of ~100 microseconds.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from ...errors import ConnectionLost, DatabaseBusy

__all__ = ["GUARDED", "ONCE", "PLUMBING", "READS", "UNDECIDED", "with_retries"]

logger = logging.getLogger("liteq.postgres")

#: Verbs that only read.
READS = frozenset({
    "queue_row", "queue_row_by_id", "queue_names", "room", "stats", "probe", "next_due",
    "message", "peek", "result", "job", "job_messages", "orphan_results",
    "cancel_requested", "schedule", "schedules", "schedule_runs", "next_schedule_due",
    "subs_version", "subscriptions", "topics", "integrity_check", "storage_size",
    "workers", "progress", "history",
})
#: Writes that a second try cannot apply twice (token-guarded, upserts, set-to-value).
GUARDED = frozenset({
    "ack", "ack_one", "retry", "extend", "heartbeat", "fail", "release", "expire", "save_results",
    "touch_subscription", "schedule_enable",
    "save_worker", "remove_worker", "prune_workers", "set_progress", "prune_progress",
    "prune_history",
})
#: Every other verb of the Backend interface that runs SQL.
ONCE = frozenset({
    "ensure_queue", "create_queue", "delete_queue", "put", "put_ready", "put_ready_many", "claim",
    "redrive", "cancel", "retry_finished", "purge", "prune", "prune_results",
    "request_cancel", "schedule_upsert", "schedule_delete", "prune_schedule_runs",
    "schedule_tick", "subscribe", "unsubscribe", "drop_expired_subscriptions", "publish",
    "add_history",
})

#: Verbs of the interface that are not wrapped: no SQL of their own, or SQL that is the
#: caller's (``execute``: the application's; ``claim_one`` calls ``claim``, which is;
#: ``wait_due`` calls ``next_due``, which is).
PLUMBING = frozenset({
    "close", "connection", "execute", "transaction", "using", "waiter", "flush_totals",
    "checkpoint", "vacuum", "claim_one", "wait_due",
})
#: Verbs that run SQL and were never placed in a list above, so they are not tried
#: again (found in session 9; the reads among them could be READS). Listed so that a
#: new verb has to be placed somewhere: tests/test_postgres_restart.py checks that every
#: verb of the interface is in exactly one of these sets.
UNDECIDED = frozenset({
    "attempts", "browse", "browse_task", "copy_marks", "copy_snapshot", "count_states",
    "delete_finished", "error_groups", "export_counters", "export_extent", "export_rows",
    "flows", "history_runs", "history_sums", "import_counters", "import_rows",
    "limit_stats", "save_attempts", "set_copy_mark", "set_flow", "set_paused", "wf_done",
    "wf_done_one", "wf_record",
    "wf_edges", "wf_link", "wf_members", "wf_parents_among", "wf_prune", "wf_workflow",
})

_T = TypeVar("_T")


class _Depth(threading.local):
    n = 0  # verbs of this thread running now (nested when above 1)


_depth = _Depth()


def _wrap(verb: Callable[..., Any], always: bool) -> Callable[..., Any]:
    name = verb.__name__

    @functools.wraps(verb)
    def tried_twice(self: Any, *args: Any, **kwargs: Any) -> Any:
        depth = _depth
        depth.n += 1
        try:
            return verb(self, *args, **kwargs)
        except ConnectionLost as exc:
            if depth.n > 1 or self.conns.in_transaction() or (exc.maybe_committed and not always):
                raise
            logger.info("%s; trying %s again on a new connection", exc, name)
        except DatabaseBusy as exc:
            # A deadlock or serialization failure: the server rolled the verb's own
            # transaction back, so nothing of it committed and one more try is safe.
            if not exc.rolled_back or depth.n > 1 or self.conns.in_transaction():
                raise
            logger.info("%s; trying %s again", exc, name)
        finally:
            depth.n -= 1
        depth.n += 1
        try:
            return verb(self, *args, **kwargs)
        finally:
            depth.n -= 1

    return tried_twice


def with_retries(cls: type[_T]) -> type[_T]:
    """Class decorator: *cls*'s verbs tried again as this module says."""
    for names, always in ((READS, True), (GUARDED, True), (ONCE, False)):
        for name in names:
            setattr(cls, name, _wrap(getattr(cls, name), always))
    return cls
