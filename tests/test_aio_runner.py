"""liteq.aio's thread pool (runner.py): calls made one after another run on one thread
(one connection, a warm page cache), overlapping calls spread to at most ``threads``
threads, and closing lets the idle threads end. No database: these are the pool's own
guarantees, the same on every engine."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from liteq.aio.runner import Runner
from liteq.errors import LiteqError

pytestmark = pytest.mark.asyncio


async def test_calls_made_one_after_another_run_on_one_thread() -> None:
    runner = Runner(4)
    try:
        await asyncio.gather(*(runner.call(time.sleep, 0.02) for _ in range(4)))  # 4 started
        idents = {await runner.call(threading.get_ident) for _ in range(50)}
        assert len(idents) == 1
    finally:
        runner.shutdown()


async def test_overlapping_calls_use_at_most_the_pools_threads() -> None:
    runner = Runner(3)
    running = 0
    most = 0
    lock = threading.Lock()

    def work() -> int:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.01)
        with lock:
            running -= 1
        return threading.get_ident()

    try:
        idents = await asyncio.gather(*(runner.call(work) for _ in range(12)))
        assert most == 3 and len(set(idents)) == 3
    finally:
        runner.shutdown()


async def test_a_call_cancelled_before_it_started_never_runs() -> None:
    runner = Runner(1)
    ran: list[int] = []
    try:
        busy = asyncio.ensure_future(runner.call(time.sleep, 0.05))
        await asyncio.sleep(0.01)
        queued = asyncio.ensure_future(runner.call(ran.append, 1))
        await asyncio.sleep(0)
        queued.cancel()
        with pytest.raises(asyncio.CancelledError):
            await queued
        await busy
        await runner.call(ran.append, 2)
        assert ran == [2]
    finally:
        runner.shutdown()


async def test_closing_lets_the_idle_threads_end_and_refuses_new_calls() -> None:
    # The runner's own threads, told apart by identity: a count of every thread in the
    # process moved with other tests' threads ending meanwhile (a CI run at load). The
    # barrier keeps the 4 calls in 4 threads at once, however slow the machine.
    runner = Runner(4)
    barrier = threading.Barrier(4)

    def meet() -> threading.Thread:
        barrier.wait(10)
        return threading.current_thread()

    mine = set(await asyncio.gather(*(runner.call(meet) for _ in range(4))))
    assert len(mine) == 4 and all(t.is_alive() for t in mine)
    runner.shutdown()
    deadline = time.monotonic() + 5
    while any(t.is_alive() for t in mine) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert not any(t.is_alive() for t in mine)
    with pytest.raises(LiteqError):
        await runner.call(time.sleep, 0)
