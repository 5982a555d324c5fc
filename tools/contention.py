#!/usr/bin/env python3
"""Contention: N processes mixing put, get, ack, nack, extend and stats on one file.

Every process runs the same random mix against one queue with a short lease (so
leases run out under the holders' feet and acks meet stale tokens), and times every
call. The conductor samples the size of the ``-wal`` file while they run. At the
end it reports throughput, latency percentiles per operation, the largest WAL seen,
and checks that

* no ``DatabaseBusy`` / ``BusyError`` / "database is locked" reached a caller
  (``busy``), and no other unexpected exception did (``errors``);
* no message was acked twice, and every message put is either acked or still in
  the queue (``lost``);
* ``PRAGMA integrity_check`` is ok.

::

    python tools/contention.py --duration 60 --procs 8
    contention: 8 procs x 60 s: 123456 ops (2057/s) ... busy=0 errors=0 largest WAL 4.1 MiB

Exits 0 if every check passed, 1 otherwise; ``--json`` prints the whole report.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from array import array
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import liteq  # noqa: E402

QUEUE = "contention"
OPS = ("put", "put_many", "get", "ack", "nack", "extend", "stats")


# --- one contending process -------------------------------------------------------------


def _ack(m: liteq.Message) -> bool:
    m.ack()
    return True


def child(args: argparse.Namespace) -> int:
    run_dir = Path(args.dir)
    rng = random.Random(f"{args.seed}-{args.child}")
    samples: dict[str, array[float]] = {op: array("d") for op in OPS}
    counts = dict.fromkeys(["lease_lost", "busy", "errors", "empty_gets"], 0)
    errors: list[str] = []
    put_ids: list[int] = []
    acked: list[int] = []
    db = liteq.connect(run_dir / "contention.db")
    q = db.queue(QUEUE)
    lease = q.config.lease
    held: list[tuple[float, liteq.Message]] = []  # (settle at, message)

    def timed(op: str, fn: Any, *a: Any, **kw: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*a, **kw)
        except liteq.LeaseLost:
            counts["lease_lost"] += 1
            return None
        except Exception as exc:
            text = f"{type(exc).__name__}: {exc}"
            if isinstance(exc, liteq.DatabaseBusy) or "locked" in text or "Busy" in text:
                counts["busy"] += 1
            else:
                counts["errors"] += 1
            if len(errors) < 5:
                errors.append(traceback.format_exc())
            return None
        finally:
            samples[op].append(time.perf_counter() - start)

    while time.time() < args.start:
        time.sleep(0.001)
    end = args.start + args.duration
    while time.time() < end:
        now = time.monotonic()
        due = [h for h in held if h[0] <= now]
        if due:
            held = [h for h in held if h[0] > now]
            for _, m in due:
                r = rng.random()
                if r < 0.1:
                    timed("nack", m.nack, delay=rng.choice([0, 0.05]))
                    continue
                if r < 0.2:
                    timed("extend", m.extend, lease)
                if timed("ack", _ack, m):
                    acked.append(m.id)
            continue
        r = rng.random()
        if r < 0.30:
            mid = timed("put", q.put, {"p": args.child, "pad": "x" * rng.randint(0, 200)})
            if mid is not None:
                put_ids.append(mid)
        elif r < 0.38:
            ids = timed("put_many", q.put_many, [{"p": args.child}] * rng.randint(2, 10))
            if ids:
                put_ids.extend(ids)
        elif r < 0.95:
            msgs = timed("get", q.get_many, rng.randint(1, 4))
            if not msgs:
                counts["empty_gets"] += 1
            for m in msgs or []:
                # Most are settled well within the lease; about a quarter only after
                # it ran out (another process may have taken the message meanwhile).
                delay = rng.uniform(0, lease * 0.5) if rng.random() < 0.75 else \
                    rng.uniform(lease, lease * 1.5)
                held.append((time.monotonic() + delay, m))
        else:
            timed("stats", q.stats)
    for op, values in samples.items():
        with open(run_dir / f"lat-{args.child}-{op}.bin", "wb") as f:
            values.tofile(f)
    (run_dir / f"child-{args.child}.json").write_text(json.dumps(
        {"counts": counts, "errors": errors, "put": put_ids, "acked": acked}))
    db.close()
    return 0


# --- the conductor --------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    k = min(len(values) - 1, max(0, round(p / 100 * (len(values) - 1))))
    return values[k]


def conduct(args: argparse.Namespace) -> int:
    run_dir = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="liteq-contention-"))
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "contention.db"
    db = liteq.connect(path)
    db.queue(QUEUE, lease=args.lease, max_attempts=1_000_000, max_depth=1_000_000,
             backoff=liteq.Backoff(base=0.01, max=0.05))
    db.close()
    start = time.time() + 2.0  # every child starts at once, after its imports
    procs = [subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--child", str(i),
                               "--dir", str(run_dir), "--seed", str(args.seed),
                               "--duration", str(args.duration), "--start", repr(start)])
             for i in range(args.procs)]
    wal = Path(f"{path}-wal")
    largest = 0
    wal_samples = []
    while any(p.poll() is None for p in procs):
        try:
            size = wal.stat().st_size
        except FileNotFoundError:
            size = 0
        largest = max(largest, size)
        if time.time() >= start:
            wal_samples.append(size)
        time.sleep(0.02)
    codes = [p.returncode for p in procs]

    report: dict[str, Any] = {"procs": args.procs, "duration": args.duration,
                              "lease": args.lease, "exit_codes": codes}
    latencies: dict[str, list[float]] = {op: [] for op in OPS}
    totals = dict.fromkeys(["lease_lost", "busy", "errors", "empty_gets"], 0)
    errors: list[str] = []
    put: list[int] = []
    acked: list[int] = []
    for i in range(args.procs):
        try:
            data = json.loads((run_dir / f"child-{i}.json").read_text())
        except FileNotFoundError:
            totals["errors"] += 1
            errors.append(f"process {i} left no report (exit code {codes[i]})")
            continue
        for k, v in data["counts"].items():
            totals[k] += v
        errors += data["errors"]
        put += data["put"]
        acked += data["acked"]
        for op in OPS:
            values = array("d")
            with open(run_dir / f"lat-{i}-{op}.bin", "rb") as f:
                values.frombytes(f.read())
            latencies[op].extend(values)

    db = liteq.connect(path)
    remaining = {mid for (mid,) in db.execute("SELECT id FROM messages WHERE qid <> 0")}
    integrity = db.integrity_check()
    final_wal = wal.stat().st_size if wal.exists() else 0
    db.close()
    acked_twice = len(acked) - len(set(acked))
    lost = len(set(put) - set(acked) - remaining)
    ops = sum(len(v) for v in latencies.values())
    every = sorted(x for v in latencies.values() for x in v)
    report.update(totals)
    report.update(
        ops=ops,
        ops_per_second=round(ops / args.duration),
        messages_put=len(put),
        messages_acked=len(set(acked)),
        acked_twice=acked_twice,
        lost=lost,
        p50_ms=round(percentile(every, 50) * 1000, 3),
        p99_ms=round(percentile(every, 99) * 1000, 3),
        max_ms=round((every[-1] if every else 0) * 1000, 3),
        per_op={op: {"n": len(v), "p50_ms": round(percentile(sorted(v), 50) * 1000, 3),
                     "p99_ms": round(percentile(sorted(v), 99) * 1000, 3),
                     "max_ms": round(max(v, default=0) * 1000, 3)}
                for op, v in latencies.items()},
        largest_wal_bytes=largest,
        median_wal_bytes=sorted(wal_samples)[len(wal_samples) // 2] if wal_samples else 0,
        final_wal_bytes=final_wal,
        integrity="ok" if integrity == ["ok"] else "; ".join(integrity[:3]),
        error_samples=errors[:5],
    )
    ok = (report["busy"] == 0 and report["errors"] == 0 and acked_twice == 0 and lost == 0
          and report["integrity"] == "ok" and all(c == 0 for c in codes))
    report["ok"] = ok
    (run_dir / "report.json").write_text(json.dumps(report, indent=2))
    if args.json:
        print(json.dumps(report))
    else:
        print(summary(report))
        for text in errors[:3]:
            print(text)
    if not args.dir:
        shutil.rmtree(run_dir, ignore_errors=True)
    return 0 if ok else 1


def summary(r: dict[str, Any]) -> str:
    ops = ", ".join(f"{op} p99 {v['p99_ms']:g} ms" for op, v in r["per_op"].items() if v["n"])
    mib = 1024 * 1024
    return (
        f"contention: {r['procs']} procs x {r['duration']:g} s, lease {r['lease']:g} s: "
        f"{r['ops']} ops ({r['ops_per_second']}/s), p50 {r['p50_ms']:g} ms, "
        f"p99 {r['p99_ms']:g} ms, max {r['max_ms']:g} ms ({ops}); "
        f"put {r['messages_put']}, acked {r['messages_acked']}, lease lost {r['lease_lost']}; "
        f"busy={r['busy']} errors={r['errors']} acked twice={r['acked_twice']} lost={r['lost']}; "
        f"largest WAL {r['largest_wal_bytes'] / mib:.1f} MiB (median "
        f"{r['median_wal_bytes'] / mib:.1f} MiB); integrity={r['integrity']}"
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=60.0, help="seconds (default 60)")
    p.add_argument("--procs", type=int, default=8, help="processes (default 8)")
    p.add_argument("--lease", type=float, default=0.5, help="the queue's lease (default 0.5 s)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--dir", help="run directory (default: a temporary one, removed after)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)
    p.add_argument("--start", type=float, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child is not None:
        return child(args)
    return conduct(args)


if __name__ == "__main__":
    sys.exit(main())
