"""A stateful model of one queue, checked against liteq step by step.

Hypothesis drives put, get, get_many, ack, nack, extend, fail, expire and the passing
of time (an injected clock) in random orders; after every step the database must
agree with a few lines of plain Python: which messages are claimable and in which
order, each message's state and attempts, dead after ``max_attempts`` with the
reason, ``LeaseLost`` (changing nothing) for every stale token, and the depth
counter behind ``max_depth`` (``QueueFull``, writing nothing, when it is reached).

It runs on every engine (tests/engines.py): each example is a new queue, on its own
connection with its own clock, in the test's database, deleted at the end of the example.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import hypothesis.strategies as st
import pytest
from helpers import FakeClock, message_rows
from hypothesis import HealthCheck, settings
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

import liteq

pytestmark = pytest.mark.every_engine

# Times are whole seconds that line up (delays, leases and clock steps of 5 and 10),
# so that "due exactly now" and "expires exactly now" happen often, and leases are
# short next to the clock steps, so that messages often run out of attempts.
LEASE = 5
MAX_ATTEMPTS = 2
MAX_DEPTH = 6

_examples = itertools.count(1)


@dataclass
class Expected:
    """What the model believes about one message."""

    payload: int
    priority: int
    run_at: float
    state: str = "ready"
    attempts: int = 0
    token: int | None = None
    lease_until: float | None = None
    error: str | None = None


class QueueModel(RuleBasedStateMachine):
    """One liteq queue against a dict of Expected messages."""

    #: The database each example opens (the test sets it: a file or a PostgreSQL URL).
    target = ""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.db = liteq.connect(self.target, clock=self.clock)
        self.name = f"model-{next(_examples)}"
        self.q = self.db.queue(
            self.name, lease=LEASE, max_attempts=MAX_ATTEMPTS, max_depth=MAX_DEPTH
        )
        self.expected: dict[int, Expected] = {}
        self.deliveries: list[liteq.Message] = []  # every Message ever handed out
        self.next_payload = 0

    def teardown(self) -> None:
        try:
            self.db.delete_queue(self.name)
        finally:
            self.db.close()

    # -- the model's own rules ---------------------------------------------------------

    def now(self) -> float:
        return self.clock()

    def maintain(self) -> None:
        """What every claim (and expire) does first: promote due delayed messages,
        release expired leases, bury those that used their last attempt."""
        now = self.now()
        for e in self.expected.values():
            if e.state == "delayed" and e.run_at <= now:
                e.state = "ready"
            if e.state == "leased" and e.lease_until is not None and e.lease_until <= now:
                e.token = e.lease_until = None
                e.error = "lease expired"
                e.state = "dead" if e.attempts >= MAX_ATTEMPTS else "ready"

    def claimable(self) -> list[int]:
        ready = [(-e.priority, e.run_at, mid) for mid, e in self.expected.items() if e.state == "ready"]
        return [mid for _p, _r, mid in sorted(ready)]

    def unfinished(self) -> int:
        return sum(e.state in ("ready", "delayed", "leased") for e in self.expected.values())

    def is_current(self, msg: liteq.Message) -> bool:
        e = self.expected.get(msg.id)
        return e is not None and e.state == "leased" and e.token == msg.token

    def claim(self, n: int) -> None:
        self.maintain()
        want = self.claimable()[:n]
        got = self.q.get_many(n)
        assert [m.id for m in got] == want
        for m in got:
            e = self.expected[m.id]
            e.attempts += 1
            e.state, e.token, e.lease_until = "leased", m.token, self.now() + LEASE
            assert (m.payload, m.attempts, m.state) == (e.payload, e.attempts, "leased")
            assert m.lease_until == e.lease_until and m.token is not None
            self.deliveries.append(m)

    def pick(self, data: st.DataObject) -> liteq.Message:
        """A delivery to act on: mostly one whose lease is current (those make the
        interesting state changes), sometimes a stale one (LeaseLost)."""
        current = [m for m in self.deliveries if self.is_current(m)]
        stale = [m for m in self.deliveries if not self.is_current(m)]
        use_stale = not current or (bool(stale) and data.draw(st.integers(0, 3)) == 0)
        return data.draw(st.sampled_from(stale if use_stale else current))

    def expect_lease_lost(self, action) -> None:
        before = message_rows(self.db)
        try:
            action()
        except liteq.LeaseLost:
            pass
        else:
            raise AssertionError("a stale token was accepted")
        assert message_rows(self.db) == before, "LeaseLost changed something"

    # -- rules ------------------------------------------------------------------------

    @rule(priority=st.sampled_from([0, 0, 0, 1]), delay=st.sampled_from([0, 0, 0, 5, 10]))
    def put(self, priority: int, delay: int) -> None:
        payload = self.next_payload
        self.next_payload += 1
        if self.unfinished() >= MAX_DEPTH:
            before = message_rows(self.db)
            try:
                self.q.put(payload, priority=priority, delay=delay)
            except liteq.QueueFull as exc:
                assert (exc.depth, exc.max_depth) == (MAX_DEPTH, MAX_DEPTH)
            else:
                raise AssertionError("a put beyond max_depth was accepted")
            assert message_rows(self.db) == before
            return
        mid = self.q.put(payload, priority=priority, delay=delay)
        assert mid not in self.expected and all(mid > other for other in self.expected)
        self.expected[mid] = Expected(
            payload=payload,
            priority=priority,
            run_at=self.now() + delay,
            state="delayed" if delay else "ready",
        )

    @rule()
    def get(self) -> None:
        self.claim(1)

    @rule(n=st.integers(min_value=2, max_value=4))
    def get_many(self, n: int) -> None:
        self.claim(n)

    @precondition(lambda self: self.deliveries)
    @rule(data=st.data())
    def ack(self, data: st.DataObject) -> None:
        msg = self.pick(data)
        if self.is_current(msg):
            msg.ack()
            del self.expected[msg.id]
        else:
            self.expect_lease_lost(msg.ack)

    @precondition(lambda self: self.deliveries)
    @rule(data=st.data(), delay=st.sampled_from([0, 0, 5]), error=st.sampled_from([None, "boom"]))
    def nack(self, data: st.DataObject, delay: int, error: str | None) -> None:
        msg = self.pick(data)
        if not self.is_current(msg):
            self.expect_lease_lost(lambda: msg.nack(delay=delay, error=error))
            return
        msg.nack(delay=delay, error=error)
        e = self.expected[msg.id]
        e.token = e.lease_until = None
        if e.attempts >= MAX_ATTEMPTS:
            e.state = "dead"
            e.error = error or f"gave up after {e.attempts} attempts"
        else:
            e.state = "delayed" if delay else "ready"
            e.run_at = self.now() + delay
            e.error = error

    @precondition(lambda self: self.deliveries)
    @rule(data=st.data(), seconds=st.sampled_from([5, 10, 20]))
    def extend(self, data: st.DataObject, seconds: int) -> None:
        msg = self.pick(data)
        if not self.is_current(msg):
            self.expect_lease_lost(lambda: msg.extend(seconds))
            return
        msg.extend(seconds)
        self.expected[msg.id].lease_until = self.now() + seconds
        assert msg.lease_until == self.now() + seconds

    @precondition(lambda self: self.deliveries)
    @rule(data=st.data())
    def fail(self, data: st.DataObject) -> None:
        msg = self.pick(data)
        if not self.is_current(msg):
            self.expect_lease_lost(lambda: msg.fail("given up"))
            return
        msg.fail("given up")
        e = self.expected[msg.id]
        e.state, e.token, e.lease_until, e.error = "dead", None, None, "given up"

    @rule(seconds=st.sampled_from([1, 5, 5, 10, 25]))
    def time_passes(self, seconds: int) -> None:
        self.clock.advance(seconds)

    @rule()
    def expire(self) -> None:
        self.q.expire()
        self.maintain()

    # -- invariants -------------------------------------------------------------------

    @invariant()
    def counts_agree(self) -> None:
        stats = self.q.stats()
        want = {s: 0 for s in ("ready", "delayed", "leased", "dead")}
        for e in self.expected.values():
            want[e.state] += 1
        assert {s: stats[s] for s in want} == want
        assert stats["depth"] == len(self.q) == self.unfinished()  # the back-pressure counter
        assert stats["done"] == 0 and stats["cancelled"] == 0

    @invariant()
    def every_message_agrees(self) -> None:
        stored = {m.id: m for m in self.q.peek(1000, state=None)}
        assert set(stored) == set(self.expected)
        for mid, e in self.expected.items():
            m = stored[mid]
            assert (m.state, m.attempts, m.payload, m.priority) == (
                e.state, e.attempts, e.payload, e.priority
            ), mid
            assert m.token == e.token and m.lease_until == e.lease_until, mid
            if e.state in ("ready", "delayed"):
                assert m.run_at == e.run_at, mid
            assert m.error == e.error, mid


SETTINGS = settings(
    max_examples=80,
    stateful_step_count=50,
    deadline=None,
    database=None,  # no example files left in the repository; failures print a repro
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def test_a_queue_behaves_like_its_model(db_target: str) -> None:
    QueueModel.target = db_target
    run_state_machine_as_test(QueueModel, settings=SETTINGS)
