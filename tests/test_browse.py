"""The reads and writes behind the dashboard (issue 21), on every engine: keyset pages
by id, dead letters grouped by error, deleting chosen dead messages, and the history
summed per chart bucket and per task."""

from __future__ import annotations

from collections import defaultdict

import pytest

import liteq
from liteq import browse
from liteq.backends.registry import HistoryRow
from liteq.backends.sqlite import operating as sqlite_operating

pytestmark = pytest.mark.every_engine


def _fill(db: liteq.Database) -> tuple[liteq.Queue, list[int]]:
    q = db.queue("mixed", max_attempts=1)
    other = db.queue("other")
    ids: list[int] = []
    for n in range(6):  # interleaved with another queue's messages
        ids += q.put_many([{"n": n, "k": k} for k in range(7)])
        other.put_many(list(range(5)))
    q.put("later", delay=3600)
    return q, ids


@pytest.mark.parametrize("walk", [False, True], ids=["sorted", "walk"])
def test_pages_by_id_cover_every_message_once_in_order_whichever_plan(
        db: liteq.Database, walk: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if walk:  # SQLite walks the primary key once a state has this many rows
        monkeypatch.setattr(sqlite_operating, "BROWSE_SORT_MAX", 3)
    q, ids = _fill(db)
    seen: list[int] = []
    after: int | None = 0
    while after is not None:
        page = browse.page(q, "ready", after=after, n=5)
        assert len(page.messages) <= 5
        seen += [m.id for m in page.messages]
        after = page.next_after
    assert seen == ids
    assert [m.payload for m in browse.page(q, "delayed").messages] == ["later"]
    assert browse.page(q, "dead").messages == []


def test_counts_per_state_are_exact_up_to_the_cap_and_say_more_past_it(
        db: liteq.Database) -> None:
    q = db.queue("counted", max_attempts=1, retention=3600)
    q.put_many(list(range(6)))
    q.put("later", delay=3600)
    q.get().ack()  # type: ignore[union-attr]
    q.get().fail("boom")  # type: ignore[union-attr]
    held = q.get()
    db.queue("other").put_many(list(range(9)))  # another queue's rows are not counted
    exact = q.stats()
    c = browse.counts(q, cap=10)
    assert c.states == {s: exact[s] for s in ("ready", "delayed", "leased", "done", "dead",
                                              "cancelled")}
    assert not c.capped and c.depth == exact["depth"] == 5 and c.depth_exact
    assert c.oldest_ready_age is not None and c.oldest_ready_age >= 0
    small = browse.counts(q, cap=2)
    assert small.states["ready"] == 3 and small.over("ready") and small.text("ready") == "2+"
    assert small.text("leased") == "1" and small.text("delayed") == "1"
    assert small.capped and not small.depth_exact and small.depth_text() == "4+"
    assert held is not None


def test_the_depth_counter_gives_an_exact_depth_past_the_cap(db: liteq.Database) -> None:
    q = db.queue("bounded", max_depth=100)
    q.put_many(list(range(7)))
    c = browse.counts(q, cap=3)
    assert c.over("ready") and c.text("ready") == "3+"
    assert c.depth == 7 and c.depth_exact and c.depth_text() == "7" and c.max_depth == 100


def test_a_task_search_within_a_key_reads_at_most_scan_payloads_and_says_where_it_stopped(
        db: liteq.Database) -> None:
    q = db.queue("jobs", retention=60)
    for _ in range(10):  # finished messages may share a key
        q.put({"task": "a", "args": [], "kwargs": {}}, key="k")
        q.get().ack()  # type: ignore[union-attr]
    q.put({"task": "b", "args": [1], "kwargs": {}}, key="k")
    wanted = q.get()
    assert wanted is not None
    wanted.ack()
    first = browse.page(q, "done", task="b", key="k", scan=4)
    assert first.messages == [] and first.scanned == 4 and first.next_after is not None
    found = browse.page(q, "done", task="b", key="k")
    assert [m.id for m in found.messages] == [wanted.id] and found.next_after is None


def test_dead_letters_group_by_error_and_only_dead_ones_are_deleted(db: liteq.Database) -> None:
    q = db.queue("jobs", max_attempts=1)
    q.put_many(list(range(6)))
    for reason in ("boom", "boom", "boom", "timeout"):
        q.get().fail(reason)  # type: ignore[union-attr]
    groups = browse.dead_groups(q)
    assert [(g.error, g.messages) for g in groups] == [("boom", 3), ("timeout", 1)]
    boom = browse.matching_ids(q, "boom")
    assert len(boom) == 3 and groups[0].last_id == max(boom)
    ready = [m.id for m in q.peek(10)]
    assert browse.purge_ids(q, [boom[0], *ready]) == 1  # ready ones are not dead: kept
    assert q.stats()["dead"] == 3 and q.stats()["ready"] == len(ready)
    assert browse.redrive_ids(db, q, boom[1:]) == 2
    assert [(g.error, g.messages) for g in browse.dead_groups(q)] == [("timeout", 1)]


def test_history_sums_per_bucket_and_per_task_equal_the_rows(db: liteq.Database) -> None:
    a, b = db.queue("a").id, db.queue("b").id
    base = 28_000_020  # a minute, a multiple of 15 and of 60
    rows = [HistoryRow(a, base + 3, "", 5, 4, 0, 0, 0, 0.0, 0.0),
            HistoryRow(b, base + 14, "", 2, 1, 0, 0, 0, 0.0, 0.0),
            HistoryRow(a, base + 16, "", 7, 7, 0, 2, 0, 0.0, 0.0),
            HistoryRow(a, base + 16, "send", 0, 6, 1, 2, 9, 1.5, 0.9, 3, 5, 9, 9, 9),
            HistoryRow(a, base + 40, "send", 0, 1, 0, 1, 2, 0.5, 0.4, 0, 1, 2, 2, 2),
            # The charts' dead are the queue's own (task ''), as the engines count them.
            HistoryRow(a, base + 40, "", 0, 0, 0, 1, 0, 0.0, 0.0)]
    db.backend.add_history(rows)
    sums = db.backend.history_sums(base, 15)
    assert [tuple(s) for s in sums] == [(base, 7, 5, 0, 0), (base + 15, 7, 7, 2, 0),
                                        (base + 30, 0, 0, 1, 0)]
    assert [tuple(s) for s in db.backend.history_sums(base, 60, a)] == [(base, 12, 11, 3, 0)]
    runs = db.backend.history_runs(base)
    assert len(runs) == 1
    r = runs[0]
    assert (r.qid, r.task, r.acked, r.dead, r.runs, r.run_max) == (a, "send", 7, 3, 11, 0.9)
    assert r.run_total == pytest.approx(2.0)
    assert (r.le_10ms, r.le_100ms, r.le_1s, r.le_10s, r.le_60s) == (3, 6, 11, 11, 11)
    by_key: dict[int, int] = defaultdict(int)
    for row in db.backend.history(base):
        by_key[row.minute // 15 * 15] += row.put if row.task == "" else 0
    assert {s.start: s.put for s in sums} == dict(by_key)
