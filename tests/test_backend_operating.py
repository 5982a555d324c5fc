"""The operating verbs of the storage interface on every engine (issue 21): the workers
registry, job progress and per-minute history. What one engine answers, the other must."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from liteq.backends import NewMessage
from liteq.backends.base import Backend
from liteq.backends.registry import HistoryRow, WorkerRecord
from liteq.backends.sqlite import default_queue_options


def _worker(wid: str = "h:1:a", **fields: Any) -> WorkerRecord:
    row = WorkerRecord(wid, "worker", "h", 1, "a,b", "thread", 4, "1.0", 100.0, 105.0, 5.0,
                       "[[7, 101.5]]", 3, 1)
    return row._replace(**fields)


def _history(qid: int, minute: int, task: str = "t", **fields: Any) -> HistoryRow:
    return HistoryRow(qid, minute, task, 0, 0, 0, 0, 0, 0.0, 0.0)._replace(**fields)


def test_a_saved_worker_reads_back_as_written_and_a_heartbeat_replaces_it(
    open_backend: Callable[..., Backend],
) -> None:
    one, other = open_backend(), open_backend()
    one.save_worker(_worker())
    assert other.workers() == [_worker()]
    one.save_worker(_worker(heartbeat_at=110.0, jobs="[]", done=4))
    assert other.workers() == [_worker(heartbeat_at=110.0, jobs="[]", done=4)]


def test_workers_are_listed_by_start_and_removed_one_by_one(backend: Backend) -> None:
    backend.save_worker(_worker("late", started_at=200.0))
    backend.save_worker(_worker("early", started_at=50.0))
    assert [w.id for w in backend.workers()] == ["early", "late"]
    assert backend.remove_worker("early") is True
    assert backend.remove_worker("early") is False
    assert [w.id for w in backend.workers()] == ["late"]


def test_pruning_workers_removes_only_those_silent_since_before_the_cut(backend: Backend) -> None:
    backend.save_worker(_worker("old", heartbeat_at=10.0))
    backend.save_worker(_worker("new", heartbeat_at=1000.0))
    assert backend.prune_workers(500.0) == 1
    assert [w.id for w in backend.workers()] == ["new"]


def test_progress_keeps_the_last_report_of_each_job(backend: Backend) -> None:
    backend.set_progress(5, 0.1, "starting")
    backend.set_progress(5, 0.4, "resized 40 of 100")
    backend.set_progress(6, 1.0, "")
    found = backend.progress([5, 6, 7])
    assert sorted(found) == [5, 6]
    assert (found[5].fraction, found[5].note) == (0.4, "resized 40 of 100")
    assert backend.progress([]) == {}


def test_pruning_progress_keeps_jobs_whose_message_still_exists(backend: Backend) -> None:
    qid = int(backend.ensure_queue("jobs", default_queue_options(), {}).id)
    (mid,) = backend.put(qid, [NewMessage(0, None, backend.clock(), b"\xa0", None, None)])
    backend.set_progress(mid, 0.5, "")
    backend.set_progress(mid + 1000, 0.5, "")  # its message and results are gone
    assert backend.prune_progress(backend.clock() + 10) == 1
    assert list(backend.progress([mid, mid + 1000])) == [mid]


def test_history_rows_add_up_per_queue_minute_and_task(backend: Backend) -> None:
    backend.add_history([_history(1, 10, acked=2, runs=2, run_total=0.5, run_max=0.3,
                                  le_1s=2)])
    backend.add_history([_history(1, 10, acked=1, dead=1, runs=1, run_total=2.0, run_max=2.0,
                                  le_10s=1),
                         _history(1, 10, failed=1),
                         _history(1, 11, task="", put=5),
                         _history(2, 10, put=1)])
    rows = backend.history(10)
    assert [(r.qid, r.minute, r.task) for r in rows] == [(1, 10, "t"), (2, 10, "t"),
                                                           (1, 11, "")]
    first = rows[0]
    assert (first.acked, first.failed, first.dead, first.runs) == (3, 1, 1, 3)
    assert (first.run_total, first.run_max, first.le_1s, first.le_10s) == (2.5, 2.0, 2, 1)
    assert [r.minute for r in backend.history(11)] == [11]
    assert [r.qid for r in backend.history(0, qid=2)] == [2]


def test_pruning_history_drops_minutes_before_the_window(backend: Backend) -> None:
    backend.add_history([_history(1, 10, put=1), _history(1, 20, put=1)])
    assert backend.prune_history(15) == 1
    assert [r.minute for r in backend.history(0)] == [20]


def test_the_totals_flush_writes_puts_and_acks_into_this_minutes_history(backend: Backend) -> None:
    qid = int(backend.ensure_queue("jobs", default_queue_options(), {}).id)
    row = NewMessage(0, None, backend.clock(), b"\xa0", None, None)
    backend.put(qid, [row, row, row])
    claimed, _ = backend.claim(qid, 2, 30.0)
    backend.ack(qid, [(r[0], r[1]) for r in claimed], 0.0)
    backend.flush_totals()
    rows = [r for r in backend.history(0) if r.task == ""]
    assert [(r.qid, r.put, r.acked) for r in rows] == [(qid, 3, 2)]
    assert rows[0].minute == int(backend.clock() // 60)

