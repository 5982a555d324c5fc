"""Faults of the disk: I/O errors, a full disk and failed syncs injected under every
liteq operation through an apsw VFS (``faultvfs.py``); and files damaged on disk
(truncated, payload bytes overwritten), through the API, a worker and the CLI.

The promise under test (DESIGN.md, bad-input table): on a disk full or I/O error
mid-transaction the operation raises a :class:`liteq.StorageError` saying so, the
transaction rolls back, nothing is half done, every committed message is still
there, ``PRAGMA integrity_check`` is ok, and the database works again once the
fault stops -- without reopening it.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import apsw
import pytest
from click.testing import CliRunner
from faultvfs import FaultPlan, fault_vfs
from helpers import file_digest

import liteq
import liteq.worker
from liteq.cli import cli
from liteq.scheduler import Scheduler

LONG = 300.0  # a lease no test outlives


# --- a small world under the fault VFS ----------------------------------------------------


@dataclass
class World:
    """A database with a queue holding ready messages and one leased message, a topic
    with two subscriptions, and an application table; all through the fault plan."""

    db: liteq.Database
    plan: FaultPlan
    q: liteq.Queue
    topic: liteq.Topic
    held: liteq.Message
    committed: list[int]

    @property
    def path(self) -> str:
        return self.db.path


@contextmanager
def world(path: str, durability: str = "normal") -> Iterator[World]:
    """The fault VFS is the default while the block runs; the world is built on it."""
    with fault_vfs() as plan:
        db = liteq.connect(path, durability=durability)
        try:
            db.execute("CREATE TABLE app (n INTEGER NOT NULL)")
            q = db.queue("q", lease=LONG, max_depth=1_000_000)  # bounded: the counter is kept
            topic = db.topic("t")
            topic.subscribe("all", "#", lease=LONG)
            topic.subscribe("eu", "*.eu", lease=LONG)
            committed = q.put_many([{"n": n, "pad": "x" * 100} for n in range(20)])
            topic.publish({"order": 0}, key="order.eu")
            db.schedule("tick", at=time.time() - 5, queue="fires", payload={"fire": 1})
            held = q.get()
            assert held is not None and held.id == committed[0]
            yield World(db, plan, q, topic, held, committed)
        finally:
            plan.clear()
            db.close()


def snapshot(db: liteq.Database) -> dict[str, list[tuple[Any, ...]]]:
    """Every row that a liteq operation or the application could change. (The queues'
    put/ack totals are statistics flushed in passing; see the totals test below.)"""
    return {
        "messages": db.execute("SELECT * FROM messages ORDER BY id"),
        "queues": db.execute(
            "SELECT id, name, max_depth, lease, max_attempts, dead_letter, retention, depth, "
            "count_depth, topic, pattern, expires_at FROM queues ORDER BY id"),
        "app": db.execute("SELECT n FROM app ORDER BY rowid"),
        "meta": db.execute("SELECT key, value FROM meta ORDER BY key"),
        "results": db.execute("SELECT * FROM results ORDER BY id"),
        "schedules": db.execute("SELECT * FROM schedules ORDER BY id"),
        "schedule_runs": db.execute("SELECT * FROM schedule_runs ORDER BY id"),
    }


def state_of(db: liteq.Database, mid: int) -> str | None:
    msg = db.message(mid)
    return None if msg is None else msg.state


# --- the operations -----------------------------------------------------------------------


@dataclass
class Operation:
    """One liteq operation, and what it must have done once it succeeds."""

    run: Callable[[World], Any]
    done: Callable[[World, Any], None]


def _done_put(w: World, mid: Any) -> None:
    msg = w.db.message(mid)
    assert msg is not None and msg.payload == {"new": 1} and msg.state == "ready"


def _done_put_many(w: World, ids: Any) -> None:
    assert [w.db.message(i).payload for i in ids] == [{"new": i} for i in range(5)]  # type: ignore[union-attr]


def _done_get(w: World, msg: Any) -> None:
    assert msg is not None and msg.id == w.committed[1]
    assert state_of(w.db, msg.id) == "leased"


def _done_get_many(w: World, msgs: Any) -> None:
    assert [m.id for m in msgs] == w.committed[1:5]
    assert {state_of(w.db, m.id) for m in msgs} == {"leased"}


def _transaction(w: World) -> int:
    with w.db.transaction():
        w.db.execute("INSERT INTO app (n) VALUES (?)", (42,))
        mid = w.q.put({"outbox": 42})
        w.held.ack()
    return mid


def _done_transaction(w: World, mid: Any) -> None:
    assert w.db.execute("SELECT n FROM app") == [(42,)]
    assert state_of(w.db, mid) == "ready"
    assert state_of(w.db, w.held.id) is None


def _done_publish(w: World, n: Any) -> None:
    assert n == 2
    for sub in ("all", "eu"):
        assert [m.payload for m in w.topic.subscription(sub).peek(10)] == [{"order": 0},
                                                                           {"order": 1}]


def _done_ack(w: World, _: Any) -> None:
    assert state_of(w.db, w.held.id) is None


def _done_nack(w: World, _: Any) -> None:
    msg = w.db.message(w.held.id)
    assert msg is not None and msg.state == "ready" and msg.attempts == 1


def _done_extend(w: World, _: Any) -> None:
    until = w.db.execute("SELECT lease_until FROM messages WHERE id = ?", (w.held.id,))[0][0]
    assert until == w.held.lease_until and until > time.time() + 500


def _done_fail(w: World, _: Any) -> None:
    msg = w.db.message(w.held.id)
    assert msg is not None and msg.state == "dead" and msg.error == "given up"


def _done_tick(w: World, fires: Any) -> None:
    assert [f.schedule for f in fires] == ["tick"]
    msg = w.db.message(fires[0].job_id)
    assert msg is not None and msg.queue == "fires" and msg.payload == {"fire": 1}
    assert w.db.execute("SELECT count(*) FROM schedule_runs")[0][0] == 1


OPERATIONS: dict[str, Operation] = {
    "put": Operation(lambda w: w.q.put({"new": 1}), _done_put),
    "put_many": Operation(lambda w: w.q.put_many([{"new": i} for i in range(5)]), _done_put_many),
    "get": Operation(lambda w: w.q.get(), _done_get),
    "get_many": Operation(lambda w: w.q.get_many(4), _done_get_many),
    "ack": Operation(lambda w: w.held.ack(), _done_ack),
    "nack": Operation(lambda w: w.held.nack(delay=0), _done_nack),
    "extend": Operation(lambda w: w.held.extend(600), _done_extend),
    "fail": Operation(lambda w: w.held.fail("given up"), _done_fail),
    "publish": Operation(lambda w: w.topic.publish({"order": 1}, key="order.eu"), _done_publish),
    "transaction": Operation(_transaction, _done_transaction),
    "schedule-tick": Operation(lambda w: Scheduler(w.db).tick(), _done_tick),
}


# --- the faults ---------------------------------------------------------------------------


@dataclass
class Fault:
    op: str
    file: str
    code: int
    after: int = 0
    times: int | None = None
    durability: str = "normal"


FAULTS: dict[str, Fault] = {
    "io-error-writing-the-wal": Fault("write", "wal", apsw.SQLITE_IOERR_WRITE),
    "disk-full-growing-the-wal": Fault("grow", "wal", apsw.SQLITE_FULL),
    # One write fails after the first frame header went through: a torn commit.
    "io-error-mid-commit": Fault("write", "wal", apsw.SQLITE_IOERR_WRITE, after=2, times=1),
    "fsync-error-with-durability-full": Fault("sync", "wal", apsw.SQLITE_IOERR_FSYNC,
                                              durability="full"),
    "io-error-reading": Fault("read", "any", apsw.SQLITE_IOERR_READ),
}


@pytest.mark.parametrize("fault_name", list(FAULTS))
@pytest.mark.parametrize("op_name", list(OPERATIONS))
def test_an_operation_meeting_a_disk_fault_raises_storage_error_and_changes_nothing(
        tmp_path, op_name: str, fault_name: str) -> None:
    op, fault = OPERATIONS[op_name], FAULTS[fault_name]
    path = str(tmp_path / "faults.db")
    with world(path, fault.durability) as w:
        before = snapshot(w.db)
        if fault.op == "read":
            w.db.connection.release_memory()  # so the operation must read the file
        w.plan.fail(fault.op, fault.file, code=fault.code, after=fault.after, times=fault.times)

        with pytest.raises(liteq.StorageError) as info:
            op.run(w)

        assert w.plan.fired() > 0, "the fault never happened: the test proves nothing"
        w.plan.clear()
        text = str(info.value)
        assert w.path in text, text
        assert "disk full" in text or "I/O error" in text, text
        assert "rolled back" in text, text
        # Nothing half done, nothing committed lost, the file sound.
        assert snapshot(w.db) == before
        assert w.db.integrity_check() == ["ok"]
        assert not w.db.connection.in_transaction

        # The fault has stopped: the same operation succeeds now, on the same connection.
        op.done(w, op.run(w))
        after = w.db.queue("after")
        after.put("still works")
        msg = after.get()
        assert msg is not None and msg.payload == "still works"
        msg.ack()
        final = snapshot(w.db)
        committed = w.committed

    # And the file says the same to a fresh connection without the fault VFS.
    db = liteq.connect(path)
    try:
        assert snapshot(db) == final
        assert db.integrity_check() == ["ok"]
        present = {mid for (mid,) in db.execute("SELECT id FROM messages")}
        finished_held = op_name in ("ack", "transaction")
        assert set(committed[1:]) <= present
        assert (committed[0] in present) != finished_held
    finally:
        db.close()


# --- checkpoints ------------------------------------------------------------------------


CHECKPOINT_FAULTS = {
    "io-error-writing-the-database-file": ("write", "db", apsw.SQLITE_IOERR_WRITE),
    "disk-full-growing-the-database-file": ("grow", "db", apsw.SQLITE_FULL),
    "fsync-error-on-the-database-file": ("sync", "db", apsw.SQLITE_IOERR_FSYNC),
    "fsync-error-on-the-wal": ("sync", "wal", apsw.SQLITE_IOERR_FSYNC),
    "io-error-reading-the-wal": ("read", "wal", apsw.SQLITE_IOERR_READ),
    "io-error-truncating-the-wal": ("truncate", "wal", apsw.SQLITE_IOERR_TRUNCATE),
}


@pytest.mark.parametrize("fault_name", list(CHECKPOINT_FAULTS))
def test_a_checkpoint_meeting_a_disk_fault_raises_storage_error_and_loses_nothing(
        tmp_path, fault_name: str) -> None:
    op, file, code = CHECKPOINT_FAULTS[fault_name]
    path = str(tmp_path / "checkpoint.db")
    with world(path) as w:
        w.committed += w.q.put_many([{"n": n, "pad": "y" * 500} for n in range(300)])
        before = snapshot(w.db)
        w.db.connection.release_memory()
        w.plan.fail(op, file, code=code)

        with pytest.raises(liteq.StorageError) as info:
            w.db.checkpoint()

        assert w.plan.fired() > 0
        w.plan.clear()
        assert w.path in str(info.value)
        assert snapshot(w.db) == before
        assert w.db.integrity_check() == ["ok"]
        w.db.checkpoint()
        assert os.path.getsize(path + "-wal") == 0
        assert snapshot(w.db) == before
        final = snapshot(w.db)
    db = liteq.connect(path)
    try:
        assert snapshot(db) == final and db.integrity_check() == ["ok"]
    finally:
        db.close()


@pytest.mark.parametrize("after", [0, 5, 200])
def test_an_automatic_checkpoint_torn_by_a_write_error_loses_no_committed_message(
        tmp_path, after: int) -> None:
    """A commit that pushes the WAL past 1000 pages runs a checkpoint; here its writes to
    the database file fail after *after* pages went through, leaving the file half
    updated. SQLite ignores the checkpoint's error (the commit is done), but apsw raises
    the exception a Python VFS raised even then, so the put may report a StorageError:
    either way, every message of the batch is there and the next checkpoint mends the
    file."""
    path = str(tmp_path / "auto.db")
    with world(path) as w:
        w.plan.fail("write", "db", code=apsw.SQLITE_IOERR_WRITE, after=after, times=1)
        payloads = [{"n": n, "pad": "z" * 2000} for n in range(2500)]
        try:
            w.q.put_many(payloads)
        except liteq.StorageError:
            pass
        assert w.plan.fired() == 1, "no checkpoint was attempted"
        w.plan.clear()
        more = w.q.put("after the failed checkpoint")

        rows = w.db.execute(
            "SELECT id, payload FROM messages WHERE qid = ? AND id > ? AND id < ? ORDER BY id",
            (w.q.id, w.committed[-1], more))
        assert [liteq.codec.decode(p) for _, p in rows] == payloads  # the whole batch
        assert w.db.integrity_check() == ["ok"]
        w.db.checkpoint()
        assert w.db.integrity_check() == ["ok"]
        expected = snapshot(w.db)
    db = liteq.connect(path)
    try:
        assert snapshot(db) == expected and db.integrity_check() == ["ok"]
    finally:
        db.close()


# --- faults at random points, against a model -----------------------------------------------


@pytest.mark.parametrize("seed", range(8))
def test_operations_meeting_faults_at_random_points_leave_exactly_the_committed_history(
        tmp_path, seed: int) -> None:
    """Random operations, about half of them with a one-shot fault at a random point
    (any operation on any file, after a random number of calls). Each operation either
    succeeds and the model follows it, or raises StorageError and the model stays; the
    file must match the model throughout, and after a reopen without faults."""
    rng = random.Random(seed)
    path = str(tmp_path / f"random-{seed}.db")
    ready: set[int] = set()
    leased: dict[int, liteq.Message] = {}
    app: list[int] = []
    failures = 0

    def check(db: liteq.Database, q: liteq.Queue) -> None:
        rows = dict(db.execute("SELECT id, state FROM messages"))
        assert {m for m, s in rows.items() if s == 0} == ready
        assert {m for m, s in rows.items() if s == 2} == set(leased)
        assert len(rows) == len(ready) + len(leased)
        assert [n for (n,) in db.execute("SELECT n FROM app ORDER BY rowid")] == app
        assert q.stats()["depth"] == len(ready) + len(leased)  # the counter did not drift

    with fault_vfs() as plan:
        db = liteq.connect(path, durability=rng.choice(["normal", "full"]))
        db.execute("CREATE TABLE app (n INTEGER NOT NULL)")
        q = db.queue("q", lease=LONG, max_depth=10**9)
        for step in range(40):
            if rng.random() < 0.5:
                plan.fail(rng.choice(["read", "write", "grow", "sync", "truncate"]),
                          rng.choice(["db", "wal", "any"]),
                          code=rng.choice([apsw.SQLITE_IOERR, apsw.SQLITE_FULL]),
                          after=rng.randint(0, 8), times=1)
                if rng.random() < 0.5:
                    db.connection.release_memory()
            kind = rng.choice(["put", "put_many", "get_many", "ack", "nack", "extend", "tx"])
            if kind in ("ack", "nack", "extend") and not leased:
                kind = "put"
            try:
                if kind == "put":
                    ready.add(q.put(step))
                elif kind == "put_many":
                    ready.update(q.put_many(list(range(rng.randint(1, 30)))))
                elif kind == "get_many":
                    for m in q.get_many(rng.randint(1, 5)):
                        assert m.id in ready, f"claimed {m.id}, which was not ready"
                        ready.discard(m.id)
                        leased[m.id] = m
                elif kind == "tx":
                    with db.transaction():
                        db.execute("INSERT INTO app (n) VALUES (?)", (step,))
                        mid = q.put({"outbox": step})
                        victim = rng.choice(list(leased)) if leased else None
                        if victim is not None:
                            leased[victim].ack()
                    app.append(step)
                    ready.add(mid)
                    if victim is not None:
                        del leased[victim]
                else:
                    mid = rng.choice(list(leased))
                    m = leased[mid]
                    if kind == "ack":
                        m.ack()
                        del leased[mid]
                    elif kind == "nack":
                        m.nack(delay=0)
                        del leased[mid]
                        ready.add(mid)
                    else:
                        m.extend(LONG)
            except liteq.StorageError as exc:
                failures += 1
                assert path in str(exc)
            finally:
                plan.clear()
            check(db, q)
        assert db.integrity_check() == ["ok"]
        db.close()
    assert failures > 0, "no fault ever hit an operation"
    db = liteq.connect(path)
    try:
        assert db.integrity_check() == ["ok"]
        check(db, db.queue("q"))
    finally:
        db.close()


# --- bugs the fault VFS found (fixed; kept as regression tests) ---------------------------------


def test_an_io_error_that_rolls_back_the_application_transaction_lets_nothing_of_it_commit(
        tmp_path) -> None:
    path = str(tmp_path / "spill.db")
    with fault_vfs() as plan:
        db = liteq.connect(path)
        db.execute("CREATE TABLE app (n INTEGER NOT NULL)")
        db.execute("PRAGMA cache_size = 5")  # a big put spills pages to the WAL mid-transaction
        q = db.queue("q")
        try:
            with pytest.raises(liteq.LiteqError):
                with db.transaction():
                    db.execute("INSERT INTO app (n) VALUES (1)")
                    plan.fail("write", "wal", code=apsw.SQLITE_FULL)
                    with pytest.raises(liteq.StorageError):
                        q.put_many(["y" * 2000] * 200)
                    plan.clear()
                    # The application handles the error and goes on in its transaction.
                    db.execute("INSERT INTO app (n) VALUES (2)")
                    q.put("after the error")
            # All or nothing: nothing of the block may have committed.
            assert db.execute("SELECT n FROM app") == []
            assert len(q) == 0
        finally:
            plan.clear()
            db.close()


@pytest.mark.parametrize("how", ["io-error", "queue-full"])
def test_a_rolled_back_operation_does_not_lose_the_totals_of_earlier_ones(
        tmp_path, how: str) -> None:
    path = str(tmp_path / "totals.db")
    with fault_vfs() as plan:
        db = liteq.connect(path)
        try:
            q = db.queue("q", max_depth=3 if how == "queue-full" else 10)
            q.put_many(["a", "b", "c"])
            assert q.stats()["enqueued_total"] == 3
            time.sleep(1.1)  # past TOTALS_EVERY: the next write flushes the totals
            if how == "io-error":
                plan.fail("write", "wal", code=apsw.SQLITE_IOERR_WRITE)
                with pytest.raises(liteq.StorageError):
                    q.put_many(["d"])
                plan.clear()
            else:
                with pytest.raises(liteq.QueueFull):
                    q.put("d")
            assert q.stats()["enqueued_total"] == 3
        finally:
            plan.clear()
            db.close()


# --- files damaged on disk ---------------------------------------------------------------


@pytest.fixture
def lonely_dir() -> Iterator[str]:
    """A directory holding only the file under test (so stray side files show)."""
    path = tempfile.mkdtemp(prefix="liteq-faults-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _liteq_file(path: str, messages: int = 3000) -> None:
    db = liteq.connect(path)
    db.queue("q").put_many([{"n": n, "pad": "x" * 200} for n in range(messages)])
    db.checkpoint()
    db.close()
    os.remove(path + ".lock")


CUTS = {
    "inside-the-header": lambda size: 10,
    "after-the-header": lambda size: 100,
    "one-page": lambda size: 4096,
    "half": lambda size: size // 2 // 4096 * 4096,
    "all-but-the-last-page": lambda size: size - 4096,
}


@pytest.mark.parametrize("cut", list(CUTS))
def test_a_truncated_database_file_raises_liteq_error_naming_the_path_and_stays_untouched(
        lonely_dir, cut: str) -> None:
    path = os.path.join(lonely_dir, "cut.db")
    _liteq_file(path)
    with open(path, "r+b") as f:
        f.truncate(CUTS[cut](os.path.getsize(path)))
    digest, listing = file_digest(path), sorted(os.listdir(lonely_dir))

    with pytest.raises(liteq.LiteqError) as info:
        liteq.connect(path)

    text = str(info.value)
    assert path in text and ("corrupt" in text or "not a SQLite database" in text), text
    assert file_digest(path) == digest
    assert sorted(os.listdir(lonely_dir)) == listing


CLI_COMMANDS = [
    ["stats"], ["peek", "q"], ["show", "1"], ["get", "q"], ["put", "q", '{"n": 1}'],
    ["dead", "list", "q"], ["purge", "q", "--yes"], ["vacuum"],
]


@pytest.mark.parametrize("command", CLI_COMMANDS, ids=lambda c: "-".join(c[:2]))
def test_the_cli_on_a_truncated_database_prints_an_error_exits_1_and_leaves_it_untouched(
        lonely_dir, command: list[str]) -> None:
    path = os.path.join(lonely_dir, "cut.db")
    _liteq_file(path)
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2 // 4096 * 4096)
    digest, listing = file_digest(path), sorted(os.listdir(lonely_dir))

    result = CliRunner().invoke(cli, ["--db", path, *command])

    assert result.exit_code == 1, result.output
    assert result.output.startswith("Error: ") and path in result.output, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert file_digest(path) == digest
    assert sorted(os.listdir(lonely_dir)) == listing


def _corrupt_on_disk(path: str, markers: list[bytes]) -> None:
    """Overwrite, in the database file itself, the CBOR header of the text string that
    starts with each marker (0x78 LEN becomes 0xff 0xff: a 'break' where an item must be).

    Every copy is corrupted: besides the live row, a page freed by a b-tree split may
    still hold an old copy (SQLite does not wipe free pages)."""
    with open(path, "r+b") as f:
        data = bytearray(f.read())
        for marker in markers:
            at = data.find(marker)
            assert at > 2, "marker not found"
            while at != -1:
                assert data[at - 2] == 0x78, "not a CBOR text string header"
                data[at - 2:at] = b"\xff\xff"
                at = data.find(marker, at + 1)
        f.seek(0)
        f.write(data)


def _marker(n: int) -> str:
    return f"MARK-{n:03d}-".ljust(40, "z")


def _task_app(path: str) -> tuple[liteq.Database, Any]:
    db = liteq.connect(path)
    db.execute("CREATE TABLE IF NOT EXISTS done_tags (tag TEXT NOT NULL)")

    @db.task(name="faults.record", atomic=True)
    def record(tag: str) -> None:
        db.execute("INSERT INTO done_tags (tag) VALUES (?)", (tag,))

    return db, record


@pytest.mark.parametrize("dead_letter", [None, "default.dead"])
def test_payloads_corrupted_on_disk_go_dead_in_a_worker_and_the_worker_runs_the_rest(
        tmp_path, dead_letter: str | None) -> None:
    path = str(tmp_path / "rot.db")
    db, record = _task_app(path)
    db.queue("default", backoff=liteq.Backoff(base=0, jitter=0), dead_letter=dead_letter)
    jobs = record.enqueue_many([(_marker(n),) for n in range(30)])
    db.checkpoint()
    db.close()
    bad = [3, 14, 29]
    _corrupt_on_disk(path, [_marker(n).encode() for n in bad])

    db, _ = _task_app(path)
    try:
        assert db.integrity_check() == ["ok"]  # the file is sound; three payloads are not
        worker = liteq.worker.Worker(db, ["default"], concurrency=2, burst=True,
                                     install_signals=False, summary_interval=0)
        worker.run()

        done = sorted(tag for (tag,) in db.execute("SELECT tag FROM done_tags"))
        assert done == sorted(_marker(n) for n in range(30) if n not in bad)
        if dead_letter is None:
            dead = db.queue("default").peek(10, state="dead")
        else:  # moved, ready, to the dead-letter queue (no worker serves it)
            dead = db.queue(dead_letter).peek(10, state=None)
            assert {m.origin for m in dead} == {"default"}
        assert sorted(m.id for m in dead) == sorted(jobs[n].id for n in bad)
        assert all("undecodable" in (m.error or "") for m in dead)
        assert db.queue("default").stats()["depth"] == 0
        assert db.integrity_check() == ["ok"]
    finally:
        db.close()


def test_the_cli_shows_payloads_corrupted_on_disk_and_get_sends_them_dead(tmp_path) -> None:
    path = str(tmp_path / "rot.db")
    db = liteq.connect(path)
    q = db.queue("q")
    ids = q.put_many([[_marker(n)] for n in range(4)])
    db.checkpoint()
    db.close()
    _corrupt_on_disk(path, [_marker(0).encode(), _marker(2).encode()])
    runner = CliRunner()

    def run(*args: str) -> str:
        result = runner.invoke(cli, ["--db", path, *args])
        assert result.exit_code == 0, result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)
        return result.output

    # Looking changes nothing and shows the damage in place of the payload.
    digest = file_digest(path)
    assert "q " in run("stats")
    listing = run("peek", "q")
    assert "undecodable" in listing and _marker(1) in listing and _marker(3) in listing
    assert "undecodable" in run("show", str(ids[0]))
    assert file_digest(path) == digest

    # Claiming sends the damaged ones dead with the reason and hands out the others.
    first = run("get", "q", "--ack")
    second = run("get", "q", "--ack")
    assert _marker(1) in first and _marker(3) in second
    assert "no message" in run("get", "q")
    dead = run("dead", "list", "q")
    assert str(ids[0]) in dead and str(ids[2]) in dead and "undecodable" in dead
    db = liteq.connect(path)
    try:
        assert db.integrity_check() == ["ok"]
        assert db.queue("q").stats()["dead"] == 2
    finally:
        db.close()


def test_a_message_whose_stored_headers_do_not_decode_can_still_be_inspected(tmp_path) -> None:
    path = str(tmp_path / "headers.db")
    db = liteq.connect(path)
    try:
        q = db.queue("q")
        bad = q.put("fine payload", headers={"trace": "abc"})
        good = q.put("good")
        db.execute("UPDATE messages SET headers = x'ff' WHERE id = ?", (bad,))
        msgs = q.get_many(5)
        assert [m.id for m in msgs] == [good]  # the claim buries it (this part works)
        assert state_of(db, bad) == "dead"
        assert [m.id for m in q.peek(10, state="dead")] == [bad]
    finally:
        db.close()
    result = CliRunner().invoke(cli, ["--db", path, "dead", "list", "q"])
    assert result.exit_code == 0 and str(bad) in result.output, result.output


def test_a_batch_claim_that_leases_fewer_messages_than_it_selected_raises_and_claims_none(
    db,
) -> None:
    # Under SQLite's write lock the selected rows are the updated ones; the guard is for
    # the day that stops holding. A trigger that silently skips one row's update makes
    # the UPDATE change fewer rows than the SELECT found.
    q = db.queue("guarded")
    ids = q.put_many(["a", "b", "c"])
    db.execute(
        f"CREATE TRIGGER skip_one BEFORE UPDATE OF state ON messages "
        f"WHEN old.id = {ids[1]} BEGIN SELECT RAISE(IGNORE); END")

    with pytest.raises(liteq.StorageError, match="selected 3 ready message.* but leased 2"):
        q.get_many(3)

    db.execute("DROP TRIGGER skip_one")
    assert q.stats()["ready"] == 3  # rolled back: nothing was half claimed
    assert [m.payload for m in q.get_many(3)] == ["a", "b", "c"]
