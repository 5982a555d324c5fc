"""The PostgreSQL engine's wake-up channel: ``LISTEN``/``NOTIFY``, one listening
connection per process, a pipe per waiter.

**Receiving.** The first :meth:`Notifier.waiter` of a process starts a daemon thread
(:class:`Listener`) that opens one connection of its own and runs ``LISTEN
"liteq_<schema>"`` (:func:`channel_for`). A thread started by a throttled put (below)
listens only once the process makes a waiter: a producer's own notifications would
otherwise wake its thread and its server process for nothing. Every waiter owns a non-blocking pipe; on a
notification the thread writes one byte to each waiter that has no unread byte yet, so
``Waiter.fd`` is selectable exactly like the SQLite engine's inotify descriptor (the
worker and the scheduler ``select`` on it beside their own pipes). Every notification
wakes every waiter of the process, whatever its payload (the queue id), as every commit
does on SQLite: a waiter does not know which queues its caller looks at (the worker
watches several, the scheduler and ``Job.result`` none), and the throttle below bounds
the rate, so filtering would add bookkeeping for no measured gain. The thread also wakes
every waiter after each (re)connect, the first included: a notification sent while no
``LISTEN`` was in place is lost, and waiters made before the first one may have missed
a commit. Hints stay hints: a waiter also returns on its timeout, and callers look
again by ``liteq.wake.Looks`` and their periodic re-check.

**Losing the connection** (server restart, ``pg_terminate_backend``, network): the
thread reconnects with a backoff from :data:`RECONNECT_MIN` (50 ms) doubling to
:data:`RECONNECT_MAX` (2 s), and wakes every waiter once ``LISTEN`` is back. TCP
keepalives (:data:`KEEPALIVES`, unless the connection string sets them) find a peer
that vanished silently within ~25 s.

**Fork.** A child never touches its parent's listening session: connection.py abandons
the inherited socket (pointed at ``/dev/null``), the registry of listeners starts empty
in the child, and a waiter or backend used in the child starts the child's own listener
on first use (a waiter made in the parent gets a new pipe there).

**Sending: how the put path uses this** (every verb whose commit makes work visible:
puts, publishes, retries with a delay of 0, redrives; B3 for results)::

    # inside the verb, before or within its own transaction, on the verb's cursor:
    self.notify(cur, qid)            # NOTIFY ... in this transaction, if the throttle says so
    # or, to fold it into a single-statement put (one round trip):
    if self.notify_wanted(qid):      # decide first, then choose the statement
        sql = PUT_WITH_NOTIFY        # e.g. "WITH i AS (INSERT ... RETURNING id)
                                     #  SELECT id, pg_notify('<channel>', '<qid>') FROM i"
    # self.notify_sql is "SELECT pg_notify('<channel>', %s)" (payload: str(qid)) and
    # self.wake_channel the channel, both fixed once per backend.

PostgreSQL delivers a ``NOTIFY`` when its transaction commits, never on rollback, and
folds identical (channel, payload) pairs of one transaction into one. On a connection
liteq does not manage (the application's own, B6 ``using(conn)``) run ``notify_sql``
unconditionally: its commit may come at any time, so the throttle cannot speak for it.

**The throttle** (:class:`Throttle`, per queue, per process): the first put of a queue
notifies at once (leading edge); further puts of that queue within :data:`WINDOW`
(1 ms) send nothing and instead schedule one trailing ``NOTIFY`` that the listener
thread sends :data:`WINDOW` after the first of them, on its own connection; a put that
comes when that notification is due, with no throttled put of its queue in flight,
notifies in its own statement instead (its commit follows theirs). So a queue gets at
most about one notification per millisecond from each process under load, and the last
put of a burst is always followed by one. A queue whose puts from this process come
faster than :data:`FAST` (2,000 a second) gets one per :data:`WIDE` (8 ms) while they
do (throttle.py says why and what it measured). The thread is poked (a byte on its pipe) only
when it would otherwise look more than :data:`SLACK` (3 ms) after a trailing
notification became sendable, not at every throttled put (a thread switch per put cost
a producer 40% of its rate). While puts keep meeting the throttle, and while one is
in flight past its trailing notification's due time, the thread looks every SLACK on
its own instead, and a put that finds the notification due takes it over in its own
statement: a stream of puts pokes it about once (0.7-0.8 pokes per put before, when
the thread slept ``LATE`` while a put was in flight and every ``done()`` poked it). Why these numbers (not measured, as
the brief asked): a waiter needs one hint per look, a look costs ~0.1-0.3 ms, so 1 ms
wastes nothing on the consumer side while bounding the commit-time serialization
PostgreSQL's notification queue imposes (one global lock per notifying commit). Inside
the application's ``db.transaction()`` nothing is throttled: that commit may come much
later than the window, and PostgreSQL folds the block's notifications of one queue
into one anyway.

**Every hint follows its commit** (``Waiter.early`` is False). A notification inside
the put's own transaction is delivered at its commit. A trailing one waits until every
throttled put of its queue in this process has committed or failed (the put path calls
:meth:`Notifier.throttled_done` after its statement, or through
``Connections.after_tx`` after its transaction): a trailing notification sent before a
slow put committed would wake consumers that find nothing, and the put would wait for
their periodic re-check. Before this, waiters looked again 4 times in ~7 ms after every
empty look (``RECHECK_AFTER``) to catch such puts: probes that were most of an idle
consumer's statements (issue 17). A put still in flight :data:`LATE` after its trailing
notification was due does not hold it any longer (a producer thread that never stops
putting would starve it); another one follows once that put is done.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import threading
import time
import weakref
from functools import cached_property
from typing import TYPE_CHECKING, Any

import psycopg

from ...errors import LiteqError
from ...fdwait import wait_readable

if TYPE_CHECKING:
    from .connection import Connections

from .throttle import FAST, LATE, SLACK, WIDE, WINDOW, Throttle
from .waiter import PIPE_FLAGS, Waiter

__all__ = [
    "FAST",
    "KEEPALIVES",
    "LATE",
    "RECONNECT_MAX",
    "RECONNECT_MIN",
    "READY_WAIT",
    "SLACK",
    "WIDE",
    "WINDOW",
    "Listener",
    "Notifier",
    "Throttle",
    "Waiter",
    "channel_for",
    "notify_sql",
]

#: First and longest pause between attempts to reconnect the listening session (seconds).
RECONNECT_MIN = 0.05
RECONNECT_MAX = 2.0
#: How long the first waiter of a process waits for the listener's first connect (s).
READY_WAIT = 2.0
#: libpq keepalive settings of the listening session (it only ever reads).
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3}

logger = logging.getLogger("liteq.postgres")
# PostgreSQL truncates identifiers (and refuses channels) longer than this.
_NAME_MAX = 63


def channel_for(schema: str) -> str:
    """The notification channel of a liteq schema: ``liteq_<schema>``, shortened with a
    hash when that would pass PostgreSQL's 63-character limit (still one per schema)."""
    name = f"liteq_{schema}"
    if len(name) <= _NAME_MAX:
        return name
    digest = hashlib.sha1(schema.encode()).hexdigest()[:10]
    return f"{name[:_NAME_MAX - 11]}_{digest}"


