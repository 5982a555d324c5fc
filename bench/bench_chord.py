"""What a chord member's ack costs against a plain job's (issue 20: within 1.3x), and a
chord of N members end to end.

    python bench/bench_chord.py [--mode ack|drain] [--n 10000] [--db PATH_OR_URL|postgres]
        [--rounds 6] [--style batch,one,worker,worker-one] [--batch 100] [--instructions]
        [--no-clean]

``--mode ack`` (the default) measures what the issue names, the ack itself. Each round,
on the same database, is a pair run one after the other (plain, chord, plain, chord...):

1. *plain*: N jobs of a no-op task are enqueued and claimed (``get_many``), then acked;
2. *chord*: a chord of N members of the same task and one callback is enqueued, its N
   members claimed, then acked: the N-th ack releases the callback, whose inputs are
   checked (all N results, in order) before it is acked too.

Only the acks are timed. An ack is the worker's ack transaction: the jobs' ``DELETE``
(``backend.ack``) and ``workflow.record`` (which finds the jobs that have dependents and
settles their edges with the results), in one ``db.transaction()``. ``--style batch``:
``--batch`` jobs per transaction, as the worker's flush acks them; ``one``: one job per
transaction; ``worker``: as ``batch`` plus the results rows the worker's flush writes in
the same transaction (``save_results``, the same for both kinds); ``worker-one``: one
job and its results row per transaction (the worker's flush when one job finished).

The two ``worker`` styles are the acks a worker makes. ``batch`` and ``one`` leave out
the results row both kinds write: there a member's ack stores its result (a row
written) where a plain ack writes no row at all, so they show the member's own extra
work against the smallest denominator (the strictest figures).

Reported per style: the wall-clock seconds of every timed loop, the CPU seconds of this
process and, on PostgreSQL, of the server backend of this connection (``/proc/PID/stat``:
both load-independent, unlike the wall clock), the chord / plain ratio of each pair in
the order the rounds ran, their median and spread. With ``--instructions`` the same run
goes under valgrind's callgrind (smaller ``--n`` advised): each timed loop is bracketed
by ``os.getppid()`` / ``os.getpgrp()`` as in ``bench/instructions.py``, and the
instructions per ack of this process are reported (on PostgreSQL the server's work is
not in them: read the server CPU column).

Between the loops (untimed; ``--no-clean`` leaves it out, to see what it removes) the
run puts the database back where it was: workflow records of finished jobs pruned
(``db.prune_results``), SQLite's WAL checkpointed (``PRAGMA wal_checkpoint(TRUNCATE)``),
PostgreSQL's tables vacuumed (``VACUUM`` of the queue and workflow tables); and Python's
cyclic garbage collector is run before and held off during each timed loop.

``--mode drain`` is the end-to-end run: one in-process worker (``burst``) drains N plain
jobs, then a chord of N members; reported are the callback's runs and inputs, the delay
from the last member's ack to the callback's start (a claim, not a poll: the ack's own
transaction releases it), and the drains' seconds and ratio (run + ack + results row +
the worker's own work: a noisier and looser figure than ``--mode ack``'s).

``--db postgres`` starts a throwaway PostgreSQL cluster (``tests/pgcluster.py``, fsync
on); a ``postgresql://`` URL uses that server; else a SQLite file (temporary unless named).
Figures depend on the machine and what else runs on it: say so when quoting them.
"""

from __future__ import annotations

import argparse
import gc
import glob
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

import liteq  # noqa: E402
from liteq import workflow  # noqa: E402
from liteq.backends import State  # noqa: E402
from liteq.job import list_jobs  # noqa: E402
from liteq.queue import Message  # noqa: E402
from liteq.running import JobContext, outcome_row  # noqa: E402

KINDS = ("plain", "chord")
#: jobs per ack transaction of each --style
STYLES = {"batch": 0, "one": 1, "worker": 0, "worker-one": 1}  # 0: --batch


class Meter:
    """Wall clock, this process's CPU and (PostgreSQL) the server backend's CPU."""

    def __init__(self, db: liteq.Database, postgres: bool) -> None:
        self.pid = int(db.execute("SELECT pg_backend_pid()")[0][0]) if postgres else 0
        self.tick = os.sysconf("SC_CLK_TCK")

    def server(self) -> float:
        if not self.pid:
            return 0.0
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / self.tick  # utime + stime

    @contextmanager
    def measure(self, out: list[tuple[float, float, float]]) -> Iterator[None]:
        gc.collect()
        gc.disable()
        server, cpu, wall = self.server(), time.process_time(), time.perf_counter()
        os.getppid()  # callgrind (--instructions): zero the counters
        try:
            yield
        finally:
            os.getpgrp()  # callgrind: dump this loop
            out.append((time.perf_counter() - wall, time.process_time() - cpu,
                        self.server() - server))
            gc.enable()


