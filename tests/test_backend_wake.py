"""Waking a waiting consumer: the engine's ``Waiter`` (``Backend.waiter()``).

The first part runs on every engine (``open_backend``): what a waiter guarantees to the
queue, the worker and the scheduler. The second is PostgreSQL's own: LISTEN/NOTIFY
across processes, the lost listening session, fork, and the put path's throttle.
"""

from __future__ import annotations

import os
import select
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from liteq.backends.base import Backend

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _commit_a_write(b: Any) -> None:
    """Commit a write the way the engine's put path does: on PostgreSQL the NOTIFY
    joins the writing transaction (``notify()``), on SQLite the commit writes the WAL."""
    if b.capabilities.engine == "postgres":
        table = f'"{b.schema}".app_rows'
        b.execute(f"CREATE TABLE IF NOT EXISTS {table} (x int)")
        with b.transaction():
            b.execute(f"INSERT INTO {table} VALUES (1)")
            b.notify(b.connection(), 1)
    else:
        b.execute("CREATE TABLE IF NOT EXISTS app_rows (x INTEGER)")
        b.execute("INSERT INTO app_rows VALUES (1)")


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# -- every engine ---------------------------------------------------------------------


def test_a_waiter_armed_before_a_commit_that_writes_wakes_within_its_timeout(
    open_backend: Callable[..., Backend],
) -> None:
    backend = open_backend()
    if backend.capabilities.wakeup == "poll":
        pytest.skip("a polling waiter is woken by time, not by commits")
    writer = open_backend()
    waiter = backend.waiter()
    try:
        waiter.arm()
        _commit_a_write(writer)
        assert waiter.wait(5.0)
        assert waiter.arm()  # the hint is consumed by arm(), not by wait()
    finally:
        waiter.close()


def test_a_put_from_another_connection_wakes_an_armed_waiter(
    open_backend: Callable[..., Backend],
) -> None:
    from liteq.backends.sqlite.queues import default_queue_options

    backend = open_backend()
    if backend.capabilities.wakeup == "poll":
        pytest.skip("a polling waiter is woken by time, not by commits")
    writer = open_backend()
    qid = writer.ensure_queue("q", default_queue_options(), {}).id
    waiter = backend.waiter()
    try:
        waiter.arm()
        writer.put_ready(qid, 0, b"\xa0")
        assert waiter.wait(5.0)
    finally:
        waiter.close()


def test_a_wait_with_nothing_happening_times_out_and_returns_false(
    open_backend: Callable[..., Backend],
) -> None:
    backend = open_backend()
    waiter = backend.waiter()
    try:
        waiter.arm()
        t0 = time.monotonic()
        assert waiter.wait(0.3) is False
        assert time.monotonic() - t0 >= 0.05  # it slept, whether woken by time or polling
        assert waiter.wait(0) is False
    finally:
        waiter.close()


def test_closing_the_waiter_and_the_backend_releases_every_descriptor_and_thread(
    open_backend: Callable[..., Backend],
) -> None:
    fds, threads = _fds(), threading.active_count()
    backend = open_backend()
    writer = open_backend()
    waiter = backend.waiter()
    waiter.arm()
    _commit_a_write(writer)
    waiter.wait(5.0)
    waiter.close()
    waiter.close()  # twice is harmless
    assert waiter.fd == -1
    backend.close()
    writer.close()
    assert _fds() == fds
    assert threading.active_count() == threads


# -- PostgreSQL only --------------------------------------------------------------------


@pytest.fixture
def pg(pg_url: str, pg_schema: str) -> Iterator[Callable[..., Any]]:
    """``pg()``: another PostgresBackend on this test's schema (all closed after)."""
    from conftest_pg import require_psycopg

    require_psycopg()
    from liteq.backends.postgres import PostgresBackend

    opened: list[Any] = []

    def opener() -> Any:
        opened.append(PostgresBackend(pg_url, schema=pg_schema))
        return opened[-1]

    yield opener
    for b in reversed(opened):
        b.close()


def _listening(pg_admin: Any, channel: str) -> list[int]:
    """The server pids of sessions named liteq that LISTEN on *channel* now."""
    rows = pg_admin.execute(
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'liteq'"
        " AND query = %s",
        (f'LISTEN "{channel}"',),
    ).fetchall()
    return [r[0] for r in rows]


def _until(check: Callable[[], Any], seconds: float = 10.0) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.01)


