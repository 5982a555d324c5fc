"""The harness ``compare.py`` (SQLite) and ``bench_postgres.py`` (PostgreSQL) share.

Both run the same workloads on every system of a benchmark, each workload on a fresh
place of its own, and combine ``--runs`` runs into medians and ratios. What differs
between the two is a :class:`Target`: where a fresh place comes from (a temporary
directory, a new database), how a system is opened there, and what an engine adds (the
``-wal`` file's size on SQLite; LISTEN before the latency consumer says it is ready,
and a peer that only consumes through its own worker, on PostgreSQL).

Children are spawned, never forked: no connection or session crosses a fork. They get
the target's *opener*, a module-level function, so that they can open the system again.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import functools
import multiprocessing as mp
import os
import random
import statistics
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

BATCH = 100
MP_TIMEOUT = 600.0

PAYLOAD = {"to": "someone@example.com", "subject": "hello", "n": 0}


def payload(n: int) -> dict[str, Any]:
    return {**PAYLOAD, "n": n}


class NotApplicable(Exception):
    """The system's API cannot do this workload."""


class Target:
    """Where one benchmark runs its systems (under *root*: a temporary directory, a
    server's URL): what differs between the two engines."""

    #: name -> adapter class, in table order
    systems: dict[str, type[Any]] = {}
    #: (name, where, sync, **options) -> an open system; a module-level function, so
    #: that spawned children can unpickle it and open the system again
    opener: Callable[..., Any]
    #: the keys of a multi-process row's correctness check, in the JSON's order
    check_keys: tuple[str, ...] = ()
    #: reason for n/a on batch get+ack when a system can batch put but not batch claim
    no_batch_claim = "no batch claim"
    #: record the largest ``-wal`` file while the multi-process rows run (SQLite)
    sample_wal = False
    #: the latency consumer waits once before "ready", so that LISTEN is in place
    listen_first = False

    def __init__(self, root: str) -> None:
        self.root = root

    def fresh(self, name: str) -> contextlib.AbstractContextManager[str]:
        """A fresh, empty place for one workload of system *name*; removed after."""
        raise NotImplementedError

    def latency_options(self, name: str) -> dict[str, Any]:
        """Options for opening *name* in the latency row (both sides)."""
        return {}

    def worker(self, name: str) -> Any:
        """A module with ``consumer`` and ``latency_consumer`` for a system that only
        consumes through its own worker (None: the harness's own consumers)."""
        return None


# --- in-process workloads ------------------------------------------------------------


def warm(peer: Any) -> None:
    """A few operations first: connection, statement cache and schema are warm."""
    for i in range(50):
        peer.put(payload(-1 - i))
    if getattr(peer, "worker_only", False):
        peer.drain()
        return
    for _ in range(50):
        h = peer.get()
        peer.payload(h)
        peer.ack(h)


def per_message(target: Target, name: str, sync: str, n: int) -> dict[str, Any]:
    """put N (one per transaction), then get+ack those N (one transaction each)."""
    with target.fresh(name) as where:
        peer = target.opener(name, where, sync)
        try:
            warm(peer)
            t = time.perf_counter()
            for i in range(n):
                peer.put(payload(i))
            put_s = time.perf_counter() - t
            t = time.perf_counter()
            if getattr(peer, "worker_only", False):
                seen = peer.drain()
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


def batched(target: Target, name: str, sync: str, n: int) -> dict[str, Any]:
    """put_many 100 at a time (n messages), then get_many(100) + ack_many."""
    cls = target.systems[name]
    if not cls.batch_put:
        raise NotApplicable("no batch put")
    out: dict[str, Any] = {}
    with target.fresh(name) as where:
        peer = target.opener(name, where, sync)
        try:
            warm(peer)
            items = [payload(i) for i in range(n)]
            t = time.perf_counter()
            for i in range(0, n, BATCH):
                peer.put_many(items[i:i + BATCH])
            out["put_batch"] = n / (time.perf_counter() - t)
            if cls.batch_get:
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


