"""A PostgreSQL producer's notifying cost (issue 17): one process putting one message at a
time, no consumer. Puts/s, CPU per put (the process, its main thread), context switches,
and how often the put path pokes the listening thread and the thread looks at the throttle.

    .venv/bin/python bench/pg_put_wakes.py URL [--n 4000] [--rounds 1]

URL names a role that may ``CREATE DATABASE`` (a fresh database per round, dropped
after). ``PYTHONPATH=CHECKOUT`` measures another checkout's liteq (alternate them: A B A
B). Counts come from wrapping ``Listener._poke`` and ``Throttle.take_due`` (liteq's
internals: a bench tool, not an API). Never part of the test run.
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import psycopg

import liteq
from liteq.backends.postgres import notifier

COUNTS = {"pokes": 0, "looks": 0}


def _counting() -> None:
    poke, take = notifier.Listener._poke, notifier.Throttle.take_due

    def counted_poke(self: notifier.Listener) -> None:
        COUNTS["pokes"] += 1
        poke(self)

    def counted_take(self: notifier.Throttle, now: float) -> list[int]:
        COUNTS["looks"] += 1
        return take(self, now)

    notifier.Listener._poke = counted_poke  # type: ignore[method-assign]
    notifier.Throttle.take_due = counted_take  # type: ignore[method-assign]


def _main_thread_cpu() -> float:
    with open(f"/proc/self/task/{os.getpid()}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one(server: str, n: int) -> str:
    name = f"putwakes_{os.getpid()}_{time.monotonic_ns()}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        db = liteq.connect(server.rsplit("/", 1)[0] + "/" + name)
        q = db.queue("bench")
        for i in range(300):  # warm: statements prepared, the thread running
            q.put({"n": i})
        COUNTS.update(pokes=0, looks=0)
        r0, m0, t0 = resource.getrusage(resource.RUSAGE_SELF), _main_thread_cpu(), time.perf_counter()
        for i in range(n):
            q.put({"to": "someone@example.com", "n": i})
        t1, r1, m1 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF), _main_thread_cpu()
        db.close()
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    cpu = r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime
    ctx = r1.ru_nvcsw + r1.ru_nivcsw - r0.ru_nvcsw - r0.ru_nivcsw
    return (f"{n / (t1 - t0):,.0f} puts/s; CPU per put {cpu / n * 1e6:.0f} us (main thread "
            f"{(m1 - m0) / n * 1e6:.0f}); context switches per put {ctx / n:.2f}; pokes per put "
            f"{COUNTS['pokes'] / n:.3f}; thread looks per put {COUNTS['looks'] / n:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("url")
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    _counting()
    for _ in range(args.rounds):
        print(one(args.url, args.n), flush=True)


if __name__ == "__main__":
    main()
