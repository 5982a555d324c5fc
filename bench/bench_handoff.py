#!/usr/bin/env python3
"""What one trip from the event loop to a thread and back costs, with no database work
(issue 18: the floor under every ``liteq.aio`` call). Not a timed test.

    .venv/bin/python bench/bench_handoff.py -n 5000 --runs 5

Variants, each timed with 1 and with 8 coroutines calling an empty function at once,
interleaved run by run so that machine noise hits them alike (medians printed, in µs
per call):

* ``executor``: ``concurrent.futures.ThreadPoolExecutor`` + ``asyncio.wrap_future``
  (``liteq.aio`` before session 8);
* ``lifo-lock``: idle threads on a stack, the most recently idle one takes the next
  call (it is the one most likely still on a CPU), each woken through its own lock;
* ``lifo-pipe``: the same, each thread woken by a byte on its own pipe;
* ``runner``: :class:`liteq.aio.runner.Runner` as it is now.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from liteq.aio.runner import Runner  # noqa: E402


def noop() -> int:
    return 1


class LifoPool:
    """Idle threads on a stack; *pipe* picks the wake-up (a pipe, else a lock)."""

    def __init__(self, threads: int, pipe: bool) -> None:
        self.threads, self.pipe = threads, pipe
        self.lock = threading.Lock()
        self.queue: deque[Any] = deque()
        self.idle: list[list[Any]] = []
        self.started = 0

    def submit(self, fn: Callable[[], Any]) -> Future[Any]:
        cf: Future[Any] = Future()
        item = (cf, fn)
        with self.lock:
            if self.idle:
                slot = self.idle.pop()
                slot[1] = item
                if self.pipe:
                    os.write(slot[0][1], b"x")
                else:
                    slot[0].release()
                return cf
            if self.started == self.threads:
                self.queue.append(item)
                return cf
            self.started += 1
        threading.Thread(target=self.work, args=(item,), daemon=True).start()
        return cf

    def work(self, item: Any) -> None:
        slot: list[Any] = [os.pipe() if self.pipe else threading.Lock(), None]
        if not self.pipe:
            slot[0].acquire()
        while True:
            cf, fn = item
            if cf.set_running_or_notify_cancel():
                cf.set_result(fn())
            with self.lock:
                if self.queue:
                    item = self.queue.popleft()
                    continue
                self.idle.append(slot)
            if self.pipe:
                os.read(slot[0][0], 1)
            else:
                slot[0].acquire()
            item = slot[1]


async def timed(call: Callable[[], Any], n: int, coroutines: int) -> float:
    async def one(k: int) -> None:
        for _ in range(k):
            await call()

    await asyncio.gather(*(one(100) for _ in range(coroutines)))  # threads started
    t = time.perf_counter()
    await asyncio.gather(*(one(n // coroutines) for _ in range(coroutines)))
    return (time.perf_counter() - t) / (n // coroutines * coroutines) * 1e6


async def one_round(n: int, coroutines: int) -> dict[str, float]:
    out = {}
    tpe = ThreadPoolExecutor(4)
    out["executor"] = await timed(lambda: asyncio.wrap_future(tpe.submit(noop)), n, coroutines)
    tpe.shutdown()
    for name, pipe in (("lifo-lock", False), ("lifo-pipe", True)):
        pool = LifoPool(4, pipe)
        out[name] = await timed(lambda p=pool: asyncio.wrap_future(p.submit(noop)), n, coroutines)
    runner = Runner(4)
    out["runner"] = await timed(lambda: runner.call(noop), n, coroutines)
    runner.shutdown()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=5000, help="calls per figure")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    for coroutines in (1, 8):
        rounds = [asyncio.run(one_round(args.n, coroutines)) for _ in range(args.runs)]
        line = "  ".join(f"{name} {statistics.median(r[name] for r in rounds):6.1f}"
                         for name in rounds[0])
        print(f"{coroutines} coroutine(s), µs per call (median of {args.runs}): {line}")


if __name__ == "__main__":
    main()
