"""A persistent drop-in for the standard library's :mod:`queue` module.

Change one import and a ``queue.Queue`` survives restarts and is shared between
processes::

    from liteq import compat as queue            # instead of: import queue

    q = queue.Queue()                            # private temp file: a stdlib Queue
    q = queue.Queue(maxsize=100, path="app.db", name="jobs")   # persistent, shared

``Queue``, ``LifoQueue``, ``PriorityQueue`` and ``SimpleQueue`` have the standard
library's methods and observable behaviour: ``put(item, block=True, timeout=None)``,
``get(block=True, timeout=None)``, ``put_nowait``, ``get_nowait``, ``qsize``,
``empty``, ``full``, ``task_done``, ``join`` and a settable ``maxsize``. ``Full`` and
``Empty`` *are* ``queue.Full`` and ``queue.Empty``, so ``except queue.Empty:`` keeps
working. Items are any CBOR-encodable value (tuples come back as tuples).

Constructors take the standard library's arguments plus keyword-only ``path=``,
``name=`` (default ``"queue"``) and ``lease=``. Without ``path`` the queue lives in a
private temporary file, removed when the queue is garbage-collected or the
interpreter exits. With ``path`` every process that opens the same path and name
shares one queue.

How it maps onto liteq (the decisions)
--------------------------------------
* Items wait in the liteq queue *name*. ``get`` moves the item, in one transaction,
  to the queue *name*``:held`` and claims it there with a lease that a background
  thread renews while this process holds it; ``task_done`` acks it. So an item a
  process got but never finished (it was killed) is not lost: when its lease runs out
  (``lease`` seconds, default 30) the next ``get`` in any process receives it again,
  ahead of the waiting items. An item is delivered at least once.
* ``qsize()`` counts items put and not yet got, as the standard library does: the
  depth of *name*. Items got but not yet ``task_done`` are not counted (they are in
  ``name:held``), and neither are items of a killed process waiting to be delivered
  again. ``empty()`` is ``qsize() == 0``; ``full()`` is ``0 < maxsize <= qsize()``.
* ``maxsize`` is the ``max_depth`` of *name*, stored in the file: every process sees
  and honours the value last set, by a constructor or by assigning ``q.maxsize``.
  ``maxsize <= 0`` means unbounded, as in the standard library; it is stored as
  ``max_depth = None`` with ``count_depth=True``, so that liteq keeps its O(1) depth
  counter and ``qsize()``/``empty()`` never count rows. A
  constructor called without ``maxsize`` keeps the stored value (unbounded for a new
  queue), so a consumer that opens ``Queue(path=..., name=...)`` does not undo its
  producer's limit. Because held items live in another queue, a ``get`` makes room at
  once, as in the standard library; the back pressure check is liteq's race-free
  counter.
* ``lease=`` (seconds, stored in the file; None keeps the stored value, 30 for a new
  queue) bounds how long an item got by a process that died stays invisible. The
  holder renews it every ``lease / 3`` seconds from a daemon thread, so it must be
  longer than the longest time this process can go without running Python threads.
  liteq processes re-read a queue's options at most once a second, so set options
  before starting the processes that share the queue.
* ``task_done()`` acks the oldest item the calling thread got from this ``Queue``
  object, or, if that thread holds none, the oldest the object holds. With nothing
  held it raises ``ValueError("task_done() called too many times")``. It must be
  called in the process that got the item (the standard library also lets a
  ``task_done()`` follow a ``put()`` with no ``get()``; here that raises ValueError).
* ``join()`` waits until every item put by any process has been got and
  ``task_done``'d by whichever process got it: until *name* and *name*``:held`` are
  both empty. A ``task_done`` in this process wakes it at once; work finished by other
  processes is seen by polling (1 ms, backing off to 50 ms).
* ``LifoQueue`` gives each item a rank from a descending clock (wall-clock
  nanoseconds, strictly increasing within a process), so across processes "last in"
  means "put last by the host's clock". ``PriorityQueue`` ranks each item by
  :func:`sort_key`, bytes that sort as Python orders numbers (int, float, bool,
  Decimal, Fraction: exactly, across types), str, bytes, and tuples and lists of them.
  Where Python would raise ``TypeError`` comparing two items (a dict, None, mixed
  types), the order is instead arbitrary but fixed (by type, or by arrival among equal
  keys); an element Python cannot order still lets later tuple elements decide.
* ``SimpleQueue`` has no ``task_done``, so its ``get`` removes the item at once
  (claim and ack): an item is lost only if the process dies after ``get`` returned.
* Items never go dead: both queues get ``max_attempts`` of a billion, so an item that
  kills its consumer every time keeps coming back, as it would in memory. Use liteq's
  own API (``liteq.connect(path).queue(name)``) for retries and dead letters.
* Tuples are stored as CBOR tag ``0x4C510001`` around an array, because CBOR has no
  tuple; a plain liteq consumer of the same queue sees ``cbor2.CBORTag`` values there.
  Other types come back as CBOR decodes them (a frozenset as a set, a namedtuple as a
  tuple).
* ``Queue``, ``LifoQueue`` and ``PriorityQueue`` objects opened on one name share its
  items, but their orders do not mix well: use one class per name.
"""

