"""What the depth counter costs the server, per message (issue 17, the counted switch).

The same loops on an unbounded queue (``db.queue(name)``) and a bounded one
(``max_depth`` far above what the loop puts, so nothing is refused): per message, the
WAL the server wrote (``pg_current_wal_insert_lsn`` before and after), the rows
written (inserted, updated or deleted) in ``depth_stripes`` and in all of liteq's
tables (the server's table statistics, flushed on demand), and the CPU time of the
session's server process (``/proc/<pid>/schedstat``: the backend runs on this host)
and of this client. Autovacuum is off for the schema's tables and each loop starts
after a VACUUM and a CHECKPOINT. WAL and rows do not depend on how busy the machine
is; the CPU times a little (caches, frequency); the wall-clock rate is printed too but
means little on a shared machine.

Only the public API and ``db.execute``, so the same script measures any liteq version
(``PYTHONPATH=<an older tree>``). Needs a server on this host, one nobody else writes
to while it runs (the WAL position is the cluster's)::

    .venv/bin/python bench/bench_uncounted.py --url postgresql://postgres@127.0.0.1:55462/postgres
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from typing import Any

import liteq


def server_cpu_ns(pid: int) -> int:
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0])


def lsn(db: liteq.Database) -> int:
    return int(db.execute("SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn")[0][0])


def tuple_writes(db: liteq.Database, schema: str) -> tuple[int, int]:
    """Rows inserted, updated or deleted so far: in depth_stripes, and in all of the
    schema's tables (this session's counts flushed first)."""
    db.execute("SELECT pg_stat_force_next_flush()")
    row = db.execute(
        "SELECT sum(n_tup_ins + n_tup_upd + n_tup_del) FILTER (WHERE relname = 'depth_stripes'),"
        " sum(n_tup_ins + n_tup_upd + n_tup_del) FROM pg_stat_user_tables WHERE schemaname = %s",
        (schema,))
    return int(row[0][0]), int(row[0][1])


TABLES = ("messages", "depth_stripes", "queues")


def measure(db: liteq.Database, schema: str, pid: int, n: int, loop: Any) -> dict[str, float]:
    # The same start for every loop: no dead rows left by the one before, and a fresh
    # checkpoint (full-page images would otherwise land on whichever loop came first).
    for table in TABLES:
        db.execute(f'VACUUM "{schema}".{table}')
    db.execute("CHECKPOINT")
    w0, (s0, a0), c0 = lsn(db), tuple_writes(db, schema), server_cpu_ns(pid)
    p0, t0 = time.process_time(), time.perf_counter()
    loop()
    wall, client = time.perf_counter() - t0, time.process_time() - p0
    c1 = server_cpu_ns(pid)
    s1, a1 = tuple_writes(db, schema)
    w1 = lsn(db)
    return {
        "wal_bytes": (w1 - w0) / n,
        "stripe_rows": (s1 - s0) / n,
        "all_rows": (a1 - a0) / n,
        "server_us": (c1 - c0) / 1e3 / n,
        "client_us": client * 1e6 / n,
        "msgs_per_s": n / wall,
    }


def workloads(q: liteq.Queue, n: int, batch: int) -> dict[str, Any]:
    def put() -> None:
        for i in range(n):
            q.put(i)

    def get_ack() -> None:
        for _ in range(n):
            m = q.get()
            assert m is not None
            m.ack()

    def put_batch() -> None:
        for i in range(n // batch):
            q.put_many(list(range(i * batch, (i + 1) * batch)))

    def get_ack_batch() -> None:
        for _ in range(n // batch):
            ms = q.get_many(batch)
            assert len(ms) == batch
            q.ack_many(ms)

    return {"put": put, "get_ack": get_ack, "put_batch": put_batch, "get_ack_batch": get_ack_batch}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", required=True)
    ap.add_argument("--n", type=int, default=3000, help="messages per per-message loop")
    ap.add_argument("--batch-n", type=int, default=30000, help="messages per batch loop")
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()
    schema = "bench_" + uuid.uuid4().hex[:8]
    db = liteq.connect(args.url, schema=schema)
    out: dict[str, dict[str, dict[str, float]]] = {}
    try:
        pid = int(db.execute("SELECT pg_backend_pid()")[0][0])
        # No autovacuum in the middle of a loop: its WAL would count as the loop's.
        for table in TABLES:
            db.execute(f'ALTER TABLE "{schema}".{table} SET (autovacuum_enabled = false)')
        for kind, options in (("unbounded", {}), ("bounded", {"max_depth": 10**9})):
            q = db.queue(f"q_{kind}", **options)
            q.put_many(list(range(50)))  # warm: statements prepared, plans made
            q.ack_many(q.get_many(50))
            for _ in range(10):
                q.put(0)
                m = q.get()
                assert m is not None
                m.ack()
            loops = workloads(q, args.n, args.batch)
            out[kind] = {}
            for name, loop in loops.items():
                count = args.batch_n if name.endswith("batch") else args.n
                if name.endswith("batch"):
                    loop = workloads(q, count, args.batch)[name]
                out[kind][name] = measure(db, schema, pid, count, loop)
    finally:
        db.execute(f'DROP SCHEMA "{schema}" CASCADE')
        db.close()
    keys = ("wal_bytes", "stripe_rows", "all_rows", "server_us", "client_us", "msgs_per_s")
    print(f"{'queue':10} {'workload':14} " + " ".join(f"{k:>12}" for k in keys))
    for kind, rows in out.items():
        for name, fig in rows.items():
            print(f"{kind:10} {name:14} " + " ".join(f"{fig[k]:12.2f}" for k in keys))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
