"""Instructions per task job through the worker, counted by valgrind's callgrind (the
method of ``instructions.py``: load-independent counts, each loop between a
``--zero-before=getppid`` and a ``--dump-before=getpgrp``).

    .venv/bin/python bench/instructions_tasks.py [--n 2000]

The child opens a fresh file (WAL, synchronous=NORMAL) with a stepping clock (see
``instructions.py``), registers a no-op task, warms up (50 jobs), then measures:

* ``delay``: N ``noop.delay(i)`` calls (one put each: a task payload, which enters the
  task-name index ``msg_task``);
* ``run``: one burst worker (one thread) running the N jobs: claim, run, ack with the
  results row (which now names the worker), history, registry heartbeat.

Run it against another checkout's liteq with ``PYTHONPATH=/path/to/checkout`` (the
figures of issue 21's attempts were taken that way: before and after). What follows
the real clock (the totals flush about once a second, the worker's history flush every
5 s) still runs as often as valgrind's speed allows; bench/README.md says how the
figures there kept those out of the loops.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
OPS = ["delay", "run"]


def child(n: int) -> None:
    sys.path.insert(0, HERE)
    from instructions import stepping_clock

    import liteq

    directory = tempfile.mkdtemp(prefix="liteq-instr-tasks-")
    try:
        db = liteq.connect(os.path.join(directory, "t.db"), clock=stepping_clock())

        @db.task(name="noop", store_result=False)
        def noop(i: int) -> None:
            return None

        def drain() -> None:
            # No registry heartbeat inside the loop (it follows the real clock).
            liteq.Worker(db, ["default"], concurrency=1, burst=True, install_signals=False,
                         summary_interval=0, heartbeat=3600.0).run()

        for i in range(50):
            noop.delay(-1 - i)
        drain()

        os.getppid()  # callgrind: zero the counters
        for i in range(n):
            noop.delay(i)
        os.getpgrp()  # dump "delay"

        os.getppid()
        drain()
        os.getpgrp()  # dump "run"
        assert db.queue("default").stats()["ready"] == 0
        db.close()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def count(n: int, valgrind: str) -> dict[str, float]:
    """Instructions per job of each loop."""
    out = tempfile.mkdtemp(prefix="liteq-callgrind-tasks-")
    try:
        cmd = [valgrind, "--tool=callgrind", "--zero-before=getppid", "--dump-before=getpgrp",
               f"--callgrind-out-file={out}/cg.out", sys.executable, os.path.abspath(__file__),
               "--child", "--n", str(n)]
        done = subprocess.run(cmd, capture_output=True, text=True,
                              env={**os.environ, "PYTHONHASHSEED": "0"})
        if done.returncode != 0:
            raise SystemExit(f"valgrind failed ({done.returncode}):\n{done.stderr[-3000:]}")
        dumps = sorted((p for p in os.listdir(out) if p.startswith("cg.out.")),
                       key=lambda p: int(p.rsplit(".", 1)[1]))
        if len(dumps) != len(OPS):
            raise SystemExit(f"expected {len(OPS)} callgrind dumps, got {len(dumps)}")
        totals = []
        for name in dumps:
            with open(os.path.join(out, name)) as f:
                totals.append(next(int(line.split()[1]) for line in f
                                   if line.startswith("totals:")))
        return {op: t / n for op, t in zip(OPS, totals, strict=True)}
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--valgrind", default=shutil.which("valgrind") or "/usr/bin/valgrind")
    args = parser.parse_args()
    if args.child:
        child(args.n)
        return
    import liteq

    counts = count(args.n, args.valgrind)
    print(f"liteq from {os.path.dirname(os.path.dirname(liteq.__file__))}, n={args.n}")
    for op in OPS:
        print(f"  {op:6} {counts[op]:12,.0f} instructions per job")


if __name__ == "__main__":
    main()
