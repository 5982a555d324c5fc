"""Instructions per operation, counted by valgrind's callgrind: a figure that stays put
on a shared, noisy machine, where wall-clock ratios swing by 30%.

    .venv/bin/python bench/instructions.py [--n 2000] [--batch-n 20000]
        [--systems liteq,raw-minimal,raw] [--json FILE] [--keep DIR]

For each system a child process runs under ``valgrind --tool=callgrind``: it opens the
system on a fresh file (WAL, synchronous=NORMAL), warms it up (50 put + get + ack),
then runs five measured loops one after the other:

* ``put``: N messages, one per transaction;
* ``get_ack``: N times get one + ack it (the messages just put);
* ``put_batch``: BATCH_N messages, ``put_many`` of 100;
* ``get_ack_batch``: BATCH_N messages, ``get_many(100)`` + ``ack_many``;
* ``keep_up``: N times put one, get it, ack it (a consumer that keeps up: every ack
  deletes the table's newest row, which the loops above do only at their end).

Each loop is bracketed by ``os.getppid()`` and ``os.getpgrp()``, two libc calls
nothing else in these loops makes: callgrind is told to zero its counters on entering
``getppid`` (``--zero-before``) and to write them out on entering ``getpgrp``
(``--dump-before``), so each dump holds exactly one loop. Reported: instructions per
message, and each reference's count as a share of liteq's (raw / liteq: 100% means
liteq executes as few instructions as the reference).

What the counts include: every user-space instruction of the process (Python, apsw,
SQLite, cbor2, libc), checkpoints included. What they leave out: the kernel (write,
fsync), lock waits and other processes, i.e. the disk and the contention, which only
the wall-clock benchmark (``compare.py``) sees. Under valgrind the process runs ~50x
slower (and slower still when the machine is busy), so liteq gets a clock that
advances CLOCK_STEP per reading instead of the real one: its queue maintenance (every
50 ms of that clock) then runs about as often per message as it does natively, and
the counts do not depend on the machine's load (with the real clock, get+ack measured
196k and 225k instructions in two runs). The stats totals, written once a second of
real time, are not written inside the loops (under callgrind that second holds ~50x
fewer messages, and their statements are prepared again each time: 0.5-2k instructions
per get+ack that varied with the machine's load). The cached queue options, read again
once a second of ``time.monotonic``, follow a stepping clock too (``steady_queue_options``;
before session 11 they followed the real one: get+ack moved by ~1.5k between runs).

Systems: ``liteq`` (its public API), ``raw-minimal`` (the minimal queue of issue 23,
the reference DESIGN.md's targets use) and ``raw`` (the feature-parity raw queue:
delay column, lease token, four-column index), from ``bench/peers/``.
"""

from __future__ import annotations

import argparse
import glob
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
BATCH = 100
OPS = ["put", "get_ack", "put_batch", "get_ack_batch", "keep_up"]
LABELS = {
    "put": "put, 1 per transaction",
    "get_ack": "get+ack, 1 per transaction each",
    "put_batch": "batch put, 100 per transaction",
    "get_ack_batch": "batch get+ack, 100 per transaction",
    "keep_up": "put, get, ack, one message at a time",
}
SYSTEMS = ["liteq", "raw-minimal", "raw"]


def payload(i: int) -> dict[str, Any]:
    """The payload of issue 23's independent measurement."""
    return {"id": i, "body": "x" * 100}


# --- the child: runs under callgrind -------------------------------------------------


#: How far liteq's clock moves per reading in the child: liteq reads it about three
#: times per get+ack, which natively takes ~30-40 us.
CLOCK_STEP = 10e-6


def stepping_clock() -> Callable[[], float]:
    """A clock that moves CLOCK_STEP per reading, from the real time at its start.

    A C callable (``itertools.count``), like the real clock (``time.time``): a Python
    ``__call__`` cost ~600 instructions per reading, about 2k per get+ack that a
    native run does not execute (session 9)."""
    return itertools.count(time.time() + CLOCK_STEP, CLOCK_STEP).__next__


def steady_queue_options() -> None:
    """Give ``liteq.queue`` a stepping ``time.monotonic`` (CLOCK_STEP per reading).

    A ``Queue`` re-reads its stored options once a second of ``time.monotonic``: under
    callgrind (~50x slower) that was every few hundred messages, each time a SELECT
    prepared anew (~80k instructions), 1-3k per get+ack that moved with the machine's
    load (session 11). Stepping, a get+ack (two readings) ages the options by 20 us, so
    they are re-read about every 50,000, as natively at ~30-50k get+acks per second."""
    import types

    import liteq.queue as queue_module

    queue_module.time = types.SimpleNamespace(monotonic=stepping_clock())  # type: ignore[assignment]


