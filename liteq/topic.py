"""Topics: durable publish/subscribe with AMQP-style wildcard routing.

A topic is a name that publishers send to. A **subscription** binds a routing
pattern to a topic and is itself a :class:`~liteq.Queue` (named ``TOPIC:NAME``),
so leases, acks, retries, dead letters and ``max_depth`` all apply to it.
``publish(payload, key="order.created.eu")`` delivers one copy to every
subscription whose pattern matches the key, in one transaction: all of them get
it, or (e.g. one of them is full) none do.

Routing keys and patterns are words separated by dots, matched as RabbitMQ's
topic exchange does (AMQP 0-9-1):

* ``*`` matches exactly one word, ``#`` matches zero or more words;
  ``#`` alone matches every key, ``a.#`` matches ``a``, ``a.b`` and ``a.b.c``.
* Words may be empty: ``a..b`` has three words, the middle one empty, and
  ``*`` matches an empty word. The empty key ``""`` has no words at all: ``#``
  and the empty pattern match it, ``*`` does not.
* ``#.#`` means the same as ``#``; ``*.#`` means "one or more words"; ``#.*``
  likewise.
* ``*`` and ``#`` are wildcards only as a whole word: in ``a*`` or ``#b`` they
  are ordinary characters.
* Keys are matched exactly (case-sensitive); a key may not be longer than 255
  bytes in UTF-8, as in AMQP.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

from . import codec
from .backends.records import StaleRoutes
from .context import Context
from .errors import InvalidArgument
from .options import default_columns, option_columns
from .outbox import on_connection
from .queue import Message, Queue
from .validate import check_priority, check_seconds, check_text, short

__all__ = ["Topic", "Tail", "Router", "matches", "validate_topic_name"]

_MAX_KEY = 255
_ROUTE_CACHE = 4096
#: A temporary subscription (``tail``) dies this long after its owner stops renewing it.
TEMP_LEASE = 30.0


def validate_topic_name(name: object, what: str = "topic") -> str:
    """Topic and subscription names: like queue names, but without ':'."""
    if (
        not isinstance(name, str)
        or not name
        or len(name) > 100
        or not (name[0].isalnum() or name[0] == "_")
        or any(not (c.isalnum() or c in "_-.") for c in name)
        or not name.isascii()
    ):
        raise InvalidArgument(
            f"{what} name must be 1-100 ASCII letters, digits, '_', '-' or '.' "
            f"(starting with a letter, digit or '_'), got {name!r}"
        )
    return name


def _check_key(key: object, what: str = "routing key") -> str:
    if not isinstance(key, str):
        raise InvalidArgument(f"{what} must be a string of dot-separated words, got {short(key)}")
    check_text(key, what)
    if len(key.encode("utf-8")) > _MAX_KEY:
        raise InvalidArgument(f"{what} must be at most {_MAX_KEY} bytes in UTF-8, got {len(key)} characters")
    return key


def _words(key: str) -> tuple[str, ...]:
    # RabbitMQ: the empty key has no words; otherwise split on every dot.
    return () if key == "" else tuple(key.split("."))


def matches(pattern: str, key: str) -> bool:
    """True if routing *key* matches *pattern* (``*`` one word, ``#`` zero or more)."""
    router = Router()
    router.add(0, pattern)
    return bool(router.route(key))


class _Node:
    __slots__ = ("children", "subs")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.subs: set[int] = set()


class Router:
    """A trie of patterns. Routing a key walks the key's words once per branch that
    can match, so its cost does not grow with subscriptions that cannot match."""

    def __init__(self) -> None:
        self.root = _Node()

    def add(self, sub: int, pattern: str) -> None:
        node = self.root
        prev = None
        for word in _words(pattern):
            if word == "#" and prev == "#":
                continue  # '#.#' is the same as '#'
            node = node.children.setdefault(word, _Node())
            prev = word
        node.subs.add(sub)

    def route(self, key: str) -> set[int]:
        out: set[int] = set()
        self._walk(self.root, _words(key), 0, out)
        return out

    def _walk(self, node: _Node, words: tuple[str, ...], i: int, out: set[int]) -> None:
        children = node.children
        hash_node = children.get("#")
        if hash_node is not None:
            # '#' takes zero, one, ... or all of the remaining words.
            for j in range(i, len(words) + 1):
                self._walk(hash_node, words, j, out)
        if i == len(words):
            out.update(node.subs)
            return
        word = words[i]
        exact = children.get(word)
        # A key word spelled '*' or '#' is matched by the wildcard branches only.
        if exact is not None and word not in ("*", "#"):
            self._walk(exact, words, i + 1, out)
        star = children.get("*")
        if star is not None:
            self._walk(star, words, i + 1, out)


class Topic:
    """A named topic. Get one with ``db.topic(name)``."""

    def __init__(self, db: Context, name: str) -> None:
        self.db = db
        self.name = validate_topic_name(name)
        self._backend = db.backend
        self._lock = threading.Lock()
        self._version = -1
        self._router = Router()
        self._expiring: dict[int, float] = {}
        self._routes: dict[str, list[int]] = {}
        self._checked_expired = 0.0

    # -- subscriptions --------------------------------------------------------------

    def subscribe(self, name: str, pattern: str = "#", **options: Any) -> Queue:
        """Create (or return, updating its pattern and any *options* given: those of
        ``db.queue``) the durable subscription *name*; it is a Queue named
        ``TOPIC:NAME``."""
        validate_topic_name(name, "subscription")
        _check_key(pattern, "pattern")
        updates = option_columns(**options)
        row = self._backend.subscribe(
            self.name, self.queue_name(name), pattern, default_columns(), updates
        )
        return self.db.adopt(row)

    def queue_name(self, subscription: str) -> str:
        """The queue name of subscription *subscription* of this topic."""
        return f"{self.name}:{subscription}"

    def unsubscribe(self, name: str) -> None:
        """Delete subscription *name* and every message waiting in it."""
        validate_topic_name(name, "subscription")
        row = self._backend.queue_row(self.queue_name(name))
        if row is None or row.topic != self.name:
            raise InvalidArgument(f"topic {self.name!r} has no subscription {name!r}")
        self._backend.unsubscribe(row.id)
        self.db.forget(self.queue_name(name))

    def subscriptions(self) -> list[Queue]:
        """This topic's subscriptions (expired temporary ones are cleaned up first)."""
        self._backend.drop_expired_subscriptions()
        subs = self._backend.subscriptions(self.name)
        return [self.db.adopt(r) for r in subs.queues]

    def subscription(self, name: str) -> Queue:
        """The existing subscription *name* (InvalidArgument if there is none)."""
        validate_topic_name(name, "subscription")
        row = self._backend.queue_row(self.queue_name(name))
        if row is None or row.topic != self.name:
            raise InvalidArgument(f"topic {self.name!r} has no subscription {name!r}")
        return self.db.adopt(row)

    # -- publishing -----------------------------------------------------------------

    def publish(
        self,
        payload: Any,
        key: str = "",
        *,
        headers: dict[str, Any] | None = None,
        delay: float = 0,
        priority: int = 0,
        connection: Any = None,
    ) -> int:
        """Deliver *payload* to every subscription whose pattern matches *key*, in one
        transaction; return the number of deliveries (0 if none matched).

        If a matching subscription is at its ``max_depth``, raises
        :class:`~liteq.QueueFull` naming it and delivers nothing anywhere.
        *connection*: the application's own connection and transaction, as for
        :meth:`liteq.Queue.put` (the deliveries commit with it, all or none).
        """
        return self.publish_many([(key, payload)], headers=headers, delay=delay,
                                 priority=priority, connection=connection)

    def publish_many(
        self,
        items: Iterable[tuple[str, Any]],
        *,
        headers: dict[str, Any] | None = None,
        delay: float = 0,
        priority: int = 0,
        connection: Any = None,
    ) -> int:
        """Publish many ``(key, payload)`` pairs in one transaction: all or nothing.
        Returns the total number of deliveries. *connection*: as for :meth:`publish`."""
        d = check_seconds(delay, "delay")
        assert d is not None
        prio = check_priority(priority)
        if headers is not None and not isinstance(headers, dict):
            raise InvalidArgument(f"headers must be a dict or None, got {type(headers).__name__}")
        limit = self.db.max_payload
        encoded = []
        for key, payload in items:
            _check_key(key)
            head: dict[str, Any] = {**(headers or {}), "topic": self.name, "routing_key": key}
            encoded.append((key, codec.encode(payload, limit), codec.encode(head, limit)))
        if not encoded:
            return 0
        self._maybe_drop_expired()  # a write of its own: never on the application's connection
        with on_connection(self._backend, connection):
            return self._deliver(encoded, prio, d)

    def _deliver(self, encoded: list[tuple[str, bytes, bytes]], prio: int, delay: float) -> int:
        for _ in range(100):
            version = self._refresh_routes()
            run_at = self._backend.clock() + delay
            deliveries: dict[int, list[Any]] = {}
            now = self._backend.clock()
            for key, blob, head_blob in encoded:
                for qid in self._route(key, now):
                    deliveries.setdefault(qid, []).append((prio, None, run_at, blob, head_blob, None))
            if not deliveries:
                return 0
            try:
                return self._backend.publish(version, deliveries)
            except StaleRoutes:
                continue  # a subscription came or went meanwhile: route again
        raise RuntimeError("subscriptions kept changing during publish")  # pragma: no cover

    def _refresh_routes(self) -> int:
        version = self._backend.subs_version()
        if version == self._version:
            return version
        version, subs = self._backend.subscriptions(self.name)
        router = Router()
        expiring = {}
        for sub in subs:
            router.add(sub.id, sub.pattern if sub.pattern is not None else "#")
            if sub.expires_at is not None:
                expiring[sub.id] = sub.expires_at
        with self._lock:
            self._router, self._expiring, self._routes = router, expiring, {}
            self._version = version
        return version

    def _route(self, key: str, now: float) -> list[int]:
        routes = self._routes
        qids = routes.get(key)
        if qids is None:
            qids = sorted(self._router.route(key))
            if len(routes) >= _ROUTE_CACHE:
                routes.clear()
            routes[key] = qids
        if self._expiring:
            qids = [q for q in qids if self._expiring.get(q, now) >= now]
        return qids

    def _maybe_drop_expired(self) -> None:
        now = time.monotonic()
        if now - self._checked_expired > 5.0:
            self._checked_expired = now
            self._backend.drop_expired_subscriptions()

    # -- tail -----------------------------------------------------------------------

    def tail(self, pattern: str = "#") -> Tail:
        """Follow messages published from now on whose key matches *pattern*.

        Returns a :class:`Tail`: an iterator (and context manager) reading from a
        temporary subscription that exists from this call until ``close()``. The
        subscription holds a lease of its own, renewed while it is read; if the
        process dies, publishers and ``subscriptions()`` remove it once that lease
        (30 s) has run out.
        """
        _check_key(pattern, "pattern")
        name = f"tail-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        row = self._backend.subscribe(
            self.name, self.queue_name(name), pattern,
            default_columns(), {"expires_at": self._backend.clock() + TEMP_LEASE},
        )
        return Tail(self, self.db.adopt(row))

    def __repr__(self) -> str:
        return f"<Topic {self.name!r} of {self.db.path}>"


