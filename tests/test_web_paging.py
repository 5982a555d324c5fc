"""A queue's pages are the same whichever plan the engine picks (issue 21): below
``BROWSE_SORT_MAX`` rows in the state it reads the state's index and sorts, above it
it walks the primary key. On every engine, both plans forced by lowering the cap."""

from __future__ import annotations

import pytest

import liteq
from liteq import browse
from liteq.backends.postgres import operating as pg_operating
from liteq.backends.sqlite import operating as sqlite_operating

pytestmark = pytest.mark.every_engine


def _all_pages(q: liteq.Queue, state: str) -> list[list[int]]:
    pages, after = [], 0
    while True:
        page = browse.page(q, state, after=after, n=4)
        pages.append([m.id for m in page.messages])
        if page.next_after is None:
            return pages
        after = page.next_after


@pytest.mark.parametrize("cap", [10**9, 3], ids=["sorted", "walk"])
def test_every_state_pages_by_id_the_same_whichever_plan(
        db: liteq.Database, monkeypatch: pytest.MonkeyPatch, cap: int) -> None:
    monkeypatch.setattr(sqlite_operating, "BROWSE_SORT_MAX", cap)
    monkeypatch.setattr(pg_operating, "BROWSE_SORT_MAX", cap)
    q = db.queue("mixed", max_attempts=1, retention=3600)
    other = db.queue("other")
    want: dict[str, list[int]] = {"ready": [], "delayed": [], "dead": [], "done": []}
    for n in range(30):
        other.put(n)  # interleaved rows of another queue: never on these pages
        if n % 3 == 0:
            want["delayed"].append(q.put(n, delay=3600))
        else:
            want["ready"].append(q.put(n))
    for state in ("dead", "done"):
        for _ in range(5):
            msg = q.get()
            assert msg is not None
            want["ready"].remove(msg.id)
            want[state].append(msg.id)
            if state == "dead":
                msg.fail("boom")
            else:
                msg.ack()
    for state, ids in want.items():
        pages = _all_pages(q, state)
        assert [i for p in pages for i in p] == sorted(ids), state
        assert all(len(p) == 4 for p in pages[:-1])
