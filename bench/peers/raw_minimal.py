"""The reference: the *minimal* queue in raw apsw (issue 23), what DESIGN.md's targets
are measured against.

One table ``(id, priority, state, lease_until, payload)``, one partial index on the
ready rows, and nothing else: a put is one autocommit ``INSERT``; a claim is one
autocommit ``UPDATE ... WHERE id = (SELECT ... LIMIT 1) RETURNING`` (``id IN (SELECT
... LIMIT n)`` for a batch); an ack is one autocommit ``DELETE`` by id. No delays, no
lease tokens (so no fencing), no attempts, no dead letters, no dedup keys, no depth
counter, no stats, and ids may be reused after a delete (no AUTOINCREMENT). A batch
put is an ``executemany`` INSERT inside ``BEGIN IMMEDIATE``.

Same file settings as liteq (page size, WAL, the given ``synchronous``) and the same
busy handler as ``raw_apsw.py``, so that ratios measure the SQL and the code.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import apsw
import cbor2

from liteq.backends.sqlite.base import PAGE_SIZE

from .base import Peer
from .raw_apsw import busy_handler

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS q (id INTEGER PRIMARY KEY, priority INTEGER NOT NULL, "
    "state INTEGER NOT NULL, lease_until REAL, payload BLOB NOT NULL)",
    "CREATE INDEX IF NOT EXISTS q_ready ON q (priority DESC, id) WHERE state = 0",
)
SQL_INSERT = "INSERT INTO q (priority, state, payload) VALUES (0, 0, ?)"
SQL_CLAIM = (
    "UPDATE q SET state = 1, lease_until = ?1 WHERE id = "
    "(SELECT id FROM q WHERE state = 0 ORDER BY priority DESC, id LIMIT 1) "
    "RETURNING id, payload"
)
SQL_CLAIM_MANY = (
    "UPDATE q SET state = 1, lease_until = ?1 WHERE id IN "
    "(SELECT id FROM q WHERE state = 0 ORDER BY priority DESC, id LIMIT ?2) "
    "RETURNING id, payload"
)
SQL_DELETE = "DELETE FROM q WHERE id = ?"


class RawMinimal(Peer):
    name = "raw-minimal"
    dist = "apsw"
    semantics = ("the minimal queue (issue 23): autocommit INSERT; get = one "
                 "UPDATE ... WHERE id = (SELECT ... LIMIT 1) RETURNING; ack = DELETE by id")
    default_sync = "the apsw wheel's SQLite is compiled with FULL"
    how_set = "PRAGMA synchronous"
    codec = "CBOR (cbor2)"
    batch_put = True
    batch_get = True

    def __init__(self, directory: str, sync: str) -> None:
        super().__init__(directory, sync)
        self.conn = apsw.Connection(os.path.join(directory, "raw-minimal.db"))
        self.conn.set_busy_handler(busy_handler())
        self.conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
        self.conn.execute("PRAGMA journal_mode=WAL").fetchall()
        self.conn.execute(f"PRAGMA synchronous={sync}")
        self.cur = self.conn.cursor()
        self.cur.execute("BEGIN IMMEDIATE")
        for sql in SCHEMA:
            self.cur.execute(sql)
        self.cur.execute("COMMIT")

    def put(self, payload: dict[str, Any]) -> None:
        self.cur.execute(SQL_INSERT, (cbor2.dumps(payload),))

    def put_many(self, payloads: Sequence[dict[str, Any]]) -> None:
        cur = self.cur
        cur.execute("BEGIN IMMEDIATE")
        cur.executemany(SQL_INSERT, [(cbor2.dumps(p),) for p in payloads])
        cur.execute("COMMIT")

    def get(self) -> Any:
        rows = self.cur.execute(SQL_CLAIM, (time.time() + 30,)).fetchall()
        return (rows[0][0], cbor2.loads(rows[0][1])) if rows else None

    def get_many(self, n: int) -> list[Any]:
        rows = self.cur.execute(SQL_CLAIM_MANY, (time.time() + 30, n)).fetchall()
        return [(i, cbor2.loads(p)) for i, p in rows]

    def ack(self, handle: Any) -> None:
        self.cur.execute(SQL_DELETE, (handle[0],))

    def ack_many(self, handles: list[Any]) -> None:
        if handles:
            marks = ",".join("?" * len(handles))
            self.cur.execute(f"DELETE FROM q WHERE id IN ({marks})", [h[0] for h in handles])

    def payload(self, handle: Any) -> dict[str, Any]:
        return handle[1]

    def connection(self) -> Any:
        return self.conn

    def close(self) -> None:
        self.conn.close()