def claim(q: liteq.Queue, n: int) -> list[Message]:
    msgs: list[Message] = []
    while len(msgs) < n:
        got = q.get_many(min(100, n - len(msgs)))
        if not got:
            raise SystemExit(f"only {len(msgs)} of {n} jobs could be claimed")
        msgs += got
    return msgs


def ack(db: liteq.Database, msgs: list[Message], results: bool = False) -> None:
    """The worker's ack transaction, without its results rows unless *results* (see the
    module doc)."""
    q = msgs[0].owner
    with db.transaction():
        lost = db.backend.ack(q.id, [(m.id, m.token or 0) for m in msgs], q.config.retention)
        assert not lost, f"lost leases: {lost}"
        if results:  # as the worker's flush writes them (no stored value: the default),
            now = time.time()  # before the dependents are settled, as the worker does
            db.backend.save_results([outcome_row(
                JobContext(db, m.id, m.payload["task"], q.name, m.attempts, 5,
                           m.payload["args"], {}, m.enqueued_at),
                State.DONE, attempts=m.attempts, now=now, ttl=3600.0, duration=0.0)
                for m in msgs])
        workflow.record(db, [(m.id, m.payload["args"][0]) for m in msgs], results_rows=results)


def clean(db: liteq.Database, postgres: bool) -> None:
    db.prune_results()
    if postgres:
        for table in ("messages", "wf_jobs", "wf_edges", "depth_stripes", "queues"):
            db.execute(f"VACUUM {db.backend.schema}.{table}")
    else:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def ack_mode(args: argparse.Namespace, target: str, postgres: bool) -> None:
    clock = None
    if os.environ.get("LITEQ_BENCH_CALLGRIND"):
        # Under callgrind (50x slower) the stats flush and queue maintenance, paced by
        # the clock, would run more often per ack and by how loaded the machine is: a
        # clock that steps per reading, as bench/instructions.py's, keeps the counts put.
        sys.path.insert(0, HERE)
        from instructions import stepping_clock
        clock = stepping_clock()
    db = liteq.connect(target, clock=clock)
    member, callback = ack_tasks(db)
    q = db.queue("default")
    meter = Meter(db, postgres)
    styles = args.style.split(",")
    # times[style][kind] = [(wall, cpu, server cpu) per round]
    times: dict[str, dict[str, list[tuple[float, float, float]]]] = {
        s: {k: [] for k in KINDS} for s in styles}
    for _round in range(args.rounds):
        for style in styles:
            for kind in KINDS:
                if kind == "plain":
                    member.enqueue_many([(i,) for i in range(args.n)])
                else:
                    liteq.chord(liteq.group(member.s(i) for i in range(args.n)),
                                callback.s()).delay()
                msgs = claim(q, args.n)
                assert all(m.payload["task"] == "bench.member" for m in msgs)
                if not args.no_clean:
                    clean(db, postgres)
                step = STYLES[style] or args.batch
                # One ack untimed first: the enqueue's executemany emptied apsw's
                # statement cache, whose refill (~60k instructions a statement) would
                # land on the first timed ack.
                ack(db, msgs[:step], results=style.startswith("worker"))
                with meter.measure(times[style][kind]):
                    for i in range(step, args.n, step):
                        ack(db, msgs[i:i + step], results=style.startswith("worker"))
                if kind == "chord":  # the last ack released the callback, with every result
                    cb = q.get()
                    assert cb is not None and cb.payload["task"] == "bench.callback"
                    assert workflow.inputs(db, cb.id, cb.payload["wf"]) == [list(range(args.n))]
                    cb.ack()
                assert q.get() is None
    db.close()
    report(args, postgres, times)


