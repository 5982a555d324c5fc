"""huey's SQLite storage (``huey.storage.SqliteStorage``): ``enqueue`` / ``dequeue``.

``dequeue`` SELECTs the first task and DELETEs it in one ``begin exclusive``
transaction: the message is gone when it is handed out, so there is no ack and a
consumer that dies mid-task loses it (at-most-once). huey has no batch enqueue or
dequeue, and its transaction helper cannot be nested around ``enqueue`` (each call
runs its own ``begin exclusive``), so the batch rows are n/a.

synchronous: ``fsync=None`` (the default) leaves SQLite's compiled-in default, FULL
for the standard library's sqlite3 here; ``fsync=True`` sets FULL and ``fsync=False``
OFF. NORMAL is not offered: the harness gets it by subclassing the storage and
running ``PRAGMA synchronous=NORMAL`` on each new connection.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import cbor2
from huey.storage import SqliteStorage

from .base import Peer


class NormalSyncStorage(SqliteStorage):
    """SqliteStorage with ``synchronous=NORMAL`` (huey's API offers only FULL or OFF)."""

    def _create_connection(self) -> Any:
        conn = super()._create_connection()
        conn.execute("pragma synchronous=NORMAL")
        return conn


def storage(filename: str, sync: str, name: str = "bench") -> SqliteStorage:
    """huey's SQLite storage at *sync*: FULL through its public ``fsync=True``."""
    if sync == "FULL":
        return SqliteStorage(name, filename=filename, fsync=True)
    return NormalSyncStorage(name, filename=filename)


class HueyStorage(Peer):
    name = "huey"
    dist = "huey"
    semantics = "get = dequeue (SELECT + DELETE: no ack, at-most-once); ack = nothing"
    default_sync = "fsync=None leaves SQLite's compiled-in default"
    how_set = "FULL: fsync=True; NORMAL: not in the API (subclass sets the PRAGMA)"
    codec = "CBOR (cbor2) bytes (the storage API takes bytes)"

    def __init__(self, directory: str, sync: str) -> None:
        super().__init__(directory, sync)
        self.path = os.path.join(directory, "huey.db")
        self.storage = storage(self.path, sync)

    def put(self, payload: dict[str, Any]) -> None:
        self.storage.enqueue(cbor2.dumps(payload))

    def get(self) -> Any:
        return self.storage.dequeue()

    def ack(self, handle: Any) -> None:
        pass  # dequeue already deleted it

    def payload(self, handle: Any) -> dict[str, Any]:
        return cbor2.loads(handle)

    def fill(self, payloads: Sequence[dict[str, Any]]) -> None:
        # The rows enqueue() writes, in one transaction (set-up only, untimed).
        rows = [(self.storage.name, cbor2.dumps(p), 0) for p in payloads]
        with self.storage.db(commit=True) as curs:
            curs.executemany("insert into task (queue, data, priority) values (?, ?, ?)", rows)

    def connection(self) -> Any:
        return self.storage.conn

    def close(self) -> None:
        self.storage.close()
