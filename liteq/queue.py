"""Queues and messages: put, get, ack, nack, extend, fail, and the administration verbs.

A :class:`Queue` is a named FIFO ordered by priority (higher first), then due time,
then id. Its options live in the database file, so every process sees the same
ones. A claimed :class:`Message` carries a lease token; every later change to it
is fenced by that token (:class:`~liteq.LeaseLost` if it went stale).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any

from . import codec
from .backends.records import STATE_NAMES, MessageRecord, QueueRecord, state_named
from .context import Context
from .errors import InvalidArgument, LeaseLost, QueueFull, SerializationError
from .options import Backoff, QueueConfig
from .outbox import on_connection
from .queue_stats import stats_dict
from .validate import (
    MAX_EXTEND,
    PRIORITY_LIMIT,
    UNSET,
    check_id,
    check_positive_int,
    check_priority,
    check_seconds,
    check_text,
    short,
    validate_name,
)
from .wake import wait_and_claim

__all__ = ["Queue", "Message", "Backoff", "QueueFull", "validate_name"]

_new_object = object.__new__


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
    def from_claimed(cls, q: Queue, row: Sequence[Any], lease_until: float | None = None) -> Message:
        """A message as the claim returned it: a plain tuple in
        :class:`~liteq.backends.records.ClaimedRow` order, unpacked once (the hot path);
        without *lease_until*, the row carries it as a 13th field (``claim_one``)."""
        if lease_until is None:  # not a *star: that builds a list per message (~700 instructions)
            (mid, token, attempts, blob, headers, priority, run_at, enqueued_at, key, _rank,
             error, origin, lease_until) = row
        else:
            (mid, token, attempts, blob, headers, priority, run_at, enqueued_at, key, _rank,
             error, origin) = row
        self = _new_object(cls)  # not cls.__new__: a lookup through the type (~700 instructions)
        self.owner = q
        self.id = mid
        self.queue = q.name
        try:  # codec.decode without its call; it explains what went wrong
            self.payload = codec.loads(blob)
            self.headers = codec.loads(headers) if headers is not None else {}
        except Exception:  # decode() raises SerializationError for one of them
            self.payload, self.headers = codec.decode(blob), codec.decode(headers)
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

        A workflow job acked here succeeded with no result: its dependents are
        released in the same transaction and get None for it (the worker acks with
        the task's return value)."""
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


