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
token-guarded ``DELETE``, prepared statements, autocommit); ``procrastinate``
(``procrastinate_peer.py``, in its own terms: defer, and its worker), when installed.

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
import importlib.metadata
import itertools
import json
import multiprocessing as mp
import os
import platform
import random
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
from peers.liteq_pg import LiteqPg
from peers.pg_base import PgPeer
from peers.raw_psycopg import RawPsycopg
from peers.report import fmt, median_of, pct

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

SYSTEMS: dict[str, type[PgPeer]] = {"liteq": LiteqPg, "raw": RawPsycopg}
if procrastinate_peer is not None:
    SYSTEMS["procrastinate"] = procrastinate_peer.ProcrastinatePeer

BATCH = 100
MP_TIMEOUT = 600.0
PAYLOAD = {"to": "someone@example.com", "subject": "hello", "n": 0}

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


def payload(n: int) -> dict[str, Any]:
    return {**PAYLOAD, "n": n}


class NotApplicable(Exception):
    """The system's API cannot do this workload."""


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


def warm(peer: PgPeer) -> None:
    """A few operations first: sessions, prepared statements and schema are warm."""
    for i in range(50):
        peer.put(payload(-1 - i))
    if peer.worker_only:
        peer.drain()  # type: ignore[attr-defined]
        return
    for _ in range(50):
        h = peer.get()
        peer.payload(h)
        peer.ack(h)


# --- in-process workloads ---------------------------------------------------------


def per_message(server: str, name: str, sync: str, n: int) -> dict[str, Any]:
    """put N (one per transaction), then get+ack those N (one transaction each)."""
    with fresh_db(server, name) as url:
        peer = open_system(name, url, sync)
        try:
            warm(peer)
            t = time.perf_counter()
            for i in range(n):
                peer.put(payload(i))
            put_s = time.perf_counter() - t
            t = time.perf_counter()
            if peer.worker_only:
                seen = peer.drain()  # type: ignore[attr-defined]
            else:
                seen = 0
                for _ in range(n):
                    h = peer.get()
                    peer.payload(h)
                    peer.ack(h)
                    seen += 1
            get_s = time.perf_counter() - t
            settings = peer.settings()
        finally:
            peer.close()
    if seen != n:
        raise RuntimeError(f"{name}: got {seen} of {n} messages back")
    return {"put": n / put_s, "get_ack": seen / get_s, "settings": settings}


def batched(server: str, name: str, sync: str, n: int) -> dict[str, Any]:
    """put_many 100 at a time (n messages), then get_many(100) + ack_many."""
    out: dict[str, Any] = {}
    with fresh_db(server, name) as url:
        peer = open_system(name, url, sync)
        try:
            warm(peer)
            items = [payload(i) for i in range(n)]
            t = time.perf_counter()
            for i in range(0, n, BATCH):
                peer.put_many(items[i:i + BATCH])
            out["put_batch"] = n / (time.perf_counter() - t)
            if peer.batch_get:
                got = 0
                t = time.perf_counter()
                while got < n:
                    hs = peer.get_many(BATCH)
                    for h in hs:
                        peer.payload(h)
                    peer.ack_many(hs)
                    got += len(hs)
                out["get_ack_batch"] = got / (time.perf_counter() - t)
        finally:
            peer.close()
    return out


# --- multi-process workloads (children are spawned: no session crosses a fork) --------


def _child(role: str, name: str, url: str, sync: str, n: int, start: Any,
           producer_done: Any, results: Any, index: int) -> None:
    try:
        peer = open_system(name, url, sync)
        start.wait()
        t0 = time.time()
        if role == "producer":
            for i in range(n):
                peer.put(payload(i))
            producer_done.set()
            results.put((role, index, {"start": t0, "end": time.time()}))
        else:
            got: list[int] = []
            ids: list[Any] = []
            last = t0
            while True:
                done = producer_done.is_set()  # read before the get
                h = peer.wait_get(0.05)
                if h is None:
                    if done:  # nothing claimable after the producer finished
                        break
                    continue
                got.append(peer.payload(h)["n"])
                ids.append(peer.ident(h))
                peer.ack(h)
                last = time.time()
            results.put((role, index, {"start": t0, "end": last, "got": got, "ids": ids}))
        peer.close()
    except BaseException:
        results.put((role, index, {"error": traceback.format_exc()}))


