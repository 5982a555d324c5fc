"""A chord of N members (issue 20): the callback runs once, how soon after the last
member's ack, and what a member's run + ack costs against a plain job's.

    python bench/bench_chord.py [--n 10000] [--db PATH_OR_URL] [--concurrency 1] [--rounds 3]

On a fresh database (a temporary SQLite file unless ``--db`` names one), one in-process
worker (``burst``: it stops once nothing is due) drains:

1. N plain jobs of a no-op task (no dependents): the baseline;
2. a chord of N members of the same task and one callback that counts its inputs.

Reported: the CPU seconds of each drain (steadier than the wall clock on a shared
machine; the PostgreSQL server's own CPU is not in them), the seconds each drain took until its last member was acked (from the results
rows' ``finished_at``), their ratio (the issue asks a member's ack with a chord counter
to stay within 1.3x of a plain ack), the callback's runs and inputs, and the delay from
the last member's ack to the callback's start (its results row's ``started_at``): the
callback is released by that ack's own transaction, so this is a claim, not a poll.

Figures depend on the machine and what else runs on it: say so when quoting them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import liteq  # noqa: E402
from liteq.job import list_jobs  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--db", default=None, help="a file path or postgresql:// URL")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        target = args.db or os.path.join(tmp, "chord.db")
        db = liteq.connect(target)
        calls: list[int] = []

        @db.task(name="bench.member")
        def member(i: int) -> int:
            return i

        @db.task(name="bench.callback", store_result=True)
        def callback(results: list[Any]) -> int:
            assert results == list(range(args.n)), "results out of order"
            calls.append(len(results))
            return len(results)

        cpu: list[float] = []

        def drain() -> float:
            start, used = time.time(), time.process_time()
            liteq.Worker(db, concurrency=args.concurrency, burst=True, install_signals=False,
                         summary_interval=0).run()
            cpu.append(time.process_time() - used)
            return start

        rounds = []
        for _ in range(args.rounds):  # alternated, to share the machine's swings
            calls.clear()
            plain = member.enqueue_many([(i,) for i in range(args.n)])
            start = drain()
            plain_s = max(j.info().finished_at or 0.0 for j in plain) - start
            t0 = time.perf_counter()
            cb = liteq.chord(liteq.group(member.s(i) for i in range(args.n)),
                             callback.s()).delay()
            enqueue_s = time.perf_counter() - t0
            start = drain()
            infos = list_jobs(db, workflow=cb.workflow, limit=args.n + 1)
            last_ack = max(i.finished_at or 0.0 for i in infos if i.id != cb.id)
            info = cb.info()
            assert calls == [args.n] and info.state == "done" and cb.result() == args.n
            rounds.append((enqueue_s, plain_s, last_ack - start,
                           (info.started_at or 0.0) - last_ack, cpu[-2], cpu[-1]))
        enqueue_s, plain_s, chord_s, delay = (statistics.median(r[i] for r in rounds)
                                              for i in range(4))
        ratios = [r[2] / r[1] for r in rounds]  # in the order the rounds ran
        print(f"engine: {'postgres' if target.startswith('postgres') else 'sqlite'}, "
              f"n={args.n}, concurrency={args.concurrency}, medians of {args.rounds} rounds")
        print("| measure | value |\n|---|---:|")
        print(f"| enqueue the chord (one transaction) | {enqueue_s:.2f} s |")
        print(f"| drain {args.n} plain jobs | {plain_s:.2f} s ({args.n / plain_s:,.0f}/s) |")
        print(f"| drain {args.n} chord members | {chord_s:.2f} s ({args.n / chord_s:,.0f}/s) |")
        print(f"| member / plain (run + ack), each round in order; median {statistics.median(ratios):.2f}x | "
              f"{', '.join(f'{r:.2f}x' for r in ratios)} |")
        cpu_ratios = [r[5] / r[4] for r in rounds]
        print(f"| CPU seconds of the drains (this process: worker + SQLite), chord incl. "
              f"callback / plain, per round | {', '.join(f'{r:.2f}x' for r in cpu_ratios)} |")
        print("| callback runs, inputs (each round) | 1, all in order |")
        print(f"| last member's ack -> callback start | {delay * 1000:.1f} ms |")
        db.close()


if __name__ == "__main__":
    main()
