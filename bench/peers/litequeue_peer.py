"""litequeue's ``LiteQueue``: ``put`` / ``pop`` / ``done``.

``pop`` is one ``UPDATE ... WHERE rowid = (SELECT rowid ... WHERE status = READY
ORDER BY message_id LIMIT 1) RETURNING *`` in ``BEGIN IMMEDIATE``: atomic. Its
index is on ``status`` alone, so the ORDER BY sorts every ready row in a temporary
B-tree on each pop (O(ready)). ``done`` marks the row done and keeps it (until
``prune``). Messages are text: payloads are JSON. ``put`` can join the
``transaction()`` context (the batch put row loops inside one transaction); ``pop``
always opens its own transaction, so batch get+ack is n/a. No cross-process
wake-up: polled with the shared backoff.

synchronous: the constructor sets ``PRAGMA synchronous = NORMAL`` (its default);
FULL is set through the queue's public ``conn`` attribute.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from typing import Any

from litequeue import LiteQueue, uuid7

from .base import Peer


class LiteQueuePeer(Peer):
    name = "litequeue"
    dist = "litequeue"
    semantics = "get = pop (UPDATE ... RETURNING, atomic); ack = done (UPDATE status, row kept)"
    default_sync = "its constructor runs PRAGMA synchronous = NORMAL"
    how_set = "q.conn.execute('PRAGMA synchronous=...') (public attribute)"
    codec = "JSON text (the API takes str)"
    batch_put = True

    def __init__(self, directory: str, sync: str) -> None:
        super().__init__(directory, sync)
        self.q = LiteQueue(os.path.join(directory, "litequeue.db"), queue_name="bench")
        self.q.conn.execute(f"PRAGMA synchronous = {sync}")

    def put(self, payload: dict[str, Any]) -> None:
        self.q.put(json.dumps(payload))

    def put_many(self, payloads: Sequence[dict[str, Any]]) -> None:
        q = self.q
        with q.transaction(mode="IMMEDIATE"):
            for p in payloads:
                q.put(json.dumps(p))

    def get(self) -> Any:
        return self.q.pop()

    def ack(self, handle: Any) -> None:
        self.q.done(handle.message_id)

    def payload(self, handle: Any) -> dict[str, Any]:
        return json.loads(handle.data)

    def fill(self, payloads: Sequence[dict[str, Any]]) -> None:
        # The rows put() writes, in one transaction (set-up only, untimed).
        rows = [(json.dumps(p), uuid7(), time.time_ns()) for p in payloads]
        with self.q.transaction(mode="IMMEDIATE"):
            self.q.conn.executemany(
                f"INSERT INTO {self.q.table} (data, message_id, status, in_time, lock_time, "
                "done_time) VALUES (?, ?, 0, ?, NULL, NULL)",
                rows,
            )

    def connection(self) -> Any:
        return self.q.conn

    def close(self) -> None:
        self.q.close()
