"""Many consumers at once, across threads and processes: every message is delivered
and acked exactly once, and the write lock never escapes to the caller as an error."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import sys
import threading
import time
from collections import Counter
from typing import Any

import apsw
import pytest
from helpers import (
    PATIENCE,
    FakeClock,
    consume_until_stop,
    count_claims,
    drain_consumer,
    produce_with_back_pressure,
    put_when_told,
)

import liteq
from liteq.wake import RECHECK_AFTER

pytestmark = pytest.mark.every_engine

SPAWN = mp.get_context("spawn")


def test_four_processes_of_two_threads_ack_each_of_20000_messages_exactly_once(
    tmp_path, db_target
) -> None:
    path = db_target
    out = tmp_path / "results"
    out.mkdir()
    db = liteq.connect(path)
    # No lease runs out (any redelivery is a bug); the queue is exactly full, so its
    # depth counter must come back to 0 through 20,000 concurrent acks.
    q = db.queue("work", lease=600, max_depth=20_000)
    put_ids: list[int] = []
    for start in range(0, 20_000, 1_000):
        put_ids.extend(q.put_many([{"n": n} for n in range(start, start + 1_000)]))
    assert len(set(put_ids)) == 20_000

    barrier = SPAWN.Barrier(8)  # 4 processes x 2 threads start together
    procs = [
        SPAWN.Process(target=drain_consumer, args=(path, "work", barrier, str(out), p))
        for p in range(4)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(PATIENCE * 2)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]

    claimed: Counter[int] = Counter()
    acked: Counter[int] = Counter()
    errors: list[str] = []
    consumers = 0
    for name in sorted(os.listdir(out)):
        with open(out / name) as f:
            result = json.load(f)
        consumers += 1
        claimed.update(result["claimed"])
        acked.update(result["acked"])
        errors.extend(result["errors"])

    assert consumers == 8
    # No BusyError, "database is locked", DatabaseBusy or LeaseLost reached a caller.
    assert errors == [], errors[0]
    assert [mid for mid, n in claimed.items() if n > 1] == [], "a message was delivered twice"
    assert [mid for mid, n in acked.items() if n > 1] == [], "a message was acked twice"
    assert set(acked) == set(put_ids), "messages were lost"
    assert sum(acked.values()) == 20_000
    stats = q.stats()
    assert (stats["ready"], stats["leased"], stats["depth"], len(q)) == (0, 0, 0, 0)
    assert db.integrity_check() == ["ok"]
    db.close()


def test_threads_released_together_each_take_different_messages(db) -> None:
    q = db.queue("race", lease=600)
    ids = q.put_many(list(range(400)))
    barrier = threading.Barrier(8)
    taken: list[list[int]] = [[] for _ in range(8)]
    errors: list[BaseException] = []

    def consume(slot: int) -> None:
        try:
            barrier.wait(PATIENCE)
            while msgs := q.get_many(1 + slot % 3):
                taken[slot].extend(m.id for m in msgs)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=consume, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(PATIENCE)

    assert errors == []
    everything = [mid for chunk in taken for mid in chunk]
    assert sorted(everything) == ids  # each message held by exactly one thread
    assert q.stats()["leased"] == 400


def test_get_with_wait_returns_a_message_put_by_another_process(db_target) -> None:
    db = liteq.connect(db_target)
    q = db.queue("inbox")
    go = SPAWN.Event()
    child = SPAWN.Process(target=put_when_told, args=(db_target, "inbox", go, {"hello": "there"}))
    child.start()
    go.set()

    msg = q.get(wait=PATIENCE)

    assert msg is not None and msg.payload == {"hello": "there"}
    msg.ack()
    child.join(PATIENCE)
    assert child.exitcode == 0
    db.close()


def test_a_forked_child_can_use_the_parents_database_object(db_target) -> None:
    db = liteq.connect(db_target)
    q = db.queue("shared")
    q.put_many(["for the child", "for the parent"])
    assert q.peek(1)[0].payload == "for the child"  # the parent's connection is in use

    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            msg = q.get()
            if msg is not None and msg.payload == "for the child":
                msg.ack()
                q.put("from the child")
                db.close()
                code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0

    # The parent's own connection still works and sees the child's commits.
    assert [m.payload for m in q.peek(10)] == ["for the parent", "from the child"]
    mine = q.get()
    assert mine is not None and mine.payload == "for the parent"
    mine.ack()
    assert db.integrity_check() == ["ok"]
    db.close()


def test_producers_blocked_by_max_depth_and_consumers_in_other_processes_lose_nothing(
    tmp_path, db_target,
) -> None:
    path = db_target
    out = tmp_path / "results"
    out.mkdir()
    db = liteq.connect(path)
    q = db.queue("flow", max_depth=50, lease=600)
    per_producer = 1_500

    producers = [
        SPAWN.Process(
            target=produce_with_back_pressure, args=(path, "flow", p, per_producer, str(out))
        )
        for p in range(2)
    ]
    consumers = [
        SPAWN.Process(target=consume_until_stop, args=(path, "flow", c, 50, str(out)))
        for c in range(2)
    ]
    for proc in producers + consumers:
        proc.start()
    for proc in producers:
        proc.join(PATIENCE * 2)
    assert [p.exitcode for p in producers] == [0, 0]
    for _ in consumers:  # after every real message: lower priority, put last
        q.put("stop", priority=-1, block=True, timeout=PATIENCE)
    for proc in consumers:
        proc.join(PATIENCE * 2)
    assert [p.exitcode for p in consumers] == [0, 0]

    put_ids: list[int] = []
    acked: list[int] = []
    for name in sorted(os.listdir(out)):
        with open(out / name) as f:
            result = json.load(f)
        assert result["errors"] == [], result["errors"][0]
        if name.startswith("producer"):
            put_ids.extend(result["ids"])
        else:
            acked.extend(result["acked"])
            assert result["over"] == [], "depth went above max_depth"
    assert len(put_ids) == 2 * per_producer == len(set(put_ids))
    assert sorted(acked) == sorted(put_ids), "lost or duplicated messages"
    stats = q.stats()
    assert (stats["depth"], stats["ready"], stats["leased"]) == (0, 0, 0)
    db.close()


class _ClockThatSeesOtherThreads(FakeClock):
    """A FakeClock that signals when a thread other than the test's reads it."""

    def __init__(self) -> None:
        super().__init__()
        self.main = threading.get_ident()
        self.read_by_other = threading.Event()

    def __call__(self) -> float:
        if threading.get_ident() != self.main:
            self.read_by_other.set()
        return super().__call__()


