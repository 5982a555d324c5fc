"""Flow control, part one (issue 19): pausing a queue. Producers keep putting, nothing
is claimed while paused (the flag is read inside the claim itself, on every engine),
and a resume wakes waiting consumers and workers at once."""

from __future__ import annotations

import threading
import time
from typing import Any

import apsw
import pytest
from test_cli import as_json, error, ok, run
from workerapp_tools import PATIENCE, wait_until

import liteq
from liteq.backends.sqlite.schema import MIGRATIONS, SCHEMA_VERSION
from liteq.worker import Worker

pytestmark = pytest.mark.every_engine


class Background:
    """A worker running in a thread of this process until the test stops it."""

    def __init__(self, db: liteq.Database, **options: Any) -> None:
        self.worker = Worker(db, install_signals=False, summary_interval=0, **options)
        self.thread = threading.Thread(target=self.worker.run, daemon=True)

    def __enter__(self) -> Worker:
        self.thread.start()
        return self.worker

    def __exit__(self, *exc: object) -> None:
        self.worker.stop()
        self.thread.join(30)
        assert not self.thread.is_alive()


def test_a_paused_queue_takes_puts_claims_nothing_for_two_seconds_and_runs_all_after_resume(
    db,
) -> None:
    ran: list[int] = []
    lock = threading.Lock()

    @db.task(queue="jobs")
    def job(i: int) -> None:
        with lock:
            ran.append(i)

    q = db.queue("jobs")
    q.pause()
    for i in range(1000):
        job.delay(i)
    with Background(db, queues=["jobs"], concurrency=4):
        time.sleep(2.0)
        counts = q.stats()
        assert ran == []
        assert (counts["ready"], counts["leased"], counts["paused"]) == (1000, 0, True)
        q.resume()
        wait_until(lambda: len(ran) == 1000, what="every job to run after resume")
    assert sorted(ran) == list(range(1000))
    assert not q.paused


def test_a_consumer_that_saw_the_queue_running_claims_nothing_once_another_handle_paused_it(
    db_target,
) -> None:
    consumer = liteq.connect(db_target)
    admin = liteq.connect(db_target)
    try:
        q = consumer.queue("work")
        q.put("a")
        assert not q.config.paused  # what this process read a moment ago
        admin.queue("work").pause()
        assert q.get() is None
        assert q.get_many(10) == []
        admin.queue("work").resume()
        msg = q.get()
        assert msg is not None and msg.payload == "a"
        msg.ack()
    finally:
        consumer.close()
        admin.close()


def test_a_consumer_waiting_on_a_paused_queue_gets_the_message_when_it_is_resumed(
    db_target,
) -> None:
    consumer = liteq.connect(db_target)
    admin = liteq.connect(db_target)
    got: list[Any] = []
    try:
        admin.queue("work").pause()
        admin.queue("work").put("waiting")
        waiter = threading.Thread(
            target=lambda: got.append(consumer.queue("work").get(wait=PATIENCE)), daemon=True)
        waiter.start()
        time.sleep(0.3)
        assert got == []
        admin.queue("work").resume()
        waiter.join(PATIENCE)
        assert got and got[0] is not None and got[0].payload == "waiting"
        got[0].ack()
    finally:
        consumer.close()
        admin.close()


def test_pausing_keeps_back_pressure_and_leased_messages_finish(db) -> None:
    q = db.queue("bounded", max_depth=2)
    q.put(1)
    held = q.get()
    assert held is not None
    q.pause()
    q.put(2)
    with pytest.raises(liteq.QueueFull):
        q.put(3)
    held.ack()  # a message claimed before the pause runs to its end
    assert q.get() is None
    q.resume()
    msg = q.get()
    assert msg is not None and msg.payload == 2


def test_liteq_queue_pause_and_resume_show_in_queue_config_and_stats(db_target) -> None:
    ok(db_target, "queue", "create", "emails")
    ok(db_target, "put", "emails", '"hi"')
    paused = as_json(db_target, "queue", "pause", "emails")
    assert paused["paused"] is True
    assert as_json(db_target, "queue", "config", "emails")["paused"] is True
    assert "paused        yes" in ok(db_target, "queue", "config", "emails").stdout
    [row] = as_json(db_target, "stats", "emails")
    assert row["paused"] is True and row["ready"] == 1
    table = ok(db_target, "stats").stdout
    assert "PAUSED" in table.splitlines()[0] and "paused" in table.splitlines()[1]
    assert as_json(db_target, "get", "emails") is None  # nothing is claimed while paused
    resumed = as_json(db_target, "queue", "resume", "emails")
    assert resumed["paused"] is False
    assert "PAUSED" not in ok(db_target, "stats").stdout


def test_liteq_queue_pause_of_a_missing_queue_says_so(db_target) -> None:
    ok(db_target, "queue", "create", "emails")
    assert "nosuch" in error(run(db_target, "queue", "pause", "nosuch"))


@pytest.mark.sqlite_only("a hand-built file of SQLite schema version 2")
def test_a_file_of_schema_version_2_opens_migrated_with_its_queues_running(tmp_path) -> None:
    path = str(tmp_path / "old.db")
    conn = apsw.Connection(path)
    conn.execute("PRAGMA journal_mode=WAL")
    for migration in MIGRATIONS[:2]:
        conn.execute(migration)
    conn.execute(
        "INSERT INTO queues (name, lease, max_attempts, retention, backoff_base, "
        "backoff_factor, backoff_max, backoff_jitter, created_at) "
        "VALUES ('old', 30, 5, 0, 1, 2, 300, 0.1, 1.0)")
    conn.execute("PRAGMA application_id = 0x4C495451")
    conn.execute("PRAGMA user_version = 2")
    conn.close()
    db = liteq.connect(path)
    try:
        assert db.execute("PRAGMA user_version") == [(SCHEMA_VERSION,)]
        q = db.queue("old")
        assert not q.paused
        q.put("x")
        q.pause()
        assert q.get() is None
    finally:
        db.close()
