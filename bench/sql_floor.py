"""The floor of liteq's SQL on SQLite: its hot statements alone, with none of liteq's
Python, against the minimal raw queue (issue 23: what stands in the way of 85%).

    .venv/bin/python bench/sql_floor.py [--n 10000] [--rounds 5]

Ways to put N messages one per transaction, get+ack N one at a time, then get+ack N
more in batches of 100 (a batch claim, then one ack of the batch), alternated in one
process, each on a fresh file (WAL, synchronous=NORMAL):

* ``raw-minimal``: ``peers/raw_minimal.py`` (one table, one partial index, autocommit
  INSERT, ``UPDATE ... RETURNING`` claim, DELETE ack: no lease expiry, no token);
* ``liteq SQL``: liteq's own statements for the same work on a liteq file, run on
  liteq's connection (its WAL hook and checkpoints included) through a bare apsw
  cursor: ``SQL_INSERT_UNCOUNTED`` (the payload encoded with ``cbor2.dumps`` as the
  raw queue does), ``SQL_CLAIM_NEXT`` (payload decoded with ``cbor2.loads``) and
  ``SQL_ACK_UNCOUNTED``; a batch: ``SQL_CLAIM_SELECT`` and ``sql_claim_ids`` in one
  ``BEGIN IMMEDIATE``, then ``sql_ack_many``. No ``Queue``, no ``Message``, no engine Python: what liteq
  would cost if its Python cost nothing;
* ``liteq SQL, passive``: the same with SQLite's own checkpoints (PASSIVE every 1,000
  pages, as the raw queue's) instead of liteq's WAL hook (RESTART: the WAL stays
  bounded under readers that never stop, a guarantee the raw queue does not give);
* ``liteq API``: ``q.put``, ``q.get()`` + ``msg.payload`` + ``msg.ack()``,
  ``q.get_many(100)`` + ``q.ack_many``.

The statements carry the guarantees (a lease deadline indexed for expiry, a fencing
token, attempts, the paused/limited check of flow control, the depth-counter switch,
the id tombstone, the task index): the ``liteq SQL`` / ``raw-minimal`` ratio is the
most any change to liteq's Python could reach without changing them. Medians of
``--rounds``, wall clock and CPU time (user + sys).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable

import cbor2

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from harness import alternated, payload  # noqa: E402
from peers.raw_minimal import RawMinimal  # noqa: E402

import liteq  # noqa: E402
from liteq.backends.sqlite.sql import (  # noqa: E402
    SQL_ACK_UNCOUNTED,
    SQL_CLAIM_NEXT,
    SQL_CLAIM_SELECT,
    SQL_INSERT_UNCOUNTED,
    sql_ack_many,
    sql_claim_ids,
)

BATCH = 100
SYSTEMS = ("raw-minimal", "liteq SQL, passive", "liteq SQL", "liteq API")


Loop = Callable[[int], None]


def _loops(system: str, directory: str) -> tuple[Loop, Loop, Loop, Callable[[], None]]:
    """(put n, get+ack n, batch get+ack n, close) for *system* on a fresh file."""
    if system == "raw-minimal":
        raw = RawMinimal(directory, "NORMAL")

        def raw_put(n: int) -> None:
            for i in range(n):
                raw.put(payload(i))

        def raw_get_ack(n: int) -> None:
            for _ in range(n):
                raw.ack(raw.get())

        def raw_batch(n: int) -> None:
            for _ in range(n // BATCH):
                raw.ack_many(raw.get_many(BATCH))

        return raw_put, raw_get_ack, raw_batch, raw.close
    db = liteq.connect(os.path.join(directory, "floor.db"))
    q = db.queue("bench")
    if system == "liteq SQL, passive":  # checkpoints as raw-minimal's (SQLite's own)
        db.connection.set_wal_hook(None)
        db.connection.wal_autocheckpoint(1000)
    if system == "liteq API":
        def api_put(n: int) -> None:
            for i in range(n):
                q.put(payload(i))

        def api_get_ack(n: int) -> None:
            for _ in range(n):
                m = q.get()
                m.payload  # noqa: B018 - decoded, as raw's get decodes
                m.ack()

        def api_batch(n: int) -> None:
            for _ in range(n // BATCH):
                ms = q.get_many(BATCH)
                for m in ms:
                    m.payload  # noqa: B018
                q.ack_many(ms)

        return api_put, api_get_ack, api_batch, db.close
    cur = db.connection.cursor()
    qid = q.id

    def sql_put(n: int) -> None:
        for i in range(n):
            cur.execute(SQL_INSERT_UNCOUNTED, (qid, 0, time.time(), cbor2.dumps(payload(i))))

    def sql_get_ack(n: int) -> None:
        for _ in range(n):
            row = cur.execute(SQL_CLAIM_NEXT, (qid, 30.0)).fetchall()[0]
            cbor2.loads(row[3])
            cur.execute(SQL_ACK_UNCOUNTED, (row[0], row[1]))

    token = [0]

    def sql_batch(n: int) -> None:  # the engine's batch claim and ack, as statements
        claim, ack = sql_claim_ids(BATCH), sql_ack_many(BATCH, False)
        for _ in range(n // BATCH):
            token[0] += 1
            cur.execute("BEGIN IMMEDIATE")
            rows = cur.execute(SQL_CLAIM_SELECT,
                               {"qid": qid, "n": BATCH, "token": token[0]}).fetchall()
            cur.execute(claim, (token[0], time.time() + 30.0, *[r[0] for r in rows]))
            cur.execute("COMMIT")
            for r in rows:
                cbor2.loads(r[3])
            cur.execute(ack, (*[r[0] for r in rows], token[0]))

    return sql_put, sql_get_ack, sql_batch, db.close


def one(system: str, n: int) -> dict[str, float]:
    directory = tempfile.mkdtemp(prefix="liteq-floor-")
    try:
        put, get_ack, batch, close = _loops(system, directory)
        put(400)
        get_ack(200)
        batch(200)  # warm: every statement prepared
        out: dict[str, float] = {}
        put(n)  # the batch loop's messages, under the ones put next
        for name, body in (("put", put), ("get_ack", get_ack), ("batch get_ack", batch)):
            w, c = time.perf_counter(), time.process_time()
            body(n)
            out[name + " wall"] = n / (time.perf_counter() - w)
            out[name + " cpu"] = n / (time.process_time() - c)
        close()
        return out
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    med = alternated(SYSTEMS, args.rounds, lambda s: one(s, args.n))
    base = med["raw-minimal"]
    keys = ("put wall", "put cpu", "get_ack wall", "get_ack cpu", "batch get_ack wall",
            "batch get_ack cpu")
    print(f"msgs/s, median of {args.rounds} (N = {args.n:,}), and against raw-minimal")
    print(f"{'':20s}" + "".join(f"{k:>20s}" for k in keys))
    for s in SYSTEMS:
        print(f"{s:20s}" + "".join(f"{med[s][k]:>13,.0f} ({med[s][k] / base[k]:4.0%})"
                                    for k in keys))


if __name__ == "__main__":
    main()
