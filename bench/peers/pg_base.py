"""What the PostgreSQL benchmark's systems share: a URL instead of a file, and
``synchronous_commit`` (PostgreSQL's durability knob) instead of ``synchronous``.

liteq's ``durability="normal"`` is ``synchronous_commit=off`` (a commit returns before
its WAL record is flushed: a server crash can lose the last few hundred milliseconds of
commits, never half of one), ``"full"`` is ``on``. Every system here runs at the one
the harness names, set the way its API allows, and read back from a live session.
"""

from __future__ import annotations

from typing import Any

from .base import Peer

#: liteq's durability name -> the synchronous_commit every system gets.
SYNC_COMMIT = {"NORMAL": "off", "FULL": "on"}


def session_options(sync: str) -> str:
    """libpq's ``options`` parameter setting *sync*'s ``synchronous_commit``."""
    return f"-c synchronous_commit={SYNC_COMMIT[sync.upper()]}"


class PgPeer(Peer):
    """A queue system on one PostgreSQL database (*url*) at liteq durability *sync*."""

    #: True when the system claims and acks only inside its own worker (procrastinate):
    #: the harness then times the worker instead of get + ack.
    worker_only = False

    def __init__(self, url: str, sync: str) -> None:
        super().__init__(url, sync)
        self.url = url

    def ident(self, handle: Any) -> Any:
        """The id of the message *handle* holds (None when the system does not say):
        tells one message delivered twice from two messages with the same payload."""
        return None

    def show(self, name: str) -> str:
        """The value of server setting *name* in one of this system's own sessions."""
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        return {"synchronous_commit": self.show("synchronous_commit"), "fsync": self.show("fsync")}
