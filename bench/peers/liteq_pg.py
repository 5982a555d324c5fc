"""liteq on PostgreSQL, through its public API: the adapter of ``liteq_queue.py`` with
a ``postgresql://`` URL in place of the file (nothing else differs for the user)."""

from __future__ import annotations

from typing import Any

import liteq

from .liteq_queue import LiteqVerbs
from .pg_base import PgPeer


class LiteqPg(LiteqVerbs, PgPeer):
    semantics = "get = claim with a lease token (FOR UPDATE SKIP LOCKED); ack = DELETE fenced by the token"
    default_sync = "durability='normal' (synchronous_commit=off) is the default"
    how_set = "connect(url, durability='normal'|'full') (public API)"

    def __init__(self, url: str, sync: str) -> None:
        super().__init__(url, sync)
        self.db = liteq.connect(url, durability=sync.lower())
        self.q = self.db.queue("bench")

    def ident(self, handle: Any) -> Any:
        return handle.id

    def show(self, name: str) -> str:
        return str(self.db.execute(f"SHOW {name}")[0][0])