def report(args: argparse.Namespace, postgres: bool,
           times: dict[str, dict[str, list[tuple[float, float, float]]]]) -> None:
    print(f"engine: {'postgres' if postgres else 'sqlite'}, n={args.n}, rounds={args.rounds} "
          f"(plain, chord alternated), clean={not args.no_clean}, "
          f"load average {os.getloadavg()[0]:.2f}")
    columns = [(0, "wall"), (1, "CPU (this process)")] + ([(2, "CPU (server)")] if postgres else [])
    for style, kinds in times.items():
        per = STYLES[style] or args.batch
        timed = args.n - per  # the first ack is untimed (ack_mode)
        extra = {"worker": ", with their results rows (the worker's flush)",
                 "worker-one": ", with its results row (the worker acking one job)"}.get(style, "")
        print(f"\n### {style}: {per} job(s) per ack transaction{extra}\n")
        print("| measure | plain, per ack | chord member, per ack | member / plain, each round "
              "in order | median | min-max |\n|---|---:|---:|---|---:|---:|")
        for i, label in columns:
            plain = [t[i] for t in kinds["plain"]]
            chord = [t[i] for t in kinds["chord"]]
            ratios = [c / p if p else float("nan") for p, c in zip(plain, chord, strict=True)]
            print(f"| {label} | {statistics.median(plain) / timed * 1e6:.1f} us "
                  f"| {statistics.median(chord) / timed * 1e6:.1f} us "
                  f"| {', '.join(f'{r:.2f}' for r in ratios)} | {statistics.median(ratios):.2f}x "
                  f"| {min(ratios):.2f}-{max(ratios):.2f} |")


def instructions(args: argparse.Namespace, argv: list[str]) -> None:
    """Run this same command under callgrind; one dump per timed loop, in run order."""
    out = tempfile.mkdtemp(prefix="liteq-cg-chord-")
    try:
        child = [a for a in argv if a != "--instructions"]
        cmd = [shutil.which("valgrind") or "/usr/bin/valgrind", "--tool=callgrind",
               "--zero-before=getppid", "--dump-before=getpgrp",
               f"--callgrind-out-file={out}/cg.out", sys.executable, os.path.abspath(__file__),
               *child]
        done = subprocess.run(cmd, capture_output=True, text=True,
                              env={**os.environ, "PYTHONHASHSEED": "0",
                                   "LITEQ_BENCH_CALLGRIND": "1"})
        if done.returncode != 0:
            raise SystemExit(f"valgrind failed ({done.returncode}):\n{done.stderr[-3000:]}")
        dumps = sorted(glob.glob(f"{out}/cg.out.*"), key=lambda p: int(p.rsplit(".", 1)[1]))
        styles = args.style.split(",")
        if len(dumps) != args.rounds * len(styles) * len(KINDS):
            raise SystemExit(f"expected one dump per timed loop, got {len(dumps)}")
        counts = [_total(p) / (args.n - (STYLES[style] or args.batch))
                  for p, style in zip(dumps, _loop_styles(args), strict=True)]
        engine = "postgres" if args.db and args.db.startswith("postgres") else "sqlite"
        print(f"engine: {engine}, n={args.n}, rounds={args.rounds}, clean={not args.no_clean}:"
              f" instructions per ack of this process (callgrind)\n")
        print("| style | plain, per ack (median; each round) | chord member, per ack (median; "
              "each round) | member / plain, each round in order | median |\n"
              "|---|---:|---:|---|---:|")
        it = iter(counts)
        rows: dict[str, list[tuple[float, float]]] = {s: [] for s in styles}
        for _round in range(args.rounds):
            for style in styles:
                rows[style].append((next(it), next(it)))
        for style, pairs in rows.items():
            ratios = [c / p for p, c in pairs]
            print(f"| {style} | {statistics.median(p for p, _ in pairs):,.0f}; "
                  f"{', '.join(f'{p / 1000:.1f}k' for p, _ in pairs)} "
                  f"| {statistics.median(c for _, c in pairs):,.0f}; "
                  f"{', '.join(f'{c / 1000:.1f}k' for _, c in pairs)} "
                  f"| {', '.join(f'{r:.3f}' for r in ratios)} | {statistics.median(ratios):.3f}x |")
    finally:
        shutil.rmtree(out, ignore_errors=True)


def _loop_styles(args: argparse.Namespace) -> list[str]:
    """The style of each timed loop, in run order."""
    return [style for _round in range(args.rounds) for style in args.style.split(",")
            for _kind in KINDS]


def _total(path: str) -> int:
    with open(path) as f:
        for line in f:
            if line.startswith("totals:"):
                return int(line.split()[1])
    raise SystemExit(f"no totals line in {path}")


def ack_tasks(db: Any) -> tuple[Any, Any]:
    """The member and callback tasks of the ack measurements (here and chord_server.py):
    a member returns its argument, the callback counts its inputs."""

    @db.task(name="bench.member")
    def member(i: int) -> int:
        return i

    @db.task(name="bench.callback")
    def callback(results: list[Any]) -> int:
        return len(results)

    return member, callback