def notify_sql(schema: str) -> str:
    """``SELECT pg_notify('<channel>', %s)``: the statement that announces a commit to
    the schema's listeners; its one parameter is the queue id as text. The channel is a
    literal (schema names are ``[a-z0-9_]``, checked at open)."""
    return f"SELECT pg_notify('{channel_for(schema)}', %s)"


class Listener:
    """One process's listening session on one channel: the daemon thread, its
    connection, the registered waiters and the throttle (see the module docstring).
    Shared by every backend of the process on the same database and schema."""

    def __init__(self, key: tuple[str, str], conns: Connections, channel: str) -> None:
        self.key = key
        self.channel = channel
        self.pid = os.getpid()
        #: Backends holding this listener (it stops when the last one lets go).
        self.users = 0
        #: Guards the waiters, their hint flags and the throttle.
        self.lock = threading.Lock()
        #: Successful connects with ``LISTEN`` in place, so far (tests watch it).
        self.connects = 0
        #: The backend pid of the listening session while connected (tests kill it).
        self.backend_pid: int | None = None
        self._conns = conns
        self._waiters: set[Waiter] = set()
        self._throttle = Throttle(WINDOW, LATE, WIDE, FAST)
        #: When the thread looks at the throttle next (monotonic; under :attr:`lock`):
        #: the end of its sleep, -inf while it is awake (it looks before it sleeps),
        #: inf when it is not serving. A put pokes the thread only when its trailing
        #: notification is sendable more than SLACK before that: poking on every
        #: throttled put woke the thread twice per put, which cost a producer 40% of
        #: its puts per second (see :meth:`done` and :meth:`_next_look`).
        self._looks_at = math.inf
        self._poke_r, self._poke_w = os.pipe2(PIPE_FLAGS)
        self._closed = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._tried = threading.Event()  # the first connect attempt has finished
        #: ``LISTEN`` is in place on the current session (set by the thread). A session
        #: listens only once the process has a waiter: a producer's own notifications
        #: would wake its thread and its server process for nothing.
        self._listening = threading.Event()

    # -- called by waiters and backends ---------------------------------------------

    def add(self, waiter: Waiter) -> None:
        with self.lock:
            self._waiters.add(waiter)
            self._start()
        if not self._listening.is_set():
            self._poke()  # a session without LISTEN (no waiter so far) listens now
        self._tried.wait(READY_WAIT)
        if self.backend_pid is not None:  # connected: hints from now on
            self._listening.wait(READY_WAIT)

    def discard(self, waiter: Waiter) -> None:
        """Forget *waiter* (under :attr:`lock`)."""
        self._waiters.discard(waiter)

    def ask(self, qid: int) -> bool:
        """The throttle's answer for a put to *qid* now (see :class:`Throttle`); after
        False the caller owes :meth:`done`."""
        with self.lock:
            if self._throttle.ask(qid, time.monotonic()):
                return True
            self._throttle.hold(qid)
            self._start()
        # No poke: the trailing notification stands for this put, in flight until its
        # done(), which pokes the thread if it would sleep past the due time.
        return False

    def done(self, qid: int) -> None:
        """A put that :meth:`ask` throttled has committed or failed."""
        with self.lock:
            now = time.monotonic()
            self._throttle.done(qid, now)
            # Poke only a thread that would look more than SLACK after the trailing
            # notification is sendable (or after now, if that is past): one asleep with
            # nothing due. A thread waiting out puts in flight, or lingering after
            # recent puts, looks every SLACK on its own: poking it at each put's done
            # cost the producer a thread switch per put (issue 17, session 11).
            poke = max(self._throttle.sendable_at(qid), now) + SLACK < self._looks_at
        if poke:
            self._poke()

    def stop(self) -> None:
        """End the thread and close the session (after the last backend lets go)."""
        with self.lock:
            self._stopping = True
            thread = self._thread
            waiters, self._waiters = list(self._waiters), set()
        for w in waiters:
            w._release()
        self._poke()
        if thread is not None and thread is not threading.current_thread():
            thread.join(5.0)
        if thread is None:
            self._close_pipe()

    def abandon(self) -> None:
        """In a forked child: never use this (the parent's) listener again; close the
        child's copies of its pipe. Its session is abandoned by connection.py."""
        self.lock = threading.Lock()  # the parent's thread may have held it at fork
        self._stopping = True
        self._close_pipe()

    # -- the thread -----------------------------------------------------------------

    def _start(self) -> None:  # under self.lock
        if self._thread is None and not self._stopping:
            self._thread = threading.Thread(
                target=self._run, name=f"liteq-listen-{self.channel}", daemon=True
            )
            self._thread.start()

    def _poke(self) -> None:
        with self.lock:
            if self._closed:
                return
            try:
                os.write(self._poke_w, b"\x01")
            except OSError:
                pass  # full: the thread is about to look anyway

    def _close_pipe(self) -> None:
        with self.lock:
            if self._closed:
                return
            self._closed = True
            for fd in (self._poke_r, self._poke_w):
                try:
                    os.close(fd)
                except OSError:
                    pass

    def _wake_all(self) -> None:
        with self.lock:
            for w in self._waiters:
                w.signal()

    def _run(self) -> None:
        delay = RECONNECT_MIN
        lost_at: float | None = None  # when the session was lost, until it is back
        try:
            while not self._stopping:
                conn = None
                try:
                    conn = self._conns.open_session(**KEEPALIVES)
                    conn.add_notify_handler(lambda _n: self._wake_all())
                    self._listen(conn)
                except (LiteqError, psycopg.Error, OSError):
                    if conn is not None:
                        _close(conn)
                    self._tried.set()
                    self._pause(delay)
                    delay = min(delay * 2, RECONNECT_MAX)
                    continue
                delay = RECONNECT_MIN
                self.connects += 1
                if lost_at is not None:
                    logger.warning("wake-ups: LISTEN again on %s after %.1f s", self.channel,
                                   time.monotonic() - lost_at)
                    lost_at = None
                self.backend_pid = conn.info.backend_pid
                self._wake_all()  # whatever committed while no LISTEN was in place
                self._tried.set()  # after: a waiter made now starts without that hint
                try:
                    self._serve(conn)
                except (psycopg.Error, OSError) as exc:  # lost: reconnect
                    lost_at = time.monotonic()
                    logger.warning("wake-ups: lost the LISTEN session on %s (%s); reconnecting "
                                   "(waiters look on their timeouts meanwhile)", self.channel,
                                   str(exc).strip())
                finally:
                    self.backend_pid = None
                    self._listening.clear()
                    with self.lock:
                        self._looks_at = math.inf  # reconnecting: every put pokes
                    _close(conn)
        finally:
            self._close_pipe()

    def _pause(self, seconds: float) -> None:
        """Sleep *seconds*, or less if stopped meanwhile."""
        try:
            readable = wait_readable([self._poke_r], seconds)
            if readable:
                os.read(self._poke_r, 4096)
        except (OSError, ValueError):
            time.sleep(seconds)

    def _listen(self, conn: psycopg.Connection[Any]) -> bool:
        """``LISTEN`` on *conn* if this process has a waiter and it does not yet; True
        if it did."""
        if self._listening.is_set():
            return False
        with self.lock:
            wanted = bool(self._waiters)
        if wanted:
            conn.execute(f'LISTEN "{self.channel}"')
            self._listening.set()
        return wanted

    def _next_look(self, now: float) -> float:
        """When the thread looks at the throttle next (under :attr:`lock`): when the
        earliest trailing notification is sendable, but at most :data:`SLACK` from now
        while one is pending (held back by a put in flight) or puts met the throttle in
        the last SLACK; else never, until poked."""
        throttle = self._throttle
        due_at = throttle.next_due()
        if due_at is not None:
            return min(due_at, now + SLACK)
        if now - throttle.active_at < SLACK:
            return throttle.active_at + SLACK
        return math.inf

    def _serve(self, conn: psycopg.Connection[Any]) -> None:
        pgconn = conn.pgconn
        sock = pgconn.socket
        trailing = f"SELECT pg_notify('{self.channel}', q) FROM unnest(%s::text[]) AS q"
        while True:
            if self._listen(conn):
                self._wake_all()  # whatever committed before, for the first waiters
            stopping = self._stopping
            with self.lock:  # when stopping, every pending trailing notification now
                due = self._throttle.take_due(math.inf if stopping else time.monotonic())
            if due:
                try:
                    conn.execute(trailing, ([str(q) for q in due],))
                except psycopg.Error:
                    with self.lock:
                        self._throttle.put_back(due)  # sent after the reconnect
                    raise
            if stopping:
                return
            with self.lock:
                look_at = self._next_look(time.monotonic())
                self._looks_at = look_at
            timeout = None if look_at == math.inf else max(0.0, look_at - time.monotonic())
            try:
                readable = wait_readable([sock, self._poke_r], timeout)
            finally:
                with self.lock:
                    self._looks_at = -math.inf
            if self._poke_r in readable:
                try:
                    os.read(self._poke_r, 4096)
                except BlockingIOError:
                    pass
            if sock in readable:
                pgconn.consume_input()  # raises once the server has gone
                got = False
                while pgconn.notifies() is not None:
                    got = True
                if got:
                    self._wake_all()
                if pgconn.status != psycopg.pq.ConnStatus.OK:
                    return