# --- multi-process workloads -------------------------------------------------------------


def child(opener: Callable[..., Any], role: str, name: str, where: str, sync: str, n: int,
          start: Any, producer_done: Any, results: Any, index: int) -> None:
    """A producer or consumer process of the multi-process rows."""
    profile_dir = os.environ.get("COMPARE_PROFILE_DIR")
    profiler = cProfile.Profile() if profile_dir else None
    try:
        peer = opener(name, where, sync)
        ident = getattr(peer, "ident", None)  # tells a redelivery from a double put
        start.wait()
        if profiler:
            profiler.enable()
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
                done = producer_done.is_set()  # read before the get: see below
                h = peer.wait_get(0.05)
                if h is None:
                    # Nothing was claimable after the producer finished: every
                    # message has been claimed by someone.
                    if done:
                        break
                    continue
                got.append(peer.payload(h)["n"])
                if ident is not None:
                    ids.append(ident(h))
                peer.ack(h)
                last = time.time()
            results.put((role, index, {"start": t0, "end": last, "got": got, "ids": ids}))
        if profiler and profile_dir:
            profiler.disable()
            profiler.dump_stats(os.path.join(profile_dir, f"{role}-{index}.prof"))
        peer.close()
    except BaseException:
        results.put((role, index, {"error": traceback.format_exc()}))


def drain(peer: Any, producer_done: Any, each: Callable[[Any], None] | None = None) -> int:
    """A consumer of the multi-process rows: claim (``wait_get(0.05)``) and ack until the
    producer is done and nothing is claimable; *each(handle)* before every ack. Returns
    how many it acked."""
    got = 0
    while True:
        done = producer_done.is_set()  # read before the get: see child()
        h = peer.wait_get(0.05)
        if h is None:
            if done:
                return got
            continue
        got += 1
        if each is not None:
            each(h)
        peer.ack(h)


def alternated(names: Sequence[str], rounds: int, one: Callable[[str], dict[str, float]],
               ) -> dict[str, dict[str, float]]:
    """``one(name)`` for every name, the names alternated, *rounds* times; per name, the
    median of each figure it returned."""
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names:
            runs[name].append(one(name))
        print(f"round {r + 1}/{rounds} done", file=sys.stderr)
    return {name: {k: statistics.median(x[k] for x in got) for k in got[0]}
            for name, got in runs.items()}


def _sample_wal(directory: str, peak: list[int], stop: threading.Event) -> None:
    """Largest ``-wal`` file seen: a WAL that is never reset grows without bound and
    makes every commit run a checkpoint (the last close deletes it, so sample)."""
    while not stop.wait(0.02):
        for base, _, files in os.walk(directory):
            for f in files:
                if f.endswith("-wal"):
                    with contextlib.suppress(OSError):
                        peak[0] = max(peak[0], os.path.getsize(os.path.join(base, f)))


def _collect(results: Any, expected: int) -> tuple[list[tuple[str, Any]], list[str]]:
    """The children's reports and errors (a hung child is an error after MP_TIMEOUT)."""
    reports: list[tuple[str, Any]] = []
    errors: list[str] = []
    deadline = time.monotonic() + MP_TIMEOUT
    try:
        while len(reports) + len(errors) < expected:
            role, index, data = results.get(timeout=max(1.0, deadline - time.monotonic()))
            if "error" in data:
                errors.append(f"{role} {index}: {data['error']}")
            else:
                reports.append((role, data))
    except Exception as exc:  # queue.Empty: a child hung
        errors.append(f"timed out after {MP_TIMEOUT:.0f} s: {exc!r}")
    return reports, errors