def drain_mode(args: argparse.Namespace, target: str, postgres: bool) -> None:
    db = liteq.connect(target)
    calls: list[int] = []

    @db.task(name="bench.member")
    def member(i: int) -> int:
        return i

    @db.task(name="bench.callback", store_result=True)
    def callback(results: list[Any]) -> int:
        assert results == list(range(args.n)), "results out of order"
        calls.append(len(results))
        return len(results)

    cpu: list[float] = []

    def drain() -> float:
        start, used = time.time(), time.process_time()
        liteq.Worker(db, concurrency=args.concurrency, burst=True, install_signals=False,
                     summary_interval=0).run()
        cpu.append(time.process_time() - used)
        return start

    rounds = []
    for _ in range(args.rounds):  # alternated, to share the machine's swings
        calls.clear()
        if not args.no_clean:
            clean(db, postgres)
        plain = member.enqueue_many([(i,) for i in range(args.n)])
        start = drain()
        plain_s = max(j.info().finished_at or 0.0 for j in plain) - start
        t0 = time.perf_counter()
        cb = liteq.chord(liteq.group(member.s(i) for i in range(args.n)), callback.s()).delay()
        enqueue_s = time.perf_counter() - t0
        start = drain()
        infos = list_jobs(db, workflow=cb.workflow, limit=args.n + 1)
        last_ack = max(i.finished_at or 0.0 for i in infos if i.id != cb.id)
        info = cb.info()
        assert calls == [args.n] and info.state == "done" and cb.result() == args.n
        rounds.append((enqueue_s, plain_s, last_ack - start,
                       (info.started_at or 0.0) - last_ack, cpu[-2], cpu[-1]))
    enqueue_s, plain_s, chord_s, delay = (statistics.median(r[i] for r in rounds)
                                          for i in range(4))
    ratios = [r[2] / r[1] for r in rounds]  # in the order the rounds ran
    cpu_ratios = [r[5] / r[4] for r in rounds]
    print(f"engine: {'postgres' if postgres else 'sqlite'}, n={args.n}, "
          f"concurrency={args.concurrency}, medians of {args.rounds} rounds, "
          f"load average {os.getloadavg()[0]:.2f}")
    print("| measure | value |\n|---|---:|")
    print(f"| enqueue the chord (one transaction) | {enqueue_s:.2f} s |")
    print(f"| drain {args.n} plain jobs | {plain_s:.2f} s ({args.n / plain_s:,.0f}/s) |")
    print(f"| drain {args.n} chord members | {chord_s:.2f} s ({args.n / chord_s:,.0f}/s) |")
    print(f"| member / plain (run + ack), each round in order; median "
          f"{statistics.median(ratios):.2f}x | {', '.join(f'{r:.2f}x' for r in ratios)} |")
    print(f"| CPU seconds of the drains (this process), chord incl. callback / plain, each "
          f"round in order | {', '.join(f'{r:.2f}x' for r in cpu_ratios)} |")
    print("| callback runs, inputs (each round) | 1, all in order |")
    print(f"| last member's ack -> callback start | {delay * 1000:.1f} ms |")
    db.close()


def with_target(args: argparse.Namespace, run: Callable[[str, bool], None]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        if args.db == "postgres":
            sys.path.insert(0, os.path.join(HERE, "..", "tests"))
            from pgcluster import Cluster, find_bindir
            bindir = find_bindir()
            if bindir is None:
                raise SystemExit("PostgreSQL is not installed (initdb not found)")
            cluster = Cluster(bindir, fsync=True).start()
            try:
                run(cluster.url, True)
            finally:
                cluster.stop()
            return
        target = args.db or os.path.join(tmp, "chord.db")
        run(target, target.startswith("postgres"))


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("ack", "drain"), default="ack")
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--db", default=None,
                        help="a file path, a postgresql:// URL, or 'postgres' (a throwaway cluster)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--style", default="batch,one,worker,worker-one",
                        help="ack mode: batch, one, worker (batch + results rows), worker-one "
                             "(one + its results row), comma-separated")
    parser.add_argument("--batch", type=int, default=100, help="ack mode: jobs per batch ack")
    parser.add_argument("--concurrency", type=int, default=1, help="drain mode: worker threads")
    parser.add_argument("--no-clean", action="store_true",
                        help="leave out the pruning, checkpoint/vacuum and garbage collection "
                             "between rounds")
    parser.add_argument("--instructions", action="store_true",
                        help="ack mode: count instructions with callgrind instead")
    args = parser.parse_args(argv)
    if any(s not in STYLES for s in args.style.split(",")):
        parser.error(f"--style takes {', '.join(STYLES)}, comma-separated")
    if args.instructions:
        instructions(args, argv)
        return
    with_target(args, lambda target, postgres: (ack_mode if args.mode == "ack" else drain_mode)(
        args, target, postgres))


if __name__ == "__main__":
    main()
