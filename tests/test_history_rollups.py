"""The history's hourly roll-ups and the failures every path counts (issue 21): the
hours are kept by the engine in the transaction that writes the minutes (a reader never
writes); a leased message retried, nacked, failed or buried, by a worker, by hand or by
a claim's maintenance, counts in its queue's own row. On every engine."""

from __future__ import annotations

import random
import time

import pytest
from workerapp_tools import drain

import liteq
from liteq.backends.registry import HistoryRow

pytestmark = pytest.mark.every_engine

_SUMMED = ("put", "acked", "failed", "dead", "runs", "le_10ms", "le_100ms", "le_1s", "le_10s",
           "le_60s")


def _hours_from_minutes(db: liteq.Database, since: int) -> dict[tuple[int, int, str], list[float]]:
    """What the hourly roll-ups must hold: the stored minutes summed per hour."""
    out: dict[tuple[int, int, str], list[float]] = {}
    for r in db.backend.history(since):
        acc = out.setdefault((r.qid, r.minute // 60, r.task), [0.0] * (len(_SUMMED) + 2))
        for k, name in enumerate(_SUMMED):
            acc[k] += getattr(r, name)
        acc[-2] += r.run_total
        acc[-1] = max(acc[-1], r.run_max)
    return out


def _hours(db: liteq.Database, since: int) -> dict[tuple[int, int, str], list[float]]:
    """The roll-ups as the engine reads them: one bucket per (queue, hour) and task."""
    out: dict[tuple[int, int, str], list[float]] = {}
    qids = {db.queue(n).id for n in db.queues()}
    for qid in qids:  # the queues' own counts, through the chart's hourly path
        for s in db.backend.history_sums(since, 60, qid):
            out[(qid, s.start // 60, "")] = [s.put, s.acked, s.dead]
    return out


def test_the_hourly_roll_ups_equal_the_sum_of_the_minutes(db: liteq.Database) -> None:
    a, b = db.queue("a").id, db.queue("b").id
    base = 29_000_040  # a whole hour, in minutes
    rng = random.Random(7)
    for _ in range(6):  # several writes: inserts, then updates of the same minutes
        rows = [HistoryRow(rng.choice((a, b)), base + rng.randrange(0, 180),
                           rng.choice(("", "send", "resize")),
                           rng.randrange(5), rng.randrange(5), rng.randrange(3), rng.randrange(2),
                           rng.randrange(4), rng.random(), rng.random(),
                           *(rng.randrange(3) for _ in range(5)))
                for _ in range(40)]
        db.backend.add_history(rows)
    want = _hours_from_minutes(db, base)
    assert len({k[1] for k in want}) == 3  # three hours, each with several minutes
    got = _hours(db, base)
    for (qid, hour, task), acc in want.items():
        if task == "":
            assert got[(qid, hour, "")] == [acc[0], acc[1], acc[3]]
    assert {k for k in got} == {k for k in want if k[2] == ""}
    # The run-time histogram reads the hours too: the same sums per (queue, task).
    for r in db.backend.history_runs(base):
        keys = [k for k in want if k[0] == r.qid and k[2] == r.task]
        assert r.runs == sum(want[k][4] for k in keys)
        assert r.le_1s == sum(want[k][7] for k in keys)
        assert r.run_total == pytest.approx(sum(want[k][-2] for k in keys))
        assert r.run_max == pytest.approx(max(want[k][-1] for k in keys))
    # A chart of 15-minute buckets reads minutes, and agrees with the hours.
    quarter = {s.start: s.put for s in db.backend.history_sums(base, 15, a)}
    hourly = {s.start: s.put for s in db.backend.history_sums(base, 60, a)}
    for start, put in hourly.items():
        assert put == sum(v for k, v in quarter.items() if start <= k < start + 60)


def test_pruning_the_history_prunes_its_hours(db: liteq.Database) -> None:
    qid = db.queue("a").id
    base = 29_000_040
    db.backend.add_history([HistoryRow(qid, base + m, "", 1, 1, 0, 0, 0, 0.0, 0.0)
                            for m in (0, 59, 60, 150)])
    assert [s.put for s in db.backend.history_sums(base, 60, qid)] == [2, 1, 1]
    assert db.backend.prune_history(base + 60) == 2
    assert [s.start for s in db.backend.history_sums(base, 60, qid)] == [base + 60, base + 120]
    assert db.backend.prune_history(base + 150) == 1  # the hour of 150 is kept whole
    assert [s.start for s in db.backend.history_sums(base, 60, qid)] == [base + 120]


def _own(db: liteq.Database, queue: str) -> tuple[int, int]:
    """The queue's own (failed, dead) in the stored history."""
    qid = db.queue(queue).id
    rows = [r for r in db.backend.history(0, qid) if r.task == ""]
    return sum(r.failed for r in rows), sum(r.dead for r in rows)


def test_fail_and_nack_by_hand_count_in_the_queues_history(db: liteq.Database) -> None:
    q = db.queue("plain", max_attempts=3)
    q.put_many(list(range(4)))
    q.get().nack()  # type: ignore[union-attr]
    q.get().nack(delay=60)  # type: ignore[union-attr]
    q.get().fail("bad input")  # type: ignore[union-attr]
    assert _own(db, "plain") == (2, 1)
    with pytest.raises(RuntimeError), db.transaction():  # rolled back: nothing counted
        q.get().fail("undone")  # type: ignore[union-attr]
        raise RuntimeError("the application gives up")
    assert _own(db, "plain") == (2, 1)


def test_a_nack_on_the_last_attempt_and_a_dead_letter_move_count_as_dead(
        db: liteq.Database) -> None:
    q = db.queue("once", max_attempts=1, dead_letter="graveyard")
    q.put("x")
    q.get().nack()  # type: ignore[union-attr]  # its last attempt: moved to graveyard
    assert db.queue("graveyard").stats()["ready"] == 1
    assert _own(db, "once") == (0, 1)
    assert _own(db, "graveyard") == (0, 0)


def test_a_lease_that_runs_out_counts_as_failed_then_as_dead_on_the_last_attempt(
        db: liteq.Database) -> None:
    q = db.queue("slow", lease=0.1, max_attempts=2)
    q.put("x")
    assert q.get() is not None
    time.sleep(0.15)
    assert q.get() is not None  # the claim's maintenance released it: failed
    time.sleep(0.15)
    assert q.get() is None  # ... and now buried it: dead
    assert _own(db, "slow") == (1, 1)
    assert q.stats()["dead"] == 1


def test_a_workers_failures_count_in_the_queue_row_and_in_the_tasks_row(
        db: liteq.Database) -> None:
    @db.task(name="bad", queue="jobs", max_attempts=2, backoff=liteq.Backoff(base=0, jitter=0))
    def bad() -> None:
        raise ValueError("no")

    bad.delay()
    drain(db)
    assert _own(db, "jobs") == (1, 1)
    task_rows = [r for r in db.backend.history(0) if r.task == "bad"]
    assert (sum(r.failed for r in task_rows), sum(r.dead for r in task_rows)) == (1, 1)


def test_the_throughput_chart_shows_hand_failures_and_deaths(db: liteq.Database) -> None:
    from webclient import served

    q = db.queue("plain", max_attempts=2)
    q.put_many([1, 2])
    q.get().nack()  # type: ignore[union-attr]
    q.get().fail("no")  # type: ignore[union-attr]
    with served(db) as client:
        for span in ("hour", "day", "week"):
            page = client.get(f"/queue/plain?range={span}").text
            assert '<span class="key failed">failed: 1</span>' in page, span
            assert '<span class="key dead">dead: 1</span>' in page, span
