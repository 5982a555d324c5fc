"""liteq itself, through its public API (``Queue.put/get/ack``, ``put_many``,
``get_many/ack_many``)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import liteq

from .base import Peer

FILL_CHUNK = 10_000


class LiteqVerbs:
    """The measured operations through liteq's public API, on ``self.q`` (a queue of
    ``self.db``): the same on either engine."""

    name = "liteq"
    dist: str | None = None  # this checkout (git commit reported instead)
    codec = "CBOR (cbor2), inside liteq"
    batch_put = True
    batch_get = True
    wakes = True  # inotify on SQLite's -wal file, LISTEN/NOTIFY on PostgreSQL
    db: Any
    q: Any

    def put(self, payload: dict[str, Any]) -> None:
        self.q.put(payload)

    def put_many(self, payloads: Sequence[dict[str, Any]]) -> None:
        self.q.put_many(payloads)

    def get(self) -> Any:
        return self.q.get()

    def ack(self, handle: Any) -> None:
        handle.ack()

    def get_many(self, n: int) -> list[Any]:
        return self.q.get_many(n)

    def ack_many(self, handles: list[Any]) -> None:
        self.q.ack_many(handles)

    def payload(self, handle: Any) -> dict[str, Any]:
        return handle.payload

    def wait_get(self, timeout: float) -> Any:
        return self.q.get(wait=timeout)

    def fill(self, payloads: Sequence[dict[str, Any]]) -> None:
        for i in range(0, len(payloads), FILL_CHUNK):
            self.q.put_many(payloads[i:i + FILL_CHUNK])

    def close(self) -> None:
        self.db.close()


class LiteqQueue(LiteqVerbs, Peer):
    semantics = "get = claim with a lease token; ack = DELETE fenced by the token"
    default_sync = "durability='normal' is the default"
    how_set = "connect(durability='normal'|'full') (public API)"
    #: A clock for the database (None: the real one); ``instructions.py`` sets one
    #: that does not depend on how fast the process runs.
    clock: Callable[[], float] | None = None

    def __init__(self, directory: str, sync: str) -> None:
        super().__init__(directory, sync)
        self.db = liteq.connect(os.path.join(directory, "liteq.db"), durability=sync.lower(),
                                clock=self.clock)
        self.q = self.db.queue("bench")

    def connection(self) -> Any:
        return self.db.connection
