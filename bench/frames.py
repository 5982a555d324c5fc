"""WAL frames written per message: what a commit costs the disk, which instruction
counts (``instructions.py``) do not see.

    .venv/bin/python bench/frames.py [--n 2000] [--batch-n 20000] [--systems liteq,raw-minimal]

Each system runs on a fresh file (WAL, synchronous=NORMAL) with checkpoints off
(liteq's WAL hook raised out of reach, SQLite's ``wal_autocheckpoint`` 0 for the raw
queue). Before each loop the WAL is checkpointed and truncated; after it, its size
gives the frames written: ``(bytes - 32) / (page size + 24)``. Every dirty page of a
commit is one frame, so a page touched by every put (AUTOINCREMENT's
``sqlite_sequence``) shows as one more frame per put. The loops:

* ``put``: N messages, one per transaction;
* ``get_ack``: N times get one + ack it, the messages just put (oldest first: the
  acked row is the table's last only at the end);
* ``keep_up``: N times put one, get it, ack it (a consumer that keeps up: every ack
  deletes the table's last row);
* ``put_batch`` / ``get_ack_batch``: BATCH_N messages, ``put_many`` / ``get_many`` +
  ``ack_many`` of 100;
* ``keep_up_batch``: BATCH_N messages, ``put_many`` of 100, then ``get_many`` +
  ``ack_many`` of those 100.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

BATCH = 100
WAL_HEADER = 32
FRAME_HEADER = 24


def payload(i: int) -> dict[str, Any]:
    return {"id": i, "body": "x" * 100}


def measure(name: str, n: int, batch_n: int) -> dict[str, float]:
    from peers import open_system

    import liteq.backends.sqlite.base as sqlite_base

    sqlite_base.WAL_HOOK_PAGES = 10 ** 12  # no checkpoint inside the loops
    directory = tempfile.mkdtemp(prefix=f"liteq-frames-{name}-")
    try:
        peer = open_system(name, directory, "NORMAL")
        conn = peer.connection() if hasattr(peer, "connection") else peer.conn
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        page = conn.execute("PRAGMA page_size").fetchall()[0][0]
        for i in range(50):  # warm up: every statement prepared, every table made
            peer.put(payload(-1 - i))
        for _ in range(50):
            peer.ack(peer.get())
        (wal,) = glob.glob(os.path.join(directory, "*-wal"))

        def loop(body: Callable[[], None], per: int) -> float:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            body()
            size = os.path.getsize(wal)
            return max(size - WAL_HEADER, 0) / (page + FRAME_HEADER) / per

        items = [payload(i) for i in range(max(n, batch_n))]

        def put() -> None:
            for i in range(n):
                peer.put(items[i])

        def get_ack() -> None:
            for _ in range(n):
                peer.ack(peer.get())

        def keep_up() -> None:
            for i in range(n):
                peer.put(items[i])
                peer.ack(peer.get())

        def put_batch() -> None:
            for i in range(0, batch_n, BATCH):
                peer.put_many(items[i:i + BATCH])

        def get_ack_batch() -> None:
            for _ in range(0, batch_n, BATCH):
                peer.ack_many(peer.get_many(BATCH))

        def keep_up_batch() -> None:
            for i in range(0, batch_n, BATCH):
                peer.put_many(items[i:i + BATCH])
                peer.ack_many(peer.get_many(BATCH))

        result = {"put": loop(put, n), "get_ack": loop(get_ack, n),
                  "keep_up": loop(keep_up, n), "put_batch": loop(put_batch, batch_n),
                  "get_ack_batch": loop(get_ack_batch, batch_n),
                  "keep_up_batch": loop(keep_up_batch, batch_n)}
        peer.close()
        return result
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--batch-n", type=int, default=20_000)
    parser.add_argument("--systems", default="liteq,raw-minimal")
    args = parser.parse_args(argv)
    rows = {name: measure(name, args.n, args.batch_n) for name in args.systems.split(",")}
    ops = list(next(iter(rows.values())))
    print("| frames per message | " + " | ".join(rows) + " |")
    print("|---" + "|---:" * len(rows) + "|")
    for op in ops:
        print(f"| {op} | " + " | ".join(f"{rows[s][op]:.2f}" for s in rows) + " |")


if __name__ == "__main__":
    main()