from __future__ import annotations

import math
import os
import queue as _stdlib_queue
import shutil
import tempfile
import threading
import time
import warnings
import weakref
from collections import deque
from typing import Any, Generic, TypeVar

import cbor2

from .backends.targets import is_postgres
from .database import Database, connect
from .errors import InvalidArgument, LeaseLost, LiteqError, QueueFull
from .queue import Message
from .queue import Queue as LiteqQueue
from .ranks import lifo_rank, sort_key
from .validate import INT64_MAX, short

__all__ = [
    # the standard library's names
    "Queue",
    "LifoQueue",
    "PriorityQueue",
    "SimpleQueue",
    "Full",
    "Empty",
    # the priority order as bytes
    "sort_key",
]

#: The standard library's exceptions themselves, so existing ``except`` clauses work.
Full = _stdlib_queue.Full
Empty = _stdlib_queue.Empty

_T = TypeVar("_T")

DEFAULT_NAME = "queue"
HELD_SUFFIX = ":held"
#: Items never go dead in a compat queue (see the module docstring).
_MAX_ATTEMPTS = 1_000_000_000
#: A blocking get re-checks for items of killed processes at least this often.
_GET_SLICE = 1.0
_JOIN_POLL_MIN = 0.001
_JOIN_POLL_MAX = 0.05
_TIMEOUT_ERROR = "'timeout' must be a non-negative number"


# --- items: tuples survive the CBOR round trip ----------------------------------------

TUPLE_TAG = 0x4C510001
_PLAIN = (str, int, float, bytes, bool, type(None))


def _to_cbor(value: Any) -> Any:
    """Wrap every tuple in *value* in a CBOR tag (CBOR itself has only arrays)."""
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, tuple):
        return cbor2.CBORTag(TUPLE_TAG, [_to_cbor(v) for v in value])
    if isinstance(value, list):
        return [_to_cbor(v) for v in value]
    if isinstance(value, dict):
        # Keys stay as they are: cbor2 already decodes array keys as tuples.
        return {k: _to_cbor(v) for k, v in value.items()}
    return value


def _from_cbor(value: Any) -> Any:
    """Undo :func:`_to_cbor` on a decoded payload."""
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, cbor2.CBORTag) and value.tag == TUPLE_TAG:
        return tuple(_from_cbor(v) for v in value.value)
    if isinstance(value, list):
        return [_from_cbor(v) for v in value]
    if isinstance(value, dict):
        return {k: _from_cbor(v) for k, v in value.items()}
    return value


# --- databases ------------------------------------------------------------------------

_databases: dict[str, Database] = {}
_databases_lock = threading.Lock()


def _shared_database(path: str | os.PathLike[str]) -> Database:
    """One liteq Database per file (by real path) or PostgreSQL URL (as given) in this
    process (it is safe across threads)."""
    key = path if is_postgres(path) else os.path.realpath(os.fspath(path))
    assert isinstance(key, str)
    with _databases_lock:
        db = _databases.get(key)
        if db is None:
            db = _databases[key] = connect(key)
        return db


def _remove_private(db: Database, directory: str, owner: int) -> None:
    # A forked child inherits the queue object; only the creator removes the file.
    if os.getpid() != owner:
        return
    try:
        db.close()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _reopen(cls: type[SimpleQueue[Any]], path: str, name: str) -> SimpleQueue[Any]:
    return cls(path=path, name=name)


