"""PostgreSQL server instructions per ack, plain job against chord member (issue 20), load
independent: callgrind counts the backend's instructions, whatever else runs.

Start a throwaway cluster under valgrind (every backend forked by it is counted, and
writes ``cg.<pid>`` when it exits), then run this against it::

    initdb -D /tmp/pgcg/data -U postgres -A trust --no-sync
    valgrind --tool=callgrind --trace-children=yes --callgrind-out-file=/tmp/pgcg/cg.%p \\
        postgres -D /tmp/pgcg/data -k /tmp/pgcg -c listen_addresses= -p 55441 \\
        -c fsync=off -c autovacuum=off &
    createdb -h /tmp/pgcg -p 55441 -U postgres before
    python bench/chord_server.py "postgresql://postgres@/before?host=/tmp/pgcg&port=55441" \\
        --style one --sizes 50,150 --out /tmp/pgcg

Each loop (plain jobs, then a chord's members) is enqueued and claimed on this thread's
connection, then acked as ``bench_chord.py --mode ack`` does (``--style one``: one job per
transaction; ``worker``: 100 per transaction with their results rows) on a fresh
connection of its own, closed after it: one backend per loop. Per ack = the difference
of the backends' totals for the two loop sizes, divided by the difference of the sizes
(the connection's start-up cancels out). psycopg prepares a statement at its 6th run:
take sizes whose loops both run a statement more often than that (``--style worker``:
``--sizes 700,1700``, 7 and 17 flushes; ``100,300`` measured 1 and 3 flushes, whose
statements were parsed and planned every time). Use a fresh database for each tree compared:
a database that has run many loops holds more rows and dead tuples (a few % more).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)

import bench_chord  # noqa: E402

import liteq  # noqa: E402


def _total(out: str, pid: int) -> int:
    path = os.path.join(out, f"cg.{pid}")
    for _ in range(60):  # the backend writes its file as it exits
        if os.path.exists(path):
            with open(path) as f:
                for line in f:
                    if line.startswith(("summary:", "totals:")):
                        return int(line.split()[1])
        time.sleep(1)
    raise SystemExit(f"no callgrind totals for backend {pid} in {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("--style", choices=("one", "worker"), default="one")
    parser.add_argument("--sizes", default="50,150", help="two loop lengths, comma-separated")
    parser.add_argument("--out", default="/tmp/pgcg", help="where the cluster writes cg.<pid>")
    args = parser.parse_args()
    small, large = (int(x) for x in args.sizes.split(","))
    db = liteq.connect(args.url)
    member, callback = bench_chord.ack_tasks(db)

    q = db.queue("default")
    step = 1 if args.style == "one" else 100

    def loop(kind: str, n: int) -> int:
        if kind == "plain":
            member.enqueue_many([(i,) for i in range(n)])
        else:
            liteq.chord(liteq.group(member.s(i) for i in range(n)), callback.s()).delay()
        msgs = bench_chord.claim(q, n)
        bench_chord.clean(db, True)
        pid: list[int] = []

        def acks() -> None:  # a thread: a connection, a backend, of its own
            pid.append(int(db.execute("SELECT pg_backend_pid()")[0][0]))
            for i in range(0, n, step):
                bench_chord.ack(db, msgs[i:i + step], results=args.style == "worker")

        thread = threading.Thread(target=acks)
        thread.start()
        thread.join()
        if kind == "chord":
            cb = q.get()
            assert cb is not None and cb.payload["task"] == "bench.callback"
            cb.ack()
        return pid[0]

    pids = {(kind, n): loop(kind, n) for kind in ("plain", "chord") for n in (small, large)}
    db.close()  # every connection: the backends exit and write their counts
    per = {kind: (_total(args.out, pids[(kind, large)]) - _total(args.out, pids[(kind, small)]))
           / (large - small) for kind in ("plain", "chord")}
    print(f"style {args.style}: server instructions per ack, plain {per['plain']:,.0f}, "
          f"chord member {per['chord']:,.0f}; member / plain {per['chord'] / per['plain']:.3f}x")


if __name__ == "__main__":
    main()
