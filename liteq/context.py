"""What liteq's domain objects (queues, topics, tasks, jobs, schedules, the shell task)
need from the database they belong to: :class:`Context`.

A protocol, so that ``queue.py``, ``topic.py``, ``task.py``, ``scheduler.py`` and
``shell.py`` never import ``database.py``, which imports them: dependencies run one
way, from the facade (:class:`liteq.Database`, which satisfies this protocol) to the
domain objects to the backend interface (issue 17). Methods that hand back domain
objects are typed ``Any`` here for the same reason; the domain modules annotate what
they return.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, Protocol

from .backends.base import Backend, Waiter
from .backends.records import QueueRecord
from .turns import Turn

__all__ = ["Context"]


class Context(Protocol):
    """The part of :class:`liteq.Database` that domain objects use."""

    #: The storage engine: every verb of :class:`liteq.backends.Backend`.
    backend: Backend
    #: Where the database is, as users name it (for messages and reprs).
    path: str
    #: The largest encoded payload accepted, in bytes.
    max_payload: int
    #: The tasks registered on this database, by name (``liteq.task.registry``).
    tasks: dict[str, Any]

    def clock(self) -> float:
        """The current time as liteq sees it."""
        ...

    def waiter(self) -> Waiter:
        """This thread's waiter, woken when another connection commits."""
        ...

    def turn(self, key: str) -> Turn | None:
        """This thread's place in the turns of the consumers waiting on *key*."""
        ...

    def transaction(self) -> AbstractContextManager[Any]:
        """The application's transaction: everything inside commits together."""
        ...

    def queue(self, name: str) -> Any:
        """The :class:`~liteq.Queue` *name*, created on first use."""
        ...

    def adopt(self, record: QueueRecord) -> Any:
        """The :class:`~liteq.Queue` for a queue record the backend returned."""
        ...

    def forget(self, name: str) -> None:
        """Drop the cached queue *name* (it was deleted)."""
        ...

    def task(self, fn: Any = None, /, **options: Any) -> Any:
        """Register a function as a task (``@db.task``)."""
        ...
