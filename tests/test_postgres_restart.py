"""PostgreSQL resilience (issue 17): a server restart under load, and a connection lost
in the middle of a call. These tests restart their server, so they run on a throwaway
cluster of their own (``tests/pgcluster.py``), never on the shared one.

What must hold: a connection the server ended while idle is replaced before the next
call, which then works; a loss in the middle of a call retries reads and token-guarded
writes once on a new connection and surfaces ``ConnectionLost`` (a StorageError) for
the rest, saying whether the call may have committed; the worker, the scheduler and the
LISTEN session of a process ride out a restart without being restarted.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest_pg import require_psycopg, unavailable
from pgcluster import Cluster, find_bindir, with_dbname

require_psycopg()

import psycopg  # noqa: E402

import liteq  # noqa: E402
from liteq.errors import ConnectionLost, StorageError  # noqa: E402

pytestmark = pytest.mark.postgres

HERE = Path(__file__).resolve().parent
#: Bound for anything awaited: waits end as soon as the thing happens.
PATIENCE = 60.0


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """A cluster of this module's own: its tests restart it."""
    bindir = find_bindir()
    if bindir is None:
        unavailable("initdb is not installed (apt-get install postgresql)")
    c = Cluster(bindir)
    try:
        c.start()
    except (RuntimeError, OSError, KeyError) as exc:
        c.stop()
        unavailable(f"could not start a cluster with {bindir}: {exc}")
    yield c
    c.stop()


