"""``connection=`` on the write verbs a web application calls inside its own transaction
(``Queue.put``, ``Queue.put_many``, ``Topic.publish``, ``Task.enqueue``, ``Job.cancel``):
:func:`on_connection`, one rule for every engine, decided by the engine's capabilities.

* An engine with ``capabilities.foreign_connection`` (PostgreSQL) runs the verb on the
  application's own driver connection, inside its open transaction
  (``Backend.using``): the application's rows and its jobs commit together.
* Any other engine (SQLite) takes only its own connection of this thread
  (``db.connection``), where every verb runs anyway, so it changes nothing; any other
  object is refused: a second connection to the same file cannot share liteq's
  transaction, and the SQLite outbox is ``db.transaction()`` with ``db.execute()``.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

from .backends.base import Backend
from .errors import InvalidArgument

__all__ = ["on_connection"]


def on_connection(backend: Backend, connection: Any) -> AbstractContextManager[Any]:
    """A context in which this thread's verbs run on *connection* (see the module
    docstring); InvalidArgument or StorageError, before anything is written, for a
    connection the engine cannot use."""
    if connection is None:
        return nullcontext()
    if backend.capabilities.foreign_connection:
        return backend.using(connection)
    if connection is backend.connection():
        return nullcontext()
    kind = f"{type(connection).__module__}.{type(connection).__qualname__}"
    raise InvalidArgument(
        f"connection= on {backend.capabilities.engine} takes only liteq's own connection "
        f"of this thread (db.connection), got {kind}: another connection cannot share "
        f"liteq's transaction. Run your SQL with db.execute() inside "
        f"'with db.transaction():' to commit it together with the put"
    )