class _Activity:
    """Wakes ``join()`` callers in this process when a ``task_done`` happens here."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._generation = 0

    def generation(self) -> int:
        with self._cond:
            return self._generation

    def bump(self) -> None:
        with self._cond:
            self._generation += 1
            self._cond.notify_all()

    def wait(self, generation: int, timeout: float) -> None:
        with self._cond:
            if self._generation == generation:
                self._cond.wait(timeout)


_activity = _Activity()


# --- the classes ----------------------------------------------------------------------


class SimpleQueue(Generic[_T]):
    """A persistent ``queue.SimpleQueue``: unbounded FIFO, no ``task_done``/``join``.

    ``get`` removes the item at once (there is no ``task_done`` to wait for).
    """

    def __init__(
        self,
        *,
        path: str | os.PathLike[str] | None = None,
        name: str | None = None,
        lease: float | None = None,
    ) -> None:
        self.name: str = DEFAULT_NAME if name is None else name
        if not isinstance(self.name, str) or len(self.name) > 200 - len(HELD_SUFFIX):
            raise ValueError(
                f"name must be a liteq queue name of at most {200 - len(HELD_SUFFIX)} "
                f"characters, got {self.name!r}"
            )
        if path is None:
            directory = tempfile.mkdtemp(prefix="liteq-compat-")
            self._db = connect(os.path.join(directory, "queue.db"))
            weakref.finalize(self, _remove_private, self._db, directory, os.getpid())
        else:
            self._db = _shared_database(path)
        #: The database file (a private temporary one when no path was given), or the
        #: PostgreSQL URL without its password.
        self.path: str = self._db.path
        self._lease_option: dict[str, Any] = {} if lease is None else {"lease": lease}
        self._main: LiteqQueue = self._db.queue(
            self.name, max_attempts=_MAX_ATTEMPTS, **self._lease_option
        )
        if not self._main.config.count_depth:
            # qsize()/empty() read the O(1) counter, also when unbounded.
            self._main = self._db.configure_queue(self.name, count_depth=True)

    # -- put ------------------------------------------------------------------------

    def put(self, item: _T, block: bool = True, timeout: float | None = None) -> None:
        """Put *item* in the queue. Never blocks (*block* and *timeout* are ignored,
        as in the standard library), unless a ``Queue`` sharing this name set a
        ``maxsize``: then it waits for room."""
        payload, rank = _to_cbor(item), self._rank(item)
        try:
            self._main.put(payload, rank=rank)
        except QueueFull:
            self._main.put(payload, rank=rank, block=True)

    def put_nowait(self, item: _T) -> None:
        """``put(item, block=False)``."""
        self.put(item, block=False)

    def _rank(self, item: Any) -> bytes | None:
        return None  # FIFO: liteq's own order (due time, then id)

    # -- get ------------------------------------------------------------------------

    def get(self, block: bool = True, timeout: float | None = None) -> _T:
        """Remove and return the next item.

        With *block* false, raise :class:`Empty` unless one is there now; otherwise
        wait up to *timeout* seconds (None: forever) for one. A negative *timeout*
        raises ValueError.
        """
        deadline = None
        if block and timeout is not None:
            if timeout < 0:
                raise ValueError(_TIMEOUT_ERROR)
            deadline = time.monotonic() + timeout
        while True:
            msg = self._take(None)
            if msg is not None:
                return self._item(msg)
            if not block:
                raise Empty
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise Empty
            # Wait in liteq's get (woken by a commit from any process); it claims what
            # it finds, and _take finishes the claim. Come back at least every
            # _GET_SLICE to look for items of killed processes whose lease ran out.
            claimed = self._main.get(wait=_GET_SLICE if left is None else min(left, _GET_SLICE))
            if claimed is not None:
                msg = self._take(claimed)
                if msg is not None:
                    return self._item(msg)

    def get_nowait(self) -> _T:
        """``get(block=False)``."""
        return self.get(block=False)

    def _take(self, claimed: Message | None) -> Message | None:
        """Remove the next item (or finish removing *claimed*); None if there is none."""
        try:
            if claimed is not None:
                claimed.ack()
                return claimed
            with self._db.transaction():
                msg = self._main.get()
                if msg is not None:
                    msg.ack()
            return msg
        except LeaseLost:
            return None  # our claim ran out and someone else has it now

    def _item(self, msg: Message) -> _T:
        item: _T = _from_cbor(msg.payload)
        return item

    # -- size -----------------------------------------------------------------------

    def qsize(self) -> int:
        """The number of items put and not yet got (by any process)."""
        return len(self._main)

    def empty(self) -> bool:
        """``qsize() == 0`` (a snapshot: another thread or process may change it)."""
        return self.qsize() == 0

    def __reduce__(self) -> tuple[Any, ...]:
        # A child process (multiprocessing) reopens the same file and name.
        return (_reopen, (type(self), self._db.target, self.name))

    def __repr__(self) -> str:
        return f"<liteq.compat.{type(self).__name__} {self.name!r} in {self.path}>"


class Queue(SimpleQueue[_T]):
    """A persistent ``queue.Queue``: FIFO, optional ``maxsize``, ``task_done``/``join``."""

    def __init__(
        self,
        maxsize: int | None = None,
        *,
        path: str | os.PathLike[str] | None = None,
        name: str | None = None,
        lease: float | None = None,
    ) -> None:
        super().__init__(path=path, name=name, lease=lease)
        self._maxsize_given = 0
        if maxsize is not None:
            self.maxsize = maxsize
        held_name = self.name + HELD_SUFFIX
        self._held_q: LiteqQueue = self._db.queue(
            held_name, max_attempts=_MAX_ATTEMPTS, **self._lease_option
        )
        if not self._held_q.config.count_depth:
            self._held_q = self._db.queue(held_name, count_depth=True)
        self._lock = threading.Lock()
        # (thread ident, message) for each item this object got and task_done has not
        # yet acked, oldest first.
        self._held: deque[tuple[int, Message]] = deque()
        self._lost: set[int] = set()
        self._keeper: threading.Thread | None = None
        self._pid = os.getpid()

    # -- maxsize --------------------------------------------------------------------

    @property
    def maxsize(self) -> int:
        """The most items the queue holds (<= 0: unbounded), shared by every process."""
        stored = self._main.refresh().max_depth
        if stored is None:
            given = self._maxsize_given
            return given if given <= 0 else 0
        return int(stored)

    @maxsize.setter
    def maxsize(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"maxsize must be an integer, got {value!r}")
        if value > INT64_MAX:  # the file stores it as a signed 64-bit integer
            raise InvalidArgument(f"maxsize must be at most {INT64_MAX} (or <= 0 for "
                                  f"unbounded), got {short(value)}")
        bound = value if value > 0 else None
        self._main = self._db.configure_queue(self.name, max_depth=bound)
        self._maxsize_given = value

    def full(self) -> bool:
        """True if ``maxsize > 0`` and ``qsize() >= maxsize``."""
        size = self.maxsize
        return 0 < size <= self.qsize()

    # -- put ------------------------------------------------------------------------

    def put(self, item: _T, block: bool = True, timeout: float | None = None) -> None:
        """Put *item* in the queue.

        If the queue is full: with *block* false raise :class:`Full` at once, else
        wait up to *timeout* seconds (None: forever) for room, then raise
        :class:`Full`. A negative *timeout* raises ValueError (when the queue is
        bounded and *block* is true, as in the standard library).
        """
        max_depth = self._main.config.max_depth
        bounded = max_depth is not None
        if block and bounded and timeout is not None and timeout < 0:
            raise ValueError(_TIMEOUT_ERROR)
        if timeout is not None and math.isinf(timeout):
            timeout = None
        payload, rank = _to_cbor(item), self._rank(item)
        try:
            self._main.put(payload, rank=rank, block=block and bounded, timeout=timeout)
        except QueueFull:
            if not block or bounded:
                raise Full from None
            # Another process bounded the queue since our copy of the options was
            # read: wait for room as asked.
            self._main.refresh()
            try:
                self._main.put(payload, rank=rank, block=True, timeout=timeout)
            except QueueFull:
                raise Full from None

    # -- get ------------------------------------------------------------------------

    def _take(self, claimed: Message | None) -> Message | None:
        """Move the next item to ``name:held`` and claim it there, in one transaction.

        The claim in the held queue may instead return an item of a killed process
        whose lease ran out; ours then waits there, ready, for the next get.
        """
        self._check_fork()
        try:
            with self._db.transaction():
                msg = self._main.get() if claimed is None else claimed
                if msg is not None:
                    msg.ack()
                    self._held_q.put(msg.payload)
                held = self._held_q.get()
        except LeaseLost:
            return None  # our claim on *claimed* ran out and someone else has it now
        if held is not None:
            self._hold(held)
        return held

    def _hold(self, msg: Message) -> None:
        with self._lock:
            self._held.append((threading.get_ident(), msg))
            if self._keeper is None:
                lease = self._held_q.config.lease
                self._keeper = threading.Thread(
                    target=_keep_alive,
                    args=(weakref.ref(self), lease / 3),
                    name=f"liteq-compat-lease-{self.name}",
                    daemon=True,
                )
                self._keeper.start()

    def _renew(self) -> bool:
        """Renew the leases of the held items; False (and forget the thread) if none."""
        with self._lock:
            if not self._held:
                self._keeper = None
                return False
            msgs = [m for _, m in self._held if m.id not in self._lost]
        lease = self._held_q.config.lease
        with self._db.transaction():
            for msg in msgs:
                try:
                    msg.extend(lease)
                except LeaseLost:
                    with self._lock:
                        self._lost.add(msg.id)
        return True

    def _check_fork(self) -> None:
        # A forked child did not get the parent's items: it must not ack them.
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._lock = threading.Lock()
            self._held = deque()
            self._lost = set()
            self._keeper = None

    # -- tasks ----------------------------------------------------------------------

    def task_done(self) -> None:
        """Mark an item got from this object as finished (see the module docstring
        for which one). Raises ValueError if it holds none."""
        self._check_fork()
        me = threading.get_ident()
        with self._lock:
            if not self._held:
                raise ValueError("task_done() called too many times")
            index = next((i for i, (tid, _) in enumerate(self._held) if tid == me), 0)
            entry = self._held[index]
            del self._held[index]
        msg = entry[1]
        try:
            msg.ack()
        except LeaseLost:
            with self._lock:
                self._lost.discard(msg.id)
            warnings.warn(
                f"liteq.compat: the lease on item {msg.id} of queue {self.name!r} ran out "
                f"before task_done() (this process held it longer than the lease "
                f"without renewing it), so it was delivered again",
                RuntimeWarning,
                stacklevel=2,
            )
        except LiteqError:
            with self._lock:
                self._held.insert(index, entry)
            raise
        _activity.bump()

    @property
    def unfinished_tasks(self) -> int:
        """Items put (by any process) and not yet ``task_done``'d."""
        # Read the waiting items first: an item only ever moves from there to held,
        # so this order can count it twice but never miss it.
        waiting = len(self._main)
        return waiting + len(self._held_q)

    def join(self) -> None:
        """Block until every item put (by any process) was got and ``task_done``'d."""
        poll = _JOIN_POLL_MIN
        while True:
            generation = _activity.generation()
            if self.unfinished_tasks == 0:
                return
            _activity.wait(generation, poll)
            poll = min(poll * 2, _JOIN_POLL_MAX)


class LifoQueue(Queue[_T]):
    """A persistent ``queue.LifoQueue``: the item put last is got first."""

    def _rank(self, item: Any) -> bytes | None:
        return lifo_rank()


class PriorityQueue(Queue[_T]):
    """A persistent ``queue.PriorityQueue``: the smallest item is got first.

    Items are ordered by :func:`sort_key` (as Python orders numbers, strings, bytes
    and tuples of them); equal items come out in the order they were put.
    """

    def _rank(self, item: Any) -> bytes | None:
        return sort_key(item)


def _keep_alive(ref: weakref.ref[Queue[Any]], interval: float) -> None:
    """Renew the leases of a Queue's held items every *interval* seconds until it
    holds none or is garbage-collected."""
    while True:
        time.sleep(interval)
        q = ref()
        if q is None:
            return
        try:
            if not q._renew():
                return
        except Exception:
            # Best effort (the database may be busy, or closing at exit): try again
            # next time. A lease that does run out shows as a warning at task_done().
            pass
        del q