class Queue:
    """A durable named queue in a liteq database. Get one with ``db.queue(name)``."""

    def __init__(self, db: Context, rec: QueueRecord) -> None:
        self.db = db
        backend = self._backend = db.backend
        # The hot verbs, bound once: one attribute lookup per call instead of two.
        self._put_ready = backend.put_ready
        self._put_ready_many = backend.put_ready_many
        self._put_rows = backend.put
        self._claim_rows = backend.claim
        self._claim_one = backend.claim_one
        self._ack_rows = backend.ack
        self._ack_one = backend.ack_one
        self.id: int = rec.id
        self.name: str = rec.name
        self._config = QueueConfig.from_record(rec)
        self._config_at = time.monotonic()

    # -- options --------------------------------------------------------------------

    @property
    def config(self) -> QueueConfig:
        """The queue's stored options, re-read at most once a second."""
        if time.monotonic() - self._config_at > 1.0:
            self.refresh()
        return self._config

    def refresh(self) -> QueueConfig:
        """Re-read the stored options now."""
        row = self._backend.queue_row_by_id(self.id)
        if row is None:
            raise InvalidArgument(f"queue {self.name!r} was deleted")
        self._config = QueueConfig.from_record(row)
        self._config_at = time.monotonic()
        return self._config

    @property
    def max_depth(self) -> int | None:
        return self.config.max_depth

    # -- flow control -----------------------------------------------------------------

    def pause(self) -> None:
        """Stop handing out this queue's messages, in every process, until
        :meth:`resume`. Puts go on (back pressure still applies); messages already
        leased run to their end. The flag is stored with the queue and read inside
        every claim, so a worker that saw the queue running a moment ago claims
        nothing after this returns. Joins ``db.transaction()``."""
        self._set_paused(True)

    def resume(self) -> None:
        """Hand out this queue's messages again after :meth:`pause`; waiting
        consumers are woken at once, as by a put."""
        self._set_paused(False)

    @property
    def paused(self) -> bool:
        """Whether the queue is paused now (read from the database)."""
        return self.refresh().paused

    def _set_paused(self, paused: bool) -> None:
        if not self._backend.set_paused(self.id, paused):
            raise InvalidArgument(f"queue {self.name!r} was deleted")
        self.refresh()

    # -- put ------------------------------------------------------------------------

    def put(
        self,
        payload: Any,
        *,
        delay: float = 0,
        priority: int = 0,
        key: str | None = None,
        headers: dict[str, Any] | None = None,
        block: bool = False,
        timeout: float | None = None,
        rank: bytes | None = None,
        connection: Any = None,
    ) -> int:
        """Add one message; return its id (or, with *key*, the id of the unfinished
        message already holding that key).

        Returns only after COMMIT. At ``max_depth`` raises :class:`QueueFull` and
        writes nothing, unless *block* is true: then it waits up to *timeout*
        seconds (None: forever) for room.

        *rank* (advanced) orders messages of equal priority before their due time:
        bytes compared byte by byte, smaller first; ``liteq.compat`` uses it for
        LIFO and priority-queue order.

        *connection* (PostgreSQL) is the application's own open psycopg connection:
        the put runs inside its transaction, so the message becomes visible (and
        consumers are woken) when the application commits, and its rollback leaves
        nothing; liteq never commits or rolls back that transaction (on an idle
        autocommit connection the put commits on its own). Until the application
        commits, the put holds one of the queue's depth-counter rows, so a long
        transaction there keeps that share of ``max_depth`` room locked. On SQLite only
        ``db.connection`` (liteq's own) is taken, and changes nothing: use
        ``db.transaction()`` with ``db.execute()``. See README "Transactions".
        """
        if connection is not None:
            with on_connection(self._backend, connection):
                return self.put(payload, delay=delay, priority=priority, key=key,
                                headers=headers, block=block, timeout=timeout, rank=rank)
        if (
            delay == 0 and type(delay) is int and type(priority) is int
            and key is None and headers is None and rank is None and not block
            and -PRIORITY_LIMIT < priority < PRIORITY_LIMIT
        ):
            # The common case, with nothing else to check: the shortest path.
            return self._put_ready(self.id, priority, codec.encode(payload, self.db.max_payload))
        row = self._row(payload, delay, priority, key, headers, rank)
        if not block:
            return self._put_rows(self.id, [row])[0]
        return self._put_blocking([row], timeout)[0]

    def put_many(
        self,
        payloads: Iterable[Any],
        *,
        delay: float = 0,
        priority: int = 0,
        headers: dict[str, Any] | None = None,
        block: bool = False,
        timeout: float | None = None,
        connection: Any = None,
    ) -> list[int]:
        """Add many messages in one transaction: all of them, or (on any error,
        including QueueFull) none. Returns their ids in order. *connection*: the
        application's own connection and transaction, as for :meth:`put`."""
        if connection is not None:
            with on_connection(self._backend, connection):
                return self.put_many(payloads, delay=delay, priority=priority,
                                     headers=headers, block=block, timeout=timeout)
        items = list(payloads)
        if not items:
            return []
        limit = self.db.max_payload
        if (
            delay == 0 and type(delay) is int and type(priority) is int
            and headers is None and not block
            and -PRIORITY_LIMIT < priority < PRIORITY_LIMIT
        ):
            # The common batch, with nothing else to check (as put()'s shortest path).
            return self._put_ready_many(self.id, priority, codec.encode_many(items, limit))
        # Validate the shared options once, then encode each payload.
        first = self._row(items[0], delay, priority, None, headers, None)
        prio, _, run_at, _, head, _ = first
        encode = codec.encode
        rows = [first] + [(prio, None, run_at, encode(p, limit), head, None) for p in items[1:]]
        if not block:
            return self._put_rows(self.id, rows)
        return self._put_blocking(rows, timeout)

    def _row(
        self,
        payload: Any,
        delay: float,
        priority: int,
        key: str | None,
        headers: Any,
        rank: bytes | None,
    ) -> tuple[int, bytes | None, float, bytes, bytes | None, str | None]:
        d = check_seconds(delay, "delay")
        assert d is not None
        if key is not None and (not isinstance(key, str) or not key or len(key) > 1000):
            raise InvalidArgument(f"key must be a non-empty string of up to 1000 characters, got {short(key)}")
        check_text(key, "key", allow_none=True)
        if headers is not None and not isinstance(headers, dict):
            raise InvalidArgument(f"headers must be a dict or None, got {type(headers).__name__}")
        if rank is not None and not isinstance(rank, bytes):
            raise InvalidArgument(f"rank must be bytes or None, got {type(rank).__name__}")
        limit = self.db.max_payload
        return (
            check_priority(priority),
            rank,
            self._backend.clock() + d,
            codec.encode(payload, limit),
            codec.encode(headers, limit) if headers else None,
            key,
        )

    def _put_blocking(self, rows: list[Any], timeout: float | None) -> list[int]:
        t = check_seconds(timeout, "timeout", allow_none=True)
        deadline = None if t is None else time.monotonic() + t
        max_depth = self.config.max_depth
        if max_depth is not None and len(rows) > max_depth:
            depth, _ = self._backend.room(self.id)
            raise QueueFull(self.name, depth, max_depth, len(rows))  # can never fit
        waiter = self.db.waiter()
        while True:
            waiter.arm()
            try:
                return self._put_rows(self.id, rows)
            except QueueFull:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise
            # Room appears when a consumer acks, which writes the WAL: wake on it,
            # and poll anyway in case the hint is lost.
            waiter.wait(0.1 if left is None else min(left, 0.1))

    # -- get ------------------------------------------------------------------------

    def get(self, wait: float = 0) -> Message | None:
        """Claim the next due message, or None if there is none within *wait* seconds."""
        if wait == 0 and type(wait) is int:
            # self.config without the property's frame (~1k instructions per get+ack)
            config = self._config if time.monotonic() - self._config_at <= 1.0 else self.refresh()
            row = self._claim_one(self.id, config.lease)
            if row is None:
                return None
            try:
                return Message.from_claimed(self, row)
            except SerializationError as exc:
                self._bury(row, exc)  # then claim the next one, as get_many() does
        msgs = self.get_many(1, wait=wait)
        return msgs[0] if msgs else None

    def get_many(self, n: int, wait: float = 0) -> list[Message]:
        """Claim up to *n* due messages in one transaction (waiting up to *wait*
        seconds for at least one). Returns [] when there are none."""
        check_positive_int(n, "n")
        w = check_seconds(wait, "wait")
        assert w is not None
        if w == 0:
            return self._claim(n)
        deadline = time.monotonic() + w
        # Under load a message is there: claim before arming the waiter, whose arm()
        # drains the descriptor with system calls an immediate find does not need
        # (~3 us of a 36 us get+ack, measured).
        msgs = self._claim(n)
        waiter = self.db.waiter()
        if msgs:
            waiter.found()
            return msgs
        store, qid = self._backend, self.id
        return wait_and_claim(
            lambda: self._claim(n), lambda: store.probe(qid), lambda: store.wait_due(qid),
            store.clock, waiter, self.db.turn(str(qid)), deadline,
        )

    def _claim(self, n: int) -> list[Message]:
        lease = self.config.lease
        out: list[Message] = []
        while len(out) < n:
            rows, until = self._claim_rows(self.id, n - len(out), lease)
            if not rows:
                break
            make = Message.from_claimed
            try:  # the common case, every row decodes: one comprehension, no call per append
                out += [make(self, row, until) for row in rows]
                break
            except SerializationError:
                pass  # row by row: bury those that do not decode, then claim more
            for row in rows:
                try:
                    out.append(make(self, row, until))
                except SerializationError as exc:
                    self._bury(row, exc)
        return out

    def _bury(self, row: Sequence[Any], exc: SerializationError) -> None:
        # An undecodable payload can never succeed: bury it now, with the reason.
        try:
            mid, token, *_ = row  # ClaimedRow order
            self._backend.fail(self.id, mid, token, str(exc))
        except LeaseLost:
            pass

    # -- finishing ------------------------------------------------------------------

    def ack(self, msg: Message) -> None:
        """Finish *msg*; raise :class:`LeaseLost` (changing nothing) if its token is stale."""
        config = self._config if time.monotonic() - self._config_at <= 1.0 else self.refresh()
        lost = self._ack_one(self.id, msg.id, msg.token or 0, config.retention, True)
        msg._settled = True
        if lost:
            raise LeaseLost.on([msg.id])

    def ack_many(self, msgs: Iterable[Message]) -> None:
        """Finish many messages in one transaction. Those with a stale token are left
        unchanged and reported together in one :class:`LeaseLost` after the others
        were acked."""
        items = list(msgs)
        qid = self.id
        pairs = []
        for m in items:
            if m.owner.id != qid:
                raise InvalidArgument(f"message {m.id} belongs to queue {m.queue!r}, not {self.name!r}")
            pairs.append((m.id, m.token or 0))
        lost = self._ack_rows(qid, pairs, self.config.retention, True)
        for m in items:
            m._settled = True
        if lost:
            raise LeaseLost.on(lost)

    def nack(self, msg: Message, delay: float | None = None, error: str | None = None) -> None:
        """Give *msg* back for another delivery (see :meth:`Message.nack`)."""
        check_text(error, "error", allow_none=True)
        if delay is None:
            backoff = self.config.backoff
            self._backend.retry(self.id, msg.id, msg.token, backoff.delay, error)  # type: ignore[arg-type]
        else:
            d = check_seconds(delay, "delay")
            self._backend.retry(self.id, msg.id, msg.token, d, error)  # type: ignore[arg-type]
        msg._settled = True

    def extend(self, msg: Message, seconds: float) -> None:
        """Renew *msg*'s lease to end *seconds* from now."""
        s = check_seconds(seconds, "seconds")
        assert s is not None
        longest = max(MAX_EXTEND, self.config.lease)
        if s > longest:
            raise InvalidArgument(
                f"extend takes at most {longest:g} seconds (MAX_EXTEND, or the queue's lease if "
                f"longer), got {seconds!r}: a longer lease could not be told apart from one "
                f"left behind by a clock stepping back; extend again before it runs out")
        msg.lease_until = self._backend.extend(msg.id, msg.token, s)  # type: ignore[arg-type]

    def fail(self, msg: Message, reason: str) -> None:
        """Bury *msg* now with *reason* (see :meth:`Message.fail`)."""
        text = check_text(str(reason), "reason")
        assert text is not None
        self._backend.fail(self.id, msg.id, msg.token, text)  # type: ignore[arg-type]
        msg._settled = True

    # -- looking and administration -------------------------------------------------

    def peek(self, n: int = 10, state: str | None = "ready") -> list[Message]:
        """Read up to *n* messages in *state* (None: every state) without claiming them."""
        check_positive_int(n, "n")
        code = state_named(state)
        return [inspectable(self, row) for row in self._backend.peek(self.id, code, n)]

    def stats(self) -> dict[str, Any]:
        """Exact counts per state, depth against max_depth, and the oldest ready age.

        ``expired_leases`` counts leased messages whose lease has run out (they become
        ready at the next claim); ``enqueued_total``/``acked_total`` are statistics,
        written to the file about once a second by each process. Flow control
        (issue 19): ``rate_limit`` is the queue's own (or None), ``limited_running``
        the leased jobs under a task's limits (concurrency slots in use), ``held`` the
        ready messages a limit holds back right now.
        """
        st = self._backend.stats(self.id)
        return stats_dict(self.name, st, self.refresh(), self._backend.clock())

    def __len__(self) -> int:
        """Unfinished messages (ready, delayed, leased): the depth counter for a queue
        with ``max_depth`` or ``count_depth=True`` (O(1)), else an index count."""
        return self._backend.room(self.id)[0]

    def next_due(self) -> float:
        """The earliest time (on the database clock) at which a delayed message falls
        due or a lease runs out; ``inf`` if none."""
        return self._backend.next_due(self.id)

    def expire(self) -> None:
        """Release expired leases and promote due delayed messages now (claims do
        this themselves; useful before :meth:`stats`)."""
        self._backend.expire(self.id)

    def redrive(self, limit: int | None = None) -> int:
        """Make dead messages of this queue ready again, attempts reset; return how many."""
        check_positive_int(limit, "limit", allow_none=True)
        return self._backend.redrive(self.id, limit)

    def purge(self, state: str | None = None) -> int:
        """Delete this queue's messages (all, or those in *state*); return how many."""
        return self._backend.purge(self.id, state_named(state))

    def prune(self, older_than: float | None = None) -> int:
        """Delete done and cancelled messages finished more than *older_than* seconds
        ago (default: the queue's retention)."""
        age = self.config.retention if older_than is None else check_seconds(older_than, "older_than")
        assert age is not None
        return self._backend.prune(self.id, self._backend.clock() - age)

    def cancel(self, message_id: int) -> bool:
        """Cancel a ready or delayed message; False if it is leased or finished."""
        return self._backend.cancel(check_id(message_id))

    def __repr__(self) -> str:
        return f"<Queue {self.name!r} of {self.db.path}>"


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
