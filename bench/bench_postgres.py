"""liteq on PostgreSQL beside a minimal raw psycopg queue and procrastinate, in one run.

    .venv/bin/python bench/bench_postgres.py [--n 10000] [--runs 3] [--sync normal|full]
    .venv/bin/python bench/bench_postgres.py --quick            # N = 300, 1 run, ~1 min
    .venv/bin/python bench/bench_postgres.py --url postgresql://USER@HOST/DB

Without ``--url`` it starts its own throwaway cluster (``tests/pgcluster.py``: initdb
into a temporary directory, a free port on 127.0.0.1) with the **default fsync=on**:
``fsync=off`` is not what a user has. ``--url`` names a role that may ``CREATE
DATABASE``. Every workload of every system gets a fresh database (created and dropped
here). Every system runs at the ``synchronous_commit`` of liteq's durability (``normal``:
``off``, the default; ``full``: ``on``), set the way its API allows and read back from
one of its live sessions.

Systems (adapters in ``bench/peers/``): ``liteq`` (``liteq_pg.py``, the public API on a
``postgresql://`` URL); ``raw`` (``raw_psycopg.py``, the limit: one table, a partial
index, a one-statement ``SKIP LOCKED`` claim with a token from a sequence, a
token-guarded ``DELETE``, prepared statements, autocommit; its consumers poll, 1 ms
doubling to 50 ms); ``raw_notify`` (the same queue with a ``NOTIFY`` in every put and
consumers that wait on ``LISTEN``: a reference column, no target is measured against
it); ``procrastinate`` (``procrastinate_peer.py``, in its own terms: defer, and its
worker), when installed.

Workloads: put (one per transaction), then get+ack of those; put_many 100 (10N
messages), then get_many 100 + ack_many; 1 producer + 2 and + 4 consumer processes (N
messages; every payload carries a sequence number, duplicates and losses are counted);
enqueue-to-claim latency with the consumer idle in another process (LISTEN/NOTIFY), and
that consumer's CPU while idle. Each cell is the median of ``--runs`` (system order
rotated); liteq / raw and liteq / procrastinate are printed. Results go to
``bench/results/postgres-<sync>.json`` and ``.md`` (``--quick`` writes nothing unless
``--out`` is given). Never part of the test run.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import itertools
import json
import os
import platform
import sys
import time
from collections.abc import Iterator
from typing import Any

import psycopg
from harness import BATCH, PAYLOAD, Run, Target, run_all
from peers.liteq_pg import LiteqPg
from peers.pg_base import PgPeer
from peers.raw_psycopg import RawPsycopg, RawPsycopgNotify
from peers.report import fmt, loads, median_of, print_rows, ratio, rows_table
from summary import combine_checks, cpu_model, git_commit, median_rows, speed, version, write

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
from pgcluster import Cluster, find_bindir, with_dbname  # noqa: E402

try:
    from peers import procrastinate_peer
except ImportError as exc:  # not installed: the table says so
    procrastinate_peer = None  # type: ignore[assignment]
    PROCRASTINATE_MISSING = str(exc)
else:
    PROCRASTINATE_MISSING = ""

# raw_notify: a reference, not a target (peers/raw_psycopg.py says why it is here).
SYSTEMS: dict[str, type[PgPeer]] = {"liteq": LiteqPg, "raw": RawPsycopg,
                                    "raw_notify": RawPsycopgNotify}
if procrastinate_peer is not None:
    SYSTEMS["procrastinate"] = procrastinate_peer.ProcrastinatePeer

# key, label, unit, higher is better
ROWS = [
    ("put", "put, 1 per transaction", "msgs/s", True),
    ("get_ack", "get+ack, 1 per transaction each", "msgs/s", True),
    ("put_batch", "batch put, 100 per transaction", "msgs/s", True),
    ("get_ack_batch", "batch get+ack, 100 per transaction", "msgs/s", True),
    ("mp_2", "1 producer + 2 consumer processes", "msgs/s", True),
    ("mp_4", "1 producer + 4 consumer processes", "msgs/s", True),
    ("lat_p50", "enqueue→claim p50, idle consumer", "ms", False),
    ("lat_p99", "enqueue→claim p99, idle consumer", "ms", False),
    ("idle_cpu", "idle consumer CPU", "% of a core", False),
]

_names = itertools.count(1)


@contextlib.contextmanager
def fresh_db(server: str, name: str) -> Iterator[str]:
    """A new empty database on *server* for one workload of *name*; dropped after."""
    db = f"bench_{name}_{os.getpid()}_{next(_names)}".replace("-", "_")
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{db}"')
    try:
        yield with_dbname(server, db)
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def open_system(name: str, url: str, sync: str, **options: Any) -> PgPeer:
    return SYSTEMS[name](url, sync, **options)  # type: ignore[call-arg]


class PgTarget(Target):
    """Every workload on a fresh database of the server at *root*; the raw queue LISTENs in the
    latency row, and procrastinate consumes through its own worker."""

    systems = SYSTEMS
    check_keys = ("received", "duplicates", "redelivered", "lost", "errors", "producer_rate")
    no_batch_claim = "no batch claim (its worker fetches one job per query)"
    listen_first = True
    opener = staticmethod(open_system)

    def fresh(self, name: str) -> contextlib.AbstractContextManager[str]:
        return fresh_db(self.root, name)

    def latency_options(self, name: str) -> dict[str, Any]:
        return {"wake": True} if name == "raw" else {}

    def worker(self, name: str) -> Any:
        return procrastinate_peer if SYSTEMS[name].worker_only else None


# --- one run of everything -----------------------------------------------------------


def one_run(args: argparse.Namespace, run: int, systems: list[str]) -> dict[str, Any]:
    r = Run(args, run, systems, PgTarget(args.server))
    r.throughput_steps()
    r.latency_step()
    return r.result()


# --- combining runs and reporting ------------------------------------------------------


def target(key: str, med: dict[str, float | None]) -> str:
    """DESIGN.md's PostgreSQL target for a row and whether liteq's median meets it."""
    lq, raw, pc = med.get("liteq"), med.get("raw"), med.get("procrastinate")
    if lq is None:
        return ""
    if key in ("put", "get_ack", "mp_2", "mp_4", "put_batch", "get_ack_batch"):
        ok = raw is not None and lq >= 0.8 * raw and (pc is None or lq > pc)
        return f"≥80% raw{', > procrastinate' if pc is not None else ''}: {'met' if ok else 'NOT met'}"
    if key == "lat_p50":
        return f"< 2 ms: {'met' if lq < 2 else 'NOT met'}"
    return ""


def combine(runs: list[dict[str, Any]], systems: list[str], args: argparse.Namespace,
            meta: dict[str, Any]) -> dict[str, Any]:
    rows = []
    for row in median_rows(runs, systems, ROWS):
        med, higher = row["median"], row["higher_is_better"]
        lq = med.get("liteq")
        row["liteq_vs_raw"] = speed(lq, med.get("raw"), higher)
        row["liteq_vs_raw_notify"] = speed(lq, med.get("raw_notify"), higher)
        row["liteq_vs_procrastinate"] = speed(lq, med.get("procrastinate"), higher)
        row["target"] = target(row["key"], med)
        rows.append(row)
    mp_rows = {r["key"]: r["median"].get("liteq") for r in rows if r["key"] in ("mp_2", "mp_4")}
    if mp_rows.get("mp_2") and mp_rows.get("mp_4"):
        ok = mp_rows["mp_4"] >= mp_rows["mp_2"]
        for r in rows:
            if r["key"] == "mp_4":
                r["target"] += f"; ≥ 1+2: {'met' if ok else 'NOT met'}"
    checks = combine_checks(runs, systems, ["duplicates", "redelivered", "lost", "errors",
                                             "producer_rate"])
    return {
        "meta": meta,
        "settings": {"sync": args.sync.upper(), "runs": args.runs, "n": args.n,
                     "batch_n": args.batch_n, "batch": BATCH, "latency_samples": args.samples,
                     "idle_s": args.idle, "payload": PAYLOAD},
        "systems": {s: {"version": meta["versions"].get(s, ""),
                        "semantics": SYSTEMS[s].semantics,
                        "default": SYSTEMS[s].default_sync, "how_set": SYSTEMS[s].how_set,
                        "measured": next((r["settings"][s] for r in runs if s in r["settings"]),
                                         None),
                        "codec": SYSTEMS[s].codec} for s in systems},
        "rows": rows, "correctness": checks, "run_log": [r["log"] for r in runs],
    }


def markdown(result: dict[str, Any], systems: list[str]) -> str:
    meta, st = result["meta"], result["settings"]
    out = [f"# liteq on PostgreSQL against raw psycopg and procrastinate — durability "
           f"{st['sync'].lower()}", ""]
    out.append(f"Measured {meta['date']} with `python bench/bench_postgres.py --sync "
               f"{st['sync'].lower()} --n {st['n']} --runs {st['runs']}` "
               f"({meta['wall_s'] / 60:.1f} min); each cell is the median of {st['runs']} "
               f"run(s), every workload on a fresh database.")
    out.append("")
    out.append(f"Machine: {meta['cpu']}, {meta['cores']} cores, Python {meta['python']}. "
               f"Server: {meta['server']}. 1-minute load average before each run: "
               + loads(result) + "; after: " + loads(result, "load_after")
               + " (shared machine; the load counts this benchmark too).")
    out.append("")
    out.append("Versions: " + "; ".join(f"{k} {v}" for k, v in meta["versions"].items()) + ".")
    out.append("")
    out.append(f"Sizes: N = {st['n']:,} per-message and multi-process messages; batch rows "
               f"{st['batch_n']:,} in transactions of {st['batch']}; {st['latency_samples']} "
               f"latency samples; {st['idle_s']:.0f} s idle. Payload `{json.dumps(st['payload'])}`.")
    out.append("")
    out += rows_table(result, systems, [("liteq / raw", ratio("liteq_vs_raw")),
                                        ("liteq / raw_notify", ratio("liteq_vs_raw_notify")),
                                        ("liteq / procrastinate", ratio("liteq_vs_procrastinate")),
                                        ("target", lambda row: row["target"])])
    out.append("Duplicates and losses (multi-process rows, per run):")
    out.append("")
    out.append("| workload | system | duplicates | lost | errors | producer put/s |")
    out.append("|---|---|---|---|---:|---:|")
    for key, per in result["correctness"].items():
        for s, c in per.items():
            out.append(f"| {key.replace('mp_', '1 producer + ')} consumers | {s} | "
                       f"{', '.join(map(str, c['duplicates']))} | "
                       f"{', '.join(map(str, c['lost']))} | {c['errors']} | "
                       f"{fmt(median_of(c['producer_rate']), 'msgs/s')} |")
    out.append("")
    out.append("| system | version | get / ack | synchronous_commit by default | how it is set "
               "| measured (synchronous_commit, fsync) | payload |")
    out.append("|---|---|---|---|---|---|---|")
    for s, info in result["systems"].items():
        m = info["measured"] or {}
        out.append(f"| {s} | {info['version']} | {info['semantics']} | {info['default']} | "
                   f"{info['how_set']} | {m.get('synchronous_commit', '?')}, "
                   f"{m.get('fsync', '?')} | {info['codec']} |")
    out.append("")
    return "\n".join(out)


def print_table(result: dict[str, Any], systems: list[str]) -> None:
    print_rows(result, systems, 15, [("lq/raw", ratio("liteq_vs_raw")),
                                     ("lq/rawN", ratio("liteq_vs_raw_notify")),
                                     ("lq/proc", ratio("liteq_vs_procrastinate"))])
    for key, per in result["correctness"].items():
        for s, c in per.items():
            print(f"{key:<6} {s:<14} duplicates {c['duplicates']} (same id twice "
                  f"{c['redelivered']})  lost {c['lost']}  errors {c['errors']}")


# --- facts about the machine and the server -----------------------------------------------


def machine(server: str, own_cluster: bool) -> dict[str, Any]:
    with psycopg.connect(server, autocommit=True) as conn:
        ver = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
        shown = {k: conn.execute(f"SHOW {k}").fetchone()[0]  # type: ignore[index]
                 for k in ("fsync", "synchronous_commit", "shared_buffers", "wal_level")}
    where = "a throwaway cluster started by this script" if own_cluster else "--url"
    return {
        "cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
        "server": f"PostgreSQL {ver} on 127.0.0.1 ({where}); server defaults "
                  + ", ".join(f"{k}={v}" for k, v in shown.items()),
        "versions": {"liteq": f"{version('liteq-queue')} @ {git_commit()}",
                     "raw": f"psycopg {version('psycopg')}",
                     "raw_notify": f"psycopg {version('psycopg')}",
                     "procrastinate": version("procrastinate"),
                     "psycopg": version("psycopg"), "cbor2": version("cbor2")},
    }


# --- main ---------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a server to use (a role that may CREATE DATABASE); "
                        "default: start a throwaway cluster")
    parser.add_argument("--sync", choices=["normal", "full"], default="normal",
                        help="liteq durability: normal = synchronous_commit off, full = on")
    parser.add_argument("--n", type=int, help="messages per per-message and multi-process "
                        "workload (default 10,000); batch rows use 10N")
    parser.add_argument("--runs", type=int, help="repeat everything; medians (default 3)")
    parser.add_argument("--quick", action="store_true",
                        help="N = 300, 1 run, nothing written unless --out is given")
    parser.add_argument("--systems", default=",".join(SYSTEMS),
                        help="comma-separated subset of " + ", ".join(SYSTEMS))
    parser.add_argument("--workloads", default=",".join(k for k, *_ in ROWS),
                        help="comma-separated subset of row keys")
    parser.add_argument("--samples", type=int, help="latency samples (default 300)")
    parser.add_argument("--out", help="directory for postgres-<sync>.{json,md} "
                        "(default bench/results)")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.runs = args.n or 300, args.runs or 1
        args.samples, args.idle = args.samples or 50, 1.0
    else:
        args.n, args.runs = args.n or 10_000, args.runs or 3
        args.samples, args.idle = args.samples or 300, 5.0
    args.batch_n = 10 * args.n
    args.workloads = set(args.workloads.split(","))
    if not args.quick or args.out:
        args.out = args.out or os.path.join(HERE, "results")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    systems = [s for s in SYSTEMS if s in args.systems.split(",")]
    if PROCRASTINATE_MISSING:
        print(f"procrastinate left out: {PROCRASTINATE_MISSING}", file=sys.stderr)
    cluster = None
    if args.url:
        args.server = args.url
    else:
        bindir = find_bindir()
        if bindir is None:
            raise SystemExit("no PostgreSQL installed (initdb not found): install it, "
                             "or give --url postgresql://USER@HOST/DB")
        cluster = Cluster(bindir, fsync=True).start()
        args.server = cluster.url
    try:
        meta = machine(args.server, cluster is not None)
        meta["date"] = datetime.datetime.now().isoformat(timespec="seconds")
        print(meta["server"], flush=True)
        began = time.monotonic()
        runs = run_all(args, lambda run: one_run(args, run, systems),
                       f"durability {args.sync}", count_other=False)
        meta["wall_s"] = time.monotonic() - began
    finally:
        if cluster is not None:
            cluster.stop()
    result = combine(runs, systems, args, meta)
    result["raw_runs"] = [{k: r[k] for k in ("cells", "checks")} for r in runs]
    print_table(result, systems)
    if args.out:
        base = os.path.join(args.out, f"postgres-{args.sync}")
        write(result, base, markdown(result, systems))
        print(f"wrote {base}.json, {base}.md")


if __name__ == "__main__":
    main()
