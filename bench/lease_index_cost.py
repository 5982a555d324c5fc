"""What the lease index costs a get+ack on SQLite, and what replacing it would buy
(issue 23: "find a cheaper structure if there is one").

    .venv/bin/python bench/lease_index_cost.py [--n 10000] [--rounds 3]

``msg_leased`` (``messages (qid, lease_until) WHERE state = 2``) is what finds expired
leases in O(log n) and counts the leased messages of a queue for ``stats()``. Its
entry is inserted by the claim and deleted by the ack, so each of the two commits
writes one WAL frame more than it would without it. Each variant below changes a
fresh liteq file by hand (raw DDL on liteq's schema, a measurement only: expiry,
stats and every other reader of the index are not kept working), then times the
public API's loops in one process, wall clock and CPU time (user + sys: the WAL
writes are in it):

* ``as is``: liteq unchanged;
* ``no lease index``: ``msg_leased`` dropped: what the index costs, i.e. the most any
  replacement could win;
* ``lease log``: ``msg_leased`` dropped and replaced by a ``WITHOUT ROWID`` table
  ``(qid, until, id)`` that a trigger fills when a row becomes leased; the ack leaves
  its entry behind (the ack's frame is saved, the claim still writes one, plus the
  trigger's run). Stale entries would have to be swept, and ``stats()`` could no
  longer count leased messages from it: not a design, an upper bound for one;
* ``pending ack``: the index keyed on ``lease_until IS NOT NULL`` (an ack that only
  changes ``state`` leaves it alone), the ack an ``UPDATE ... SET state = 6`` of the
  row (one page), and the acked rows deleted afterwards 100 per transaction; the
  deleting is timed and reported per message beside the loop.

Loops (N each): ``get_ack`` (N queued first, get + ack oldest first) and ``keep_up``
(put, get, ack one at a time). The variants run alternated, ``--rounds`` times;
medians are printed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from harness import alternated  # noqa: E402

import liteq  # noqa: E402

PAYLOAD = {"id": 1, "body": "x" * 100}
VARIANTS = ("as is", "no lease index", "lease log", "pending ack")
ACK_PENDING = "UPDATE messages SET state = 6 WHERE id = ?1 AND token = ?2 AND state = 2"


def _alter(db: Any, variant: str) -> None:
    if variant == "as is":
        return
    db.execute("DROP INDEX msg_leased")
    if variant == "lease log":
        db.execute("CREATE TABLE lease_log (qid INTEGER NOT NULL, until REAL NOT NULL,"
                   " id INTEGER NOT NULL, PRIMARY KEY (qid, until, id)) WITHOUT ROWID")
        db.execute("CREATE TRIGGER lease_log AFTER UPDATE OF state ON messages"
                   " WHEN new.state = 2 BEGIN INSERT OR IGNORE INTO lease_log"
                   " VALUES (new.qid, new.lease_until, new.id); END")
    elif variant == "pending ack":
        db.execute("CREATE INDEX msg_leased ON messages (qid, lease_until)"
                   " WHERE lease_until IS NOT NULL")
        db.execute("DROP INDEX msg_finished")
        db.execute("CREATE INDEX msg_finished ON messages (qid, state, finished_at)"
                   " WHERE state BETWEEN 3 AND 5")


def one(variant: str, n: int) -> dict[str, float]:
    directory = tempfile.mkdtemp(prefix="liteq-lease-")
    try:
        db = liteq.connect(os.path.join(directory, "lease.db"))
        q = db.queue("bench")
        _alter(db, variant)
        conn = db.connection
        pending: list[int] = []

        def ack(m: Any) -> None:
            if variant == "pending ack":
                conn.execute(ACK_PENDING, (m.id, m.token))
                pending.append(m.id)
            else:
                m.ack()

        for _ in range(200):
            q.put(PAYLOAD)
            ack(q.get())
        out: dict[str, float] = {}

        def timed(name: str, body: Callable[[], None]) -> None:
            pending.clear()
            w, c = time.perf_counter(), time.process_time()
            body()
            out[name + " wall"] = n / (time.perf_counter() - w)
            out[name + " cpu"] = n / (time.process_time() - c)
            if variant == "pending ack":  # what the deferred deletes cost afterwards
                w = time.perf_counter()
                for i in range(0, len(pending), 100):
                    ids = ",".join(map(str, pending[i:i + 100]))
                    with db.transaction():
                        conn.execute(f"DELETE FROM messages WHERE id IN ({ids})")
                out[name + " sweep us"] = (time.perf_counter() - w) / n * 1e6

        for _ in range(n):
            q.put(PAYLOAD)

        def get_ack() -> None:
            for _ in range(n):
                m = q.get()
                m.payload  # noqa: B018 - decoded, as a consumer would
                ack(m)

        def keep_up() -> None:
            for _ in range(n):
                q.put(PAYLOAD)
                ack(q.get())

        timed("get_ack", get_ack)
        timed("keep_up", keep_up)
        db.close()
        return out
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    med = alternated(VARIANTS, args.rounds, lambda v: one(v, args.n))
    base = med["as is"]
    print(f"SQLite get+ack and keep-up, msgs/s (median of {args.rounds}; N = {args.n:,}),"
          " and against liteq as is")
    print(f"{'variant':16s} {'get+ack wall':>22s} {'get+ack CPU':>22s}"
          f" {'keep-up wall':>22s} {'keep-up CPU':>22s}  sweep afterwards")
    for v in VARIANTS:
        m = med[v]
        cells = [f"{m[k]:>10,.0f} ({m[k] / base[k]:5.2f}x)"
                 for k in ("get_ack wall", "get_ack cpu", "keep_up wall", "keep_up cpu")]
        sweep = (f"{m['get_ack sweep us']:.1f} / {m['keep_up sweep us']:.1f} us a message"
                 if "get_ack sweep us" in m else "")
        print(f"{v:16s} " + " ".join(f"{c:>22s}" for c in cells) + f"  {sweep}")


if __name__ == "__main__":
    main()
