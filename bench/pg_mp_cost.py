"""Where a message's time goes in PostgreSQL's multi-process rows (issue 17, session 11).

    .venv/bin/python bench/pg_mp_cost.py --url postgresql://postgres@127.0.0.1:55442/postgres \\
        [--n 3000] [--consumers 2] [--systems liteq,raw] [--rounds 2]

1 producer and *consumers* consumer processes (the loops of ``harness.child``: ``put``
N times; ``wait_get(0.05)`` + ack until the producer is done and nothing is left), on a
fresh database of a server that loads ``pg_stat_statements`` (``shared_preload_libraries``;
the extension is created in each fresh database). Per message it reports:

- the CPU of each client process (``getrusage``), and of its threads (``/proc/self/task``:
  the main thread apart from the others, liteq's listening thread), from the start
  barrier on (until session 15 the imports and connecting were counted too: ~0.1 s more
  a process for liteq than for raw, 20-90 us a message at 5,000);
- the CPU of the whole server (the postmaster's own and reaped children's time plus
  every live child's, before and after: backends, walwriter, autovacuum), so the server
  must run on this host and serve nothing else meanwhile;
- the enqueue-to-claim time of each message (p50, p99: the producer stamps the payload;
  ``--pace RATE`` paces the producer, for the latency of a steady stream);
- the statements each run sent, per message, from ``pg_stat_statements`` (calls and mean
  execution time), for this database only.

``--rounds`` alternates the systems (A B A B). ``PYTHONPATH=CHECKOUT`` measures another
checkout's liteq. Never part of the test run.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import multiprocessing as mp
import os
import resource
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
from harness import drain, payload  # noqa: E402
from peers.liteq_pg import LiteqPg  # noqa: E402
from peers.raw_psycopg import RawPsycopg, RawPsycopgNotify  # noqa: E402
from pgcluster import with_dbname  # noqa: E402

SYSTEMS: dict[str, Any] = {"liteq": LiteqPg, "raw": RawPsycopg, "raw_notify": RawPsycopgNotify}
TICK = os.sysconf("SC_CLK_TCK")
_names = itertools.count()


def _stat_times(path: str) -> tuple[str, list[int]]:
    """(comm, fields after comm) of a /proc stat file."""
    with open(path) as f:
        text = f.read()
    comm = text[text.index("(") + 1:text.rindex(")")]
    return comm, [int(x) if x.lstrip("-").isdigit() else 0 for x in text[text.rindex(")") + 2:].split()]


def backend_cpu(postmaster: int) -> dict[int, float]:
    """CPU seconds of each live child of the postmaster, by pid."""
    out: dict[int, float] = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            _, g = _stat_times(f"/proc/{pid}/stat")
        except OSError:
            continue
        if g[1] == postmaster:  # ppid
            out[int(pid)] = (g[11] + g[12]) / TICK  # utime stime
    return out


def server_cpu(postmaster: int) -> float:
    """Seconds of CPU of the postmaster, its reaped children and its live children."""
    _, f = _stat_times(f"/proc/{postmaster}/stat")
    return sum(f[11:15]) / TICK + sum(backend_cpu(postmaster).values())  # + cutime cstime


class BackendSampler:
    """Which server processes the server's CPU went to: samples every live child's CPU
    every 20 ms (a backend's last sample before it exits is what it used, to ~20 ms) and
    sorts them by what they did, from ``pg_stat_activity`` (the kind of process; for a
    client backend, whether it ever ran LISTEN or put (the producer's))."""

    def __init__(self, postmaster: int, url: str) -> None:
        self.postmaster, self.url = postmaster, url
        self.first = backend_cpu(postmaster)
        self.last = dict(self.first)
        self.kinds: dict[int, str] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _classify(self, conn: Any) -> None:
        for pid, btype, query in conn.execute(
                "SELECT pid, backend_type, coalesce(query, '') FROM pg_stat_activity"
                " WHERE pid <> pg_backend_pid()").fetchall():
            q = query.strip().upper()
            if btype != "client backend":
                kind = btype
            elif q.startswith("LISTEN") or self.kinds.get(pid) == "listening session":
                kind = "listening session"
            elif "PG_NOTIFY" in q and q.startswith("SELECT PG_NOTIFY"):
                kind = self.kinds.get(pid, "notifying session")
            elif q.startswith("INSERT") or q.startswith("WITH I AS"):
                kind = "producer's session"
            else:
                kind = self.kinds.get(pid) or "consumer's session"
            self.kinds[pid] = kind

    def _run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self.stop.is_set():
                self.last.update(backend_cpu(self.postmaster))
                self._classify(conn)
                self.stop.wait(0.02)

    def result(self, n: int) -> dict[str, float]:
        """us of CPU a message, per kind of server process."""
        self.stop.set()
        self.thread.join()
        out: dict[str, float] = {}
        for pid, cpu in self.last.items():
            kind = self.kinds.get(pid, "exited unseen")
            out[kind] = out.get(kind, 0.0) + (cpu - self.first.get(pid, 0.0)) / n * 1e6
        return out


def thread_cpu() -> dict[str, float]:
    """This process's CPU seconds: the main thread's, and the other threads' summed."""
    out: dict[str, float] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            _, f = _stat_times(f"/proc/self/task/{tid}/stat")
        except OSError:
            continue
        key = "main" if int(tid) == os.getpid() else "others"
        out[key] = out.get(key, 0.0) + (f[11] + f[12]) / TICK
    return out


def child(name: str, url: str, role: str, n: int, start: Any, done: Any, results: Any,
          index: int, pace: float = 0.0) -> None:
    try:
        peer = SYSTEMS[name](url, "NORMAL")
        start.wait()
        ru0 = resource.getrusage(resource.RUSAGE_SELF)  # not the imports and connecting
        threads0 = thread_cpu()
        t0 = time.time()
        got = 0
        waits: list[float] = []
        if role == "producer":
            for i in range(n):
                if pace:  # a steady stream of *pace* puts/s instead of as fast as it can
                    time.sleep(max(0.0, t0 + i / pace - time.time()))
                peer.put(payload(i) | {"t": time.time()})
            done.set()
        else:
            got = drain(peer, done, lambda h: waits.append(time.time() - peer.payload(h)["t"]))
        end = time.time()
        ru = resource.getrusage(resource.RUSAGE_SELF)
        threads = {k: v - threads0.get(k, 0.0) for k, v in thread_cpu().items()}
        peer.close()
        results.put((role, index, {
            "start": t0, "end": end, "got": got,
            "cpu": ru.ru_utime + ru.ru_stime - ru0.ru_utime - ru0.ru_stime,
            "threads": threads, "ctx": ru.ru_nvcsw + ru.ru_nivcsw - ru0.ru_nvcsw - ru0.ru_nivcsw,
            "waits": waits}))
    except BaseException:
        import traceback
        results.put((role, index, {"error": traceback.format_exc()}))


@contextlib.contextmanager
def fresh_db(server: str) -> Iterator[str]:
    db = f"mpcost_{os.getpid()}_{next(_names)}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{db}"')
    url = with_dbname(server, db)
    try:
        with psycopg.connect(url, autocommit=True) as c:
            c.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        yield url
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def one(name: str, server: str, n: int, consumers: int, pace: float = 0.0) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    with fresh_db(server) as url:
        SYSTEMS[name](url, "NORMAL").close()  # the schema first
        with psycopg.connect(url, autocommit=True) as admin:
            backend = admin.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
            postmaster = _stat_times(f"/proc/{backend}/stat")[1][1]
            dbid = admin.execute("SELECT oid FROM pg_database WHERE datname = current_database()"
                                 ).fetchone()[0]  # type: ignore[index]
            start, done, results = ctx.Barrier(consumers + 2), ctx.Event(), ctx.Queue()
            procs = [ctx.Process(target=child, args=(name, url, "producer", n, start, done,
                                                     results, 0, pace))]
            procs += [ctx.Process(target=child, args=(name, url, "consumer", n, start, done,
                                                      results, i)) for i in range(consumers)]
            for p in procs:
                p.start()
            # The counts start before any child passes the barrier, which waits for
            # this process too (until session 16 the children could start before
            # the counts did: a fast run's server CPU and statements were undercounted).
            admin.execute("SELECT pg_stat_statements_reset()")
            s0 = server_cpu(postmaster)
            sampler = BackendSampler(postmaster, url)
            start.wait()
            reports = [results.get(timeout=300) for _ in procs]
            s1 = server_cpu(postmaster)
            by_backend = sampler.result(n)
            for p in procs:
                p.join(10)
            stmts = admin.execute(
                "SELECT calls, mean_exec_time, left(regexp_replace(query, '\\s+', ' ', 'g'), 90)"
                " FROM pg_stat_statements WHERE dbid = %s ORDER BY calls DESC", (dbid,)
            ).fetchall()
    errors = [d["error"] for _, _, d in reports if "error" in d]
    if errors:
        raise SystemExit("\n".join(errors))
    t0 = min(d["start"] for _, _, d in reports)
    t1 = max(d["end"] for _, _, d in reports)
    prod = next(d for r, _, d in reports if r == "producer")
    cons = [d for r, _, d in reports if r == "consumer"]
    got = sum(d["got"] for d in cons)
    waits = sorted(w for d in cons for w in d["waits"])
    return {"rate": n / (t1 - t0), "producer_rate": n / (prod["end"] - prod["start"]),
            "got": got, "producer_us": prod["cpu"] / n * 1e6,
            "producer_threads": {k: v / n * 1e6 for k, v in prod["threads"].items()},
            "producer_ctx": prod["ctx"] / n,
            "consumers_us": sum(d["cpu"] for d in cons) / n * 1e6,
            "consumer_threads": {k: sum(d["threads"].get(k, 0.0) for d in cons) / n * 1e6
                                 for k in ("main", "others")},
            "consumer_ctx": sum(d["ctx"] for d in cons) / n,
            "server_us": (s1 - s0) / n * 1e6, "server_by_backend": by_backend,
            "p50_ms": waits[len(waits) // 2] * 1e3, "p99_ms": waits[len(waits) * 99 // 100] * 1e3,
            "statements": [(c / n, t, q) for c, t, q in stmts if c / n >= 0.005]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", required=True)
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--consumers", type=int, default=2)
    ap.add_argument("--systems", default="liteq,raw")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--pace", type=float, default=0.0,
                    help="the producer puts this many per second (default: as fast as it can)")
    ap.add_argument("--quiet", action="store_true", help="no statement table")
    args = ap.parse_args()
    for r in range(args.rounds):
        for name in args.systems.split(","):
            m = one(name, args.url, args.n, args.consumers, args.pace)
            threads = ", ".join(f"{k} {v:.0f}" for k, v in sorted(m["producer_threads"].items()))
            print(f"[{r + 1}] {name} 1+{args.consumers}: {m['rate']:,.0f} msgs/s (producer "
                  f"{m['producer_rate']:,.0f}/s), CPU us/msg: producer {m['producer_us']:.0f} "
                  f"({threads}), consumers {m['consumers_us']:.0f} (main "
                  f"{m['consumer_threads']['main']:.0f}, others {m['consumer_threads']['others']:.0f})"
                  f", server {m['server_us']:.0f}; "
                  f"ctx switches/msg producer {m['producer_ctx']:.2f} consumers "
                  f"{m['consumer_ctx']:.2f}; enqueue-to-claim p50 {m['p50_ms']:.2f} ms, p99 "
                  f"{m['p99_ms']:.2f} ms; statements/msg "
                  f"{sum(c for c, _, _ in m['statements']):.2f}", flush=True)
            print("      server by process, us/msg: " + ", ".join(
                f"{k} {v:.0f}" for k, v in sorted(m["server_by_backend"].items(),
                                                  key=lambda kv: -kv[1])))
            if not args.quiet:
                for c, t, q in m["statements"]:
                    print(f"      {c:6.3f}  {t * 1000:7.1f} us  {q}")


if __name__ == "__main__":
    main()
