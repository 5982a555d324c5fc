"""The one exception tree of liteq.

Every exception liteq raises on purpose derives from :class:`LiteqError`, so an
application can catch them all in one place::

    LiteqError
    ├── InvalidArgument      (also ValueError)  bad name, negative delay, max_depth < 1 ...
    ├── SerializationError   (also TypeError)   a payload cbor2 cannot encode or decode
    ├── PayloadTooLarge      (also ValueError)  an encoded payload over the size limit
    ├── QueueFull            (also queue.Full)  put/publish at max_depth; nothing written
    ├── LeaseLost                               ack/nack/extend/fail with a stale token
    ├── SchemaError                             a file from a newer liteq schema
    ├── ScheduleError        (also ValueError)  bad cron expression or time zone
    ├── StorageError                            SQLite said no: I/O error, disk full ...
    │   ├── DatabaseBusy                        the write lock stayed taken past busy_timeout
    │   └── ConnectionLost                      PostgreSQL: the server went away mid-call
    │   (defined in job.py, about jobs:)
    ├── JobNotFound          (also LookupError) no job with that id
    ├── JobFailed                               job.result() of a failed job
    ├── JobCancelled                            job.result() of a cancelled job
    ├── NoResult                                the task stores no result
    └── ResultTimeout        (also TimeoutError) job.result(wait=...) ran out

Flow signals are not errors and live in running.py: ``Retry``, ``Fail``, ``Cancelled``
(raised by ``checkpoint()``) and ``TaskTimeout`` (a BaseException, so a task's
``except Exception`` cannot swallow it).
"""

from __future__ import annotations

import queue as _stdlib_queue

__all__ = [
    "LiteqError",
    "InvalidArgument",
    "SerializationError",
    "PayloadTooLarge",
    "QueueFull",
    "LeaseLost",
    "SchemaError",
    "ScheduleError",
    "StorageError",
    "DatabaseBusy",
    "ConnectionLost",
]


class LiteqError(Exception):
    """Root of every exception liteq raises on purpose."""


class InvalidArgument(LiteqError, ValueError):
    """An argument is outside what liteq accepts; the message says what is allowed."""


class SerializationError(LiteqError, TypeError):
    """A value cbor2 cannot encode (naming the type), or stored bytes that do not decode."""


class PayloadTooLarge(LiteqError, ValueError):
    """The encoded payload is larger than the database's ``max_payload``."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"payload is {size} bytes encoded; the limit is {limit} bytes "
            f"(raise it with liteq.connect(..., max_payload=N))"
        )
        self.size = size
        self.limit = limit


class QueueFull(LiteqError, _stdlib_queue.Full):
    """A put or publish met a queue at its ``max_depth``. Nothing was written.

    Also a :class:`queue.Full`, so code that catches the standard library's
    exception keeps working.
    """

    def __init__(self, queue: str, depth: int, max_depth: int, extra: int = 1) -> None:
        what = "1 more message" if extra == 1 else f"{extra} more messages"
        super().__init__(
            f"queue {queue!r} is full: depth {depth} of max_depth {max_depth}, "
            f"no room for {what}"
        )
        self.queue = queue
        self.depth = depth
        self.max_depth = max_depth
        self.extra = extra


class LeaseLost(LiteqError):
    """The lease token is stale: the lease ran out and the message was taken again,
    or the message was finished, purged or cancelled. Nothing was changed."""

    def __init__(self, message: str, ids: list[int] | None = None) -> None:
        super().__init__(message)
        self.ids = ids or []

    @classmethod
    def on(cls, ids: list[int]) -> LeaseLost:
        """The error for stale tokens on messages *ids* (the first ten are named)."""
        shown = ", ".join(map(str, ids[:10]))
        return cls(f"lease lost on message(s) {shown}: the token is stale (the lease ran out "
                   f"and the message was claimed again, or it was finished, cancelled or "
                   f"purged); nothing changed", ids)


class SchemaError(LiteqError):
    """The database file was written by a newer liteq (its schema version is higher)."""


class ScheduleError(LiteqError, ValueError):
    """A cron expression, time zone or schedule definition is invalid."""


class StorageError(LiteqError):
    """SQLite reported an error (I/O error, disk full, corrupt file ...).

    The operation that met it was rolled back.
    """


class DatabaseBusy(StorageError):
    """Another connection held the write lock for longer than ``busy_timeout``; on
    PostgreSQL also a deadlock or serialization failure the server resolved by rolling
    this call back (:attr:`rolled_back`: nothing of it was committed)."""

    #: The server rolled the call back (PostgreSQL deadlock or serialization failure):
    #: trying it again is safe. Outside ``db.transaction()`` liteq does so once itself.
    rolled_back = False


class ConnectionLost(StorageError):
    """PostgreSQL: the connection to the server was lost during the call (a server
    restart, ``pg_terminate_backend``, the network). The next call opens a new one.

    :attr:`maybe_committed` is False when nothing of the call can have been committed
    (it was rolled back, or never reached the server) and True when its COMMIT may have
    happened before the connection went (a put whose answer was lost): retry such a put
    with a dedup ``key``, so that a second try returns the first one's id instead of
    adding a copy. Reads and lease-token-guarded writes are retried once on a new
    connection before this is raised (DESIGN-NOTES.md, "A lost connection").
    """

    def __init__(self, message: str, maybe_committed: bool = False) -> None:
        super().__init__(message)
        #: True if the call's COMMIT may have happened (its outcome is unknown).
        self.maybe_committed = maybe_committed