def multi_process(target: Target, name: str, sync: str, n: int, consumers: int) -> dict[str, Any]:
    """1 producer and *consumers* consumer processes; messages/s from the start until
    the last ack; duplicates and losses from the consumers' receipts."""
    ctx = mp.get_context("spawn")
    with target.fresh(name) as where:
        target.opener(name, where, sync).close()  # create the file or schema first
        start = ctx.Barrier(consumers + 1)
        producer_done = ctx.Event()
        results = ctx.Queue()
        procs = [ctx.Process(target=child, args=(target.opener, "producer", name, where, sync,
                                                 n, start, producer_done, results, 0))]
        own = target.worker(name)
        for i in range(consumers):
            if own is not None:
                procs.append(ctx.Process(target=own.consumer, args=(
                    where, sync, start, producer_done, results, i)))
            else:
                procs.append(ctx.Process(target=child, args=(
                    target.opener, "consumer", name, where, sync, n, start, producer_done,
                    results, i)))
        for p in procs:
            p.start()
        wal_max = [0]
        sampling = threading.Event()
        sampler = threading.Thread(target=_sample_wal, args=(where, wal_max, sampling),
                                   daemon=True)
        if target.sample_wal:
            sampler.start()
        reports, errors = _collect(results, len(procs))
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join()
        sampling.set()
        if target.sample_wal:
            sampler.join()
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
        "wal_mb": wal_max[0] / 1e6,
    }
    starts = [data["start"] for _, data in reports]
    ends = [data["end"] for role, data in reports if role == "consumer"]
    produced = [data for role, data in reports if role == "producer"]
    if starts and ends and produced and not errors:
        out["value"] = n / (max(ends) - min(starts))
        out["producer_rate"] = n / (produced[0]["end"] - produced[0]["start"])
    return out


def latency_child(opener: Callable[..., Any], name: str, where: str, sync: str,
                  options: dict[str, Any], listen_first: bool, samples: int, idle: float,
                  conn: Any) -> None:
    """The idle consumer of the latency row: claims each message as it comes, then idles."""
    try:
        peer = opener(name, where, sync, **options)
        if listen_first:
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


def latency(target: Target, name: str, sync: str, samples: int, idle: float) -> dict[str, Any]:
    """Enqueue-to-claim latency with the consumer idle in another process (the stamp is
    taken before put, so both commits are inside it), then its CPU while it waits on an
    empty queue for *idle* seconds."""
    ctx = mp.get_context("spawn")
    options = target.latency_options(name)
    with target.fresh(name) as where:
        producer = target.opener(name, where, sync, **options)
        parent, conn = ctx.Pipe()
        own = target.worker(name)
        if own is not None:
            proc = ctx.Process(target=own.latency_consumer,
                               args=(where, sync, samples, idle, conn))
        else:
            proc = ctx.Process(target=latency_child, args=(
                target.opener, name, where, sync, options, target.listen_first, samples,
                idle, conn))
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


# --- one run of everything ------------------------------------------------------------------