def multi_process(server: str, name: str, sync: str, n: int, consumers: int) -> dict[str, Any]:
    """1 producer and *consumers* consumer processes; messages/s from the start until
    the last ack; duplicates and losses from the consumers' receipts."""
    ctx = mp.get_context("spawn")
    with fresh_db(server, name) as url:
        open_system(name, url, sync).close()  # the schema first
        start = ctx.Barrier(consumers + 1)
        producer_done = ctx.Event()
        results = ctx.Queue()
        consume: Callable[..., None] = _child
        procs = [ctx.Process(target=_child, args=("producer", name, url, sync, n, start,
                                                  producer_done, results, 0))]
        if SYSTEMS[name].worker_only:
            procs += [ctx.Process(target=procrastinate_peer.consumer,
                                  args=(url, sync, start, producer_done, results, i))
                      for i in range(consumers)]
        else:
            procs += [ctx.Process(target=consume, args=("consumer", name, url, sync, n, start,
                                                        producer_done, results, i))
                      for i in range(consumers)]
        for p in procs:
            p.start()
        reports, errors = [], []
        deadline = time.monotonic() + MP_TIMEOUT
        try:
            while len(reports) + len(errors) < len(procs):
                role, index, data = results.get(timeout=max(1.0, deadline - time.monotonic()))
                if "error" in data:
                    errors.append(f"{role} {index}: {data['error']}")
                else:
                    reports.append((role, data))
        except Exception as exc:  # queue.Empty: a child hung
            errors.append(f"timed out after {MP_TIMEOUT:.0f} s: {exc!r}")
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join()
    got = [s for role, data in reports if role == "consumer" for s in data["got"]]
    unique = set(got)
    ids = [i for role, data in reports if role == "consumer" for i in data.get("ids", [])
           if i is not None]
    out: dict[str, Any] = {
        "received": len(got),
        "duplicates": len(got) - len(unique),
        # Of those, one message (the same id) delivered twice; the rest are two messages
        # with one sequence number (put twice).
        "redelivered": len(ids) - len(set(ids)),
        "lost": n - len(unique & set(range(n))),
        "errors": errors,
    }
    starts = [data["start"] for _, data in reports]
    ends = [data["end"] for role, data in reports if role == "consumer"]
    produced = [data for role, data in reports if role == "producer"]
    if starts and ends and produced and not errors:
        out["value"] = n / (max(ends) - min(starts))
        out["producer_rate"] = n / (produced[0]["end"] - produced[0]["start"])
    return out


def _latency_child(name: str, url: str, sync: str, samples: int, idle: float,
                   conn: Any) -> None:
    try:
        peer = open_system(name, url, sync, **({"wake": True} if name == "raw" else {}))
        peer.wait_get(0.01)  # LISTEN is in place before "ready"
        conn.send("ready")
        lat = []
        for _ in range(samples):
            h = peer.wait_get(30)
            now = time.time()
            if h is None:
                raise RuntimeError("no message within 30 s")
            lat.append(now - peer.payload(h)["t"])
            peer.ack(h)
            conn.send("got")
        cpu = time.process_time()
        begin = time.monotonic()
        while (left := idle - (time.monotonic() - begin)) > 0:
            peer.wait_get(left)
        conn.send({"lat": lat, "cpu": time.process_time() - cpu,
                   "wall": time.monotonic() - begin})
        peer.close()
    except BaseException:
        conn.send({"error": traceback.format_exc()})


def latency(server: str, name: str, sync: str, samples: int, idle: float) -> dict[str, Any]:
    """Enqueue-to-claim latency with the consumer idle in another process (the stamp is
    taken before put, so both commits are inside it), then its CPU while it idles."""
    ctx = mp.get_context("spawn")
    with fresh_db(server, name) as url:
        producer = open_system(name, url, sync, **({"wake": True} if name == "raw" else {}))
        parent, child = ctx.Pipe()
        if SYSTEMS[name].worker_only:
            proc = ctx.Process(target=procrastinate_peer.latency_consumer,
                               args=(url, sync, samples, idle, child))
        else:
            proc = ctx.Process(target=_latency_child, args=(name, url, sync, samples, idle, child))
        proc.start()
        try:
            first = parent.recv()
            if first != "ready":
                raise RuntimeError(f"consumer failed to start: {first}")
            time.sleep(0.3)
            for i in range(samples):
                producer.put({**PAYLOAD, "n": i, "t": time.time()})
                reply = parent.recv()
                if reply != "got":
                    raise RuntimeError(reply["error"])
                time.sleep(random.uniform(0.003, 0.008))  # the consumer is idle again
            data = parent.recv()
            if "error" in data:
                raise RuntimeError(data["error"])
        finally:
            proc.join(idle + 30)
            if proc.is_alive():
                proc.kill()
            producer.close()
    lat = sorted(x * 1000 for x in data["lat"])
    return {
        "lat_p50": statistics.median(lat),
        "lat_p99": lat[min(len(lat) - 1, int(len(lat) * 0.99))],
        "lat_max": lat[-1],
        "idle_cpu": 100 * data["cpu"] / data["wall"],
    }


