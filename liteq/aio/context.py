"""What the async queues, topics and jobs need from the async Database they belong to:
:class:`AsyncContext` (a protocol, so that they never import ``liteq.aio.database``,
which imports them; as :class:`liteq.context.Context` does for the sync objects)."""

from __future__ import annotations

from typing import Any, Protocol

from .. import database as sync_db
from .hub import Hub
from .runner import Runner

__all__ = ["AsyncContext"]


class AsyncContext(Protocol):
    """The part of :class:`liteq.aio.Database` that its objects use."""

    #: The sync Database underneath.
    sync: sync_db.Database
    #: The threads every database call runs on.
    runner: Runner
    #: The wake-up channel waiting calls sleep on.
    hub: Hub
    #: Where the database is, as users name it.
    path: str

    def wrap(self, q: Any) -> Any:
        """The async Queue of a sync one."""
        ...
