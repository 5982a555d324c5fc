#!/usr/bin/env python3
"""Server time of each dashboard page on a big database (issue 21): the WSGI app is
called directly (no HTTP, no browser), each page the median of several calls on a warm
cache; then ``EXPLAIN QUERY PLAN`` of every statement behind the pages (SQLite).

    .venv/bin/python bench/bench_web.py                        # 100,000 messages
    .venv/bin/python bench/bench_web.py --messages 1000000 --path big.db   # keep the file

The file is built with the library (``put_many`` in batches of 10,000): ten queues;
"big" holds 90% of the messages (ready, 5% delayed, 1% retained done, 1% dead under
three error texts, 200 leased), "tasks" holds task jobs with a dedup key each, the
others a few hundred each; a week of per-minute history for every queue; a schedule, a
topic, a registered worker. Not a timed test: run it by hand.

Measured once at 1,000,000 messages on the project machine (2 vCPU shared with other
builds: load average 3.3 during the run; file 161 MB, built in 7.6 s), median of 5,
warm cache, in ms:

    /                      171    /queue/big?state=dead       262    /message/ID     0.4
    /?range=day            317    /queue/big?state=done       206    /dead/big      17
    /?range=week           401    /queue/tasks?key=image-42    29    /schedules      0.6
    /queue/big             196    /queue/tasks?task=thumbnail 239    /topics         0.3
    /queue/big?after=518202 257   /dead                       198    /workers        0.1
    /queue/big?state=delayed 475  /metrics                    171

Where the time goes (measured alone on the same file afterwards): ``Queue.stats()`` of
"big" (837k ready rows) takes 140-170 ms: it counts every state exactly, and the
overview, each queue page (its tabs), ``/dead`` and ``/metrics`` call it. The page's own
queries: a keyset page 1-18 ms (after the walk threshold was raised from 20k to 200k
rows: the delayed page had walked 900k rows, 197 ms), the week's chart 86 ms (a week of
per-minute history for 10 queues, 100k rows, summed in SQL), the day's 9 ms. So the
pages that show exact counts of a queue of ~1M messages do not meet 100 ms here; that
needs counts kept per state (counters like the depth counter), a schema change.
At 100,000 messages (21 MB, load average 2.1): every page under 90 ms (the week's
chart, the same 100k history rows), queue pages 15-39 ms, the rest under 25 ms.
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


def build(path: str, total: int) -> float:
    """Fill *path*; return the seconds it took."""
    t0 = time.perf_counter()
    db = liteq.connect(path)
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
    """EXPLAIN QUERY PLAN of the statements the pages add (SQLite)."""
    big = db.queue("big").id
    page = {"qid": big, "after": 0, "n": 51}
    checks = {
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
        "error groups": (opsql.SQL_ERROR_GROUPS, {"qid": big, "state": 4, "n": 50}),
        "history sums": (opsql.SQL_HISTORY_SUMS, {"since": 0, "width": 60, "qid": None}),
        "history runs": (opsql.SQL_HISTORY_RUNS, {"since": 0}),
    }
    for name, (sql, params) in checks.items():
        rows = db.execute("EXPLAIN QUERY PLAN " + sql, params)
        print(f"  {name:17} " + " | ".join(str(r[-1]) for r in rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--path", default=None, help="keep (and reuse) the file here")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    tmp = None
    path = args.path
    if path is None:
        tmp = tempfile.TemporaryDirectory()
        path = os.path.join(tmp.name, "web.db")
    if not os.path.exists(path):
        print(f"building {path}: {args.messages:,} messages ...", flush=True)
        print(f"  built in {build(path, args.messages):.1f} s, "
              f"{os.path.getsize(path) / 1e6:.0f} MB")
    db = liteq.connect(path)
    big = db.queue("big")
    reg = Registration(db, "worker", queues=["big"], pool="thread", concurrency=4)
    reg.start()
    ready = big.peek(1)[0].id
    deep = db.backend.browse(big.id, 0, ready + (args.messages // 2), 1)[0].id
    dead = big.peek(1, state="dead")[0].id
    pages = ["/", "/?range=day", "/?range=week", "/queue/big", f"/queue/big?after={deep}",
             "/queue/big?state=delayed", "/queue/big?state=dead", "/queue/big?state=done",
             "/queue/tasks?key=image-42", "/queue/tasks?task=thumbnail",
             f"/message/{ready}", f"/message/{dead}", "/dead", "/dead/big", "/schedules",
             "/topics", "/workers", "/metrics"]
    application = app(db, allow_actions=True)
    print(f"server time per page (median of {args.runs}, warm), {args.messages:,} messages:")
    for page in pages:
        status, size = call(application, page)  # warm
        times = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            call(application, page)
            times.append(time.perf_counter() - t0)
        print(f"  {page:34} {statistics.median(times) * 1000:8.1f} ms  {status[:3]} {size:,} B")
    print("query plans:")
    plans(db)
    reg.stop()
    db.close()
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
