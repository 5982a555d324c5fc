"""Group commit (issue 23; liteq/backends/sqlite/group.py): at durability "full" the
plain puts of one process's threads share commits. Each put still returns only after the
commit that holds it, fails only for its own reason, and a put inside db.transaction()
joins that transaction.

SQLite only: PostgreSQL's server already shares the WAL flush of commits that arrive
together from many connections (DESIGN-NOTES "Group commit")."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import apsw
import pytest
from helpers import PATIENCE, wait_until

import liteq

SPAWN = mp.get_context("spawn")


def _gathering(db: liteq.Database, expect: int) -> list[int]:
    """Make the next group commit wait until *expect* puts are waiting, so that they
    all ride in the commit after it; returns the sizes of the groups written."""
    group = db.backend.group  # type: ignore[attr-defined]
    assert group is not None
    write: Callable[[Sequence[Any]], list[Any]] = group.write
    sizes: list[int] = []
    first = threading.Event()

    def slow_write(puts: Sequence[Any]) -> list[Any]:
        if not first.is_set():
            first.set()
            wait_until(lambda: len(group._waiting) >= expect - len(puts), PATIENCE)
        sizes.append(len(puts))
        return write(puts)

    group.write = slow_write
    return sizes


def _put_at_once(q: liteq.Queue, n: int) -> tuple[list[int], list[BaseException]]:
    ids: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def put(i: int) -> None:
        try:
            mid = q.put({"i": i})
        except BaseException as exc:  # noqa: BLE001 - the test reads what each put got
            with lock:
                errors.append(exc)
        else:
            with lock:
                ids.append(mid)

    threads = [threading.Thread(target=put, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(PATIENCE)
    return ids, errors


def test_group_commit_is_on_at_full_and_off_at_normal(tmp_path: Path) -> None:
    assert liteq.connect(tmp_path / "f.db", durability="full").backend.group is not None  # type: ignore[attr-defined]
    assert liteq.connect(tmp_path / "n.db").backend.group is None  # type: ignore[attr-defined]


def test_threads_putting_at_once_share_commits_and_each_gets_its_own_id(tmp_path: Path) -> None:
    db = liteq.connect(tmp_path / "q.db", durability="full")
    q = db.queue("jobs")
    sizes = _gathering(db, 8)
    ids, errors = _put_at_once(q, 8)
    assert errors == []
    assert sorted(ids) == list(range(1, 9))
    assert sizes[0] + sizes[1] == 8 and len(sizes) == 2, sizes  # one alone, then seven
    got = {db.message(mid).payload["i"] for mid in ids}  # type: ignore[union-attr]
    assert got == set(range(8))
    assert q.stats()["ready"] == 8


def test_a_full_queue_refuses_only_the_puts_that_do_not_fit(tmp_path: Path) -> None:
    db = liteq.connect(tmp_path / "q.db", durability="full")
    q = db.queue("small", max_depth=5)
    sizes = _gathering(db, 8)
    ids, errors = _put_at_once(q, 8)
    assert len(sizes) == 2
    assert len(ids) == 5 and len(set(ids)) == 5
    assert len(errors) == 3 and all(isinstance(e, liteq.QueueFull) for e in errors)
    assert q.stats()["depth"] == 5
    assert q.stats()["ready"] == 5


def test_a_failed_commit_fails_every_put_of_its_group_and_writes_none(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    db = liteq.connect(path, durability="full", busy_timeout=0.3)
    q = db.queue("jobs")
    q.put("first")  # the file, the queue and this thread's connection exist
    holder = apsw.Connection(str(path))
    holder.execute("BEGIN IMMEDIATE")  # the write lock, held elsewhere
    try:
        ids, errors = _put_at_once(q, 6)
    finally:
        holder.execute("ROLLBACK")
    assert ids == []
    assert len(errors) == 6 and all(isinstance(e, liteq.DatabaseBusy) for e in errors)
    assert q.stats()["ready"] == 1
    assert db.backend.group._waiting == []  # type: ignore[attr-defined]
    ids, errors = _put_at_once(q, 6)  # and it goes on
    assert errors == [] and len(ids) == 6


def test_a_put_inside_a_transaction_joins_it_not_a_group(tmp_path: Path) -> None:
    db = liteq.connect(tmp_path / "q.db", durability="full")
    q = db.queue("jobs")
    with pytest.raises(RuntimeError), db.transaction():
        q.put("rolled back")
        raise RuntimeError("the application changes its mind")
    assert q.stats()["ready"] == 0
    with db.transaction():
        mid = q.put("kept")
    assert db.message(mid).payload == "kept"  # type: ignore[union-attr]


def _put_and_report(path: str, out: str) -> None:
    db = liteq.connect(path, durability="full")
    q = db.queue("jobs")
    lock = threading.Lock()
    fd = os.open(out, os.O_WRONLY | os.O_APPEND)

    def run(k: int) -> None:
        for i in range(10**6):
            mid = q.put({"k": k, "i": i})
            with lock:
                os.write(fd, f"{mid}\n".encode())

    threads = [threading.Thread(target=run, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_a_process_killed_while_its_threads_share_commits_loses_no_returned_put(
    tmp_path: Path,
) -> None:
    path, out = str(tmp_path / "q.db"), tmp_path / "returned"
    liteq.connect(path, durability="full").queue("jobs")
    out.write_text("")
    child = SPAWN.Process(target=_put_and_report, args=(path, str(out)))
    child.start()
    wait_until(lambda: out.read_text().count("\n") >= 500, PATIENCE)
    time.sleep(0.2)
    assert child.pid is not None
    os.kill(child.pid, signal.SIGKILL)
    child.join(PATIENCE)
    returned = {int(line) for line in out.read_text().split()}
    db = liteq.connect(path)
    stored = {row[0] for row in db.execute("SELECT id FROM messages")}
    assert returned <= stored, f"{len(returned - stored)} returned puts lost"
    assert db.backend.integrity_check() == ["ok"]  # type: ignore[attr-defined]
