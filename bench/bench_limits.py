"""What a flow limit costs a claim (issue 19): get+ack per message on a plain queue, on a
queue with a rate limit that never runs dry, and for a task with a cap that is never
reached, in one run, alternated so the three share the machine's swings.

    python bench/bench_limits.py [--db PATH_OR_URL] [--n 400] [--rounds 4]

The issue's targets: a queue without limits claims as before (see bench/instructions.py
for instruction counts) and one with a limit within 1.5x of it. Prints the best round of
each (microseconds per get+ack) and the two ratios.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

import liteq


def per_message(q: liteq.Queue, put: Callable[[int], Any], n: int) -> float:
    """Put *n* with *put*, then get and ack them one by one: microseconds per get+ack."""
    for i in range(n):
        put(i)
    start = time.perf_counter()
    for _ in range(n):
        msg = q.get()
        assert msg is not None
        msg.ack()
    return (time.perf_counter() - start) / n * 1e6


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", help="a file path or postgresql:// URL (default: a new file)")
    parser.add_argument("--n", type=int, default=400, help="messages per queue and round")
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args(argv)
    target = args.db or os.path.join(tempfile.mkdtemp(), "limits.db")
    db = liteq.connect(target)
    plain = db.queue("bench-plain")
    rated = db.queue("bench-rated", rate_limit="1000000/s")  # limited, never dry

    @db.task(name="bench.capped", queue="bench-capped", max_concurrency=1_000_000)
    def capped(i: int) -> None: ...

    capq = db.queue("bench-capped")
    best = {"plain": float("inf"), "rated": float("inf"), "capped": float("inf")}
    for _ in range(args.rounds):
        best["plain"] = min(best["plain"], per_message(plain, lambda i: plain.put({"i": i}), args.n))
        best["rated"] = min(best["rated"], per_message(rated, lambda i: rated.put({"i": i}), args.n))
        best["capped"] = min(best["capped"], per_message(capq, lambda i: capped.delay(i), args.n))
    engine = "postgres" if target.startswith(("postgres://", "postgresql://")) else "sqlite"
    print(f"engine: {engine}, n={args.n}, best of {args.rounds} rounds, us per get+ack")
    for name, value in best.items():
        print(f"  {name:<7} {value:8.0f} us")
    print(f"  rate-limited / plain {best['rated'] / best['plain']:.2f}x, "
          f"capped / plain {best['capped'] / best['plain']:.2f}x (target <= 1.5x)")
    db.close()


if __name__ == "__main__":
    main()
