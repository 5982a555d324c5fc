"""liteq on PostgreSQL, through its public API: the adapter of ``liteq_queue.py`` with
a ``postgresql://`` URL in place of the file (nothing else differs for the user)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import liteq

from .pg_base import PgPeer

FILL_CHUNK = 10_000


class LiteqPg(PgPeer):
    name = "liteq"
    dist = None  # this checkout (git commit reported instead)
    semantics = "get = claim with a lease token (FOR UPDATE SKIP LOCKED); ack = DELETE fenced by the token"
    default_sync = "durability='normal' (synchronous_commit=off) is the default"
    how_set = "connect(url, durability='normal'|'full') (public API)"
    codec = "CBOR (cbor2), inside liteq"
    batch_put = True
    batch_get = True
    wakes = True  # LISTEN/NOTIFY

    def __init__(self, url: str, sync: str) -> None:
        super().__init__(url, sync)
        self.db = liteq.connect(url, durability=sync.lower())
        self.q = self.db.queue("bench")

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

    def ident(self, handle: Any) -> Any:
        return handle.id

    def wait_get(self, timeout: float) -> Any:
        return self.q.get(wait=timeout)

    def fill(self, payloads: Sequence[dict[str, Any]]) -> None:
        for i in range(0, len(payloads), FILL_CHUNK):
            self.q.put_many(payloads[i:i + FILL_CHUNK])

    def show(self, name: str) -> str:
        return str(self.db.execute(f"SHOW {name}")[0][0])

    def close(self) -> None:
        self.db.close()