# --- one run of everything -----------------------------------------------------------


def one_run(args: argparse.Namespace, run: int, systems: list[str]) -> dict[str, Any]:
    order = systems[run % len(systems):] + systems[:run % len(systems)]
    cells: dict[str, dict[str, Any]] = {s: {} for s in systems}
    na: dict[str, dict[str, str]] = {s: {} for s in systems}
    checks: dict[str, dict[str, Any]] = {s: {} for s in systems}
    settings: dict[str, Any] = {}
    sync, server = args.sync.upper(), args.server

    def step(label: str, keys: list[str], fn: Callable[[str], dict[str, Any]]) -> None:
        if not any(k in args.workloads for k in keys):
            return
        for name in order:
            t = time.perf_counter()
            try:
                res = fn(name)
            except NotApplicable as exc:
                for k in keys:
                    na[name][k] = str(exc)
                continue
            except Exception:
                print(f"  {label} {name}: ERROR\n{traceback.format_exc()}", file=sys.stderr)
                for k in keys:
                    na[name][k] = "error (see JSON)"
                checks[name].setdefault("errors", []).append(traceback.format_exc())
                continue
            if "settings" in res:
                settings[name] = res.pop("settings")
            cells[name].update(res)
            shown = ", ".join(f"{k} {v:,.1f}" for k, v in res.items()
                              if isinstance(v, float) and k in keys)
            print(f"  {label:<10} {name:<14} {shown}  ({time.perf_counter() - t:.1f} s)",
                  flush=True)

    def mp_step(name: str, consumers: int) -> dict[str, Any]:
        res = multi_process(server, name, sync, args.n, consumers)
        key = f"mp_{consumers}"
        checks[name][key] = {k: res.get(k) for k in ("received", "duplicates", "redelivered",
                                                     "lost", "errors", "producer_rate")}
        if res["errors"]:
            print(f"  {key} {name}: " + "\n".join(res["errors"]), file=sys.stderr)
        return {key: res["value"]} if "value" in res else {}

    step("single", ["put", "get_ack"], lambda s: per_message(server, s, sync, args.n))
    step("batch", ["put_batch", "get_ack_batch"],
         lambda s: batched(server, s, sync, args.batch_n))
    for c in (2, 4):
        step(f"mp 1+{c}", [f"mp_{c}"], lambda s, c=c: mp_step(s, c))
    step("latency", ["lat_p50", "lat_p99", "idle_cpu"],
         lambda s: latency(server, s, sync, args.samples, args.idle))
    for name in systems:
        if not SYSTEMS[name].batch_get and "put_batch" in cells[name]:
            na[name]["get_ack_batch"] = "no batch claim (its worker fetches one job per query)"
    return {"cells": cells, "na": na, "checks": checks, "settings": settings}


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


def speed(lq: float | None, other: float | None, higher: bool) -> float | None:
    """liteq's speed relative to *other* (above 1: liteq is better)."""
    if not lq or not other:
        return None
    return lq / other if higher else other / lq


