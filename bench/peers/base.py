"""The interface every compared system implements, and the shared polling wait."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

#: Systems without a cross-process wake-up are polled by the harness with this
#: backoff (the same 1 ms -> 50 ms doubling liteq uses when inotify is missing).
POLL_MIN = 0.001
POLL_MAX = 0.05

SYNC_NAMES = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


class Peer:
    """One queue system opened on one file (or directory) at one ``synchronous``.

    ``get`` claims one message without waiting and returns a handle (or None);
    ``ack`` finishes it. Systems without a batch API set ``batch_put`` /
    ``batch_get`` False and the harness reports those rows as n/a.
    """

    #: name in the tables
    name = ""
    #: pip distribution name (for the versions block), or None
    dist: str | None = None
    #: what "get" and "ack" mean for this system
    semantics = ""
    #: why synchronous is what it is when the user sets nothing, and how to change it
    default_sync = ""
    how_set = ""
    #: payload encoding used (the API decides: bytes, str or any object)
    codec = ""
    batch_put = False
    batch_get = False
    #: True when waiting consumers are woken across processes (not polled)
    wakes = False

    def __init__(self, directory: str, sync: str) -> None:
        self.directory = directory
        self.sync = sync

    # -- the operations measured ------------------------------------------------------

    def put(self, payload: dict[str, Any]) -> None:
        raise NotImplementedError

    def put_many(self, payloads: Sequence[dict[str, Any]]) -> None:
        raise NotImplementedError

    def get(self) -> Any:
        raise NotImplementedError

    def ack(self, handle: Any) -> None:
        raise NotImplementedError

    def get_many(self, n: int) -> list[Any]:
        raise NotImplementedError

    def ack_many(self, handles: list[Any]) -> None:
        raise NotImplementedError

    def payload(self, handle: Any) -> dict[str, Any]:
        raise NotImplementedError

    def wait_get(self, timeout: float) -> Any:
        """Claim one message, waiting up to *timeout* seconds: polled with backoff."""
        deadline = time.monotonic() + timeout
        delay = POLL_MIN
        while True:
            handle = self.get()
            if handle is not None:
                return handle
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            time.sleep(min(delay, left))
            delay = min(delay * 2, POLL_MAX)

    # -- setting up ---------------------------------------------------------------------

    def fill(self, payloads: Sequence[dict[str, Any]]) -> None:
        """Add ready messages fast (untimed set-up for the claim-time workload)."""
        self.put_many(payloads)

    def connection(self) -> Any:
        """The SQLite connection (apsw or sqlite3) to read settings back from."""
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        """synchronous and journal_mode as the live connection reports them."""
        conn = self.connection()
        sync = conn.execute("PRAGMA synchronous").fetchall()[0][0]
        mode = conn.execute("PRAGMA journal_mode").fetchall()[0][0]
        return {"synchronous": SYNC_NAMES.get(sync, str(sync)), "journal_mode": str(mode).upper()}

    def close(self) -> None:
        raise NotImplementedError
