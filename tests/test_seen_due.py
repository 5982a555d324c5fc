"""A short claim skips its maintenance while a fresh look saw nothing due (due.py, issue
23: idle consumers' empty claims took a write transaction or a statement each, to find
nothing to promote or expire), and maintains as before once something is due. On every
engine, with the store's clock injected."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from helpers import FakeClock

from liteq.backends.base import Backend
from liteq.backends.due import FRESH
from liteq.backends.records import NewMessage
from liteq.backends.sqlite import default_queue_options

START = 1_000_000.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def b(open_backend: Callable[..., Backend], clock: FakeClock) -> Backend:
    return open_backend(clock=clock)


def _counting(b: Backend) -> list[int]:
    """Count the backend's maintenance runs (its claims call self._maintain)."""
    runs = [0]
    maintain = b._maintain  # type: ignore[attr-defined]

    def counted(*args: Any) -> Any:
        runs[0] += 1
        return maintain(*args)

    b._maintain = counted  # type: ignore[attr-defined]
    return runs


@pytest.mark.every_engine
def test_a_short_claim_after_a_fresh_look_at_nothing_due_does_not_maintain(
    b: Backend, clock: FakeClock
) -> None:
    q = b.create_queue("q", {**default_queue_options()})
    b.put(q.id, [NewMessage(0, None, START + 10.0, b"later", None, None)])  # delayed 10 s
    b.claim(q.id, 1, 30.0)  # the periodic maintenance, due at the first claim: done now
    runs = _counting(b)
    ready, due = b.probe(q.id)
    assert (ready, due) == (False, START + 10.0)
    clock.advance(FRESH / 2)
    assert b.claim(q.id, 1, 30.0)[0] == [] and b.claim_one(q.id, 30.0) is None
    assert b.claim(q.id, 5, 30.0)[0] == []
    assert runs[0] == 0  # nothing was due: no maintenance
    clock.advance(10.0)  # the delayed message is due; the look is stale
    rows, _ = b.claim(q.id, 1, 30.0)
    assert [r[3] for r in rows] == [b"later"] and runs[0] >= 1


@pytest.mark.every_engine
def test_a_look_that_saw_something_due_lets_the_short_claim_maintain(
    b: Backend, clock: FakeClock
) -> None:
    q = b.create_queue("q", {**default_queue_options()})
    b.put(q.id, [NewMessage(0, None, START + 0.01, b"soon", None, None)])
    b.claim(q.id, 1, 30.0)
    ready, due = b.probe(q.id)
    assert not ready and due == START + 0.01
    clock.advance(0.02)  # due now, the look still fresh: it saw this due time
    runs = _counting(b)
    rows, _ = b.claim(q.id, 1, 30.0)
    assert [r[3] for r in rows] == [b"soon"] and runs[0] == 1


@pytest.mark.every_engine
def test_a_waiting_consumer_sleeps_on_a_fresh_look_then_looks_again(
    b: Backend, clock: FakeClock
) -> None:
    """wait_due: the due time of a look at most FRESH old (a put since wakes the waiter
    anyway), then next_due's new look; next_due itself always looks."""
    q = b.create_queue("q", {**default_queue_options()})
    b.put(q.id, [NewMessage(0, None, START + 10.0, b"later", None, None)])
    assert b.probe(q.id) == (False, START + 10.0)
    b.put(q.id, [NewMessage(0, None, START + 5.0, b"sooner", None, None)])
    clock.advance(FRESH / 2)
    assert b.wait_due(q.id) == START + 10.0  # the fresh look's answer
    assert b.next_due(q.id) == START + 5.0  # a new look
    clock.advance(FRESH)
    b.put(q.id, [NewMessage(0, None, START + 2.0, b"soonest", None, None)])
    clock.advance(FRESH)  # next_due's look is stale now
    assert b.wait_due(q.id) == START + 2.0
