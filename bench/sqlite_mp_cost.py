"""Where a message's time goes in SQLite's multi-process rows (issue 23, "1 + 4 >= 1 + 2").

    .venv/bin/python bench/sqlite_mp_cost.py [--n 20000] [--consumers 2,4]
        [--systems liteq,raw-minimal] [--rounds 2] [--busy FIRST,LOW,HIGH,COUNT]

1 producer putting N messages and k consumer processes, each ``wait_get(0.05)`` + ack
until the producer is done and nothing is left (the loops of ``compare.py``'s multi-
process rows, on a fresh file each run). Per message it reports the rate, the
producer's own rate, the CPU (``getrusage``) and context switches of the producer and
of the consumers together (from the start barrier on; involuntary switches apart: the
process was preempted, perhaps while holding the write lock), and how often each side slept in SQLite's busy handler
(liteq's handler, wrapped to count: a sleep means the write lock was held by another
process when this one wanted it).

``--busy FIRST,LOW,HIGH,COUNT`` gives liteq's processes another sleep policy for the
run (the first COUNT retries sleep FIRST seconds, later ones a uniform LOW..HIGH; liteq
sleeps 0.0001 x 5, then 0.0005..0.0015): a way to test whether the hand-off of the lock
is what limits a row. Never part of the test run.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import resource
import shutil
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from harness import drain  # noqa: E402
from peers import open_system  # noqa: E402

SLEEPS = [0]  # busy-handler sleeps of this process


def _counting(policy: tuple[float, float, float, int] | None, backend: Any) -> Any:
    """liteq's busy handler (or *policy*'s), counting its sleeps."""
    if policy is None:
        inner = backend._busy_handler()

        def handler(count: int) -> bool:
            SLEEPS[0] += 1
            return bool(inner(count))

        return handler
    first, low, high, many = policy
    start = [0.0]

    def sleeper(count: int) -> bool:
        now = time.monotonic()
        if count == 0:
            start[0] = now
        elif now - start[0] >= backend.busy_timeout:
            return False
        SLEEPS[0] += 1
        time.sleep(first if count < many else random.uniform(low, high))
        return True

    return sleeper


def child(name: str, directory: str, role: str, n: int, policy: Any, start: Any, done: Any,
          results: Any) -> None:
    peer = open_system(name, directory, "NORMAL")
    if name == "liteq":  # this process's connection, with a handler that counts
        peer.db.connection.set_busy_handler(_counting(policy, peer.db.backend))
    start.wait()
    t0 = time.time()
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    SLEEPS[0] = 0
    got = 0
    if role == "producer":
        for i in range(n):
            peer.put({"id": i, "body": "x" * 100})
        done.set()
    else:
        got = drain(peer, done)
    end = time.time()
    ru = resource.getrusage(resource.RUSAGE_SELF)
    sleeps = SLEEPS[0]
    peer.close()
    cpu = ru.ru_utime + ru.ru_stime - ru0.ru_utime - ru0.ru_stime
    ctx = ru.ru_nvcsw + ru.ru_nivcsw - ru0.ru_nvcsw - ru0.ru_nivcsw
    forced = ru.ru_nivcsw - ru0.ru_nivcsw
    results.put((role, {"start": t0, "end": end, "got": got, "cpu": cpu, "ctx": ctx, "forced": forced,
                        "sleeps": sleeps}))


def one(name: str, n: int, consumers: int, policy: Any) -> dict[str, float]:
    directory = tempfile.mkdtemp(prefix=f"liteq-mpcost-{name}-")
    try:
        open_system(name, directory, "NORMAL").close()  # the schema first
        ctx = mp.get_context("spawn")
        start, done, results = ctx.Barrier(consumers + 1), ctx.Event(), ctx.Queue()
        roles = ["producer"] + ["consumer"] * consumers
        procs = [ctx.Process(target=child, args=(name, directory, r, n, policy, start, done,
                                                 results)) for r in roles]
        for p in procs:
            p.start()
        reports = [results.get(timeout=300) for _ in procs]
        for p in procs:
            p.join(10)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    prod = next(d for r, d in reports if r == "producer")
    cons = [d for r, d in reports if r == "consumer"]
    got = sum(d["got"] for d in cons)
    if got != n:
        raise SystemExit(f"{name}: {got} of {n} messages consumed")
    t0 = min(d["start"] for _, d in reports)
    t1 = max(d["end"] for _, d in reports)
    return {"rate": n / (t1 - t0), "producer_rate": n / (prod["end"] - prod["start"]),
            "producer_us": prod["cpu"] / n * 1e6, "producer_ctx": prod["ctx"] / n,
            "producer_sleeps": prod["sleeps"] / n,
            "consumers_us": sum(d["cpu"] for d in cons) / n * 1e6,
            "consumers_ctx": sum(d["ctx"] for d in cons) / n,
            "producer_forced": prod["forced"] / n,
            "consumers_forced": sum(d["forced"] for d in cons) / n,
            "consumers_sleeps": sum(d["sleeps"] for d in cons) / n}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--consumers", default="2,4")
    ap.add_argument("--systems", default="liteq,raw-minimal")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--busy", default=None, help="FIRST,LOW,HIGH,COUNT (liteq only)")
    args = ap.parse_args()
    policy = None
    if args.busy:
        first, low, high, many = args.busy.split(",")
        policy = (float(first), float(low), float(high), int(many))
    for r in range(args.rounds):
        for k in (int(c) for c in args.consumers.split(",")):
            for name in args.systems.split(","):
                m = one(name, args.n, k, policy)
                sleeps = (f"; busy sleeps/msg producer {m['producer_sleeps']:.2f}, consumers "
                          f"{m['consumers_sleeps']:.2f}" if name == "liteq" else "")
                print(f"[{r + 1}] {name:12s} 1+{k}: {m['rate']:7,.0f} msgs/s (producer "
                      f"{m['producer_rate']:7,.0f}/s); CPU us/msg producer {m['producer_us']:5.1f}, "
                      f"consumers {m['consumers_us']:5.1f}; ctx switches/msg producer "
                      f"{m['producer_ctx']:.2f} ({m['producer_forced']:.2f} involuntary), consumers "
                      f"{m['consumers_ctx']:.2f} ({m['consumers_forced']:.2f}){sleeps}",
                      flush=True)


if __name__ == "__main__":
    main()
