"""Wake-up: enqueue-to-claim latency with an idle consumer in another process, and
what an idle waiting consumer costs.

    .venv/bin/python bench/bench_wake.py [--n 500] [--idle 10]

The consumer process blocks in ``q.get(wait=...)``; the producer (this process)
puts one message stamped with ``time.time()``, waits for the consumer's reply on
a pipe, pauses a little (so the consumer is idle again) and repeats. The latency
is the consumer's clock at claim minus the stamp. Then the consumer waits
``--idle`` seconds on an empty queue and reports the CPU time it used.

Set ``LITEQ_NO_INOTIFY=1`` to measure the polling fallback instead.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import tempfile
import time

import liteq


def consumer(path: str, conn, n: int, idle: float) -> None:
    q = liteq.connect(path).queue("wake")
    lat = []
    conn.send("ready")
    for _ in range(n):
        msg = q.get(wait=30)
        now = time.time()
        assert msg is not None
        msg.ack()
        lat.append(now - msg.payload)
        conn.send("got")
    start_cpu = time.process_time()
    start = time.monotonic()
    while time.monotonic() - start < idle:
        q.get(wait=idle)
    conn.send((lat, time.process_time() - start_cpu, time.monotonic() - start))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--idle", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "wake.db")
        q = liteq.connect(path).queue("wake")
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=consumer, args=(path, child, args.n, args.idle))
        proc.start()
        assert parent.recv() == "ready"
        time.sleep(0.5)
        for _ in range(args.n):
            q.put(time.time())
            assert parent.recv() == "got"
            time.sleep(0.005)
        lat, cpu, wall = parent.recv()
        proc.join()
    lat_ms = sorted(x * 1000 for x in lat)
    p = lambda f: lat_ms[min(len(lat_ms) - 1, int(f * len(lat_ms)))]  # noqa: E731
    mode = "polling" if os.environ.get("LITEQ_NO_INOTIFY") else "inotify"
    print(f"wake-up ({mode}), {len(lat_ms)} messages: p50 {statistics.median(lat_ms):.3f} ms, "
          f"p90 {p(0.9):.3f} ms, p99 {p(0.99):.3f} ms, max {lat_ms[-1]:.3f} ms")
    print(f"idle consumer: {cpu * 1000:.1f} ms CPU in {wall:.1f} s = {cpu / wall:.3%} of a core")


if __name__ == "__main__":
    main()
