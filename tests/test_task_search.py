"""Search by task (issue 21): the dashboard finds a queue's jobs of one task through
the engine's index of task names (``msg_task``), not by decoding payloads. On every
engine."""

from __future__ import annotations

import pytest

import liteq
from liteq import browse

pytestmark = pytest.mark.every_engine


def _job(task: str, n: int) -> dict[str, object]:
    return {"task": task, "args": [n], "kwargs": {}}


def test_a_task_search_finds_exactly_that_tasks_messages_page_by_page(
        db: liteq.Database) -> None:
    q = db.queue("mixed")
    long_name = "reports.monthly_" + "x" * 40  # a name of 24+ bytes: a two-byte header
    wanted: list[int] = []
    for n in range(130):
        task = ("resize", "thumbnail", long_name, "résumé")[n % 4]
        mid = q.put(_job(task, n))
        if task == "thumbnail":
            wanted.append(mid)
    q.put({"task": 5, "args": [], "kwargs": {}})  # not a task payload: ignored, no error
    q.put({"not": "a task"})
    q.put(b"\xa3\x64task")  # a payload that starts like one and stops
    pages, after = [], 0
    while True:
        page = browse.page(q, "ready", task="thumbnail", after=after, n=10)
        pages.append([m.id for m in page.messages])
        if page.next_after is None:
            break
        after = page.next_after
    assert [i for p in pages for i in p] == wanted
    assert all(len(p) == 10 for p in pages[:-1])
    assert len(browse.page(q, "ready", task=long_name, n=100).messages) == 32
    assert len(browse.page(q, "ready", task="résumé", n=100).messages) == 32
    assert browse.page(q, "ready", task="resiz").messages == []  # a prefix is not a name


def test_a_task_search_keeps_to_the_state_and_the_queue(db: liteq.Database) -> None:
    q = db.queue("jobs", max_attempts=1)
    other = db.queue("elsewhere")
    ids = [q.put(_job("send", n)) for n in range(4)]
    other.put(_job("send", 9))
    q.get().fail("boom")  # type: ignore[union-attr]  # the first goes dead
    assert [m.id for m in browse.page(q, "dead", task="send").messages] == ids[:1]
    assert [m.id for m in browse.page(q, "ready", task="send").messages] == ids[1:]
    assert len(browse.page(other, "ready", task="send").messages) == 1


def test_task_jobs_put_by_delay_are_found(db: liteq.Database) -> None:
    @db.task(name="emails.send", queue="mail")
    def send(to: str) -> None:
        pass

    handles = [send.delay(f"user{n}@example.com") for n in range(3)]
    found = browse.page(db.queue("mail"), "ready", task="emails.send")
    assert [m.id for m in found.messages] == [h.id for h in handles]
