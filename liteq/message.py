"""A message: what :meth:`liteq.Queue.get` claims and :meth:`liteq.Queue.peek` reads,
with the verbs that finish it (they go to the queue that claimed it, fenced by the
lease token)."""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from . import codec
from .backends.records import STATE_NAMES, MessageRecord
from .errors import SerializationError
from .validate import UNSET

if TYPE_CHECKING:
    from .queue import Queue

__all__ = ["Message", "codec_error", "inspectable"]


class Message:
    """One message, as claimed by :meth:`Queue.get` (or read by :meth:`Queue.peek`).

    Use it as a context manager to ack on success and nack on an exception::

        with q.get(wait=5) as msg:
            handle(msg.payload)
    """

    __slots__ = (
        "id", "queue", "payload", "headers", "priority", "run_at", "attempts",
        "enqueued_at", "lease_until", "token", "key", "state", "error", "origin",
        "finished_at", "cancel_requested", "decode_error", "owner", "_settled",
    )

    def __init__(self, q: Queue, rec: MessageRecord, payload: Any = UNSET) -> None:
        #: The :class:`Queue` object that read or claimed it (its ack, nack ... go there).
        self.owner: Queue = q
        self.id: int = rec.id
        self.queue: str = q.name
        #: Why the stored payload or headers could not be decoded (None when they could).
        self.decode_error: str | None = None
        self.payload: Any = codec.decode(rec.payload) if payload is UNSET else payload
        headers = rec.headers
        try:
            self.headers: dict[str, Any] = codec.decode(headers) if headers is not None else {}
        except SerializationError as exc:
            if payload is UNSET:
                raise  # a claim buries it; peek and message() pass a payload and go on
            self.headers = {}
            self.decode_error = f"headers: {exc}"
        self.priority: int = rec.priority
        self.run_at: float = rec.run_at
        self.attempts: int = rec.attempts
        self.enqueued_at: float = rec.enqueued_at
        self.lease_until: float | None = rec.lease_until
        self.token: int | None = rec.token
        self.key: str | None = rec.key
        self.state: str = STATE_NAMES[rec.state]
        self.error: str | None = rec.error
        self.finished_at: float | None = rec.finished_at
        self.origin: str | None = rec.origin
        self.cancel_requested: bool = bool(rec.cancel)
        self._settled = False

    @classmethod
    def from_claimed(cls, q: Queue, row: Sequence[Any], lease_until: float) -> Message:
        """A message as the claim returned it: a plain tuple in
        :class:`~liteq.backends.records.ClaimedRow` order, unpacked once (the hot path)."""
        (mid, token, attempts, blob, headers, priority, run_at, enqueued_at, key, _rank,
         error, origin) = row
        self = cls.__new__(cls)
        self.owner = q
        self.id = mid
        self.queue = q.name
        self.payload = codec.decode(blob)
        self.headers = codec.decode(headers) if headers is not None else {}
        self.priority = priority
        self.run_at = run_at
        self.attempts = attempts
        self.enqueued_at = enqueued_at
        self.lease_until = lease_until
        self.token = token
        self.key = key
        self.state = "leased"
        self.error = error
        self.finished_at = None
        self.origin = origin
        self.cancel_requested = False
        self.decode_error = None
        self._settled = False
        return self

    @property
    def queue_id(self) -> int:
        """The id of the queue it was read or claimed from."""
        return self.owner.id

    @property
    def routing_key(self) -> str | None:
        """The key a topic message was published with (None for a plain put)."""
        key = self.headers.get("routing_key")
        return key if isinstance(key, str) else None

    @property
    def receipt(self) -> str:
        """``"ID:TOKEN"``: enough to ack this delivery from anywhere (e.g. the CLI)."""
        return f"{self.id}:{self.token}"

    def ack(self) -> None:
        """Finish the message (deleted, or kept as done for the queue's retention).

        A workflow job acked here releases its dependents only when the queue keeps
        finished messages (``retention`` > 0); otherwise they stay waiting (run
        workflow jobs through the worker)."""
        self.owner.ack(self)

    def nack(self, delay: float | None = None, error: str | None = None) -> None:
        """Give the message back for another delivery after *delay* seconds (the
        queue's backoff when None); past ``max_attempts`` it goes dead with *error*."""
        self.owner.nack(self, delay=delay, error=error)

    def extend(self, seconds: float) -> None:
        """Renew the lease: it now ends *seconds* from now."""
        self.owner.extend(self, seconds)

    def fail(self, reason: str) -> None:
        """Send the message to the dead letter place now, with *reason*; no retries."""
        self.owner.fail(self, reason)

    def __enter__(self) -> Message:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._settled:
            return
        if exc is None:
            self.ack()
        else:
            self.nack(error=f"{type(exc).__name__}: {exc}")

    def __repr__(self) -> str:
        return (
            f"<Message id={self.id} queue={self.queue!r} state={self.state} "
            f"attempts={self.attempts} payload={self.payload!r:.60}>"
        )


def codec_error(exc: Exception) -> str:
    return f"<{exc}>"


def inspectable(q: Queue, rec: MessageRecord) -> Message:
    """A message read for looking at (peek, show): one whose stored bytes do not
    decode still comes back, with ``decode_error`` saying why."""
    try:
        payload, error = codec.decode(rec.payload), None
    except SerializationError as exc:
        payload, error = codec_error(exc), f"payload: {exc}"
    msg = Message(q, rec, payload=payload)  # undecodable headers: noted, not raised
    if error is not None:
        msg.decode_error = error if msg.decode_error is None else f"{error}; {msg.decode_error}"
    return msg
