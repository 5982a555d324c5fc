"""Per-minute history and job progress (issue 21), written by the paths that already
write: the worker that ran the jobs, the put/ack totals flush, the task itself. On
every engine."""

from __future__ import annotations

import pytest
from workerapp_tools import drain

import liteq
from liteq.errors import InvalidArgument
from liteq.registry import Registration, is_gone, workers

pytestmark = pytest.mark.every_engine


def _history(db: liteq.Database, task: str) -> list[tuple[int, int, int, int]]:
    rows = [r for r in db.backend.history(0) if r.task == task]
    return [(r.acked, r.failed, r.dead, r.runs) for r in rows]


def test_a_worker_writes_each_tasks_outcomes_and_run_times_into_the_minutes_history(
        db: liteq.Database) -> None:
    @db.task(name="ok")
    def ok(n: int) -> int:
        return n

    @db.task(name="flaky", max_attempts=2, backoff=liteq.Backoff(base=0, jitter=0))
    def flaky() -> None:
        raise ValueError("no")

    for n in range(3):
        ok.delay(n)
    flaky.delay()
    drain(db)
    assert _history(db, "ok") == [(3, 0, 0, 3)]
    assert _history(db, "flaky") == [(0, 1, 1, 2)]
    (row,) = [r for r in db.backend.history(0) if r.task == "ok"]
    assert row.qid == db.queue("default").id
    assert 0 <= row.run_max <= row.run_total
    assert row.le_60s == 3  # every no-op run falls in the 60 s bucket
    db.backend.flush_totals()
    (queue_row,) = [r for r in db.backend.history(0) if r.task == ""]
    assert (queue_row.put, queue_row.acked) == (4, 3)


def test_reading_history_writes_nothing(db: liteq.Database) -> None:
    db.queue("a").put(1)
    db.backend.flush_totals()
    before = db.backend.history(0)
    db.queue("a").stats()
    workers(db)
    assert db.backend.history(0) == before


def test_progress_is_validated_and_throttled_but_a_final_report_always_lands(
        db: liteq.Database) -> None:
    seen: list[object] = []

    @db.task(name="steps")
    def steps() -> None:
        job = liteq.current_job()
        assert job is not None
        for bad in (1.5, -0.1, "half", True, None):
            try:
                job.progress(bad)  # type: ignore[arg-type]
            except InvalidArgument as exc:
                seen.append(str(exc))
        job.progress(0.1, "first")
        job.progress(0.2, "too soon: dropped")
        seen.append(db.backend.progress([job.id])[job.id].note)
        job.progress(1.0, "x" * 500)

    handle = steps.delay()
    drain(db)
    assert len(seen) == 6 and all("0.0 to 1.0" in str(s) for s in seen[:5])
    assert seen[5] == "first"
    final = db.backend.progress([handle.id])[handle.id]
    assert (final.fraction, final.note) == (1.0, "x" * 200)


def test_a_registration_is_written_at_start_updated_by_its_beat_and_removed_at_stop(
        db: liteq.Database) -> None:
    running = [0]
    reg = Registration(db, "worker", queues=["a", "b"], pool="thread", concurrency=3,
                       interval=60.0, running=lambda: running,
                       counts=lambda: {"done": 2, "failed": 1})
    reg.start()
    (row,) = workers(db)
    assert (row["queues"], row["jobs"], row["done"], row["state"]) == (["a", "b"], [], 2, "alive")
    running[:] = [7]
    reg.maybe_beat()  # not due yet: nothing written
    assert workers(db)[0]["jobs"] == []
    reg.beat()
    assert [j["id"] for j in workers(db)[0]["jobs"]] == [7]
    stored = db.backend.workers()[0]
    assert is_gone(stored, stored.heartbeat_at + 31) and not is_gone(stored, stored.heartbeat_at + 29)
    reg.stop()
    assert workers(db) == []
