#!/usr/bin/env python3
"""Server time of each dashboard page on a big database (issue 21): the WSGI app is
called directly (no HTTP, no browser), each page the median of several calls on a warm
cache; then the plan of every statement behind the pages (SQLite ``EXPLAIN QUERY
PLAN``, PostgreSQL ``EXPLAIN``).

    .venv/bin/python bench/bench_web.py                        # 100,000 messages
    .venv/bin/python bench/bench_web.py --messages 1000000 --path big.db   # keep the file
    .venv/bin/python bench/bench_web.py --pg --messages 100000  # a throwaway PostgreSQL
    .venv/bin/python bench/bench_web.py --db 'postgresql://u@host/db?schema=web'  # a server

The file is built with the library (``put_many`` in batches of 10,000): ten queues;
"big" holds 90% of the messages (ready, 5% delayed, 1% retained done, 1% dead under
three error texts, 200 leased), "tasks" holds task jobs with a dedup key each, the
others a few hundred each; a week of per-minute history for every queue; a schedule, a
topic, a registered worker. Not a timed test: run it by hand. A file of an older
schema is migrated when opened (a kept --path).

The figures (SQLite before and after the hourly roll-ups and the task index, and
PostgreSQL at 100k and 1M) are in bench/README.md, "The dashboard". The earlier ones
(session 7, before the pages' counts were bounded: / 171, week 401, ?state=delayed
475 ms at 1M) are in the git history of this docstring.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import liteq  # noqa: E402
from liteq.backends.registry import HistoryRow  # noqa: E402
from liteq.backends.sqlite import opsql  # noqa: E402
from liteq.registry import Registration  # noqa: E402
from liteq.web import app  # noqa: E402

BATCH = 10_000
ERRORS = ["SMTP 550: mailbox unavailable", "timeout after 30s", "ValueError: bad address"]


def _put(q: liteq.Queue, n: int, make: Any, **kw: Any) -> None:
    for start in range(0, n, BATCH):
        q.put_many([make(i) for i in range(start, min(n, start + BATCH))], **kw)


def build(target: str, total: int) -> float:
    """Fill *target* (a file, or a PostgreSQL URL); return the seconds it took."""
    t0 = time.perf_counter()
    db = liteq.connect(target)
    big = db.queue("big", max_attempts=1, retention=86400)
    n_big = int(total * 0.9)
    n_delayed, n_done, n_dead = n_big // 20, n_big // 100, n_big // 100
    _put(big, n_done + n_dead, lambda i: {"to": f"user{i}@example.com", "body": "x" * 60})
    done = 0
    while done < n_done:
        msgs = big.get_many(min(1000, n_done - done))
        big.ack_many(msgs)
        done += len(msgs)
    dead = 0
    while dead < n_dead:
        for m in big.get_many(min(1000, n_dead - dead)):
            m.fail(ERRORS[dead % 3])
            dead += 1
    _put(big, n_big - n_done - n_dead - n_delayed,
         lambda i: {"to": f"user{i}@example.com", "body": "x" * 60})
    _put(big, n_delayed, lambda i: {"later": i}, delay=7 * 86400)
    big.get_many(200)  # leased
    tasks = db.queue("tasks")
    n_tasks = total - n_big - 8 * 500
    for start in range(0, n_tasks, BATCH):
        tasks.put_many([{"task": "resize" if i % 10 else "thumbnail", "args": [i], "kwargs": {}}
                        for i in range(start, min(n_tasks, start + BATCH))])
    tasks.put({"task": "resize", "args": [-1], "kwargs": {}}, key="image-42")
    for k in range(8):
        _put(db.queue(f"small{k}"), 500, lambda i: i)
    db.schedule("nightly", cron="0 3 * * *", tz="Europe/Berlin", queue="small0", payload=1)
    db.topic("orders").subscribe("billing", pattern="order.#")
    now = int(db.clock() // 60)
    qids = [db.queue(n).id for n in db.queues()]
    rows = [HistoryRow(qid, now - m, "", 50, 49, 0, 0, 0, 0.0, 0.0)
            for m in range(7 * 1440) for qid in qids]
    for start in range(0, len(rows), 50_000):
        db.backend.add_history(rows[start:start + 50_000])
    if db.real_path is None:
        # PostgreSQL: the planner's statistics, as autovacuum's ANALYZE keeps them on a
        # server whose tables filled over days (without them the history of a few
        # seconds' making looks unselective and gets a sequential scan).
        db.execute("ANALYZE")
    db.close()
    return time.perf_counter() - t0


def call(application: Any, path: str) -> tuple[str, int]:
    """GET *path* from the WSGI app; (status, body bytes)."""
    route, _, query = path.partition("?")
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": route, "QUERY_STRING": query,
               "SCRIPT_NAME": "", "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8765",
               "wsgi.input": io.BytesIO(b""), "wsgi.errors": sys.stderr,
               "wsgi.url_scheme": "http"}
    seen: dict[str, str] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        seen["status"] = status

    body = b"".join(application(environ, start_response))
    return seen["status"], len(body)


def plans(db: liteq.Database) -> None:
    """EXPLAIN QUERY PLAN (SQLite) or EXPLAIN (PostgreSQL) of the statements behind the
    pages, with the parameters a page gives them."""
    if db.real_path is None:  # PostgreSQL
        _pg_plans(db)
        return
    big = db.queue("big").id
    tasks = db.queue("tasks").id
    page = {"qid": big, "after": 0, "n": 51}
    now = int(db.clock() // 60)  # the windows the pages read: 5 minutes, an hour, a week
    week = (now - 7 * 1440) // 60 * 60
    checks: dict[str, tuple[str, Any]] = {
        "state counts": (opsql.SQL_STATE_COUNTS, {"qid": big, "cap": 100_001}),
        "count upto": (opsql.SQL_STATE_ROWS_UPTO_UNFINISHED, {"qid": big, "state": 0,
                                                              "cap": opsql.BROWSE_SORT_MAX}),
        "count upto fin.": (opsql.SQL_STATE_ROWS_UPTO_FINISHED, {"qid": big, "state": 4,
                                                                 "cap": opsql.BROWSE_SORT_MAX}),
        "sorted ready": (opsql.SQL_BROWSE, {**page, "state": 0}),
        "sorted delayed": (opsql.SQL_BROWSE, {**page, "state": 1}),
        "sorted dead": (opsql.SQL_BROWSE_FINISHED, {**page, "state": 4}),
        "walk": (opsql.SQL_BROWSE_WALK, {**page, "state": 0}),
        "by key (unfin.)": (opsql.SQL_BROWSE_KEY, {**page, "state": 0, "key": "k"}),
        "by key (fin.)": (opsql.SQL_BROWSE_KEY_FINISHED, {**page, "state": 3, "key": "k"}),
        "by error": (opsql.SQL_BROWSE_ERROR, {**page, "state": 4, "error": ERRORS[0]}),
        "by task": (opsql.SQL_BROWSE_TASK, {**page, "qid": tasks, "state": 0,
                                            "task": b"thumbnail"}),
        "error groups": (opsql.SQL_ERROR_GROUPS, {"qid": big, "state": 4, "n": 50}),
        "history (rates)": (opsql.SQL_HISTORY, (now - 5, None, None)),
        "history sums": (opsql.SQL_HISTORY_SUMS, {"since": now - 60, "width": 1, "qid": None}),
        "hours sums": (opsql.SQL_HOURS_SUMS, {"since": week, "width": 60, "qid": None}),
        "history runs": (opsql.SQL_HISTORY_RUNS, {"since": week}),
        "attempts": (opsql.SQL_ATTEMPTS, {"id": 1}),
    }
    for name, (sql, params) in checks.items():
        rows = db.execute("EXPLAIN QUERY PLAN " + sql, params)
        print(f"  {name:17} " + " | ".join(str(r[-1]) for r in rows))


def _pg_plans(db: liteq.Database) -> None:
    from liteq.backends.postgres import operating as pgop
    from liteq.backends.postgres.schema import qualify

    schema = db.backend.schema  # type: ignore[attr-defined]
    big = db.queue("big").id
    tasks = db.queue("tasks").id
    page = {"qid": big, "after": 0, "n": 51}
    now = int(db.clock() // 60)  # the windows the pages read: 5 minutes, an hour, a week
    week = (now - 7 * 1440) // 60 * 60
    checks: dict[str, tuple[str, Any]] = {
        "state counts": (pgop.SQL_STATE_COUNTS, {"qid": big, "cap": 100_001}),
        "count upto": (pgop.STATE_UPTO[1], {"qid": big, "cap": pgop.BROWSE_SORT_MAX}),
        "walk ready": (pgop.SQL_BROWSE, {**page, "state": 0}),
        "sorted delayed": (pgop.BROWSE_SORTED[1], page),
        "sorted dead": (pgop.BROWSE_SORTED[4], page),
        "by key": (pgop.SQL_BROWSE_KEY, {**page, "state": 0, "key": "image-42"}),
        "by error": (pgop.SQL_BROWSE_ERROR, {**page, "state": 4, "error": ERRORS[0]}),
        "by task": (pgop.SQL_BROWSE_TASK, {**page, "qid": tasks, "state": 0,
                                           "task": b"thumbnail"}),
        "error groups": (pgop.SQL_ERROR_GROUPS, {"qid": big, "state": 4, "n": 50}),
        "history (rates)": (pgop.SQL_HISTORY, {"since": now - 5, "qid": None}),
        "history sums": (pgop.SQL_HISTORY_SUMS, {"since": now - 60, "width": 1, "qid": None}),
        "hours sums": (pgop.SQL_HOURS_SUMS, {"since": week, "width": 60, "qid": None}),
        "history runs": (pgop.SQL_HISTORY_RUNS, {"since": week}),
        "attempts": (pgop.SQL_ATTEMPTS, {"id": 1}),
    }
    for name, (sql, params) in checks.items():
        rows = db.execute("EXPLAIN (COSTS OFF) " + qualify(sql, schema), params)
        lines = [str(r[0]).strip() for r in rows]
        print(f"  {name:17} " + " | ".join(ln for ln in lines if "Scan" in ln or "Index" in ln
                                            or "Sort" in ln or "Aggregate" in ln))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--path", default=None, help="keep (and reuse) the file here")
    parser.add_argument("--db", default=None,
                        help="a PostgreSQL URL (postgresql://...?schema=NAME) instead of a "
                             "file: built when it has no queue 'big', else reused")
    parser.add_argument("--pg", action="store_true",
                        help="start a throwaway PostgreSQL cluster (tests/pgcluster.py, "
                             "fsync on) and use it, as --db")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    cluster = None
    if args.pg:
        sys.path.insert(0, str(ROOT / "tests"))
        from pgcluster import Cluster, find_bindir

        bindir = find_bindir()
        if bindir is None:
            raise SystemExit("--pg: PostgreSQL is not installed (no initdb)")
        cluster = Cluster(bindir, fsync=True).start()
        args.db = cluster.url + "?schema=liteq_web"
    try:
        run(args)
    finally:
        if cluster is not None:
            cluster.stop()


def run(args: argparse.Namespace) -> None:
    """Build or reuse the database, time every page, print the query plans."""
    tmp = None
    target = args.db or args.path
    if target is None:
        tmp = tempfile.TemporaryDirectory()
        target = os.path.join(tmp.name, "web.db")
    if args.db:
        probe = liteq.connect(target)
        fresh = not probe.has_queue("big")
        probe.close()
    else:
        fresh = not os.path.exists(target)
    if fresh:
        print(f"building {target}: {args.messages:,} messages ...", flush=True)
        took = build(target, args.messages)
        mb = "" if args.db else f", {os.path.getsize(target) / 1e6:.0f} MB"
        print(f"  built in {took:.1f} s{mb}")
    db = liteq.connect(target)
    big = db.queue("big")
    reg = Registration(db, "worker", queues=["big"], pool="thread", concurrency=4)
    reg.start()
    ready = big.peek(1)[0].id
    deep = db.backend.browse(big.id, 0, ready + (args.messages // 2), 1)[0].id
    dead = big.peek(1, state="dead")[0].id
    pages = ["/", "/?range=day", "/?range=week", "/queue/big", f"/queue/big?after={deep}",
             "/queue/big?state=delayed", "/queue/big?state=dead", "/queue/big?state=done",
             "/queue/tasks?key=image-42", "/queue/tasks?task=thumbnail",
             "/queue/tasks?task=thumbnail&state=dead", "/queue/big?range=week",
             f"/message/{ready}", f"/message/{dead}", "/dead", "/dead/big", "/schedules",
             "/topics", "/workers", "/metrics"]
    application = app(db, allow_actions=True)
    print(f"server time per page (median of {args.runs}, warm), {args.messages:,} messages, "
          f"load average {os.getloadavg()[0]:.1f}:")
    for page in pages:
        status, size = call(application, page)  # warm
        times = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            call(application, page)
            times.append(time.perf_counter() - t0)
        print(f"  {page:40} {statistics.median(times) * 1000:8.1f} ms  {status[:3]} {size:,} B")
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    print("query plans:")
    plans(db)
    reg.stop()
    db.close()
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