@pytest.fixture
def url(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database on the module's cluster for one test."""
    name = f"t_{request.node.name[5:40]}".lower()
    with psycopg.connect(cluster.url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield with_dbname(cluster.url, name)
    with psycopg.connect(cluster.url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def wait_until(predicate: Callable[[], Any], what: str, timeout: float = PATIENCE) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


# -- a connection lost in the middle of a call -------------------------------------------


def _lose(url: str, call: Callable[[], Any], warm: Callable[[], Any] | None = None) -> Any:
    """Run *call* in a thread while an ACCESS EXCLUSIVE lock on liteq's messages table
    holds it up, terminate its session while it waits, then let the lock go: what the
    call returned, or the exception it raised. *warm* runs first in that thread, before
    the lock is taken (the thread's connection and its prepared statements made)."""
    out: list[Any] = []
    warmed, go = threading.Event(), threading.Event()

    def run() -> None:
        try:
            if warm is not None:
                warm()
            warmed.set()
            go.wait(PATIENCE)
            out.append(call())
        except Exception as exc:  # the test looks at it
            out.append(exc)
        finally:
            warmed.set()

    # Two sessions: the one in a transaction would see pg_stat_activity frozen.
    with psycopg.connect(url, autocommit=True) as admin, \
            psycopg.connect(url, autocommit=True) as watch:
        t = threading.Thread(target=run)
        t.start()
        warmed.wait(PATIENCE)
        admin.execute("BEGIN")
        admin.execute("LOCK TABLE liteq.messages IN ACCESS EXCLUSIVE MODE")
        go.set()
        sql = ("SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
               " AND application_name = 'liteq'")
        wait_until(lambda: watch.execute(sql).fetchall(), "the call to wait on the lock")
        [(pid,)] = watch.execute(sql).fetchall()
        watch.execute("SELECT pg_terminate_backend(%s, 10000)", (pid,))
        time.sleep(0.1)  # a retry now waits on the lock again, on a new session
        admin.execute("ROLLBACK")
        t.join(PATIENCE)
    return out[0]


def test_an_ack_whose_connection_is_lost_midway_is_retried_on_a_new_connection_and_acks_once(
    cluster: Cluster, url: str
) -> None:
    db = liteq.connect(url)
    q = db.queue("q")
    q.put_many(["a", "b"])
    a = q.get()
    assert a is not None
    got = _lose(url, a.ack)
    assert got is None  # acked, no error: the token made the second try safe
    assert q.stats()["depth"] == 1
    b = q.get()
    assert b is not None
    assert _lose(url, lambda: b.extend(30)) is None  # extend: retried too, no error
    b.ack()
    assert q.stats()["depth"] == 0
    db.close()


def test_a_read_whose_connection_is_lost_midway_is_retried(cluster: Cluster, url: str) -> None:
    db = liteq.connect(url)
    q = db.queue("q")
    q.put("x")
    assert _lose(url, lambda: q.peek(5))[0].payload == "x"
    db.close()


def test_a_put_whose_connection_is_lost_midway_raises_connection_lost_maybe_committed(
    cluster: Cluster, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = liteq.connect(url)
    q = db.queue("q")
    # A put the throttle sends no NOTIFY with is one autocommit statement (a first put
    # would share a transaction with its NOTIFY, rolled back whole and retried).
    monkeypatch.setattr(db.backend, "notify_wanted", lambda qid: False)

    def warm() -> None:  # the put's statement prepared on the thread's connection
        q.put("warm")  # first (the next test: not)
        msg = q.get()
        assert msg is not None
        msg.ack()

    got = _lose(url, lambda: q.put("x"), warm)  # its outcome is unknown
    assert isinstance(got, ConnectionLost) and isinstance(got, StorageError)
    assert got.maybe_committed
    assert "whether it was committed is unknown" in str(got)
    assert "psycopg" not in type(got).__module__
    assert q.stats()["depth"] == 0  # here it had not run (it waited on the lock)
    db.close()


def test_a_put_whose_connection_is_lost_as_its_statement_is_first_prepared_is_retried(
    cluster: Cluster, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hot path prepares a statement the first time a connection sends it
    (``hot.py``); a connection lost during that ran nothing, so the put is tried again on
    a new connection and puts once."""
    db = liteq.connect(url)
    q = db.queue("q")
    monkeypatch.setattr(db.backend, "notify_wanted", lambda qid: False)
    got = _lose(url, lambda: q.put("x"))  # waits on the lock while being prepared
    assert isinstance(got, int)
    assert q.stats()["depth"] == 1
    msg = q.get()
    assert msg is not None and msg.id == got and msg.payload == "x"
    db.close()


def test_a_put_whose_transaction_is_lost_before_its_commit_is_retried_and_puts_once(
    cluster: Cluster, url: str
) -> None:
    db = liteq.connect(url)
    q = db.queue("q")
    got = _lose(url, lambda: q.put("x", key="k"))  # a transaction: rolled back, retried
    assert isinstance(got, int)
    assert q.put("x", key="k") == got  # the dedup key: a caller's retry adds nothing
    assert q.stats()["depth"] == 1
    db.close()


def test_a_claim_whose_connection_is_lost_midway_is_not_retried_and_its_message_comes_back(
    cluster: Cluster, url: str
) -> None:
    db = liteq.connect(url)
    q = db.queue("q", lease=0.5)
    q.put("x")
    got = _lose(url, q.get)
    assert isinstance(got, ConnectionLost) and got.maybe_committed
    msg = q.get(wait=PATIENCE)
    assert msg is not None and msg.payload == "x"
    msg.ack()
    db.close()


# -- a server restart ----------------------------------------------------------------------


def test_after_a_restart_every_threads_first_call_works_and_waiters_wake_again(
    cluster: Cluster, url: str
) -> None:
    db = liteq.connect(url)
    q = db.queue("q")
    waiter = db.waiter()
    calls = [lambda i=i: q.put(i) for i in range(4)]
    results: list[Any] = [None] * 4

    def warm_then_call(i: int, go: threading.Event) -> None:
        q.stats()  # this thread's connection exists before the restart
        warm.wait(PATIENCE)
        go.wait(PATIENCE)
        try:
            results[i] = calls[i]()
        except Exception as exc:  # reported below
            results[i] = exc

    go = threading.Event()
    warm = threading.Barrier(5)
    threads = [threading.Thread(target=warm_then_call, args=(i, go)) for i in range(4)]
    for t in threads:
        t.start()
    q.stats()
    warm.wait(PATIENCE)
    cluster.restart()
    go.set()
    for t in threads:
        t.join(PATIENCE)
    assert all(isinstance(r, int) for r in results), results
    assert q.stats()["depth"] == 4  # this thread's first call after the restart, too
    # The LISTEN session came back: a put from another process's connection wakes.
    other = liteq.connect(url)
    deadline = time.monotonic() + PATIENCE
    woke = False
    while not woke and time.monotonic() < deadline:
        waiter.arm()
        other.queue("q").put("wake")
        woke = waiter.wait(1.0)
    assert woke
    other.close()
    db.close()


def _start(url: str, log: Path, *args: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ, LITEQ_DB=url,
               PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    out = open(log, "wb")  # noqa: SIM115 - the child holds it
    return subprocess.Popen([sys.executable, "-m", "liteq", "--db", url, *args], env=env,
                            cwd=str(HERE), stdout=out, stderr=out)


def test_a_restart_under_load_loses_no_committed_put_completes_no_job_twice_and_nothing_restarts(
    cluster: Cluster, url: str, tmp_path: Path
) -> None:
    db = liteq.connect(url)
    db.execute("CREATE TABLE restart_done (n bigint NOT NULL, job bigint NOT NULL, pid int)")
    db.queue("work", lease=2.0)  # a job cut off by the restart runs again 2 s later
    db.schedule("beat", every=1, queue="beats", payload="beat", misfire="all")

    @db.task(name="restart.record", queue="work", atomic=True)
    def record(n: int) -> None:  # runs in the worker (restartapp.py); here to enqueue
        raise AssertionError("not run here")

    wlog, slog = tmp_path / "worker.log", tmp_path / "scheduler.log"
    worker = _start(url, wlog, "worker", "restartapp", "--queues", "work", "-c", "2",
                    "--summary-interval", "0")
    scheduler = _start(url, slog, "scheduler", "restartapp", "--interval", "0.5")
    procs = [worker, scheduler]
    committed: set[int] = set()
    errors: list[BaseException] = []
    stop = threading.Event()

    def produce(p: int) -> None:
        for i in range(100_000):
            if stop.is_set():
                return
            n = p * 100_000 + i
            while True:  # a put that raised may have committed: again, same key
                try:
                    record.enqueue((n,), key=f"n{n}")
                    committed.add(n)
                    break
                except StorageError as exc:
                    errors.append(exc)
                    time.sleep(0.05)
                except BaseException as exc:  # anything else fails the test
                    errors.append(exc)
                    return
            time.sleep(0.002)

    def done() -> list[tuple[int, int]]:
        return [(n, j) for n, j in db.execute("SELECT n, job FROM restart_done")]

    try:
        wait_until(lambda: db.backend.schedule_runs("beat", 1), "the scheduler's first fire")
        producers = [threading.Thread(target=produce, args=(p,)) for p in range(2)]
        for t in producers:
            t.start()
        wait_until(lambda: len(done()) >= 50, "the worker to complete jobs")
        restarted_at = time.time()
        cluster.restart()
        time.sleep(1.5)  # the producers go on after the restart
        stop.set()
        for t in producers:
            t.join(PATIENCE)
        wait_until(lambda: committed <= {n for n, _ in done()},
                   "every committed put to be completed")
        wait_until(lambda: any(r.fire_at > restarted_at + 1
                               for r in db.backend.schedule_runs("beat", 5)),
                   "a fire after the restart")
        alive = [p.poll() for p in procs]
    finally:
        stop.set()
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        codes = [p.wait(PATIENCE) for p in procs]
    logs = wlog.read_text() + slog.read_text()
    assert alive == [None, None], logs[-3000:]  # neither was restarted, nor died
    assert codes == [0, 0], logs[-3000:]
    # The producers saw only StorageError (each retried with its dedup key).
    assert all(isinstance(e, StorageError) for e in errors), errors
    assert all("psycopg" not in type(e).__module__ for e in errors)
    completed = done()
    jobs = Counter(j for _, j in completed)
    assert set(jobs.values()) == {1}, "a job was completed (acked) twice"
    assert committed <= {n for n, _ in completed}
    # The scheduler fired each time once, before and after the restart.
    runs = db.backend.schedule_runs("beat", 1000)
    times = [r.fire_at for r in runs]
    assert len(set(times)) == len(times)
    assert len({r.job_id for r in runs}) == len(runs)
    # An outage is logged once per loop (a line each for the worker, its heartbeat and
    # the scheduler, when they met it), not once per poll, and with no traceback.
    assert logs.count("the database does not answer") <= 3, logs[-3000:]
    assert "Traceback" not in logs, logs[-3000:]
    db.close()


def test_every_verb_of_the_interface_is_placed_in_one_retry_list() -> None:
    """A verb in no list is silently never tried again after a lost connection: the
    hot-path pass added ``ack_one`` that way, and an ack whose connection was lost
    raised instead of acking (this module's ack test caught it)."""
    from liteq.backends.base import Backend
    from liteq.backends.postgres import retry

    verbs = {n for n in dir(Backend) if not n.startswith("_") and callable(getattr(Backend, n))}
    lists = [retry.READS, retry.GUARDED, retry.ONCE, retry.PLUMBING, retry.UNDECIDED]
    placed = [name for names in lists for name in names]
    assert len(placed) == len(set(placed)), "a verb in two lists"
    assert sorted(verbs - set(placed)) == [], "verbs in no list: place each one"
    assert sorted(set(placed) - verbs) == [], "names that are no verb of the interface"
