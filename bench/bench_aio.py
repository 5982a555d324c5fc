#!/usr/bin/env python3
"""liteq.aio beside the sync API, in one run (issue 18's benchmark; not a timed test).

    .venv/bin/python bench/bench_aio.py                 # SQLite, in a temp dir
    .venv/bin/python bench/bench_aio.py --db postgres   # a throwaway cluster (fsync on)
    .venv/bin/python bench/bench_aio.py -n 20000 --target postgresql://...?schema=bench
    .venv/bin/python bench/bench_aio.py --only put,get_ack --coroutines 1,8,32

Figures, each the median of ``--runs`` runs:

* **put**: *n* puts one after another, sync; async from *k* coroutines at once for each
  ``--coroutines`` k (1: awaited one after another; 8 or 32: what an async web app
  does), with the ratio to the sync figure *of the same run* (median of the runs' ratios:
  the machine's load moves between runs) and the calls each trip to a thread carried.
* **get+ack**: the same for claiming and acking *n* messages.
* **burst**: consumers looping on ``get(wait=0.5)`` + ack wait on an empty queue, then
  *n* messages arrive in one ``put_many``; msgs/s from the put to the last ack (sync:
  one consumer; async: *k* coroutines).
* **enqueue-to-claim**: a consumer in another process waits in ``get(wait=...)``
  (sync, or async on its event loop); the producer puts a message holding its send time
  every 5 ms; p50 and p99 of the time from ``put()`` to the claim returning.
* **asyncio pool**: *n* no-op ``async def`` tasks through 2 ``liteq worker --pool
  asyncio`` processes; tasks/s from the first start to the last finish.

Targets (DESIGN.md, issue 18): async per-message throughput >= 80% of sync,
enqueue-to-claim p50 < 1 ms across processes, the asyncio pool >= 10,000 tasks/s with 2
processes. Results go in bench/README.md by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import math
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import liteq  # noqa: E402
import liteq.aio  # noqa: E402

sys.path.insert(0, str(ROOT / "tests"))
from pgcluster import Cluster, find_bindir  # noqa: E402

PAYLOAD = {"to": "someone@example.com", "subject": "hello", "n": 0}


def _fresh(target: str, name: str) -> str:
    """A queue name not used before in this run (the database is shared by the runs)."""
    return f"{name}_{time.monotonic_ns()}"


def sync_put(target: str, n: int) -> float:
    db = liteq.connect(target)
    q = db.queue(_fresh(target, "sp"))
    t = time.perf_counter()
    for _ in range(n):
        q.put(PAYLOAD)
    elapsed = time.perf_counter() - t
    db.close()
    return n / elapsed


def sync_get_ack(target: str, n: int) -> float:
    db = liteq.connect(target)
    q = db.queue(_fresh(target, "sg"))
    q.put_many([PAYLOAD] * n)
    t = time.perf_counter()
    for _ in range(n):
        msg = q.get()
        assert msg is not None
        msg.ack()
    elapsed = time.perf_counter() - t
    db.close()
    return n / elapsed


async def _async_put(target: str, n: int, tasks: int) -> tuple[float, float]:
    """Puts/s from *tasks* coroutines, and the calls each trip carried on average."""
    async with liteq.aio.connect(target) as db:
        q = await db.queue(_fresh(target, "ap"))
        trips: list[int] = []
        if hasattr(q, "put_batches"):  # absent before session 8: run older code too
            q.put_batches.trips = trips

        async def one(k: int) -> None:
            for _ in range(k):
                await q.put(PAYLOAD)

        t = time.perf_counter()
        await asyncio.gather(*(one(n // tasks) for _ in range(tasks)))
        rate = (n // tasks * tasks) / (time.perf_counter() - t)
        return rate, sum(trips) / len(trips) if trips else float("nan")


async def _async_get_ack(target: str, n: int, tasks: int) -> tuple[float, float]:
    """get+ack/s from *tasks* coroutines, and the gets each claim trip carried."""
    async with liteq.aio.connect(target) as db:
        q = await db.queue(_fresh(target, "ag"))
        await q.put_many([PAYLOAD] * n)
        trips: list[int] = []
        if hasattr(q, "claim_batches"):
            q.claim_batches.trips = trips

        async def one(k: int) -> None:
            for _ in range(k):
                msg = await q.get()
                assert msg is not None
                await msg.ack()

        t = time.perf_counter()
        await asyncio.gather(*(one(n // tasks) for _ in range(tasks)))
        rate = (n // tasks * tasks) / (time.perf_counter() - t)
        return rate, sum(trips) / len(trips) if trips else float("nan")


def sync_burst(target: str, n: int) -> float:
    """One consumer looping on get(wait=) + ack, waiting before *n* messages arrive at
    once (put_many from another thread); msgs/s from the put to the last ack."""
    db = liteq.connect(target)
    q = db.queue(_fresh(target, "sb"))
    start: list[float] = []

    def burst() -> None:
        time.sleep(0.1)  # the consumer is waiting
        start.append(time.perf_counter())
        q.put_many([PAYLOAD] * n)

    producer = threading.Thread(target=burst)
    producer.start()
    done = 0
    while done < n:
        msg = q.get(wait=0.5)
        if msg is not None:
            msg.ack()
            done += 1
    elapsed = time.perf_counter() - start[0]
    producer.join()
    db.close()
    return n / elapsed


async def _async_burst(target: str, n: int, tasks: int) -> tuple[float, float]:
    """*tasks* coroutines looping on get(wait=) + ack, all waiting before *n* messages
    arrive at once; msgs/s from the put to the last ack, and messages per claim."""
    async with liteq.aio.connect(target) as db:
        q = await db.queue(_fresh(target, "ab"))
        done = 0
        end = 0.0

        async def one() -> None:
            nonlocal done, end
            while done < n:
                msg = await q.get(wait=0.5)
                if msg is not None:
                    await msg.ack()
                    done += 1
                    if done == n:
                        end = time.perf_counter()

        consumers = [asyncio.create_task(one()) for _ in range(tasks)]
        await asyncio.sleep(0.1)  # all waiting
        t = time.perf_counter()
        await q.put_many([PAYLOAD] * n)
        await asyncio.gather(*consumers)
        return n / (end - t), float("nan")


CONSUMER = textwrap.dedent("""
    import asyncio, sys, time
    import liteq, liteq.aio
    target, queue, mode, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    lags = []
    if mode == "sync":
        db = liteq.connect(target)
        q = db.queue(queue)
        print("ready", flush=True)
        while len(lags) < count:
            msg = q.get(wait=5)
            if msg is not None:
                lags.append(time.time() - msg.payload)
                msg.ack()
    else:
        async def main():
            async with liteq.aio.connect(target) as db:
                q = await db.queue(queue)
                print("ready", flush=True)
                while len(lags) < count:
                    msg = await q.get(wait=5)
                    if msg is not None:
                        lags.append(time.time() - msg.payload)
                        await msg.ack()
        asyncio.run(main())
    print(" ".join(map(str, lags)), flush=True)