def combine(runs: list[dict[str, Any]], systems: list[str], args: argparse.Namespace,
            meta: dict[str, Any]) -> dict[str, Any]:
    rows = []
    for key, label, unit, higher in ROWS:
        values = {s: [r["cells"][s].get(key) for r in runs] for s in systems}
        med = {s: median_of(v) for s, v in values.items()}
        na = {s: next((r["na"][s][key] for r in runs if key in r["na"][s]), None)
              for s in systems}
        if all(v is None for v in med.values()):
            continue
        lq = med.get("liteq")
        rows.append({"key": key, "label": label, "unit": unit, "higher_is_better": higher,
                     "runs": values, "median": med, "na": na,
                     "liteq_vs_raw": speed(lq, med.get("raw"), higher),
                     "liteq_vs_procrastinate": speed(lq, med.get("procrastinate"), higher),
                     "target": target(key, med)})
    mp_rows = {r["key"]: r["median"].get("liteq") for r in rows if r["key"] in ("mp_2", "mp_4")}
    if mp_rows.get("mp_2") and mp_rows.get("mp_4"):
        ok = mp_rows["mp_4"] >= mp_rows["mp_2"]
        for r in rows:
            if r["key"] == "mp_4":
                r["target"] += f"; ≥ 1+2: {'met' if ok else 'NOT met'}"
    checks: dict[str, Any] = {}
    for key in ("mp_2", "mp_4"):
        per = {}
        for s in systems:
            items = [r["checks"][s].get(key) for r in runs if r["checks"][s].get(key)]
            if items:
                per[s] = {"duplicates": [i["duplicates"] for i in items],
                          "redelivered": [i.get("redelivered") for i in items],
                          "lost": [i["lost"] for i in items],
                          "errors": sum(len(i["errors"]) for i in items),
                          "producer_rate": [i["producer_rate"] for i in items]}
        if per:
            checks[key] = per
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
               + ", ".join(f"{r['load_before'][0]:.2f}" for r in result["run_log"])
               + "; after: " + ", ".join(f"{r['load_after'][0]:.2f}" for r in result["run_log"])
               + " (shared machine; the load counts this benchmark too).")
    out.append("")
    out.append("Versions: " + "; ".join(f"{k} {v}" for k, v in meta["versions"].items()) + ".")
    out.append("")
    out.append(f"Sizes: N = {st['n']:,} per-message and multi-process messages; batch rows "
               f"{st['batch_n']:,} in transactions of {st['batch']}; {st['latency_samples']} "
               f"latency samples; {st['idle_s']:.0f} s idle. Payload `{json.dumps(st['payload'])}`.")
    out.append("")
    head = ["workload", "unit"] + systems + ["liteq / raw", "liteq / procrastinate", "target"]
    out.append("| " + " | ".join(head) + " |")
    out.append("|" + "|".join(["---", "---"] + ["---:"] * (len(systems) + 2) + ["---"]) + "|")
    notes: dict[str, str] = {}
    for row in result["rows"]:
        cells = []
        for s in systems:
            v = row["median"][s]
            if v is None and row["na"].get(s):
                mark = notes.setdefault(row["na"][s], f"[{len(notes) + 1}]")
                cells.append(f"n/a{mark}")
            else:
                cells.append(fmt(v, row["unit"]))
        out.append("| " + " | ".join([row["label"], row["unit"]] + cells + [
            pct(row["liteq_vs_raw"]), pct(row["liteq_vs_procrastinate"]), row["target"]]) + " |")
    out.append("")
    if notes:
        out.append("n/a: " + "; ".join(f"{m} {reason}" for reason, m in notes.items()) + ".")
        out.append("")
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
    width = 36
    print()
    print(f"{'workload':<{width}}" + "".join(f"{s:>15}" for s in systems)
          + f"{'lq/raw':>9}{'lq/proc':>9}")
    for row in result["rows"]:
        cells = "".join(f"{fmt(row['median'][s], row['unit']):>15}" for s in systems)
        print(f"{row['label'] + ' (' + row['unit'] + ')':<{width}.{width}}{cells}"
              f"{pct(row['liteq_vs_raw']):>9}{pct(row['liteq_vs_procrastinate']):>9}"
              f"  {row['target']}")
    print()
    for key, per in result["correctness"].items():
        for s, c in per.items():
            print(f"{key:<6} {s:<14} duplicates {c['duplicates']} (same id twice "
                  f"{c['redelivered']})  lost {c['lost']}  errors {c['errors']}")


# --- facts about the machine and the server -----------------------------------------------


def version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE,
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine(server: str, own_cluster: bool) -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        cpu = next((line.split(":", 1)[1].strip() for line in f
                    if line.startswith("model name")), cpu)
    with psycopg.connect(server, autocommit=True) as conn:
        ver = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
        shown = {k: conn.execute(f"SHOW {k}").fetchone()[0]  # type: ignore[index]
                 for k in ("fsync", "synchronous_commit", "shared_buffers", "wal_level")}
    where = "a throwaway cluster started by this script" if own_cluster else "--url"
    return {
        "cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
        "server": f"PostgreSQL {ver} on 127.0.0.1 ({where}); server defaults "
                  + ", ".join(f"{k}={v}" for k, v in shown.items()),
        "versions": {"liteq": f"{version('liteq-queue')} @ {git_commit()}",
                     "raw": f"psycopg {version('psycopg')}",
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
        runs = []
        for run in range(args.runs):
            load = os.getloadavg()
            print(f"run {run + 1}/{args.runs} (durability {args.sync}, load {load[0]:.2f})",
                  flush=True)
            t = time.monotonic()
            res = one_run(args, run, systems)
            res["log"] = {"run": run + 1, "load_before": load, "load_after": os.getloadavg(),
                          "seconds": time.monotonic() - t}
            runs.append(res)
        meta["wall_s"] = time.monotonic() - began
    finally:
        if cluster is not None:
            cluster.stop()
    result = combine(runs, systems, args, meta)
    result["raw_runs"] = [{k: r[k] for k in ("cells", "checks")} for r in runs]
    print_table(result, systems)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        base = os.path.join(args.out, f"postgres-{args.sync}")
        with open(base + ".json", "w") as f:
            json.dump(result, f, indent=1, default=str)
        with open(base + ".md", "w") as f:
            f.write(markdown(result, systems))
        print(f"wrote {base}.json, {base}.md")


if __name__ == "__main__":
    main()