def _until_started_waiting(thread: threading.Thread, clock) -> None:
    """Return once *thread* has read the clock or is seen in liteq's busy handler (it
    is then waiting for the write lock), or after a few seconds. Only a shortcut:
    the tests below hold whenever the thread reads the clock after the lock is free."""
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and not clock.read_by_other.is_set():
        frame = sys._current_frames().get(thread.ident or -1)
        while frame is not None:
            code = frame.f_code
            if code.co_filename.endswith(os.path.join("sqlite", "base.py")) and code.co_name == "handler":
                return
            frame = frame.f_back
        time.sleep(0.005)


def _while_the_write_lock_is_held_for(seconds: float, clock, db_path: str, action) -> object:
    """Run *action* in a thread while another connection holds the write lock; let
    *seconds* pass on *clock* while the action waits for the lock; return its result."""
    blocker = apsw.Connection(db_path)
    blocker.execute("BEGIN IMMEDIATE")
    result: dict[str, object] = {}

    def run() -> None:
        try:
            result["value"] = action()
        except BaseException as exc:
            result["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    try:
        _until_started_waiting(thread, clock)
        clock.advance(seconds)  # time passes while the action waits for the lock
    finally:
        blocker.execute("COMMIT")
        blocker.close()
    thread.join(PATIENCE)
    assert "error" not in result, result.get("error")
    return result["value"]


@pytest.mark.sqlite_only("holds SQLite's write lock with a raw apsw BEGIN IMMEDIATE")
def test_a_claim_that_waited_for_the_write_lock_still_gets_a_whole_lease(db_path) -> None:
    clock = _ClockThatSeesOtherThreads()
    db = liteq.connect(db_path, clock=clock)
    q = db.queue("slow", lease=5)
    q.put("x")

    msg = _while_the_write_lock_is_held_for(10, clock, db_path, q.get)

    assert isinstance(msg, liteq.Message)
    stored = db.message(msg.id)
    assert stored is not None and stored.lease_until is not None
    assert stored.lease_until > clock(), "the lease had run out when the claim returned"
    assert q.get() is None, "another consumer took the message while the first holds it"
    db.close()


class _ClockSeenOnlyInTheBusyHandler(FakeClock):
    """A FakeClock whose reads do not end _until_started_waiting: it waits until the
    claiming thread is in liteq's busy handler, so time passes only while it waits."""

    read_by_other = threading.Event()  # never set


@pytest.mark.sqlite_only("holds SQLite's write lock with a raw apsw BEGIN IMMEDIATE")
def test_a_claim_in_one_statement_that_waited_for_the_write_lock_still_gets_a_whole_lease(
    db_path,
) -> None:
    clock = _ClockSeenOnlyInTheBusyHandler()
    db = liteq.connect(db_path, clock=clock)
    q = db.queue("slow", lease=5)
    q.put_many(["x", "y"])
    first = q.get()  # the queue was just maintained: the next get is one statement
    assert first is not None
    first.ack()

    msg = _while_the_write_lock_is_held_for(10, clock, db_path, q.get)

    assert isinstance(msg, liteq.Message)
    stored = db.message(msg.id)
    assert stored is not None and stored.lease_until is not None
    assert stored.lease_until > clock(), "the lease had run out when the claim returned"
    assert msg.lease_until == stored.lease_until
    assert q.get() is None, "another consumer took the message while the first holds it"
    db.close()


@pytest.mark.sqlite_only("holds SQLite's write lock with a raw apsw BEGIN IMMEDIATE")
def test_an_extend_that_waited_for_the_write_lock_still_renews_the_whole_lease(db_path) -> None:
    clock = _ClockThatSeesOtherThreads()
    db = liteq.connect(db_path, clock=clock)
    q = db.queue("slow", lease=5)
    q.put("x")
    msg = q.get()
    assert msg is not None

    _while_the_write_lock_is_held_for(10, clock, db_path, lambda: msg.extend(5))

    stored = db.message(msg.id)
    assert stored is not None and stored.lease_until is not None
    assert stored.lease_until > clock(), "the renewed lease had run out when extend returned"
    assert q.get() is None, "another consumer took the message while the first holds it"
    db.close()


class _LateCommits:
    """Instruments ``q.get(wait=...)`` on *db*: a commit by *other* lands between its
    first claim and the arming of its waiter, the first *misses* looks without the lock
    find nothing (as before a commit becomes visible: its WAL frames, and so the wake-up
    hint, come first), and ``on_wait(timeout)`` runs before each wait, which is recorded."""

    def __init__(self, db: liteq.Database, other: liteq.Database, misses: int,
                 on_wait: Any = None) -> None:
        self.waits: list[float] = []
        self.landed: list[int] = []
        waiter = db.waiter()
        real_wait, real_probe = waiter.wait, db.backend.probe
        probes: list[int] = []

        def waiter_after_a_commit() -> Any:  # get_many asks for it right after the claim
            if not self.landed:
                self.landed.append(other.queue("q").put("late"))
            return waiter

        def recording_wait(timeout: float) -> bool:
            if on_wait is not None:
                on_wait(self, timeout)
            self.waits.append(timeout)
            return real_wait(timeout)

        def late_probe(qid: int) -> tuple[bool, float]:
            probes.append(qid)
            return (False, float("inf")) if len(probes) <= misses else real_probe(qid)

        db.waiter = waiter_after_a_commit  # type: ignore[method-assign]
        waiter.wait = recording_wait  # type: ignore[method-assign]
        db.backend.probe = late_probe  # type: ignore[method-assign]


@pytest.fixture
def two_connections(db_path: str) -> Any:
    """A consumer's connection (with inotify wake-ups) and another one to commit from."""
    db = liteq.connect(db_path)
    if not db.waiter().uses_inotify:
        pytest.skip("needs inotify wake-ups (Linux)")
    other = liteq.connect(db_path)
    yield db, other
    other.close()
    db.close()


@pytest.mark.sqlite_only("a commit's -wal frames come before it is visible: SQLite's inotify wake-up")
def test_a_commit_between_the_first_claim_and_arming_the_waiter_is_looked_for_again(
    two_connections,
) -> None:
    # get(wait=...) claims before it arms the waiter. A commit landing in between sends
    # its hint before it is visible: arm() drains that hint, so the look after it must
    # be repeated soon (RECHECK_AFTER), not after a long sleep.
    db, other = two_connections
    q = db.queue("q")
    late = _LateCommits(db, other, misses=1)

    msg = q.get(wait=PATIENCE)

    assert msg is not None and msg.id == late.landed[0]
    assert late.waits[0] == RECHECK_AFTER[0], f"slept {late.waits[0]} s after a missed look"
    msg.ack()


@pytest.mark.sqlite_only("a commit's -wal frames come before it is visible: SQLite's inotify wake-up")
def test_a_commit_waking_a_consumer_during_its_re_looks_gets_re_looks_of_its_own(
    two_connections,
) -> None:
    # A second commit lands in the middle of the re-look schedule of the first; until
    # it is visible, the consumer must keep re-looking (the schedule starts over), not
    # run out of re-looks and sleep a second.
    db, other = two_connections
    q = db.queue("q")

    def commit_during_the_third_re_look(late: _LateCommits, timeout: float) -> None:
        if timeout == RECHECK_AFTER[2] and len(late.landed) == 1:
            late.landed.append(other.queue("q").put("later"))

    late = _LateCommits(db, other, misses=5, on_wait=commit_during_the_third_re_look)

    msg = q.get(wait=PATIENCE)

    assert msg is not None and len(late.landed) == 2
    assert max(late.waits) <= max(RECHECK_AFTER), f"waits {late.waits}: slept after a miss"
    msg.ack()


@pytest.mark.sqlite_only("counts the claims of consumers woken by inotify on the -wal file")
def test_a_waiting_consumer_does_not_take_the_write_lock_for_other_queues_commits(
    db_path,
) -> None:
    # Every commit to the file wakes every waiting consumer (the hint is the -wal file
    # changing). A woken consumer looks without the write lock first, so 50 puts to
    # another queue cost it no claims (a claim is a write transaction: it would queue
    # on the lock with the producers).
    db = liteq.connect(db_path)
    if not db.waiter().uses_inotify:
        pytest.skip("needs inotify wake-ups (Linux)")
    claims = count_claims(db)  # before the queue is made: it binds the claim once
    waiting = db.queue("idle")
    other = liteq.connect(db_path)
    busy = other.queue("busy")
    got: list[Any] = []
    thread = threading.Thread(target=lambda: got.append(waiting.get(wait=PATIENCE)))
    thread.start()
    deadline = time.monotonic() + PATIENCE
    while not claims and time.monotonic() < deadline:
        time.sleep(0.001)  # until its first (empty) claim: it is waiting from then on

    for i in range(50):
        busy.put(i)
        time.sleep(0.002)
    other.queue("idle").put("at last")
    thread.join(PATIENCE)

    assert got and got[0] is not None and got[0].payload == "at last"
    assert len(claims) <= 3, f"{len(claims)} claims (write transactions) while waiting"
    got[0].ack()
    other.close()
    db.close()