""")


def enqueue_to_claim(target: str, mode: str, count: int) -> tuple[float, float]:
    """p50 and p99 (s) of put-to-claim with a consumer (sync or async) in another process."""
    name = _fresh(target, "lat")
    db = liteq.connect(target)
    q = db.queue(name)
    proc = subprocess.Popen([sys.executable, "-c", CONSUMER, target, name, mode, str(count)],
                            stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    time.sleep(0.2)  # the consumer is waiting
    for _ in range(count):
        q.put(time.time())
        time.sleep(0.005)
    out, _ = proc.communicate(timeout=60)
    db.close()
    lags = sorted(float(x) for x in out.split())
    return statistics.median(lags), lags[int(len(lags) * 0.99)]


APP = textwrap.dedent("""
    import liteq
    db = liteq.connect()

    @db.task(name="bench.anoop", queue="bench_aio")
    async def anoop():
        pass
""")


def asyncio_pool(target: str, n: int, processes: int = 2) -> float:
    """No-op async tasks/s through *processes* ``--pool asyncio`` workers."""
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "benchapp.py").write_text(APP)
        env = {**os.environ, "LITEQ_DB": target,
               "PYTHONPATH": os.pathsep.join([tmp, str(ROOT)])}
        db = liteq.connect(target)
        db.queue("bench_aio").purge()
        sys.path.insert(0, tmp)
        os.environ["LITEQ_DB"] = target  # the app's liteq.connect() opens it
        try:
            benchapp = importlib.import_module("benchapp")
            benchapp = importlib.reload(benchapp)
        finally:
            sys.path.remove(tmp)
            del os.environ["LITEQ_DB"]
        benchapp.anoop.enqueue_many([()] * n)
        procs = [subprocess.Popen([sys.executable, "-m", "liteq", "worker", "benchapp",
                                   "--pool", "asyncio", "-c", "200", "--burst",
                                   "--summary-interval", "0", "--log-level", "warning"],
                                  env=env, cwd=tmp) for _ in range(processes)]
        for p in procs:
            p.wait(600)
        # PostgreSQL keeps liteq's tables in their own schema (the backend's .schema).
        schema = getattr(db.backend, "schema", None)
        results = f"{schema}.results" if schema else "results"
        span = db.execute(f"SELECT min(started_at), max(finished_at), count(*) FROM {results} "
                          "WHERE task = 'bench.anoop'")
        db.execute(f"DELETE FROM {results} WHERE task = 'bench.anoop'")  # for the next run
        db.close()
        benchapp.db.close()
        first, last, done = span[0]
        return done / (last - first)


def median(runs: int, fn: Callable[[], Any]) -> Any:
    values = [fn() for _ in range(runs)]
    if isinstance(values[0], tuple):
        return tuple(statistics.median(v[i] for v in values) for i in range(len(values[0])))
    return statistics.median(values)


def loadavg() -> str:
    """The 1-minute load average, or '?' where there is none."""
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "?"


def compare(name: str, runs: int, sync: Callable[[], float],
            aio: Callable[[int], tuple[float, float]], coroutines: list[int]) -> None:
    """Each run: the sync figure, then the async one for each coroutine count; print
    medians of the rates and of the per-run ratios."""
    rows: dict[int, list[tuple[float, float, float]]] = {k: [] for k in coroutines}
    base: list[float] = []
    for _ in range(runs):
        s = sync()
        base.append(s)
        for k in coroutines:
            rate, per_trip = aio(k)
            rows[k].append((rate, rate / s, per_trip))
    print(f"{name + ', sync':42s} {statistics.median(base):10,.0f} msgs/s")
    for k, got in rows.items():
        ratios = sorted(r for _, r, _ in got)
        label = f"{name}, async ({k} coroutine{'s' if k > 1 else ''})"
        per_trip = statistics.median(t for _, _, t in got)
        print(f"{label:42s} "
              f"{statistics.median(r for r, _, _ in got):10,.0f} msgs/s  "
              f"{statistics.median(ratios):5.0%} of sync (runs {ratios[0]:.0%}-{ratios[-1]:.0%})"
              + ("" if math.isnan(per_trip) else f"  {per_trip:5.1f} calls/trip"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=5000, help="messages per figure")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite",
                    help="the engine: a SQLite file in a temp dir, or a throwaway "
                         "PostgreSQL cluster (tests/pgcluster.py, fsync on)")
    ap.add_argument("--target", help="a database to use instead (a path or a URL)")
    ap.add_argument("--coroutines", default="1,8,32",
                    help="coroutine counts of the async figures (default 1,8,32)")
    ap.add_argument("--only", default="put,get_ack,burst,latency,pool",
                    help="figures to run, of put,get_ack,burst,latency,pool")
    ap.add_argument("--latency", type=int, default=300, help="messages of the latency test")
    args = ap.parse_args()
    only = set(args.only.split(","))
    coroutines = [int(k) for k in args.coroutines.split(",")]
    cluster = None
    with tempfile.TemporaryDirectory() as tmp:
        if args.target:
            target = args.target
        elif args.db == "postgres":
            bindir = find_bindir()
            if bindir is None:
                sys.exit("PostgreSQL is not installed: give --target postgresql://...")
            cluster = Cluster(bindir, fsync=True).start()
            target = cluster.url
        else:
            target = str(Path(tmp, "bench.db"))
        try:
            liteq.connect(target).close()
            n, runs = args.n, args.runs
            print(f"engine {target.split(':')[0] if '://' in target else 'sqlite'}, "
                  f"n={n}, runs={runs}, load average {loadavg()} at the start")
            if "put" in only:
                compare("put", runs, lambda: sync_put(target, n),
                        lambda k: asyncio.run(_async_put(target, n, k)), coroutines)
            if "get_ack" in only:
                compare("get+ack", runs, lambda: sync_get_ack(target, n),
                        lambda k: asyncio.run(_async_get_ack(target, n, k)), coroutines)
            if "burst" in only:
                compare("burst get(wait)+ack", runs, lambda: sync_burst(target, n),
                        lambda k: asyncio.run(_async_burst(target, n, k)), coroutines)
            if "latency" in only:
                for mode in ("sync", "async"):
                    p50, p99 = median(runs, lambda m=mode: enqueue_to_claim(target, m,
                                                                            args.latency))
                    print(f"enqueue-to-claim, {mode:5s} consumer  p50 {p50 * 1e3:6.2f} ms  "
                          f"p99 {p99 * 1e3:6.2f} ms")
            if "pool" in only:
                rate = median(runs, lambda: asyncio_pool(target, n))
                print(f"{'asyncio pool, 2 processes':42s} {rate:10,.0f} tasks/s")
            print(f"load average {loadavg()} at the end")
        finally:
            if cluster is not None:
                cluster.stop()


if __name__ == "__main__":
    main()
