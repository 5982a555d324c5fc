"""Two checkouts of liteq, A and B, alternated (A B A B ...) on the same per-message loops
in one process, each loop timed by the wall clock and by CPU time (user + sys: SQLite's
WAL writes are in it; waits for the disk and for other processes are not, so on a
shared machine it moves far less than the wall clock).

    .venv/bin/python bench/ab_loops.py --a /path/to/export-of-main --b . [--pairs 8] [--n 5000]

Each side runs in a child process with ``PYTHONPATH`` set to its checkout (a directory
holding ``liteq/``). The loops, on a fresh file in ``/tmp``: put N; get+ack N (oldest
first); put, get, ack one at a time N (every ack deletes the newest row); put_many of
100 and get_many + ack_many of 100, 10 N messages each. Prints each side's medians (msgs/s)
and in how many pairs B was faster.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable


def child(n: int) -> None:
    import liteq

    directory = tempfile.mkdtemp(dir="/tmp", prefix="liteq-ab-")
    db = liteq.connect(os.path.join(directory, "ab.db"))
    q = db.queue("ab")
    p = {"id": 1, "body": "x" * 100}
    for _ in range(200):
        q.put(p)
        q.get().ack()  # type: ignore[union-attr]
    wall: dict[str, float] = {}
    cpu: dict[str, float] = {}

    def timed(name: str, count: int, body: Callable[[], None]) -> None:
        w, c = time.perf_counter(), time.process_time()
        body()
        wall[name] = count / (time.perf_counter() - w)
        cpu[name] = count / (time.process_time() - c)

    def put() -> None:
        for _ in range(n):
            q.put(p)

    def get_ack() -> None:
        for _ in range(n):
            q.get().ack()  # type: ignore[union-attr]

    def keep_up() -> None:
        for _ in range(n):
            q.put(p)
            q.get().ack()  # type: ignore[union-attr]

    items = [p] * 100

    def put_batch() -> None:
        for _ in range(n // 10):
            q.put_many(items)

    def get_ack_batch() -> None:
        for _ in range(n // 10):
            q.ack_many(q.get_many(100))

    timed("put", n, put)
    timed("get_ack", n, get_ack)
    timed("keep_up", n, keep_up)
    timed("put_batch", n * 10, put_batch)
    timed("get_ack_batch", n * 10, get_ack_batch)
    db.close()
    shutil.rmtree(directory, ignore_errors=True)
    print(json.dumps({"wall": wall, "cpu": cpu, "liteq": liteq.__file__}))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a", required=True, help="checkout A (a directory holding liteq/)")
    parser.add_argument("--b", required=True, help="checkout B")
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.n)
        return
    paths = {"A": os.path.abspath(args.a), "B": os.path.abspath(args.b)}
    runs: dict[str, list[dict[str, dict[str, float]]]] = {"A": [], "B": []}
    for i in range(args.pairs):
        for side in "AB":
            env = {**os.environ, "PYTHONPATH": paths[side]}
            done = subprocess.run([sys.executable, os.path.abspath(__file__), "--child",
                                   "--n", str(args.n), "--a", "-", "--b", "-"],
                                  env=env, capture_output=True, text=True, check=True,
                                  cwd="/tmp")
            run = json.loads(done.stdout)
            if not run.pop("liteq").startswith(paths[side] + os.sep):
                raise SystemExit(f"side {side} did not import liteq from {paths[side]}")
            runs[side].append(run)
        print(f"pair {i + 1}: load {os.getloadavg()[0]:.1f}", flush=True)
    for kind in ("wall", "cpu"):
        ops = list(runs["A"][0][kind])
        for side in "AB":
            medians = {op: round(statistics.median(r[kind][op] for r in runs[side])) for op in ops}
            print(f"{kind} {side} medians: {medians}")
        wins = {op: sum(b[kind][op] > a[kind][op] for a, b in zip(runs["A"], runs["B"],
                                                                    strict=True)) for op in ops}
        print(f"{kind}: B faster in {wins} of {args.pairs}")


if __name__ == "__main__":
    main()
