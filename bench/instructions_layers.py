"""Where a get+ack's instructions go, layer by layer (callgrind; issue 23, session 11).

    .venv/bin/python bench/instructions_layers.py [--n 1000] [--keep DIR]

One child process under ``valgrind --tool=callgrind`` opens a liteq file (WAL,
synchronous=NORMAL, a stepping clock as ``instructions.py``'s), puts 3 x N messages,
then runs three loops of N get+acks of the same queue, one after the other:

* ``api``: ``q.get()``, ``msg.payload``, ``msg.ack()`` (the public API);
* ``backend``: the engine's verbs ``claim_one`` + ``ack_one``, payload decoded with
  ``cbor2.loads`` (no ``Queue``, no ``Message``);
* ``statements``: the same two statements on a bare apsw cursor (``SQL_CLAIM_NEXT``,
  ``SQL_ACK_UNCOUNTED``), payload decoded the same way.

``api - backend`` is the cost of the ``Queue`` and ``Message`` layers, ``backend -
statements`` that of the engine's Python (thread-local handles, maintenance checks,
totals), and ``statements`` is SQLite, apsw and the WAL. Loops are bracketed by
``os.getppid()`` / ``os.getpgrp()`` as in ``instructions.py``, and the queue's options
are re-read as natively (``instructions.steady_queue_options``). Checkpoints run as they
fall (every ~1,000 WAL pages, ~170 get+acks): where one falls moves a loop by up to ~3k
per get+ack, so compare the loops of two checkouts, and a layer only to a few thousand.
(Without checkpoints the WAL grows through the three loops and each later loop pays for
longer WAL lookups: worse.) Run it from another
checkout's directory (``cd CHECKOUT && python .../instructions_layers.py``) to measure
that checkout's liteq: the current directory comes first on ``sys.path``.
"""

from __future__ import annotations

import argparse
import glob
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
import time

LOOPS = ["api", "backend", "statements"]


def child(n: int) -> None:
    sys.path.insert(0, os.getcwd())
    import cbor2

    import liteq
    import liteq.backends.totals as totals
    from liteq.backends.sqlite.sql import SQL_ACK_UNCOUNTED, SQL_CLAIM_NEXT

    totals.TOTALS_EVERY = float("inf")  # as instructions.py: not inside the loops
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from instructions import steady_queue_options

    steady_queue_options()  # the options re-read as natively, not every few hundred
    clock = itertools.count(time.time() + 10e-6, 10e-6).__next__
    directory = tempfile.mkdtemp(prefix="liteq-layers-")
    try:
        db = liteq.connect(os.path.join(directory, "layers.db"), clock=clock)
        q = db.queue("bench")
        backend = db.backend
        cur = db.connection.cursor()
        item = {"id": 1, "body": "x" * 100}
        for _ in range(50):
            q.put(item)
            msg = q.get()
            assert msg is not None
            msg.ack()
        for _ in range(3 * n):
            q.put(item)

        os.getppid()  # callgrind: zero the counters
        for _ in range(n):
            msg = q.get()
            msg.payload  # noqa: B018 (read, as a consumer does)
            msg.ack()
        os.getpgrp()  # callgrind: dump "api"

        os.getppid()
        for _ in range(n):
            row = backend.claim_one(q.id, 30.0)
            cbor2.loads(row[3])
            backend.ack_one(q.id, row[0], row[1], 0.0)
        os.getpgrp()  # dump "backend"

        os.getppid()
        for _ in range(n):
            row = cur.execute(SQL_CLAIM_NEXT, (q.id, 30.0)).fetchall()[0]
            cbor2.loads(row[3])
            cur.execute(SQL_ACK_UNCOUNTED, (row[0], row[1]))
        os.getpgrp()  # dump "statements"
        db.close()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--keep", metavar="DIR", help="keep the callgrind files here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.n)
        return
    out = tempfile.mkdtemp(prefix="liteq-callgrind-")
    try:
        cmd = ["valgrind", "--tool=callgrind", "--zero-before=getppid", "--dump-before=getpgrp",
               f"--callgrind-out-file={out}/cg.out", sys.executable, os.path.abspath(__file__),
               "--child", "--n", str(args.n)]
        done = subprocess.run(cmd, capture_output=True, text=True,
                              env={**os.environ, "PYTHONHASHSEED": "0"})
        if done.returncode != 0:
            raise SystemExit(f"valgrind failed ({done.returncode}):\n{done.stderr[-3000:]}")
        dumps = sorted(glob.glob(f"{out}/cg.out.*"), key=lambda p: int(p.rsplit(".", 1)[1]))
        counts = {}
        for loop, path in zip(LOOPS, dumps, strict=True):
            with open(path) as f:
                total = next(int(line.split()[1]) for line in f if line.startswith("totals:"))
            counts[loop] = total / args.n
            if args.keep:
                os.makedirs(args.keep, exist_ok=True)
                shutil.copy(path, os.path.join(args.keep, f"callgrind.layers.{loop}"))
    finally:
        shutil.rmtree(out, ignore_errors=True)
    print("| loop (instructions per get+ack) | count | layer above it |")
    print("|---|---:|---:|")
    for i, loop in enumerate(LOOPS):
        above = counts[loop] - counts[LOOPS[i + 1]] if i + 1 < len(LOOPS) else counts[loop]
        print(f"| {loop} | {counts[loop]:,.0f} | {above:,.0f} |")


if __name__ == "__main__":
    main()
