"""Group commit (issue 23): T producer threads of one process putting at once, at
``synchronous=FULL`` and ``NORMAL``: the minimal raw queue's autocommit INSERT (each
thread its own apsw connection) beside liteq without and with group commit.

    python bench/bench_group.py [--threads 8] [--n 2000] [--runs 3]

Each run makes a fresh file per system; each thread puts N/T messages (the payload of
``compare.py``: ``{"id": i, "body": "x" * 100}``) as fast as it can. Reported: messages
per second (the median of the runs, and every run in order) and liteq's rates as a share
of raw's in the same run. liteq's default is group commit at FULL only (what this
measures); here both settings are forced on each durability.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import apsw  # noqa: E402
import cbor2  # noqa: E402

import liteq  # noqa: E402
from liteq.backends.sqlite.base import PAGE_SIZE  # noqa: E402
from liteq.backends.sqlite.group import GroupCommit  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from peers.raw_apsw import busy_handler  # noqa: E402
from peers.raw_minimal import SCHEMA, SQL_INSERT  # noqa: E402


def payload(i: int) -> dict[str, object]:
    return {"id": i, "body": "x" * 100}


def threaded(threads: int, n: int, make: Callable[[], Callable[[int], object]]) -> float:
    """Messages per second of *threads* threads, each putting n // threads with its own
    put function (made in the thread: connections are per thread)."""
    per = n // threads
    start = threading.Barrier(threads + 1)

    def run(base: int) -> None:
        put = make()
        start.wait()
        for i in range(base, base + per):
            put(i)

    workers = [threading.Thread(target=run, args=(k * per,)) for k in range(threads)]
    for w in workers:
        w.start()
    start.wait()
    t0 = time.perf_counter()
    for w in workers:
        w.join()
    return per * threads / (time.perf_counter() - t0)


def raw(path: str, sync: str, threads: int, n: int) -> float:
    conn = apsw.Connection(path)
    conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
    conn.execute("PRAGMA journal_mode=WAL").fetchall()
    for sql in SCHEMA:
        conn.execute(sql)

    def make() -> Callable[[int], object]:
        c = apsw.Connection(path)
        c.set_busy_handler(busy_handler())
        c.execute(f"PRAGMA synchronous={sync}")
        cur = c.cursor()
        return lambda i: cur.execute(SQL_INSERT, (cbor2.dumps(payload(i)),))

    return threaded(threads, n, make)


def lq(path: str, sync: str, threads: int, n: int, group: bool) -> float:
    db = liteq.connect(path, durability="full" if sync == "FULL" else "normal")
    backend = db.backend
    backend.group = GroupCommit(backend.put_ready_group) if group else None  # type: ignore[attr-defined]
    q = db.queue("bench")

    def make() -> Callable[[int], object]:
        return lambda i: q.put(payload(i))

    rate = threaded(threads, n, make)
    assert q.stats()["ready"] == n // threads * threads, "a put was lost"
    db.close()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(f"{args.threads} threads, {args.n} puts per system and run, {args.runs} runs, "
          f"load average {os.getloadavg()[0]:.2f}")
    print("| sync | raw-minimal | liteq, no group | liteq, group | no group / raw "
          "| group / raw | group / no group |\n|---|---:|---:|---:|---:|---:|---:|")
    for sync in ("FULL", "NORMAL"):
        rates: dict[str, list[float]] = {"raw": [], "off": [], "on": []}
        for _ in range(args.runs):
            with tempfile.TemporaryDirectory() as tmp:
                rates["raw"].append(raw(os.path.join(tmp, "raw.db"), sync, args.threads, args.n))
                rates["off"].append(lq(os.path.join(tmp, "off.db"), sync, args.threads, args.n, False))
                rates["on"].append(lq(os.path.join(tmp, "on.db"), sync, args.threads, args.n, True))
        med = {k: statistics.median(v) for k, v in rates.items()}
        print(f"| {sync} | {med['raw']:,.0f} | {med['off']:,.0f} | {med['on']:,.0f} "
              f"| {med['off'] / med['raw']:.0%} | {med['on'] / med['raw']:.0%} "
              f"| {med['on'] / med['off']:.2f}x |")
        for k, v in rates.items():
            print(f"  {sync} {k}: " + ", ".join(f"{r:,.0f}" for r in v), file=sys.stderr)
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
