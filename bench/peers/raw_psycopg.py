"""The limit on PostgreSQL: the minimal SQL of a queue in raw psycopg 3.

One table, one partial index on ready rows, and one statement per operation, each its
own transaction (autocommit) and prepared on the server (``prepare=True``):

* put: ``INSERT``; a batch: one ``INSERT ... SELECT FROM unnest(%s::bytea[])``;
* claim: ``UPDATE ... WHERE id = (SELECT ... FOR UPDATE SKIP LOCKED LIMIT 1)`` with a
  token from a sequence, ``RETURNING`` the payload; a batch claims ``LIMIT n`` rows in a
  CTE with one token for all of them;
* ack: ``DELETE ... WHERE id = %s AND token = %s`` (``id = ANY(%s)`` for a batch).

No leases kept (``lease_until`` is written, never read), no attempts, no dead letters,
no depth counter, no statistics: everything liteq does beyond this is its cost.

Waking: the plain put sends no ``NOTIFY`` (the minimal queue), so consumers that find
nothing are polled by the harness (1 ms doubling to 50 ms, as ``compare.py`` polls raw
apsw). Opened with ``wake=True`` (the latency row), every put also runs
``pg_notify`` in the same statement and a waiting consumer ``LISTEN``\\s.

:class:`RawPsycopgNotify` (``raw_notify``) is that waking queue in every row: the same
minimal SQL, a ``NOTIFY`` in every put, and consumers that wait on ``LISTEN`` instead of
polling. It is a reference beside the targets, not one: it shows what a queue that wakes
its consumers as liteq does pays for it (session 16: in the multi-process rows on this
2-core machine, the polling raw queue's consumers sleep up to 50 ms and let the producer
run; a waking queue's do not).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import cbor2
import psycopg

from .pg_base import PgPeer, session_options

CHANNEL = "raw_queue"
SCHEMA = [
    "CREATE TABLE IF NOT EXISTS q (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
    " state integer NOT NULL DEFAULT 0, priority bigint NOT NULL DEFAULT 0,"
    " run_at double precision NOT NULL, payload bytea NOT NULL,"
    " lease_until double precision, token bigint)",
    "CREATE INDEX IF NOT EXISTS q_ready ON q (priority DESC, run_at, id) WHERE state = 0",
    "CREATE SEQUENCE IF NOT EXISTS q_token CACHE 64",
]
SQL_PUT = "INSERT INTO q (run_at, payload) VALUES (%s, %s)"
SQL_PUT_NOTIFY = (
    "WITH i AS (INSERT INTO q (run_at, payload) VALUES (%s, %s) RETURNING 1)"
    f" SELECT pg_notify('{CHANNEL}', '') FROM i"
)
SQL_PUT_MANY = "INSERT INTO q (run_at, payload) SELECT %s, p FROM unnest(%s::bytea[]) AS u(p)"
SQL_CLAIM = (
    "UPDATE q SET state = 2, token = nextval('q_token'), lease_until = %s"
    " WHERE id = (SELECT id FROM q WHERE state = 0 ORDER BY priority DESC, run_at, id"
    " LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING id, token, payload"
)
SQL_CLAIM_MANY = (
    "WITH c AS (SELECT id FROM q WHERE state = 0 ORDER BY priority DESC, run_at, id"
    " LIMIT %s FOR UPDATE SKIP LOCKED), t AS (SELECT nextval('q_token') AS token)"
    " UPDATE q SET state = 2, token = t.token, lease_until = %s FROM c, t WHERE q.id = c.id"
    " RETURNING q.id, q.token, q.payload"
)
SQL_ACK = "DELETE FROM q WHERE id = %s AND token = %s"
SQL_ACK_MANY = "DELETE FROM q WHERE id = ANY(%s) AND token = %s"


class RawPsycopg(PgPeer):
    name = "raw"
    dist = "psycopg"
    semantics = "get = one-statement SKIP LOCKED claim with a token; ack = DELETE by id+token"
    default_sync = "the server's default (on)"
    how_set = "libpq options -c synchronous_commit=..."
    codec = "CBOR (cbor2)"
    batch_put = True
    batch_get = True

    def __init__(self, url: str, sync: str, wake: bool = False) -> None:
        super().__init__(url, sync)
        self.wakes = wake
        self.conn = psycopg.connect(url, autocommit=True, options=session_options(sync))
        self.cur = self.conn.cursor()
        for sql in SCHEMA:
            self.cur.execute(sql)
        self.sql_put = SQL_PUT_NOTIFY if wake else SQL_PUT
        self.listener: psycopg.Connection[Any] | None = None

    def put(self, payload: dict[str, Any]) -> None:
        self.cur.execute(self.sql_put, (time.time(), cbor2.dumps(payload)), prepare=True)

    def put_many(self, payloads: Sequence[dict[str, Any]]) -> None:
        self.cur.execute(SQL_PUT_MANY, (time.time(), [cbor2.dumps(p) for p in payloads]),
                         prepare=True)

    def get(self) -> Any:
        cur = self.cur
        cur.execute(SQL_CLAIM, (time.time() + 30,), prepare=True)
        row = cur.fetchone()
        return None if row is None else (row[0], row[1], cbor2.loads(row[2]))

    def ack(self, handle: Any) -> None:
        self.cur.execute(SQL_ACK, handle[:2], prepare=True)

    def get_many(self, n: int) -> list[Any]:
        cur = self.cur
        cur.execute(SQL_CLAIM_MANY, (n, time.time() + 30), prepare=True)
        return [(i, t, cbor2.loads(p)) for i, t, p in cur.fetchall()]

    def ack_many(self, handles: list[Any]) -> None:
        if handles:
            self.cur.execute(SQL_ACK_MANY, ([h[0] for h in handles], handles[0][1]),
                             prepare=True)

    def ident(self, handle: Any) -> Any:
        return handle[0]

    def payload(self, handle: Any) -> dict[str, Any]:
        return handle[2]

    def wait_get(self, timeout: float) -> Any:
        if not self.wakes:
            return super().wait_get(timeout)  # polled
        if self.listener is None:
            self.listener = psycopg.connect(self.url, autocommit=True)
            self.listener.execute(f"LISTEN {CHANNEL}")
        deadline = time.monotonic() + timeout
        while True:
            handle = self.get()
            if handle is not None:
                return handle
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            for _ in self.listener.notifies(timeout=left, stop_after=1):
                pass

    def show(self, name: str) -> str:
        return str(self.conn.execute(f"SHOW {name}").fetchone()[0])  # type: ignore[index]

    def close(self) -> None:
        if self.listener is not None:
            self.listener.close()
        self.conn.close()


class RawPsycopgNotify(RawPsycopg):
    name = "raw_notify"
    semantics = ("raw's statements; every put also runs pg_notify, and a consumer that "
                 "finds nothing waits on LISTEN (no polling)")

    def __init__(self, url: str, sync: str, wake: bool = True) -> None:
        super().__init__(url, sync, wake=True)
