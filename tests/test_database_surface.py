"""What a Database offers liteq's domain objects (issue 17, A4): the engine as
``db.backend`` and public methods for what queues, topics, jobs, the worker, the
scheduler and the CLI used to reach through privates."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest
from test_cli import as_json

import liteq
from liteq.backends import Backend, QueueRecord, State

pytestmark = pytest.mark.every_engine


def test_the_backend_is_the_engine_and_says_what_it_can_do(db: liteq.Database, engine: str) -> None:
    assert isinstance(db.backend, Backend)
    assert db.backend.capabilities.engine == engine
    assert db.connection is db.backend.connection()
    if engine == "sqlite":
        assert db.backend.path == db.path


def test_each_thread_has_one_waiter_until_the_database_closes(db: liteq.Database) -> None:
    waiter = db.waiter()
    assert db.waiter() is waiter
    other: list[Any] = []
    thread = threading.Thread(target=lambda: other.append(db.waiter()))
    thread.start()
    thread.join()
    assert other[0] is not waiter
    db.close()
    assert waiter.fd == -1 and db.waiter() is not waiter


def test_a_queue_is_found_by_its_id_and_adopted_from_a_record(db: liteq.Database) -> None:
    q = db.queue("jobs")
    assert db.queue_by_id(q.id) is q
    record = db.backend.queue_row("jobs")
    assert isinstance(record, QueueRecord)
    db.forget("jobs")
    adopted = db.adopt(record)
    assert adopted is not q and adopted.id == q.id and db.queue("jobs") is adopted
    db.delete_queue("jobs")
    with pytest.raises(liteq.InvalidArgument, match=f"queue id {q.id} does not exist"):
        db.queue_by_id(q.id)


def test_request_cancel_says_what_happened_in_each_state(db: liteq.Database) -> None:
    q = db.queue("jobs")
    ready, running = q.put(1), q.put(2)
    assert db.request_cancel(ready) == "cancelled"
    msg = q.get()
    assert msg is not None and msg.id == running
    assert db.request_cancel(running) == "requested"
    assert db.backend.cancel_requested(running)
    assert db.request_cancel(ready) == "finished"


def test_pruning_deletes_expired_results_and_old_schedule_runs(clocked_db: liteq.Database,
                                                               clock: Any) -> None:
    db = clocked_db
    q = db.queue("jobs")
    mid = q.put(1)
    now = db.clock()
    db.backend.save_results([(mid, "t", State.DONE, None, None, 1, now, now + 10, "jobs", None,
                              now, now, 0.0)])
    assert db.prune_results() == 0
    clock.advance(11)
    assert db.prune_results() == 1
    assert db.backend.result(mid) is None
    db.schedule("tick", every=60, queue="jobs", payload=1, start=db.clock())
    for _ in range(3):
        db.backend.schedule_tick(lambda row, at: ([at], at + 60), only="tick", fire_now=True)
        clock.advance(1)
    assert db.prune_schedule_runs(keep=1) == 2
    assert len(db.schedules()[0].history()) == 1


@pytest.mark.sqlite_only("a file, its symlink and its WAL")
def test_storage_size_counts_the_real_file_and_its_wal(tmp_path: Path) -> None:
    real, link = tmp_path / "real.db", tmp_path / "link.db"
    link.symlink_to(real)
    with liteq.connect(link) as db:
        db.queue("jobs").put_many(["x" * 1000] * 50)
        assert db.storage_size() == os.path.getsize(real) + os.path.getsize(f"{real}-wal")


@pytest.mark.sqlite_only("a file, its symlink and its WAL")
def test_vacuum_through_a_symlink_counts_the_real_files_wal(tmp_path: Path) -> None:
    real, link = tmp_path / "real.db", tmp_path / "link.db"
    link.symlink_to(real)
    with liteq.connect(link) as db:  # open while vacuum runs: the WAL stays
        db.queue("jobs").put_many(["x" * 1000] * 50)
        wal = os.path.getsize(f"{real}-wal")
        size = os.path.getsize(real) + wal
        assert wal > 0
        result = as_json(str(link), "vacuum")
    assert result["bytes_before"] == size


@pytest.mark.sqlite_only("files; PostgreSQL's missing schema: test_postgres_engine.py")
def test_connect_without_create_refuses_a_missing_file_and_makes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "none.db"
    with pytest.raises(liteq.LiteqError, match=f"no liteq database at {path}"):
        liteq.connect(path, create=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.sqlite_only("an empty file")
def test_connect_without_create_refuses_an_empty_file_and_leaves_it_empty(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    path.touch()
    with pytest.raises(liteq.LiteqError, match="is an empty file, not a liteq database"):
        liteq.connect(path, create=False)
    assert path.stat().st_size == 0 and [p.name for p in tmp_path.iterdir()] == ["empty.db"]


def test_connect_without_create_opens_an_existing_database(db_target: str) -> None:
    with liteq.connect(db_target) as db:
        db.queue("jobs").put(1)
    with liteq.connect(db_target, create=False) as db:
        assert len(db.queue("jobs")) == 1


def test_create_must_be_a_boolean(db_target: str) -> None:
    with pytest.raises(liteq.InvalidArgument, match="create must be True or False, got 'no'"):
        liteq.connect(db_target, create="no")  # type: ignore[arg-type]