def _close(conn: psycopg.Connection[Any]) -> None:
    try:
        conn.close()
    except psycopg.Error:
        pass


# This process's listeners by (database, channel), and the lock that guards the map.
_LISTENERS: dict[tuple[str, str], Listener] = {}
_LISTENERS_LOCK = threading.Lock()


def _forked() -> None:
    global _LISTENERS_LOCK
    _LISTENERS_LOCK = threading.Lock()
    for listener in list(_LISTENERS.values()):
        listener.abandon()
    _LISTENERS.clear()


os.register_at_fork(after_in_child=_forked)


class Notifier:
    """The wake-up verbs of :class:`~liteq.backends.postgres.PostgresBackend` (a mixin:
    ``waiter()``, and the helpers the put path calls). Needs ``self.conns`` and
    ``self.schema``; ``PostgresBackend.close()`` calls :meth:`stop_waking`."""

    conns: Connections
    schema: str
    _wake_listener: Listener | None = None
    _wake_waiters: weakref.WeakSet[Waiter] | None = None

    @cached_property
    def wake_channel(self) -> str:
        """This schema's notification channel (``liteq_<schema>``)."""
        return channel_for(self.schema)

    @cached_property
    def notify_sql(self) -> str:
        """``SELECT pg_notify('<channel>', %s)``; parameter: the queue id as text."""
        return notify_sql(self.schema)

    def waiter(self) -> Waiter:
        """A new :class:`Waiter` woken by every commit that notifies this schema (any
        process, any host); the first of a process starts the listening thread."""
        return Waiter(self)

    def notify_wanted(self, qid: int) -> bool:
        """Should the put to *qid* being written now include ``NOTIFY``? Always inside
        the application's transaction; else the per-queue throttle decides. False: a
        trailing notification follows within ~1 ms of the put's commit, and the caller
        must call :meth:`throttled_done` once its put committed or failed."""
        if self.conns.in_transaction():
            return True
        return self.listener().ask(qid)

    def throttled_done(self, qid: int) -> None:
        """The put for which :meth:`notify_wanted` said False committed or failed."""
        self.listener().done(qid)

    def notify(self, cur: Any, qid: int) -> None:
        """Announce, at the commit of *cur*'s transaction (a cursor of this backend's
        ``conns.tx()``), that queue *qid* has new work, unless the throttle already
        will (after that commit)."""
        if self.notify_wanted(qid):
            cur.execute(self.notify_sql, (str(qid),))
        else:
            self.conns.after_tx(lambda: self.throttled_done(qid))

    def listener(self) -> Listener:
        """This process's listener for this database and schema (shared by the
        backends that use it, started lazily)."""
        listener = self._wake_listener
        pid = os.getpid()
        if listener is not None and listener.pid == pid and not listener._stopping:
            return listener
        key = (self.conns.description, self.wake_channel)
        with _LISTENERS_LOCK:
            listener = self._wake_listener
            if listener is not None and listener.pid == pid and not listener._stopping:
                return listener
            if listener is None or listener.pid != pid:
                self._wake_waiters = weakref.WeakSet()
            found = _LISTENERS.get(key)
            if found is None or found._stopping:
                found = _LISTENERS[key] = Listener(key, self.conns, self.wake_channel)
            found.users += 1
            self._wake_listener = found
            return found

    def track(self, waiter: Waiter) -> None:
        """Remember *waiter*, so that :meth:`stop_waking` detaches it."""
        if self._wake_waiters is None:
            self._wake_waiters = weakref.WeakSet()
        self._wake_waiters.add(waiter)

    def stop_waking(self) -> None:
        """Detach this backend's waiters (their next ``arm()`` attaches them again) and
        let go of the listener: the last backend of the process to let go stops its
        thread and closes its session. Nothing is touched in a forked child that has
        not used it."""
        listener = self._wake_listener
        if listener is None or listener.pid != os.getpid():
            self._wake_listener = None
            return
        for w in list(self._wake_waiters or ()):
            w._release()
        with _LISTENERS_LOCK:
            self._wake_listener = None
            listener.users -= 1
            last = listener.users <= 0
            if last and _LISTENERS.get(listener.key) is listener:
                del _LISTENERS[listener.key]
        if last:
            listener.stop()