class Tail:
    """A temporary subscription being read; see :meth:`Topic.tail`."""

    def __init__(self, topic: Topic, queue: Queue) -> None:
        self.topic = topic
        self.queue = queue
        self._backend = topic.db.backend
        self._renewed = time.monotonic()
        self._buffer: list[Message] = []
        self.closed = False

    def get(self, wait: float = 0) -> Message | None:
        """The next message (already acked: a tail is not durable), or None after
        *wait* seconds without one."""
        if not self._buffer:
            self._renew()
            msgs = self.queue.get_many(100, wait=wait)
            if msgs:
                self.queue.ack_many(msgs)
            self._buffer = msgs
        return self._buffer.pop(0) if self._buffer else None

    def _renew(self) -> None:
        if time.monotonic() - self._renewed > TEMP_LEASE / 3:
            self._backend.touch_subscription(self.queue.id, self._backend.clock() + TEMP_LEASE)
            self._renewed = time.monotonic()

    def __iter__(self) -> Iterator[Message]:
        while not self.closed:
            msg = self.get(wait=1.0)
            if msg is not None:
                yield msg

    def close(self) -> None:
        """Remove the temporary subscription and what is still waiting in it."""
        if self.closed:
            return
        self.closed = True
        try:
            self._backend.unsubscribe(self.queue.id)
        finally:
            self.topic.db.forget(self.queue.name)

    def __enter__(self) -> Tail:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
