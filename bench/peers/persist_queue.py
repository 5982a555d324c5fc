"""persist-queue's ``SQLiteAckQueue``: ``put`` / ``get`` / ``ack``.

``get`` SELECTs the first row with status < unack (no transaction around it), then
UPDATEs that row's status to unack by id, with no guard on its old status: two
processes can take the same row. ``ack`` marks the row acked and keeps it (until
``clear_acked_data``). ``get(block=True)`` waits on an in-process event, so a
consumer in another process only learns of new items by polling (10 s ticks);
the harness polls it with the shared backoff. No batch API; each put commits on
its own (the queue's ``auto_commit=False`` is refused for the ack queue), so the
batch rows are n/a. Payloads go through its default serializer, pickle.

synchronous: the queue opens its sqlite3 connection itself and sets only
``journal_mode=WAL``, so it runs at SQLite's default, FULL here; no option changes
it. The harness sets it on the queue's private connection (``_conn``, the only one
when ``multithreading=False``).
"""

from __future__ import annotations

import os
import pickle
import time
from collections.abc import Sequence
from typing import Any

from persistqueue import SQLiteAckQueue
from persistqueue.exceptions import Empty

from .base import Peer


class PersistQueue(Peer):
    name = "persist-queue"
    dist = "persist-queue"
    semantics = "get = SELECT then UPDATE status by id (unguarded); ack = UPDATE status (row kept)"
    default_sync = "not set by the library: SQLite's compiled-in default"
    how_set = "not in the API (harness sets the PRAGMA on the private _conn)"
    codec = "pickle (its default serializer)"

    def __init__(self, directory: str, sync: str) -> None:
        super().__init__(directory, sync)
        self.q = SQLiteAckQueue(os.path.join(directory, "persistqueue"))
        self.q._conn.execute(f"PRAGMA synchronous={sync}")

    def put(self, payload: dict[str, Any]) -> None:
        self.q.put(payload)

    def get(self) -> Any:
        try:
            return self.q.get(block=False, raw=True)
        except Empty:
            return None

    def ack(self, handle: Any) -> None:
        self.q.ack(handle)

    def payload(self, handle: Any) -> dict[str, Any]:
        return handle["data"]

    def fill(self, payloads: Sequence[dict[str, Any]]) -> None:
        # The rows put() writes, in one transaction (set-up only, untimed).
        now = time.time()
        rows = [(pickle.dumps(p), now) for p in payloads]
        conn = self.q._conn
        with conn:
            conn.executemany(
                f"INSERT INTO {self.q._table_name} (data, timestamp, status) VALUES (?, ?, 0)",
                rows,
            )
        self.q.total += len(rows)

    def connection(self) -> Any:
        return self.q._conn

    def close(self) -> None:
        self.q.close()
