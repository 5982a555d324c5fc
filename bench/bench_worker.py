"""Task throughput and enqueue-to-start latency through ``liteq worker``.

    python bench/bench_worker.py [--n 50000] [--samples 500]

Throughput: worker processes (``liteq worker APP``) are started on a fresh file
and left idle; then N no-op jobs are enqueued in one transaction and the clock
runs from that COMMIT until the queue's depth is 0 (every job acked; each one's
``results`` row is written in the same transaction as its ack). Rows: one thread (1 process), the
process pool with 1 and 2 children, and two separate ``liteq worker`` processes of
one thread each.

Latency: with an idle worker (process pool, 2 children), one job at a time is
enqueued (a few ms apart); the task returns ``time.time()`` as it starts, and the
latency is that minus the time just before ``delay()`` was called (so it includes
the enqueue's own COMMIT, the wake-up, the claim and the dispatch).

durability "normal" (the default). Figures depend on the machine and on what else
runs on it: say so when quoting them.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time

APP = '''
import time
import liteq

db = liteq.connect()  # $LITEQ_DB

@db.task(name="bench.noop")
def noop():
    pass

@db.task(name="bench.stamp", store_result=True)
def stamp():
    return time.time()
'''


def _worker(tmp: str, db: str, *args: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ, LITEQ_DB=db, PYTHONPATH=tmp + os.pathsep + os.environ.get(
        "PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "liteq", "--db", db, "worker", "benchapp",
           "--log-level", "warning", *args]
    return subprocess.Popen(cmd, env=env, cwd=tmp)


def _ready(db_path: str) -> None:
    """Wait until the worker(s) run: one probe job is enqueued and finished."""
    import liteq

    db = liteq.connect(db_path)
    probe = db.queue("default").put({"task": "bench.noop", "args": [], "kwargs": {}})
    deadline = time.monotonic() + 30
    while db.message(probe) is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    db.close()


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        p.wait(30)


def throughput(n: int, workers: list[list[str]]) -> float:
    import liteq

    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "benchapp.py"), "w") as f:
            f.write(APP)
        path = os.path.join(tmp, "bench.db")
        db = liteq.connect(path)
        q = db.queue("default")
        procs = [_worker(tmp, path, *args) for args in workers]
        try:
            _ready(path)
            payloads = [{"task": "bench.noop", "args": [], "kwargs": {}}] * n
            start = time.perf_counter()
            q.put_many(payloads)
            while len(q):  # the depth counter: O(1), read without the write lock
                time.sleep(0.002)
            took = time.perf_counter() - start
            done = db.execute("SELECT count(*) FROM results WHERE state = 3")[0][0]
            assert done == n + 1, f"{done} results for {n} jobs"  # + the probe
        finally:
            _stop(procs)
            db.close()
        return n / took


def latency(samples: int) -> list[float]:

    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "benchapp.py"), "w") as f:
            f.write(APP)
        path = os.path.join(tmp, "bench.db")
        os.environ["LITEQ_DB"] = path
        sys.path.insert(0, tmp)
        import benchapp  # type: ignore[import-not-found]

        procs = [_worker(tmp, path, "--pool", "process", "-c", "2")]
        try:
            _ready(path)
            sent = []
            for _ in range(samples):
                t = time.time()
                sent.append((t, benchapp.stamp.delay()))
                time.sleep(random.uniform(0.003, 0.008))
            out = [job.result(wait=30) - t for t, job in sent]
        finally:
            _stop(procs)
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000, help="no-op jobs per throughput run")
    parser.add_argument("--samples", type=int, default=500, help="latency samples")
    args = parser.parse_args()
    print(f"no-op tasks, {args.n} jobs per run (durability normal)")
    print(f"{'workers':<44}{'tasks/s':>12}")
    for label, workers in [
        ("1 process: thread pool, 1 thread", [["--pool", "thread", "-c", "1"]]),
        ("1 process: process pool, 1 child", [["--pool", "process", "-c", "1"]]),
        ("2 processes: process pool, 2 children", [["--pool", "process", "-c", "2"]]),
        ("2 processes: 2 workers of 1 thread each", [["--pool", "thread", "-c", "1"]] * 2),
    ]:
        print(f"{label:<44}{throughput(args.n, workers):>12,.0f}", flush=True)
    lat = sorted(latency(args.samples))
    p50 = statistics.median(lat)
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    print(f"enqueue -> start, idle worker (process pool, 2 children), {len(lat)} jobs: "
          f"p50 {p50 * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms, max {lat[-1] * 1000:.2f} ms")


if __name__ == "__main__":
    main()