NOTIFIER = """
import sys, time
from liteq.backends.postgres import PostgresBackend
b = PostgresBackend(sys.argv[1], schema=sys.argv[2])
conn = b.connection()
print("ready", flush=True)
for line in sys.stdin:
    t0 = time.monotonic()
    conn.execute(b.notify_sql, ("7",))
    print(t0, flush=True)
b.close()
"""


def test_a_notify_from_another_process_wakes_a_waiter_within_milliseconds(
    pg: Callable[..., Any], pg_url: str, pg_schema: str
) -> None:
    backend = pg()
    assert backend.capabilities.wakeup == "listen"
    waiter = backend.waiter()
    proc = subprocess.Popen(
        [sys.executable, "-c", NOTIFIER, pg_url, pg_schema],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        assert proc.stdout.readline().strip() == "ready"
        latencies = []
        for _ in range(50):
            waiter.arm()
            proc.stdin.write("go\n")
            proc.stdin.flush()
            assert waiter.wait(5.0)
            woke = time.monotonic()
            sent = float(proc.stdout.readline())
            latencies.append(woke - sent)
        proc.stdin.close()
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        waiter.close()
    p50 = statistics.median(latencies)
    print(f"\nNOTIFY-to-wake across processes: p50 {p50 * 1000:.2f} ms, "
          f"max {max(latencies) * 1000:.2f} ms over {len(latencies)}")
    assert max(latencies) < 0.5


def test_a_killed_listening_session_reconnects_wakes_every_waiter_and_later_commits_wake_again(
    pg: Callable[..., Any], pg_admin: Any
) -> None:
    backend, writer = pg(), pg()
    waiter = backend.waiter()
    try:
        listener = backend.listener()
        old = listener.backend_pid
        assert old is not None and _listening(pg_admin, backend.wake_channel) == [old]
        waiter.arm()
        pg_admin.execute("SELECT pg_terminate_backend(%s, 10000)", (old,))
        # Commits while no LISTEN is in place are lost: the reconnect wakes everyone.
        assert waiter.wait(10.0)
        assert _until(lambda: listener.backend_pid not in (None, old))
        assert listener.connects == 2
        assert _listening(pg_admin, backend.wake_channel) == [listener.backend_pid]
        waiter.arm()
        _commit_a_write(writer)
        assert waiter.wait(5.0)
    finally:
        waiter.close()


def test_a_forked_child_listens_on_its_own_session_and_its_waiters_wake(
    pg: Callable[..., Any], pg_admin: Any
) -> None:
    backend, writer = pg(), pg()
    waiter = backend.waiter()
    made_before = backend.waiter()
    parent_session = backend.listener().backend_pid
    read, write = os.pipe()
    go_read, go_write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover (runs in the child)
        code = 1
        try:
            os.close(read)
            os.close(go_write)
            own = backend.waiter()
            own.arm()
            made_before.arm()  # inherited: gets its own pipe on the child's listener
            os.write(write, f"{backend.listener().backend_pid}\n".encode())
            select.select([go_read], [], [], 30.0)
            if own.wait(10.0) and made_before.wait(10.0):
                code = 0
            own.close()
            backend.close()
        finally:
            os._exit(code)
    os.close(write)
    os.close(go_read)
    try:
        with os.fdopen(read) as f:
            child_session = int(f.readline())
        assert child_session != parent_session
        waiter.arm()
        _commit_a_write(writer)
        os.write(go_write, b"g")
        _, status = os.waitpid(child, 0)
        child = 0
        assert os.waitstatus_to_exitcode(status) == 0
        # The parent's session survived the child, and still wakes the parent.
        assert waiter.wait(5.0)
        assert backend.listener().backend_pid == parent_session
        assert parent_session in _listening(pg_admin, backend.wake_channel)
    finally:
        os.close(go_write)  # a child still waiting for the go sees EOF and ends
        if child:
            os.kill(child, 9)
            os.waitpid(child, 0)
        waiter.close()
        made_before.close()


def test_a_rolled_back_transaction_wakes_no_one(pg: Callable[..., Any]) -> None:
    backend, writer = pg(), pg()
    waiter = backend.waiter()
    try:
        waiter.arm()
        with pytest.raises(RuntimeError):
            with writer.transaction():
                writer.notify(writer.connection(), 1)
                raise RuntimeError("roll back")
        assert waiter.wait(0.3) is False
    finally:
        waiter.close()


def test_puts_in_quick_succession_notify_once_at_once_and_once_after_the_window(
    pg: Callable[..., Any], pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg

    from liteq.backends.postgres import notifier

    monkeypatch.setattr(notifier, "WINDOW", 0.5)  # long enough to be deterministic
    backend = pg()
    with psycopg.connect(pg_url, autocommit=True) as watch:
        watch.execute(f'LISTEN "{backend.wake_channel}"')
        conn = backend.connection()
        t0 = time.monotonic()
        backend.notify(conn, 3)  # leading edge: NOTIFY now
        backend.notify(conn, 3)  # inside the window: the trailing one is scheduled
        backend.notify(conn, 3)  # already scheduled: nothing more
        backend.notify(conn, 4)  # another queue has its own window
        got = [(n.payload, n.pid) for n in watch.notifies(timeout=3.0, stop_after=3)]
        elapsed = time.monotonic() - t0
    [(sent_pid,)] = backend.execute("SELECT pg_backend_pid()")
    assert sorted(got) == sorted([("3", sent_pid), ("4", sent_pid), ("3", backend.listener().backend_pid)])
    assert got[-1] == ("3", backend.listener().backend_pid)  # the trailing one, last
    assert elapsed >= 0.5


def test_inside_the_applications_transaction_every_put_notifies_and_postgresql_folds_them(
    pg: Callable[..., Any], pg_url: str
) -> None:
    import psycopg

    backend = pg()
    with psycopg.connect(pg_url, autocommit=True) as watch:
        watch.execute(f'LISTEN "{backend.wake_channel}"')
        with backend.transaction():
            assert backend.notify_wanted(5) and backend.notify_wanted(5)
            backend.notify(backend.connection(), 5)
            backend.notify(backend.connection(), 5)
        got = [n.payload for n in watch.notifies(timeout=1.5)]
    assert got == ["5"]  # the transaction's two, folded into one; nothing throttled


def test_the_throttle_has_a_leading_and_a_trailing_edge_per_queue() -> None:
    from liteq.backends.postgres.notifier import Throttle

    t = Throttle(0.001, wide=0.001)  # a window that never widens (the next test)
    assert t.ask(1, 10.0) is True
    assert t.ask(2, 10.0) is True
    assert t.ask(1, 10.0002) is False
    assert t.next_due() == pytest.approx(10.0012)
    assert t.ask(1, 10.0005) is False
    assert t.take_due(10.001) == []
    assert t.take_due(10.0012) == [1]
    assert t.next_due() is None
    assert t.ask(1, 10.0015) is False  # the trailing one counted as sent at 10.0012
    assert t.ask(1, 10.0020) is False  # still pending (due at 10.0025)
    assert t.take_due(10.0026) == [1]
    assert t.ask(1, 10.0037) is True
    # A put that comes when the trailing one is due, with no throttled put in flight,
    # notifies in its own transaction instead: its commit follows theirs.
    assert t.ask(1, 10.0040) is False  # due at 10.0050
    assert t.ask(1, 10.0051) is True
    assert t.next_due() is None and t.take_due(10.1) == []
    # With a throttled put still in flight it does not: the trailing one waits for it.
    assert t.ask(1, 10.1055) is True  # a leading edge
    assert t.ask(1, 10.1058) is False  # due at 10.1068
    t.hold(1)
    assert t.ask(1, 10.1070) is False
    assert t.done(1, 10.1071) is True
    assert t.take_due(10.1071) == [1]


def test_the_window_of_a_queue_widens_while_its_puts_come_faster_than_fast() -> None:
    from liteq.backends.postgres.notifier import Throttle

    t = Throttle(0.001, wide=0.008, fast=2000)
    # ~900 puts a second: each one a leading edge; the window stays 1 ms.
    for i in range(5):
        assert t.ask(1, 10.0 + i * 0.0011) is True
    assert t.width(1) == 0.001
    # 5,000 a second: four puts throttled behind the leading edge, so the trailing
    # notification (4 puts in 1.2 ms) widens the window.
    assert t.ask(1, 11.0) is True
    for k in range(1, 5):
        assert t.ask(1, 11.0 + k * 0.0002) is False
    assert t.take_due(11.0012) == [1]
    assert t.width(1) == 0.008
    assert t.width(2) == 0.001  # per queue
    # Now one notification per 8 ms: due 8 ms after the last one, and a put that finds
    # it due takes it over (still fast: the window stays wide).
    assert t.ask(1, 11.0014) is False
    assert t.next_due() == pytest.approx(11.0092)
    for k in range(2, 40):
        assert t.ask(1, 11.0012 + k * 0.0002) is False
    assert t.ask(1, 11.0094) is True
    assert t.width(1) == 0.008
    # A pause of a wide window: the next put notifies at once, and narrows it.
    assert t.ask(1, 11.0180) is True
    assert t.width(1) == 0.001
    # Slower than FAST inside a wide window: the trailing one narrows it again.
    t2 = Throttle(0.001, wide=0.008, fast=2000)
    assert t2.ask(1, 20.0) is True
    assert [t2.ask(1, 20.0 + k * 0.0002) for k in (1, 2, 3)] == [False] * 3
    assert t2.take_due(20.0012) == [1] and t2.width(1) == 0.008
    assert t2.ask(1, 20.0062) is False  # 5 ms later: inside the wide window
    assert t2.next_due() == pytest.approx(20.0092)
    assert t2.take_due(20.0092) == [1]  # 1 put in 8 ms
    assert t2.width(1) == 0.001
    assert t2.ask(1, 20.0105) is True


def test_a_trailing_notification_waits_for_the_throttled_puts_in_flight_at_most_late() -> None:
    from liteq.backends.postgres.notifier import Throttle

    t = Throttle(0.001, late=0.05, wide=0.001)
    assert t.ask(1, 10.0) is True
    assert t.ask(1, 10.0002) is False
    t.hold(1)  # that put has not committed yet
    assert t.take_due(10.0012) == []  # due, but held back by the put in flight
    assert t.next_due() == pytest.approx(10.0512)
    assert t.done(1, 10.003) is True  # committed: the listener should look now
    assert t.take_due(10.003) == [1]
    # A put still in flight past `late` does not hold it longer; one more follows it.
    assert t.ask(1, 10.0035) is False
    t.hold(1)
    assert t.take_due(10.0600) == [1]
    assert t.next_due() is None
    assert t.done(1, 10.07) is True
    assert t.take_due(10.07) == [1]
    assert t.next_due() is None


def test_a_throttled_puts_trailing_notification_comes_after_its_slow_commit(
    pg: Callable[..., Any], pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hints never precede their commit on PostgreSQL (``Waiter.early`` is False):
    consumers do not look again after an empty look, so a trailing notification sent
    while a throttled put was still committing would leave it to the periodic
    re-check."""
    import psycopg

    from liteq.backends.postgres import notifier
    from liteq.backends.sqlite import default_queue_options

    monkeypatch.setattr(notifier, "WINDOW", 0.2)
    monkeypatch.setattr(notifier, "LATE", 5.0)
    backend = pg()
    assert backend.waiter().early is False
    q = backend.create_queue("slow", default_queue_options())
    s = backend.schema
    with psycopg.connect(pg_url, autocommit=True) as watch, \
            psycopg.connect(pg_url, autocommit=True) as look:
        watch.execute(f'LISTEN "{backend.wake_channel}"')
        backend.put_ready(q.id, 0, b"\xa0")  # the leading edge: notifies in its statement
        # The next put's commit takes 0.5 s (a deferred trigger), past its trailing
        # notification's due time (0.2 s after it asked).
        watch.execute(
            f"CREATE FUNCTION {s}.slow() RETURNS trigger LANGUAGE plpgsql AS"
            " $$ BEGIN PERFORM pg_sleep(0.5); RETURN NULL; END $$"
        )
        watch.execute(
            f"CREATE CONSTRAINT TRIGGER slow AFTER INSERT ON {s}.messages"
            f" DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION {s}.slow()"
        )
        slow = threading.Thread(target=backend.put_ready, args=(q.id, 0, b"\xa1"))
        slow.start()
        seen = []
        for _ in watch.notifies(timeout=3.0, stop_after=2):
            seen.append(look.execute(f"SELECT count(*) FROM {s}.messages").fetchone()[0])
        slow.join(30)
    assert seen == [1, 2]  # the trailing one found the slow put committed


def test_a_stream_of_puts_does_not_wake_the_listening_thread_for_each_put(
    pg: Callable[..., Any], pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each wake-up of the listening thread costs the producer a thread switch: poking
    it at every throttled put's ask and done (two per put, before session 10) took 40%
    of a producer's puts per second, and at done only (session 10) still 0.7-0.8 per
    put. Now a put's ask never pokes, and its done only when the thread would otherwise
    look more than SLACK after the trailing notification is sendable: a thread waiting
    out a put in flight, or lingering after recent puts, looks every SLACK on its own,
    so a stream of puts pokes it about once. And the burst still ends with a
    notification after its last commit."""
    import psycopg

    from liteq.backends.postgres import notifier
    from liteq.backends.sqlite import default_queue_options

    pokes = []
    real = notifier.Listener._poke
    monkeypatch.setattr(notifier.Listener, "_poke", lambda self: (pokes.append(1), real(self)))
    backend = pg()
    q = backend.create_queue("stream", default_queue_options())
    backend.waiter().close()  # the listening thread is running, as in a consumer's process
    s, n = backend.schema, 400
    seen: list[int] = []  # messages visible at each notification, as a consumer sees them
    listening = threading.Event()

    def consumer() -> None:
        with psycopg.connect(pg_url, autocommit=True) as watch, \
                psycopg.connect(pg_url, autocommit=True) as look:
            watch.execute(f'LISTEN "{backend.wake_channel}"')
            listening.set()
            for _ in watch.notifies(timeout=3.0):
                seen.append(look.execute(f"SELECT count(*) FROM {s}.messages").fetchone()[0])
                if seen[-1] == n:
                    return

    t = threading.Thread(target=consumer)
    t.start()
    assert listening.wait(10)
    for _ in range(n):
        backend.put_ready(q.id, 0, b"\xa0")
    t.join(10)
    assert len(pokes) <= n // 10, (len(pokes), n)  # 2 per put, then 0.7-0.8, before
    assert seen and seen[-1] == n  # the burst's last commit was announced after it


def test_a_process_that_only_puts_does_not_listen_until_its_first_waiter(
    pg: Callable[..., Any], pg_admin: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A producer's listening thread sends trailing notifications; if its session also
    listened, each of its own notifications would wake it and its server process for
    nothing. Its first waiter makes it listen, and wakes at once (a commit before the
    LISTEN is lost to it)."""
    from liteq.backends.postgres import notifier
    from liteq.backends.sqlite import default_queue_options

    monkeypatch.setattr(notifier, "WINDOW", 0.5)  # throttled however slow the machine
    backend = pg()
    q = backend.create_queue("producer", default_queue_options())
    for _ in range(3):  # the second and third are throttled: the thread starts
        backend.put_ready(q.id, 0, b"\xa0")
    listener = backend.listener()
    assert _until(lambda: listener.backend_pid is not None)
    assert _listening(pg_admin, backend.wake_channel) == []
    w = backend.waiter()
    assert _listening(pg_admin, backend.wake_channel) == [listener.backend_pid]
    assert w.wait(5.0) is True  # woken once LISTEN was in place: look again
    w.arm()
    other = pg()
    other.put_ready(q.id, 0, b"\xa1")
    assert w.wait(5.0) is True
    w.close()
    other.close()


def test_the_channel_is_one_per_schema_and_fits_postgresqls_name_limit() -> None:
    from liteq.backends.postgres.notifier import channel_for, notify_sql

    assert channel_for("liteq") == "liteq_liteq"
    long_a, long_b = "a" * 60 + "x", "a" * 60 + "y"
    assert len(channel_for(long_a)) <= 63 and len(channel_for("b" * 63)) <= 63
    assert channel_for(long_a) != channel_for(long_b)
    assert notify_sql("s1") == "SELECT pg_notify('liteq_s1', %s)"


def test_closing_the_backend_sends_the_trailing_notification_still_pending(
    pg: Callable[..., Any], pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg

    from liteq.backends.postgres import notifier

    monkeypatch.setattr(notifier, "WINDOW", 30.0)  # it would be due long after the test
    backend = pg()
    with psycopg.connect(pg_url, autocommit=True) as watch:
        watch.execute(f'LISTEN "{backend.wake_channel}"')
        conn = backend.connection()
        backend.notify(conn, 8)
        backend.notify(conn, 8)  # suppressed: a trailing one is pending
        backend.close()
        got = [n.payload for n in watch.notifies(timeout=5.0, stop_after=2)]
    assert got == ["8", "8"]


def test_one_commit_wakes_the_waiters_of_every_thread(pg: Callable[..., Any]) -> None:
    backend, writer = pg(), pg()
    armed = threading.Barrier(9)
    woke: list[bool] = []
    lock = threading.Lock()

    def consumer() -> None:
        waiter = backend.waiter()
        try:
            waiter.arm()
            armed.wait(30)
            result = waiter.wait(10.0)
            with lock:
                woke.append(result)
        finally:
            waiter.close()

    threads = [threading.Thread(target=consumer) for _ in range(8)]
    for t in threads:
        t.start()
    armed.wait(30)
    _commit_a_write(writer)
    for t in threads:
        t.join()
    assert woke == [True] * 8
    assert backend.listener().connects == 1  # one listening session for all of them
