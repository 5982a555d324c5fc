"""liteq against raw apsw and its peers: the same workloads, side by side, in one run.

    .venv/bin/python bench/compare.py [--sync normal|full] [--n N] [--runs 3] [--quick]

Systems (adapters in ``bench/peers/``): liteq; "raw-minimal", the minimal queue of
issue 23 in apsw (one table, one partial index, autocommit INSERT / claim / DELETE:
the reference DESIGN.md's targets are measured against); "raw", the feature-parity
raw queue (delay column, lease token, four-column index: kept as a second reference,
labelled for what it is); huey's ``SqliteStorage``; persist-queue's ``SQLiteAckQueue``;
litequeue's ``LiteQueue``. Every system runs on fresh temporary files at the same
``synchronous`` setting (read back from its live connection and reported), WAL.

Workloads (each system in its own fresh directory):

* per-message put, then per-message get+ack of those messages (N each);
* batch put (100 per transaction, 10N messages), then batch get+ack (100 per claim,
  100 per ack); n/a for a system whose API cannot do it;
* 1 producer + 2 consumer processes, and 1 + 4, end to end (N messages, one per
  transaction each side); every payload carries a sequence number and the
  consumers' receipts are checked for duplicates and losses;
* claim time (median of single claims) with 1k, 100k and 1M messages queued;
* enqueue-to-claim latency with an idle consumer in another process (p50, p99),
  then that consumer's CPU while it idles;
* no-op tasks through a real worker with 2 worker processes (liteq and huey only).

Systems without a cross-process wake-up are polled (1 ms doubling to 50 ms). The
whole set is repeated ``--runs`` times (system order rotated) and each cell is the
median. Results go to ``bench/results/compare-<sync>.json`` and ``.md``, and the
chart ``compare.png`` is redrawn from every ``compare-*.json`` there. ``--quick``
(small sizes, 1 run) prints the tables and writes nothing unless ``--out`` is given.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import datetime
import json
import os
import platform
import pstats
import shutil
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import apsw
from harness import (
    BATCH,
    PAYLOAD,
    NotApplicable,
    Run,
    Target,
    multi_process,
    payload,
    run_all,
    warm,
)
from peers import PEERS, SYSTEMS, open_system, tasks
from peers.report import chart, markdown, median_of, print_table
from summary import (
    combine_checks,
    cpu_model,
    filesystem,
    git_commit,
    median_rows,
    speed,
    version,
    write,
)

HERE = os.path.dirname(os.path.abspath(__file__))
CLAIM_BUDGET = 3.0  # seconds of claims per depth at most (a slow peer stops early)


# --- rows of the table -------------------------------------------------------------

# key, label, unit, higher is better
ROWS = [
    ("put", "put, 1 per transaction", "msgs/s", True),
    ("get_ack", "get+ack, 1 per transaction each", "msgs/s", True),
    ("put_batch", "batch put, 100 per transaction", "msgs/s", True),
    ("get_ack_batch", "batch get+ack, 100 per transaction", "msgs/s", True),
    ("mp_2", "1 producer + 2 consumer processes", "msgs/s", True),
    ("mp_4", "1 producer + 4 consumer processes", "msgs/s", True),
    ("tasks", "no-op tasks, 2 worker processes", "tasks/s", True),
    ("claim_0", "claim time, 1k queued", "µs", False),
    ("claim_1", "claim time, 100k queued", "µs", False),
    ("claim_2", "claim time, 1M queued", "µs", False),
    ("lat_p50", "enqueue→claim p50, idle consumer", "ms", False),
    ("lat_p99", "enqueue→claim p99, idle consumer", "ms", False),
    ("idle_cpu", "idle consumer CPU", "% of a core", False),
]


def target(key: str, values: dict[str, float | None], depths: list[int]) -> str:
    """DESIGN.md's target for a row and whether liteq's median meets it."""
    lq = values.get("liteq")
    if lq is None:
        return ""
    raw = values.get("raw-minimal")
    peers = [v for p, v in values.items() if p in PEERS and v is not None]
    if key in ("put", "get_ack", "mp_2"):
        ok = raw is not None and lq >= 0.85 * raw and all(lq > v for v in peers)
        return f"≥85% raw-minimal, > peers: {'met' if ok else 'NOT met'}"
    if key in ("put_batch", "get_ack_batch"):
        share = 0.9 if key == "put_batch" else 0.75
        ok = raw is not None and lq >= share * raw
        return f"≥{share:.0%} raw-minimal: {'met' if ok else 'NOT met'}"
    if key == "mp_4":
        two = values.get("liteq_mp_2")
        if two:
            return f"≥ 1 + 2 consumers: {'met' if lq >= two else 'NOT met'}"
        return ""
    if key == "tasks":
        return f"≥10k/s: {'met' if lq >= 10_000 else 'NOT met'}"
    if key == "claim_2" or (key == "claim_1" and len(depths) == 2):
        first = values.get("liteq_claim_0")
        if first:
            ratio = lq / first
            return f"flat within 1.5x of {depths[0]:,}: {ratio:.2f}x {'met' if ratio <= 1.5 else 'NOT met'}"
        return ""
    if key == "lat_p50":
        return f"< 1 ms: {'met' if lq < 1 else 'NOT met'}"
    if key == "lat_p99":
        return f"< 10 ms: {'met' if lq < 10 else 'NOT met'}"
    if key == "idle_cpu":
        return f"< 1%: {'met' if lq < 1 else 'NOT met'}"
    return ""


# --- where the systems run ----------------------------------------------------------


@contextlib.contextmanager
def fresh_dir(root: str, name: str) -> Iterator[str]:
    path = tempfile.mkdtemp(prefix=name + "-", dir=root)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class SqliteTarget(Target):
    """Every workload in a fresh temporary directory under *root*; the largest ``-wal``
    file of the multi-process rows is recorded."""

    systems = SYSTEMS
    check_keys = ("received", "duplicates", "lost", "errors", "producer_rate", "wal_mb")
    sample_wal = True
    opener = staticmethod(open_system)

    def fresh(self, name: str) -> contextlib.AbstractContextManager[str]:
        return fresh_dir(self.root, name)


# --- SQLite-only workloads -------------------------------------------------------------


def claim_times(root: str, name: str, sync: str, depths: list[int], claims: int) -> dict[str, Any]:
    """Time of one claim (get only; the ack is untimed) at each queue depth."""
    out: dict[str, Any] = {}
    with fresh_dir(root, name) as d:
        peer = open_system(name, d, sync)
        try:
            warm(peer)
            queued = 0  # messages in the queue
            for k, depth in enumerate(depths):
                while queued < depth:
                    chunk = min(10_000, depth - queued)
                    peer.fill([payload(queued + i) for i in range(chunk)])
                    queued += chunk
                took: list[float] = []
                budget = time.perf_counter() + CLAIM_BUDGET
                while len(took) < claims and time.perf_counter() < budget:
                    # Rounds of a few claims, each topped up again (untimed), so
                    # the depth stays within 1% (at least 10 messages) of its level.
                    rounds = max(10, min(100, depth // 100))
                    for _ in range(rounds):
                        t = time.perf_counter()
                        h = peer.get()
                        took.append(time.perf_counter() - t)
                        peer.ack(h)
                    peer.fill([payload(i) for i in range(rounds)])
                # The median is the cost of the claim itself; the mean also carries
                # the WAL checkpoints that some commits pay (kept in the JSON).
                out[f"claim_{k}"] = statistics.median(took) * 1e6
                out[f"claim_{k}_mean"] = statistics.fmean(took) * 1e6
                out[f"claim_{k}_n"] = len(took)
        finally:
            peer.close()
    return out


def task_throughput(root: str, name: str, sync: str, n: int) -> dict[str, Any]:
    runner = {"liteq": tasks.liteq_tasks, "huey": tasks.huey_tasks}.get(name)
    if runner is None:
        raise NotApplicable("no worker")
    with fresh_dir(root, name) as d:
        res = runner(d, n, sync)
    return {"tasks": res["value"], "tasks_done": res["done"]}


# --- one run of everything -------------------------------------------------------------


def one_run(args: argparse.Namespace, run: int, systems: list[str]) -> dict[str, Any]:
    root = tempfile.mkdtemp(prefix="liteq-compare-", dir=args.tmp)
    r = Run(args, run, systems, SqliteTarget(root))
    try:
        r.throughput_steps()
        r.step("tasks", ["tasks"], lambda s: task_throughput(root, s, r.sync, args.tasks_n))
        r.step("claim", [f"claim_{k}" for k in range(len(args.depths))],
               lambda s: claim_times(root, s, r.sync, args.depths, args.claims))
        r.latency_step()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return r.result()


# --- facts about the machine and the systems ---------------------------------------------


def default_syncs(root: str) -> dict[str, str]:
    """synchronous each system runs at when the user sets nothing (measured)."""
    from huey.storage import SqliteStorage
    from litequeue import LiteQueue
    from persistqueue import SQLiteAckQueue

    import liteq

    names = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
    out = {}
    with fresh_dir(root, "defaults") as d:
        db = liteq.connect(os.path.join(d, "l.db"))
        out["liteq"] = db.execute("PRAGMA synchronous")[0][0]
        db.close()
        conn = apsw.Connection(os.path.join(d, "r.db"))
        out["raw"] = conn.execute("PRAGMA synchronous").fetchall()[0][0]
        out["raw-minimal"] = out["raw"]
        conn.close()
        st = SqliteStorage("x", filename=os.path.join(d, "h.db"))
        out["huey"] = st.conn.execute("PRAGMA synchronous").fetchone()[0]
        st.close()
        pq = SQLiteAckQueue(os.path.join(d, "pq"))
        out["persist-queue"] = pq._conn.execute("PRAGMA synchronous").fetchone()[0]
        pq.close()
        lq = LiteQueue(os.path.join(d, "lq.db"))
        out["litequeue"] = lq.conn.execute("PRAGMA synchronous").fetchone()[0]
        lq.close()
    return {k: names.get(v, str(v)) for k, v in out.items()}


def machine(tmp: str) -> dict[str, Any]:
    import cbor2  # noqa: F401 - version only

    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "filesystem": filesystem(os.path.realpath(tmp)),
        "versions": {
            "liteq": f"{version('liteq-queue')} @ {git_commit(with_changes=True)}",
            "apsw": apsw.apsw_version(),
            "SQLite (apsw: liteq, raw-minimal, raw)": apsw.sqlite_lib_version(),
            "SQLite (stdlib sqlite3: huey, persist-queue, litequeue)": sqlite3.sqlite_version,
            "cbor2": version("cbor2"),
            "huey": version("huey"),
            "persist-queue": version("persist-queue"),
            "litequeue": version("litequeue"),
            "matplotlib": version("matplotlib"),
        },
    }


# --- combining runs -----------------------------------------------------------------------


def combine(runs: list[dict[str, Any]], systems: list[str], args: argparse.Namespace,
            meta: dict[str, Any]) -> dict[str, Any]:
    rows = []
    labels = {f"claim_{k}": f"claim time, {d:,} queued" for k, d in enumerate(args.depths)}
    measured = [(key, labels.get(key, label), unit, higher) for key, label, unit, higher in ROWS
                if not (key.startswith("claim_") and int(key[-1]) >= len(args.depths))]
    for row in median_rows(runs, systems, measured):
        key, med, higher = row["key"], row["median"], row["higher_is_better"]
        lq = med.get("liteq")
        row["liteq_vs_raw_minimal"] = speed(lq, med.get("raw-minimal"), higher)
        row["liteq_vs_raw"] = speed(lq, med.get("raw"), higher)
        peer_vals = {p: med[p] for p in PEERS if med.get(p) is not None}
        if peer_vals:
            best = (max if higher else min)(peer_vals, key=lambda p: peer_vals[p])
            row["best_peer"] = best
            row["liteq_vs_best_peer"] = speed(lq, peer_vals[best], higher)
        extra = dict(med)
        if key.startswith("claim_"):
            extra["liteq_claim_0"] = median_of([r["cells"]["liteq"].get("claim_0") for r in runs]) \
                if "liteq" in systems else None
        if key == "mp_4" and "liteq" in systems:
            extra["liteq_mp_2"] = median_of([r["cells"]["liteq"].get("mp_2") for r in runs])
        row["target"] = target(key, extra, args.depths)
        rows.append(row)
    checks = combine_checks(runs, systems, ["duplicates", "lost", "received", "errors",
                                             "producer_rate", "wal_mb"])
    return {
        "meta": meta,
        "settings": {
            "sync": args.sync.upper(), "runs": args.runs, "n": args.n, "batch_n": args.batch_n,
            "batch": BATCH, "depths": args.depths, "claims_per_depth": args.claims,
            "claim_budget_s": CLAIM_BUDGET, "latency_samples": args.samples,
            "idle_s": args.idle, "tasks_n": args.tasks_n, "payload": PAYLOAD,
            "poll": "1 ms doubling to 50 ms (systems without a cross-process wake-up)",
        },
        "systems": {
            s: {
                "version": meta["versions"].get(s, meta["versions"]["liteq"])
                if not s.startswith("raw") else f"apsw {meta['versions']['apsw']}",
                "semantics": SYSTEMS[s].semantics,
                "default_synchronous": f"{meta['defaults'].get(s)} ({SYSTEMS[s].default_sync})",
                "how_synchronous_is_set": SYSTEMS[s].how_set,
                "measured": next((r["settings"][s] for r in runs if s in r["settings"]), None),
                "codec": SYSTEMS[s].codec,
                "cross_process_wakeup": SYSTEMS[s].wakes,
            }
            for s in systems
        },
        "rows": rows,
        "correctness": checks,
        "run_log": [r["log"] for r in runs],
    }


# --- main -----------------------------------------------------------------------------------


def profile(args: argparse.Namespace) -> None:
    """cProfile liteq's side of one workload and print where the time goes."""
    key, sync = args.profile, args.sync.upper()
    if key == "statements":
        from peers import statements

        statements.run(min(args.n, 5000))
        return
    root = tempfile.mkdtemp(prefix="liteq-profile-", dir=args.tmp)
    try:
        if key in ("mp_2", "mp_4"):
            out = os.path.join(root, "prof")
            os.makedirs(out)
            os.environ["COMPARE_PROFILE_DIR"] = out
            res = multi_process(SqliteTarget(root), "liteq", sync, args.n, int(key[-1]))
            print(f"{key}: {res.get('value', 0):,.0f} msgs/s (under the profiler)")
            for role in ("producer", "consumer"):
                files = sorted(f for f in os.listdir(out) if f.startswith(role))
                print(f"\n--- {role} ({len(files)} process(es)), by own time")
                pstats.Stats(*[os.path.join(out, f) for f in files]).sort_stats(
                    "tottime").print_stats(args.profile_lines)
            return
        with fresh_dir(root, "liteq") as d:
            peer = open_system("liteq", d, sync)
            warm(peer)
            n = args.batch_n if key.endswith("batch") else args.n
            items = [payload(i) for i in range(n)]
            if key in ("get_ack", "get_ack_batch"):
                peer.fill(items)

            def run() -> None:
                if key == "put":
                    for p in items:
                        peer.put(p)
                elif key == "put_batch":
                    for i in range(0, n, BATCH):
                        peer.put_many(items[i:i + BATCH])
                elif key == "get_ack":
                    for _ in range(n):
                        h = peer.get()
                        peer.payload(h)
                        peer.ack(h)
                elif key == "get_ack_batch":
                    for _ in range(0, n, BATCH):
                        hs = peer.get_many(BATCH)
                        for h in hs:
                            peer.payload(h)
                        peer.ack_many(hs)
                else:
                    raise SystemExit(f"--profile supports put, get_ack, put_batch, "
                                     f"get_ack_batch, mp_2, mp_4; not {key}")

            profiler = cProfile.Profile()
            t = time.perf_counter()
            profiler.runcall(run)
            took = time.perf_counter() - t
            peer.close()
        print(f"{key}: {n:,} messages, {n / took:,.0f} msgs/s under the profiler")
        stats = pstats.Stats(profiler)
        stats.sort_stats("tottime").print_stats(args.profile_lines)
        stats.sort_stats("cumulative").print_stats(args.profile_lines)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sync", choices=["normal", "full"], default="normal")
    parser.add_argument("--n", type=int, help="messages per per-message and multi-process "
                        "workload (default 10,000 at normal, 2,000 at full)")
    parser.add_argument("--runs", type=int, help="repeat everything; medians (default 3)")
    parser.add_argument("--quick", action="store_true", help="small sizes, 1 run, no files "
                        "written unless --out is given")
    parser.add_argument("--systems", default=",".join(SYSTEMS),
                        help="comma-separated subset of " + ", ".join(SYSTEMS))
    parser.add_argument("--workloads", default=",".join(k for k, *_ in ROWS),
                        help="comma-separated subset of row keys")
    parser.add_argument("--out", help="directory for compare-<sync>.{json,md} and compare.png "
                        "(default bench/results)")
    parser.add_argument("--tmp", default=None, help="where the temporary files go")
    parser.add_argument("--chart-only", action="store_true",
                        help="rewrite compare-<sync>.md and redraw compare.png from the JSON "
                        "files, and exit")
    parser.add_argument("--profile", metavar="WORKLOAD",
                        help="cProfile liteq's side of put, get_ack, put_batch, get_ack_batch, "
                        "mp_2 or mp_4 and print the top functions; 'statements': time each "
                        "SQL step of put and get+ack beside raw's (nothing is written)")
    parser.add_argument("--profile-lines", type=int, default=25)
    args = parser.parse_args(argv)
    full = args.sync == "full"
    if args.quick:
        args.n = args.n or 1000
        args.runs = args.runs or 1
        args.depths, args.claims, args.samples, args.idle = [1000, 10_000], 300, 50, 1.0
    else:
        args.n = args.n or (2000 if full else 10_000)
        args.runs = args.runs or 3
        args.depths, args.claims = [1000, 100_000, 1_000_000], (500 if full else 2000)
        args.samples, args.idle = (200 if full else 300), 5.0
    args.batch_n = 10 * args.n
    args.tasks_n = args.n
    args.workloads = set(args.workloads.split(","))
    if not args.quick or args.out:
        args.out = args.out or os.path.join(HERE, "results")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.chart_only:
        out = args.out or os.path.join(HERE, "results")
        for sync in ("normal", "full"):
            base = os.path.join(out, f"compare-{sync}")
            if os.path.exists(base + ".json"):
                with open(base + ".json") as f:
                    result = json.load(f)
                with open(base + ".md", "w") as f:
                    f.write(markdown(result, list(result["systems"])))
                print(base + ".md")
        print(chart(out))
        return
    if args.profile:
        profile(args)
        return
    systems = [s for s in SYSTEMS if s in args.systems.split(",")]
    tmp = args.tmp or tempfile.gettempdir()
    meta = machine(tmp)
    meta["defaults"] = default_syncs(tmp)
    meta["date"] = datetime.datetime.now().isoformat(timespec="seconds")
    began = time.monotonic()
    runs = run_all(args, lambda run: one_run(args, run, systems),
                   f"sync {args.sync.upper()}", count_other=True)
    meta["wall_s"] = time.monotonic() - began
    result = combine(runs, systems, args, meta)
    result["raw_runs"] = [{k: r[k] for k in ("cells", "checks")} for r in runs]
    print_table(result, systems)
    if args.out:
        base = os.path.join(args.out, f"compare-{args.sync}")
        write(result, base, markdown(result, systems))
        print(f"wrote {base}.json, {base}.md, {chart(args.out)}")


if __name__ == "__main__":
    main()
