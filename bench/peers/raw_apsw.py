"""The limit: the minimal SQL of a queue in raw apsw (mirrors ``bench_core.RawQueue``).

One table, a partial index on ready rows, INSERT; a one-statement claim
(``UPDATE ... WHERE id IN (SELECT ... LIMIT n) RETURNING``) in ``BEGIN IMMEDIATE``;
DELETE guarded by the token. No leases kept, no attempts, no dead letters, no
stats. It gets the same busy handler policy as liteq (sleep 0.1 ms for the first
five retries, then ~1 ms with jitter), the best one known (DESIGN.md), so that
multi-process rows measure the SQL rather than a worse lock wait. Its file has
liteq's page size (``PAGE_SIZE``, 2,048; SQLite's default is 4,096), like WAL and
synchronous a setting of the file, so that ratios measure the SQL and the code.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Sequence
from typing import Any

import apsw
import cbor2

from liteq.backends.sqlite.base import PAGE_SIZE

from .base import Peer

BUSY_TIMEOUT = 10.0

SQL_INSERT = "INSERT INTO q (state, priority, run_at, payload) VALUES (0, 0, ?, ?)"
SQL_CLAIM = (
    "UPDATE q SET state = 2, token = random(), lease_until = ? WHERE id IN "
    "(SELECT id FROM q WHERE state = 0 ORDER BY priority DESC, run_at, id LIMIT ?) "
    "RETURNING id, token, payload"
)
SQL_DELETE = "DELETE FROM q WHERE id = ? AND token = ? AND state = 2"


def busy_handler() -> Any:
    start = [0.0]

    def handler(count: int) -> bool:
        now = time.monotonic()
        if count == 0:
            start[0] = now
        elif now - start[0] >= BUSY_TIMEOUT:
            return False
        time.sleep(0.0001 if count < 5 else random.uniform(0.0005, 0.0015))
        return True

    return handler


class RawApsw(Peer):
    name = "raw"
    dist = "apsw"
    semantics = "get = one-statement claim (UPDATE ... RETURNING); ack = DELETE by id+token"
    default_sync = "the apsw wheel's SQLite is compiled with FULL"
    how_set = "PRAGMA synchronous"
    codec = "CBOR (cbor2)"
    batch_put = True
    batch_get = True

    def __init__(self, directory: str, sync: str) -> None:
        super().__init__(directory, sync)
        path = os.path.join(directory, "raw.db")
        self.conn = apsw.Connection(path)
        self.conn.set_busy_handler(busy_handler())
        # liteq's page size (a setting of the file, like WAL and synchronous): the limit
        # measures the SQL, not a different page size. Only takes on a new file.
        self.conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
        self.conn.execute("PRAGMA journal_mode=WAL").fetchall()
        self.conn.execute(f"PRAGMA synchronous={sync}")
        self.cur = self.conn.cursor()
        self.cur.execute("BEGIN IMMEDIATE")
        self.cur.execute(
            "CREATE TABLE IF NOT EXISTS q (id INTEGER PRIMARY KEY AUTOINCREMENT, "
            "state INTEGER NOT NULL, priority INTEGER NOT NULL, run_at REAL NOT NULL, "
            "payload BLOB NOT NULL, lease_until REAL, token INTEGER)"
        )
        self.cur.execute(
            "CREATE INDEX IF NOT EXISTS q_ready ON q (priority DESC, run_at, id) WHERE state = 0"
        )
        self.cur.execute("COMMIT")

    def put(self, payload: dict[str, Any]) -> None:
        cur = self.cur
        cur.execute("BEGIN IMMEDIATE")
        cur.execute(SQL_INSERT, (time.time(), cbor2.dumps(payload)))
        cur.execute("COMMIT")

    def put_many(self, payloads: Sequence[dict[str, Any]]) -> None:
        now = time.time()
        cur = self.cur
        cur.execute("BEGIN IMMEDIATE")
        cur.executemany(SQL_INSERT, [(now, cbor2.dumps(p)) for p in payloads])
        cur.execute("COMMIT")

    def get_many(self, n: int) -> list[Any]:
        cur = self.cur
        cur.execute("BEGIN IMMEDIATE")
        rows = cur.execute(SQL_CLAIM, (time.time() + 30, n)).fetchall()
        cur.execute("COMMIT")
        return [(i, t, cbor2.loads(p)) for i, t, p in rows]

    def get(self) -> Any:
        rows = self.get_many(1)
        return rows[0] if rows else None

    def ack_many(self, handles: list[Any]) -> None:
        cur = self.cur
        cur.execute("BEGIN IMMEDIATE")
        cur.executemany(SQL_DELETE, [(i, t) for i, t, _ in handles])
        cur.execute("COMMIT")

    def ack(self, handle: Any) -> None:
        cur = self.cur
        cur.execute("BEGIN IMMEDIATE")
        cur.execute(SQL_DELETE, handle[:2])
        cur.execute("COMMIT")

    def payload(self, handle: Any) -> dict[str, Any]:
        return handle[2]

    def connection(self) -> Any:
        return self.conn

    def close(self) -> None:
        self.conn.close()
