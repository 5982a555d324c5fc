"""The put/ack totals counted in memory (``liteq.backends.totals``): every count reaches
a write exactly once, whatever threads count and take at the same time."""

from __future__ import annotations

import sys
import threading

from liteq.backends.totals import PendingTotals


def test_counts_from_many_threads_while_another_takes_are_each_taken_exactly_once() -> None:
    totals = PendingTotals()
    threads, per_thread = 6, 3000
    start = threading.Barrier(threads + 1)
    done = threading.Event()

    def count(i: int) -> None:
        start.wait()
        for n in range(per_thread):
            qid = n % 3
            if i % 3 == 0:
                totals.put_one(qid)
            elif i % 3 == 1:
                totals.ack_one(qid)
            else:
                totals.add(qid, 2, 1)  # a batch: the locked path

    taken: list[dict[int, list[int]]] = []

    def take() -> None:
        start.wait()
        while not done.is_set():
            taken.append(totals.take())
            totals.of(1)

    workers = [threading.Thread(target=count, args=(i,)) for i in range(threads)]
    taker = threading.Thread(target=take)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as CPython will
    try:
        for t in [*workers, taker]:
            t.start()
        for t in workers:
            t.join()
        done.set()
        taker.join()
    finally:
        sys.setswitchinterval(interval)
    taken.append(totals.take())

    enqueued = sum(e for pending in taken for e, _ in pending.values())
    finished = sum(f for pending in taken for _, f in pending.values())
    # Two threads of each kind: put_one 1 + 0, ack_one 0 + 1, add 2 + 1 per count.
    assert enqueued == 2 * per_thread * (1 + 2)
    assert finished == 2 * per_thread * (1 + 1)
    assert totals.take() == {}


def test_what_a_queue_counted_is_seen_before_the_write_and_a_failed_write_gives_it_back() -> None:
    totals = PendingTotals()
    totals.put_one(7)
    totals.put_one(7)
    totals.ack_one(7)
    totals.add(7, 3, 2)
    assert totals.of(7) == (5, 3) and totals.of(8) == (0, 0)

    pending = totals.take()
    assert pending == {7: [5, 3]} and totals.of(7) == (0, 0)
    totals.ack_one(7)
    totals.give_back(pending)  # the write failed
    assert totals.take() == {7: [5, 4]}
