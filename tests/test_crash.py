"""Crashes: processes killed with SIGKILL while holding leases or in the middle of a
batch put. A crash needs no recovery code: leases run out, transactions roll back."""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import signal
import time
from collections import Counter

import dbsql
import pytest
from helpers import PATIENCE, claim_then_hang, put_batches_forever, wait_until

import liteq

pytestmark = pytest.mark.every_engine

SPAWN = mp.get_context("spawn")


def _kill(proc: mp.process.BaseProcess) -> None:
    assert proc.pid is not None
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(PATIENCE)
    assert proc.exitcode == -signal.SIGKILL


def test_a_consumer_killed_while_holding_leases_loses_them_and_its_tokens_go_stale(
    db_target,
) -> None:
    db = liteq.connect(db_target)
    q = db.queue("jobs", lease=1.0, max_attempts=5)
    ids = q.put_many([{"n": n} for n in range(8)])
    parent_end, child_end = SPAWN.Pipe()
    child = SPAWN.Process(target=claim_then_hang, args=(db_target, "jobs", 5, child_end))
    child.start()
    assert parent_end.poll(PATIENCE), "the consumer never reported its claims"
    held = parent_end.recv()
    _kill(child)

    held_ids = [mid for mid, _token, _attempts, _receipt in held]
    assert held_ids == ids[:5]
    assert all(attempts == 1 for _mid, _token, attempts, _receipt in held)

    # Everything comes back: the three never claimed at once, the five held by the
    # dead consumer once its lease has run out, on their second delivery. (Claims
    # from now on take a long lease, so that this test's own leases never run out.)
    q = db.queue("jobs", lease=PATIENCE)
    redelivered: dict[int, liteq.Message] = {}
    deadline = time.monotonic() + PATIENCE
    while len(redelivered) < len(ids) and time.monotonic() < deadline:
        msg = q.get(wait=5.0)
        if msg is not None:
            assert msg.id not in redelivered, "delivered twice while leased"
            redelivered[msg.id] = msg
    assert sorted(redelivered) == ids
    for mid in ids:
        assert redelivered[mid].attempts == (2 if mid in held_ids else 1)
        assert redelivered[mid].token is not None
    for mid, token, _attempts, _receipt in held:
        assert redelivered[mid].token != token

    # The dead consumer's tokens are stale: every verb raises LeaseLost, nothing changes.
    before = dbsql.rows(db, "messages")
    for mid, token, _attempts, receipt in held:
        with pytest.raises(liteq.LeaseLost):
            db.ack(receipt)
        stale = db.message(mid)
        assert stale is not None
        stale.token = token
        with pytest.raises(liteq.LeaseLost):
            stale.ack()
        with pytest.raises(liteq.LeaseLost):
            stale.nack(delay=0)
        with pytest.raises(liteq.LeaseLost):
            stale.extend(60)
        with pytest.raises(liteq.LeaseLost):
            stale.fail("from beyond the grave")
    assert dbsql.rows(db, "messages") == before

    q.ack_many(list(redelivered.values()))
    assert q.stats()["depth"] == 0
    assert db.integrity_check() == ["ok"]
    db.close()


@pytest.mark.parametrize("batch_size", [50, 400])
def test_a_producer_killed_mid_put_many_leaves_every_batch_whole_or_absent(
    tmp_path, db_target, batch_size
) -> None:
    path = db_target
    setup = liteq.connect(path)
    setup.queue("batches", max_depth=10**9)  # bounded: the depth counter is kept
    setup.close()
    rng = random.Random(batch_size)
    log = str(tmp_path / "committed.log")

    for round_ in range(3):
        logged_before = _logged(log)
        child = SPAWN.Process(
            target=put_batches_forever,
            args=(path, "batches", round_ * 100_000, batch_size, log),
        )
        child.start()
        target = len(logged_before) + rng.randint(3, 25)
        wait_until(lambda t=target: len(_logged(log)) >= t, what="the producer's batches")
        _kill(child)

    committed = _logged(log)
    db = liteq.connect(path)
    assert db.integrity_check() == ["ok"]
    q = db.queue("batches")
    rows = dbsql.sql(db, "SELECT payload FROM messages")
    per_batch = Counter(liteq.codec.decode(p)["batch"] for (p,) in rows)
    partial = {b: n for b, n in per_batch.items() if n != batch_size}
    assert partial == {}, f"half-written batches: {partial}"
    assert committed <= set(per_batch), "a batch whose put_many returned was lost"
    assert len(set(per_batch) - committed) <= 3  # at most the one in flight at each kill
    stats = q.stats()
    assert stats["depth"] == len(q) == stats["ready"] == len(rows), "the depth counter drifted"
    db.close()


def _logged(log: str) -> set[int]:
    """Batch numbers the producer saw committed (the last line may be half written)."""
    try:
        with open(log) as f:
            lines = f.read().split("\n")
    except FileNotFoundError:
        return set()
    return {int(line) for line in lines[:-1] if line}
