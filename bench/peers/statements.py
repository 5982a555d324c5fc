"""Where liteq's per-message time goes, statement by statement, next to raw's.

    .venv/bin/python bench/compare.py --profile statements [--n N]

cProfile sees one ``execute`` bucket; this times each SQL step of a put and of a
get+ack separately (liteq's own SQL constants on a liteq file, raw's on a raw
file, same process, same payload), reports the WAL frames each operation writes,
and times two claim alternatives:

* the batch claim: ``UPDATE ... WHERE id IN (SELECT ... LIMIT n)
  RETURNING <12 columns>``;
* the same with fewer RETURNING columns;
* the single claim as liteq runs it: two statements in the same ``BEGIN IMMEDIATE``,
  ``SELECT id ... LIMIT 1`` through the ready index, then ``UPDATE ... WHERE id = ?
  AND state = 0 RETURNING <12 columns>`` (one transaction under the write lock, so
  no other connection can take the row in between).

Uses liteq's internal SQL (``liteq.backends.sqlite``): a bench tool, not an API.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import cbor2

import liteq
from liteq.backends import sqlite as S

from .raw_apsw import SQL_CLAIM as RAW_CLAIM
from .raw_apsw import SQL_DELETE as RAW_DELETE
from .raw_apsw import SQL_INSERT as RAW_INSERT
from .raw_apsw import RawApsw

BLOB = cbor2.dumps({"to": "someone@example.com", "subject": "hello", "n": 0})

Step = tuple[str, Callable[[], Any]]


def _steps(steps: list[Step], n: int) -> dict[str, float]:
    """Median µs of each step over *n* rounds (medians: checkpoints are reported apart)."""
    took: dict[str, list[float]] = {k: [] for k, _ in steps}
    clock = time.perf_counter
    for _ in range(n):
        for k, fn in steps:
            t = clock()
            fn()
            took[k].append(clock() - t)
    return {k: statistics.median(v) * 1e6 for k, v in took.items()} | {
        "(mean of all steps, checkpoints included)": sum(statistics.fmean(v) for v in took.values())
        * 1e6
    }


def _frames(cur: Any, op: Callable[[], Any], n: int = 100) -> float:
    """WAL frames written per operation (the WAL is truncated first)."""
    cur.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    for _ in range(n):
        op()
    return cur.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()[0][1] / n


def _print(title: str, lq: dict[str, float], raw: dict[str, float]) -> None:
    print(f"\n{title:<44}{'liteq':>9}{'raw':>9}")
    total = "(mean of all steps, checkpoints included)"
    for k in dict.fromkeys([*lq, *raw]):
        if k != total:
            print(f"  {k:<42}{lq.get(k, 0):>9.1f}{raw.get(k, 0):>9.1f}")
    print(f"  {'sum of medians':<42}{sum(v for k, v in lq.items() if k != total):>9.1f}"
          f"{sum(v for k, v in raw.items() if k != total):>9.1f}")
    print(f"  {total:<42}{lq[total]:>9.1f}{raw[total]:>9.1f}")


def run(n: int = 5000) -> None:
    d = tempfile.mkdtemp(prefix="liteq-statements-")
    db = liteq.connect(os.path.join(d, "liteq.db"))
    q = db.queue("bench")
    qid = q.id
    cur = db.connection.cursor()
    raw = RawApsw(d, "NORMAL")
    rc = raw.cur
    now = time.time
    held: list[Any] = []
    rheld: list[Any] = []

    # liteq's steps as its common paths run them (store.queues.put_ready,
    # store.messages.claim and ack): the put and the ack are one autocommit statement
    # each, the claim a SELECT and an UPDATE in one BEGIN IMMEDIATE. Each step that
    # runs under the write lock is marked [lock]: under several processes the lock is
    # the bottleneck, so their sum bounds the multi-process rows.
    lput: list[Step] = [
        ("[lock] INSERT ... WHERE EXISTS (autocommit)",
         lambda: cur.execute(S.SQL_INSERT_UNCOUNTED, (qid, 0, now(), BLOB))),
    ]
    rput: list[Step] = [
        ("[lock] BEGIN IMMEDIATE", lambda: rc.execute("BEGIN IMMEDIATE")),
        ("[lock] INSERT", lambda: rc.execute(RAW_INSERT, (now(), BLOB))),
        ("[lock] COMMIT", lambda: rc.execute("COMMIT")),
    ]
    found: list[Any] = []
    lget: list[Step] = [
        ("[lock] BEGIN IMMEDIATE", lambda: cur.execute("BEGIN IMMEDIATE")),
        ("[lock] SELECT id (SQL_NEXT_READY)",
         lambda: found.extend(cur.execute(S.SQL_NEXT_READY, (qid,)).fetchall())),
        ("[lock] UPDATE ... WHERE id = ? RETURNING",
         lambda: held.extend(cur.execute(S.SQL_CLAIM_ONE, (found.pop()[0], now() + 30)
                                         ).fetchall())),
        ("[lock] COMMIT", lambda: cur.execute("COMMIT")),
        ("[lock] ack: DELETE ... AND EXISTS (autocommit)",
         lambda: cur.execute(S.SQL_ACK_UNCOUNTED, tuple(held.pop()[:2]))),
    ]
    rget: list[Step] = [
        ("[lock] BEGIN IMMEDIATE", lambda: rc.execute("BEGIN IMMEDIATE")),
        ("[lock] claim (UPDATE ... IN (SELECT) RETURNING)",
         lambda: rheld.extend(rc.execute(RAW_CLAIM, (now() + 30, 1)).fetchall())),
        ("[lock] COMMIT", lambda: rc.execute("COMMIT")),
        ("[lock] ack: BEGIN IMMEDIATE", lambda: rc.execute("BEGIN IMMEDIATE")),
        ("[lock] ack: DELETE", lambda: rc.execute(RAW_DELETE, tuple(rheld.pop()[:2]))),
        ("[lock] ack: COMMIT", lambda: rc.execute("COMMIT")),
    ]
    print(f"µs per step, median of {n:,} (one process, synchronous=NORMAL)")
    _print("put", _steps(lput, n), _steps(rput, n))
    _print("get+ack", _steps(lget, n), _steps(rget, n))

    def lq_get_ack() -> None:
        m = q.get()
        assert m is not None
        m.ack()

    def raw_get_ack() -> None:
        raw.ack(raw.get())

    q.put_many([{"n": i} for i in range(200)])
    raw.put_many([{"n": i} for i in range(200)])
    print("\nWAL frames per operation (liteq / raw): put "
          f"{_frames(cur, lambda: q.put({'n': 0})):.2f} / "
          f"{_frames(rc, lambda: raw.put({'n': 0})):.2f}; get+ack "
          f"{_frames(cur, lq_get_ack):.2f} / {_frames(rc, raw_get_ack):.2f}")

    # Claim alternatives, each in its own BEGIN IMMEDIATE ... COMMIT (only the claim timed).
    q.put_many([{"n": i} for i in range(4 * n + 100)])
    select_id = ("SELECT id FROM messages WHERE qid = :qid AND state = 0 "
                 "ORDER BY priority DESC, rank, run_at, id LIMIT 1")
    update_by_id = ("UPDATE messages SET state = 2, token = random(), attempts = attempts + 1, "
                    f"lease_until = :until WHERE id = :id AND state = 0 RETURNING {S.CLAIM_COLUMNS}")
    # The one-statement claim liteq used for batches until session 4 (RETURNING behind
    # a subquery: slow, see SQL_CLAIM_SELECT).
    one_statement = ("UPDATE messages SET state = 2, token = :token, attempts = attempts + 1, "
                     "lease_until = :now + :lease WHERE id IN (SELECT id FROM messages "
                     "WHERE qid = :qid AND state = 0 ORDER BY priority DESC, rank, run_at, id "
                     f"LIMIT :n) AND state = 0 RETURNING {S.CLAIM_COLUMNS}")
    fewer = one_statement.replace(S.CLAIM_COLUMNS, "id, token, payload")

    def one(sql: str) -> Callable[[], Any]:
        return lambda: cur.execute(sql, {"qid": qid, "n": 1, "now": now(), "lease": 30.0,
                                         "token": 1}).fetchall()

    def two() -> Any:
        (mid,), = cur.execute(select_id, {"qid": qid}).fetchall()
        return cur.execute(update_by_id, {"id": mid, "until": now() + 30}).fetchall()

    def select_then_update() -> Any:
        rows = cur.execute(S.SQL_CLAIM_SELECT, {"qid": qid, "n": 1, "token": 1}).fetchall()
        cur.execute(S.sql_claim_ids(1), (1, now() + 30, rows[0][0]))
        return rows

    print("\nclaim of one message, µs (median; each in its own transaction)")
    for label, fn in [("one statement, RETURNING 12 columns", one(one_statement)),
                      ("one statement, RETURNING id, token, payload", one(fewer)),
                      ("SELECT 12 columns; UPDATE ... WHERE id IN (?) (batches)",
                       select_then_update),
                      ("SELECT id; UPDATE ... WHERE id = ? RETURNING 12 (liteq)", two)]:
        took = []
        for _ in range(n):
            cur.execute("BEGIN IMMEDIATE")
            t = time.perf_counter()
            fn()
            took.append(time.perf_counter() - t)
            cur.execute("COMMIT")
        print(f"  {label:<58}{statistics.median(took) * 1e6:>7.1f}")

    # What the automatic checkpoints cost: per-message put with the default
    # wal_autocheckpoint (1000 pages) and with a larger one.
    print("\nper-message put through the API, msgs/s, by wal_autocheckpoint (pages)")
    for pages in (1000, 10_000, 1000, 10_000):
        cur.execute(f"PRAGMA wal_autocheckpoint = {pages}").fetchall()
        cur.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        t = time.perf_counter()
        for i in range(n):
            q.put({"n": i})
        print(f"  {pages:>6,}: {n / (time.perf_counter() - t):>9,.0f}")
    db.close()
    raw.close()
