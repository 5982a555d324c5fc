#!/usr/bin/env python3
"""Instructions per message of liteq.aio beside the sync API, counted by valgrind's
callgrind (every thread of the process): a figure that a shared machine's load does
not move, unlike bench_aio.py's wall-clock ratios. Not a timed test.

    .venv/bin/python bench/instructions_aio.py [--n 1000] [--coroutines 1,8,32]

One child process under ``valgrind --tool=callgrind`` opens a fresh SQLite file (with
a clock that steps 10 us per reading, as ``instructions.py`` does, so maintenance runs
as often per message as natively), warms up, then runs measured loops one after the
other, each bracketed by ``os.getppid()`` (zero the counters) and ``os.getpgrp()``
(dump them): *n* sync puts; *n* async puts from each number of coroutines; *n* sync
get+acks; *n* async get+acks from each number of coroutines.

What the counts leave out is what costs the async API most on this machine: the
kernel and the time threads spend waking each other (two hand-offs per trip to a
pool thread); the wall-clock benchmark sees those. What they show is the user-space
work per message: Python, asyncio, apsw, SQLite, on the loop and the pool threads.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAYLOAD = {"to": "someone@example.com", "subject": "hello", "n": 0}


class SteppingClock:
    """A clock that moves 10 us per reading, from the real time at its start."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        self.now += 10e-6
        return self.now


def child(n: int, coroutines: list[int]) -> None:
    sys.path.insert(0, str(ROOT))
    import liteq
    import liteq.aio

    directory = tempfile.mkdtemp(prefix="liteq-instr-aio-")
    db = liteq.connect(os.path.join(directory, "q.db"), clock=SteppingClock())

    async def puts(k: int) -> None:
        async with liteq.aio.connect(db) as adb:
            q = await adb.queue(f"ap{k}")
            await asyncio.gather(*(q.put(PAYLOAD) for _ in range(50)))  # warm

            async def one(m: int) -> None:
                for _ in range(m):
                    await q.put(PAYLOAD)

            os.getppid()
            await asyncio.gather(*(one(n // k) for _ in range(k)))
            os.getpgrp()

    async def get_acks(k: int) -> None:
        async with liteq.aio.connect(db) as adb:
            q = await adb.queue(f"ag{k}")
            await q.put_many([PAYLOAD] * (n + 50))
            for _ in range(50):
                msg = await q.get()
                assert msg is not None
                await msg.ack()

            async def one(m: int) -> None:
                for _ in range(m):
                    msg = await q.get()
                    assert msg is not None
                    await msg.ack()

            os.getppid()
            await asyncio.gather(*(one(n // k) for _ in range(k)))
            os.getpgrp()

    try:
        q = db.queue("sp")
        for _ in range(50):
            q.put(PAYLOAD)
        os.getppid()
        for _ in range(n):
            q.put(PAYLOAD)
        os.getpgrp()
        for k in coroutines:
            asyncio.run(puts(k))
        q = db.queue("sg")
        q.put_many([PAYLOAD] * (n + 50))
        for _ in range(50):
            msg = q.get()
            assert msg is not None
            msg.ack()
        os.getppid()
        for _ in range(n):
            msg = q.get()
            assert msg is not None
            msg.ack()
        os.getpgrp()
        for k in coroutines:
            asyncio.run(get_acks(k))
        db.close()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1000, help="messages per loop")
    ap.add_argument("--coroutines", default="1,8,32")
    ap.add_argument("--valgrind", default=shutil.which("valgrind") or "/usr/bin/valgrind")
    ap.add_argument("--keep", metavar="DIR", help="keep the callgrind files here (read "
                    "them with callgrind_annotate --inclusive=yes)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    coroutines = [int(k) for k in args.coroutines.split(",")]
    if args.child:
        child(args.n, coroutines)
        return
    loops = (["put, sync"] + [f"put, async ({k})" for k in coroutines]
             + ["get+ack, sync"] + [f"get+ack, async ({k})" for k in coroutines])
    out = tempfile.mkdtemp(prefix="liteq-callgrind-aio-")
    try:
        cmd = [args.valgrind, "--tool=callgrind", "--zero-before=getppid",
               "--dump-before=getpgrp", f"--callgrind-out-file={out}/cg.out",
               sys.executable, os.path.abspath(__file__), "--child", "--n", str(args.n),
               "--coroutines", args.coroutines]
        done = subprocess.run(cmd, capture_output=True, text=True,
                              env={**os.environ, "PYTHONHASHSEED": "0"})
        if done.returncode != 0:
            raise SystemExit(f"valgrind failed ({done.returncode}):\n{done.stderr[-3000:]}")
        dumps = sorted(glob.glob(f"{out}/cg.out.*"), key=lambda p: int(p.rsplit(".", 1)[1]))
        if len(dumps) != len(loops):
            raise SystemExit(f"expected {len(loops)} callgrind dumps, got {len(dumps)}")
        counts = {}
        for loop, path in zip(loops, dumps, strict=True):
            with open(path) as f:
                total = next(int(line.split()[1]) for line in f if line.startswith("totals:"))
            k = int(loop.split("(")[1][:-1]) if "(" in loop else 1
            counts[loop] = total / (args.n // k * k)  # messages the loop handled
        if args.keep:
            os.makedirs(args.keep, exist_ok=True)
            for loop, path in zip(loops, dumps, strict=True):
                name = loop.replace(", ", "_").replace(" (", "_").rstrip(")").replace("+", "")
                shutil.copy(path, os.path.join(args.keep, f"callgrind.{name}"))
    finally:
        shutil.rmtree(out, ignore_errors=True)
    print(f"instructions per message, n={args.n} (callgrind, all threads):")
    for loop, c in counts.items():
        base = counts["put, sync" if loop.startswith("put") else "get+ack, sync"]
        print(f"  {loop:24s} {c:10,.0f}  {c / base:5.0%} of sync")


if __name__ == "__main__":
    main()