class Run:
    """One run of every workload over *systems* (their order rotated by run number):
    the cells, the n/a reasons, the correctness checks and the settings read back."""

    def __init__(self, args: argparse.Namespace, run: int, systems: list[str],
                 target: Target) -> None:
        self.args, self.systems, self.target = args, systems, target
        self.sync = args.sync.upper()
        self.order = systems[run % len(systems):] + systems[:run % len(systems)]
        self.cells: dict[str, dict[str, Any]] = {s: {} for s in systems}
        self.na: dict[str, dict[str, str]] = {s: {} for s in systems}
        self.checks: dict[str, dict[str, Any]] = {s: {} for s in systems}
        self.settings: dict[str, Any] = {}

    def step(self, label: str, keys: list[str], fn: Callable[[str], dict[str, Any]]) -> None:
        """Run *fn* for every system when any of the row *keys* was asked for."""
        if not any(k in self.args.workloads for k in keys):
            return
        for name in self.order:
            t = time.perf_counter()
            try:
                res = fn(name)
            except NotApplicable as exc:
                for k in keys:
                    self.na[name][k] = str(exc)
                continue
            except Exception:
                print(f"  {label} {name}: ERROR\n{traceback.format_exc()}", file=sys.stderr)
                for k in keys:
                    self.na[name][k] = "error (see JSON)"
                self.checks[name].setdefault("errors", []).append(traceback.format_exc())
                continue
            if "settings" in res:
                self.settings[name] = res.pop("settings")
            self.cells[name].update(res)
            shown = ", ".join(f"{k} {v:,.1f}" for k, v in res.items()
                              if isinstance(v, float) and k in keys)
            print(f"  {label:<10} {name:<14} {shown}  ({time.perf_counter() - t:.1f} s)",
                  flush=True)

    def mp_step(self, name: str, consumers: int) -> dict[str, Any]:
        res = multi_process(self.target, name, self.sync, self.args.n, consumers)
        key = f"mp_{consumers}"
        self.checks[name][key] = {k: res.get(k) for k in self.target.check_keys}
        if res["errors"]:
            print(f"  {key} {name}: " + "\n".join(res["errors"]), file=sys.stderr)
        return {key: res["value"]} if "value" in res else {}

    def throughput_steps(self) -> None:
        """The per-message, batched and multi-process rows."""
        args, target, sync = self.args, self.target, self.sync
        self.step("single", ["put", "get_ack"], lambda s: per_message(target, s, sync, args.n))
        self.step("batch", ["put_batch", "get_ack_batch"],
                  lambda s: batched(target, s, sync, args.batch_n))
        for c in (2, 4):
            self.step(f"mp 1+{c}", [f"mp_{c}"], functools.partial(self.mp_step, consumers=c))

    def latency_step(self) -> None:
        args = self.args
        self.step("latency", ["lat_p50", "lat_p99", "idle_cpu"],
                  lambda s: latency(self.target, s, self.sync, args.samples, args.idle))

    def result(self) -> dict[str, Any]:
        # Cells a system could not do at all are n/a (batch get for litequeue, etc.).
        for name in self.systems:
            cls = self.target.systems[name]
            if cls.batch_put and not cls.batch_get and "put_batch" in self.cells[name]:
                self.na[name]["get_ack_batch"] = self.target.no_batch_claim
        return {"cells": self.cells, "na": self.na, "checks": self.checks,
                "settings": self.settings}


def busy_cpu() -> tuple[float, float]:
    """(CPU seconds used by the whole machine, by this process and its reaped children)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        machine = (sum(fields[:3]) + sum(fields[5:8])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        machine = float("nan")
    t = os.times()
    return machine, t.user + t.system + t.children_user + t.children_system


def run_all(args: argparse.Namespace, one_run: Callable[[int], dict[str, Any]], heading: str,
            count_other: bool) -> list[dict[str, Any]]:
    """``--runs`` runs of *one_run*, each with its load log; with *count_other*, also the
    CPU the rest of the machine used meanwhile."""
    runs = []
    for run in range(args.runs):
        load = os.getloadavg()
        print(f"run {run + 1}/{args.runs} ({heading}, load {load[0]:.2f})", flush=True)
        t = time.monotonic()
        cpu0 = busy_cpu()
        res = one_run(run)
        cpu1 = busy_cpu()
        wall = time.monotonic() - t
        res["log"] = {"run": run + 1, "load_before": load, "load_after": os.getloadavg(),
                      "seconds": wall}
        if count_other:
            # The load average counts this benchmark's own processes; the CPU the rest
            # of the machine used meanwhile is the noise (in cores, of os.cpu_count()).
            other = ((cpu1[0] - cpu0[0]) - (cpu1[1] - cpu0[1])) / wall
            res["log"]["other_cpu_cores"] = other
            print(f"  run {run + 1}: {wall:.0f} s; other processes used {other:.2f} cores on "
                  f"average meanwhile", flush=True)
        runs.append(res)
    return runs
