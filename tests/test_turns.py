"""Idle consumers take turns to wait for commits (``liteq.turns``): of the consumers of a
queue waiting on one host, one is woken by each commit, and the others follow promptly
when it takes work. On every engine: the turn is a lock file, the waiters are the
engine's own."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

import liteq
from liteq import inotify
from liteq.queue import Queue
from liteq.turns import Turn, open_turn

pytestmark = pytest.mark.every_engine

needs_inotify = pytest.mark.skipif(not inotify.available(), reason="turns need inotify (Linux)")


@pytest.fixture
def turn_path(tmp_path: Any) -> str:
    return str(tmp_path / "turn")


# -- the turn itself ----------------------------------------------------------------------

@needs_inotify
@pytest.mark.sqlite_only("the lock file alone; no database")
def test_one_holds_the_turn_and_the_next_takes_it_when_it_is_passed_on(turn_path: str) -> None:
    a, b = Turn(turn_path), Turn(turn_path)
    try:
        assert a.take() and a.take()  # held: taking again is a no-op
        assert not b.take()
        t0 = time.monotonic()
        assert b.wait(0.1) is False  # not passed on: the wait times out
        assert time.monotonic() - t0 >= 0.09
        timer = threading.Timer(0.2, a.pass_on)
        timer.start()
        t0 = time.monotonic()
        assert b.wait(10.0) is True  # woken by the pass, not by its timeout
        assert time.monotonic() - t0 < 5.0
        assert b.held and not a.take()
        timer.join()
    finally:
        a.close()
        b.close()
    assert not os.path.exists(turn_path)  # the last to close removes the file


@needs_inotify
@pytest.mark.sqlite_only("the lock file alone; no database")
def test_a_wait_for_the_turn_ends_when_another_descriptor_becomes_readable(turn_path: str) -> None:
    a, b = Turn(turn_path), Turn(turn_path)
    r, w = os.pipe()
    try:
        assert a.take()
        threading.Timer(0.1, os.write, (w, b"x")).start()
        t0 = time.monotonic()
        assert b.wait(10.0, also=(r,)) is False  # a stop, say: the caller looks why
        assert time.monotonic() - t0 < 5.0
    finally:
        a.close()
        b.close()
        os.close(r)
        os.close(w)


_HOLD = """
import os, sys, time
from liteq.turns import Turn
t = Turn(sys.argv[1])
assert t.take()
if sys.argv[2] == "fork":
    if os.fork() == 0:  # a child (a pool's, say) outlives its parent
        time.sleep(30)
        os._exit(0)
print(os.getpid(), flush=True)
time.sleep(30)
"""


@needs_inotify
@pytest.mark.sqlite_only("the lock file alone; no database")
@pytest.mark.parametrize("fork", ["fork", "no-fork"])
def test_the_turn_of_a_killed_process_is_taken_at_the_next_look(turn_path: str, fork: str) -> None:
    """The kernel drops a dead holder's lock; a forked child's copy of the descriptor
    must not keep it (the child closes its copies at the fork)."""
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, turn_path, fork],
                            stdout=subprocess.PIPE, text=True)
    b = Turn(turn_path)
    try:
        pid = int(proc.stdout.readline())  # type: ignore[union-attr]
        assert not b.take()
        os.kill(pid, signal.SIGKILL)
        proc.wait(10)
        # No pass: the waiter finds the turn free when its bounded wait ends.
        assert b.wait(1.0) is True
    finally:
        b.close()
        if proc.poll() is None:
            proc.kill()
        subprocess.run(["pkill", "-KILL", "-f", turn_path], check=False)


# -- consumers of a queue -------------------------------------------------------------

def _count_claims(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """[claims, claims that found nothing], counted from now on."""
    counts = [0, 0]
    claim = Queue._claim

    def counted(self: Queue, n: int) -> list[Any]:
        got = claim(self, n)
        counts[0] += 1
        counts[1] += not got
        return got

    monkeypatch.setattr(Queue, "_claim", counted)
    return counts


def _consume(db: liteq.Database, name: str, stop: threading.Event, got: list[int],
             hold: float = 0.0, busy: list[int] | None = None) -> None:
    q = db.queue(name)
    while not stop.is_set():
        m = q.get(wait=0.5)
        if m is None:
            continue
        if busy is not None:
            busy.append(1)
            time.sleep(hold)
        m.ack()
        got.append(m.payload)
        if busy is not None:
            busy.pop()


@needs_inotify
def test_a_put_to_idle_consumers_has_one_of_them_claim(
    db: liteq.Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before turns, every idle consumer woke and claimed: with 4 of them, about 3 claims
    that found nothing per message. Now the one holding the turn claims, and after a
    message each consumer's next get() claims once before waiting (that claim finds
    nothing when the queue is idle): about 1 per message."""
    q = db.queue("turns")
    stop, got = threading.Event(), []
    threads = [threading.Thread(target=_consume, args=(db, "turns", stop, got)) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.5)  # all four waiting
    counts = _count_claims(monkeypatch)
    n = 30
    try:
        for i in range(n):
            q.put(i)
            deadline = time.monotonic() + 10
            while len(got) <= i and time.monotonic() < deadline:
                time.sleep(0.005)
            time.sleep(0.03)  # everyone idle again
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert sorted(got) == list(range(n))
    assert counts[1] / n < 2.0, counts  # 3 or more per message without turns


@needs_inotify
def test_work_that_arrives_at_once_is_taken_by_every_idle_consumer(db: liteq.Database) -> None:
    """The turn passes on as soon as its holder claimed: the next holder looks at once,
    finds the rest, and so on, so a burst is shared by the idle consumers (that the pass
    wakes the next one, rather than its bounded wait running out, is the first test's)."""
    q = db.queue("burst")
    stop, got, busy = threading.Event(), [], []
    most = [0]
    threads = [threading.Thread(target=_consume, args=(db, "burst", stop, got, 0.3, busy))
               for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    try:
        q.put_many(list(range(12)))  # one commit
        deadline = time.monotonic() + 30
        while len(got) < 12 and time.monotonic() < deadline:
            most[0] = max(most[0], len(busy))
            time.sleep(0.01)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert sorted(got) == list(range(12))
    assert most[0] >= 3, most  # at least three worked at once


@pytest.mark.sqlite_only("where turns cannot be had; the engine does not matter")
def test_without_inotify_every_waiter_waits_for_commits(
    db: liteq.Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LITEQ_NO_INOTIFY", "1")
    assert open_turn(db.backend.identity, "1") is None
    q = db.queue("plain")
    threading.Timer(0.2, q.put, ("x",)).start()
    m = q.get(wait=10)
    assert m is not None and m.payload == "x"