def child(name: str, n: int, batch_n: int) -> None:
    sys.path.insert(0, HERE)
    from peers import open_system
    from peers.liteq_queue import LiteqQueue

    LiteqQueue.clock = stepping_clock()
    # The put/ack totals are written once a second of real time (a transaction whose
    # statements the apsw cache has long evicted, so they are prepared again): natively
    # a few instructions per message, under callgrind (~50x slower, and slower still on
    # a busy machine) 0.5-2k per get+ack, and the run-to-run spread. Not in the loops.
    import liteq.backends.totals as totals
    totals.TOTALS_EVERY = float("inf")
    steady_queue_options()

    directory = tempfile.mkdtemp(prefix=f"liteq-instr-{name}-")
    try:
        peer = open_system(name, directory, "NORMAL")
        for i in range(50):
            peer.put(payload(-1 - i))
        for _ in range(50):
            h = peer.get()
            peer.payload(h)
            peer.ack(h)
        items = [payload(i) for i in range(max(n, batch_n))]

        os.getppid()  # callgrind: zero the counters
        for i in range(n):
            peer.put(items[i])
        os.getpgrp()  # callgrind: dump "put"

        os.getppid()
        for _ in range(n):
            h = peer.get()
            peer.payload(h)
            peer.ack(h)
        os.getpgrp()  # dump "get_ack"

        os.getppid()
        for i in range(0, batch_n, BATCH):
            peer.put_many(items[i:i + BATCH])
        os.getpgrp()  # dump "put_batch"

        os.getppid()
        got = 0
        while got < batch_n:
            hs = peer.get_many(BATCH)
            for h in hs:
                peer.payload(h)
            peer.ack_many(hs)
            got += len(hs)
        os.getpgrp()  # dump "get_ack_batch"

        os.getppid()
        for i in range(n):
            peer.put(items[i])
            h = peer.get()
            peer.payload(h)
            peer.ack(h)
        os.getpgrp()  # dump "keep_up"
        peer.close()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


# --- the parent ---------------------------------------------------------------------------


def count(name: str, n: int, batch_n: int, valgrind: str, keep: str | None = None
          ) -> dict[str, float]:
    """Instructions per message of each loop for system *name* (with *keep*, the
    callgrind files stay in that directory, one per loop, for ``callgrind_annotate``)."""
    out = tempfile.mkdtemp(prefix="liteq-callgrind-")
    try:
        cmd = [valgrind, "--tool=callgrind", "--zero-before=getppid", "--dump-before=getpgrp",
               f"--callgrind-out-file={out}/cg.out", sys.executable, os.path.abspath(__file__),
               "--child", name, "--n", str(n), "--batch-n", str(batch_n)]
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            raise SystemExit(f"{name}: valgrind failed ({done.returncode}):\n{done.stderr[-3000:]}")
        dumps = sorted(glob.glob(f"{out}/cg.out.*"), key=lambda p: int(p.rsplit(".", 1)[1]))
        if len(dumps) != len(OPS):
            raise SystemExit(f"{name}: expected {len(OPS)} callgrind dumps, got {len(dumps)}")
        per = {"put": n, "get_ack": n, "put_batch": batch_n, "get_ack_batch": batch_n,
               "keep_up": n}
        if keep:
            os.makedirs(keep, exist_ok=True)
            for op, path in zip(OPS, dumps, strict=True):
                shutil.copy(path, os.path.join(keep, f"callgrind.{name}.{op}"))
        return {op: _totals(path) / per[op] for op, path in zip(OPS, dumps, strict=True)}
    finally:
        shutil.rmtree(out, ignore_errors=True)


def _totals(path: str) -> int:
    with open(path) as f:
        for line in f:
            if line.startswith("totals:"):
                return int(line.split()[1])
    raise SystemExit(f"no totals line in {path}")


def table(results: dict[str, dict[str, float]]) -> str:
    systems = list(results)
    refs = [s for s in systems if s != "liteq"]
    head = ["workload (instructions per message)"] + systems
    if "liteq" in results:
        head += [f"{r} / liteq" for r in refs]
    lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    for op in OPS:
        cells = [LABELS[op]] + [f"{results[s][op]:,.0f}" for s in systems]
        if "liteq" in results:
            cells += [f"{results[r][op] / results['liteq'][op]:.0%}" for r in refs]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="messages, per-message loops")
    parser.add_argument("--batch-n", type=int, default=20_000, help="messages, batch loops")
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--json", help="also write the counts to this file")
    parser.add_argument("--keep", metavar="DIR", help="keep the callgrind files here "
                        "(callgrind.<system>.<workload>; read them with callgrind_annotate "
                        "--inclusive=yes)")
    parser.add_argument("--valgrind", default=shutil.which("valgrind") or "/usr/bin/valgrind")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.batch_n % BATCH:
        parser.error(f"--batch-n must be a multiple of {BATCH}")
    if args.child:
        child(args.child, args.n, args.batch_n)
        return
    results = {}
    for name in args.systems.split(","):
        if name not in SYSTEMS:
            parser.error(f"unknown system {name!r}: choose from {', '.join(SYSTEMS)}")
        results[name] = count(name, args.n, args.batch_n, args.valgrind, args.keep)
        print(f"{name}: " + ", ".join(f"{op} {v:,.0f}" for op, v in results[name].items()),
              flush=True)
    print()
    print(table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"n": args.n, "batch_n": args.batch_n, "instructions_per_message": results},
                      f, indent=1)


if __name__ == "__main__":
    main()
