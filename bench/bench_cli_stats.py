#!/usr/bin/env python3
"""How long ``liteq stats`` takes on a database of 100 queues and 1M messages.

    .venv/bin/python bench/bench_cli_stats.py              # build in a temp dir, measure
    .venv/bin/python bench/bench_cli_stats.py --path big.db   # keep (and reuse) the file

The file is built with the library, ``put_many`` in batches of 10,000: each queue
gets 9,500 ready and 500 delayed messages, then 200 are claimed (leased) and 50
of those buried (dead), so every count in the table has rows behind it
(``--finished``: a file of mostly retained, acked messages instead). Three
figures, each the median of several runs on a warm page cache:

* ``stats`` in-process (click's CliRunner): connect, list the queues, one stats
  query per queue, print the table — what the command itself costs;
* the same with ``--json``;
* ``python -m liteq stats`` as a new process, as a user runs it (adds the
  interpreter's start and the imports).

Not a timed test: run it by hand and compare with the figures below.

Measured on the project machine (2 vCPU, ext4, SQLite 3.54.1), 100 queues,
1,000,000 messages (file 122 MB, built in 2.9 s), warm cache:
  stats, in-process:        median 57 ms
  stats --json, in-process: median 66 ms
  python -m liteq stats:    median 153 ms (of which ~90-130 ms is Python starting
                            and importing)
With --finished (950,000 retained done messages, 93 MB, built in 9.4 s):
  stats, in-process:        median 136 ms
  python -m liteq stats:    median 241 ms
Before store.py's SQL_STATS repeated the partial index's ``state >= 3`` term (commit
bec1a03), each done/dead/cancelled count scanned the whole table: 10.8 s for the
first file. ``_propose_stats_fix`` patches such a store in-process to compare.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from click.testing import CliRunner

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import liteq  # noqa: E402
from liteq.cli import cli  # noqa: E402

QUEUES = 100
PER_QUEUE = 10_000
BATCH = 10_000


def build(path: str, finished: bool = False) -> float:
    """Fill *path* with QUEUES x PER_QUEUE messages; return the seconds it took.

    With *finished*, every queue keeps acked messages (retention) and all but the
    last 500 are acked: the counts then walk 1M rows of done messages.
    """
    start = time.perf_counter()
    with liteq.connect(path) as db:
        if finished:
            for i in range(QUEUES):
                q = db.queue(f"queue-{i:03d}", retention=86400)
                for first in range(0, PER_QUEUE, BATCH):
                    q.put_many({"n": n} for n in range(first, min(PER_QUEUE, first + BATCH)))
                q.ack_many(q.get_many(PER_QUEUE - 500))
            db.checkpoint()
            return time.perf_counter() - start
        for i in range(QUEUES):
            q = db.queue(f"queue-{i:03d}", max_depth=PER_QUEUE * 2 if i % 2 else None)
            ready = PER_QUEUE - 500
            for first in range(0, ready, BATCH):
                q.put_many({"n": n, "body": "x" * 40} for n in range(first, min(ready, first + BATCH)))
            q.put_many(({"n": n} for n in range(500)), delay=3600)
            leased = q.get_many(200)
            for msg in leased[:50]:
                msg.fail("bench: buried on purpose")
        db.checkpoint()
    return time.perf_counter() - start


def _propose_stats_fix() -> bool:
    """Patch ``store.SQL_STATS`` so SQLite can use the partial index ``msg_finished``.

    SQLite uses a partial index only when the query repeats a term of its WHERE
    clause: ``state = 3`` does not let it use an index ``WHERE state >= 3``, so each
    count of done, dead and cancelled messages scanned the whole table (about 33 ms
    per count at 1M rows). Adding ``state >= 3`` makes each an index search. False
    if the statement needs no such change (already fixed).
    """
    from liteq.backends import sqlite as store

    fixed = store.SQL_STATS
    if "state >= 3 AND state = 3" in fixed:
        return False
    for code in (3, 4, 5):
        fixed = fixed.replace(f"AND state = {code})", f"AND state >= 3 AND state = {code})")
    if fixed == store.SQL_STATS:
        return False
    store.SQL_STATS = fixed
    return True


def timed(fn: object, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return times


def report(label: str, times: list[float]) -> None:
    print(f"  {label:<26} median {statistics.median(times) * 1000:6.0f} ms "
          f"(min {min(times) * 1000:.0f} ms, {len(times)} runs)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--path", help="database file to build (or reuse if it exists)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--finished", action="store_true",
                        help="build a file whose messages are mostly done (retained)")
    args = parser.parse_args()
    tmp = None
    path = args.path
    if path is None:
        tmp = tempfile.TemporaryDirectory(prefix="liteq-bench-")
        path = os.path.join(tmp.name, "stats.db")
    if not os.path.exists(path):
        took = build(path, args.finished)
        print(f"built {QUEUES} queues x {PER_QUEUE:,} messages in {took:.1f} s")
    with liteq.connect(path) as db:
        total = sum(sum(db.queue(n).stats()[s] for s in ("ready", "delayed", "leased", "dead",
                                                         "done"))
                    for n in db.queues())
        print(f"{path}: {len(db.queues())} queues, {total:,} messages, "
              f"{os.path.getsize(path) / 1e6:.0f} MB")

    runner = CliRunner()

    def in_process(*extra: str) -> None:
        result = runner.invoke(cli, ["--db", path, "stats", *extra], catch_exceptions=False)
        assert result.exit_code == 0 and result.stdout.count("\n") >= QUEUES

    def new_process() -> None:
        subprocess.run([sys.executable, "-m", "liteq", "--db", path, "stats"], check=True,
                       cwd=ROOT, stdout=subprocess.DEVNULL)

    in_process()  # warm the page cache
    report("stats, in-process", timed(in_process, args.repeat))
    report("stats --json, in-process", timed(lambda: in_process("--json"), args.repeat))
    report("python -m liteq stats", timed(new_process, args.repeat))
    if _propose_stats_fix():
        print("with the proposed store.SQL_STATS (patched in this process only):")
        report("stats, in-process", timed(in_process, args.repeat))
        report("stats --json, in-process", timed(lambda: in_process("--json"), args.repeat))
    for line in runner.invoke(cli, ["--db", path, "stats"]).stdout.splitlines()[:4]:
        print(f"  {line}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
