"""Core queue micro-benchmarks: liteq beside raw apsw doing the same work.

    .venv/bin/python -m pytest bench/bench_core.py --benchmark-json=bench/results/core.json
    .venv/bin/python bench/ratios.py bench/results/core.json

Four workloads, each in a group with its raw-apsw twin:

* ``put``: one message per transaction;
* ``get_ack``: claim one message (one transaction) and ack it (another);
* ``put_batch``: 100 messages in one transaction;
* ``get_ack_batch``: claim 100 in one transaction, ack them in another.

"raw" is the minimal SQL of a queue, written directly against apsw: a table with a
partial index on ready rows, an INSERT, a one-statement claim (UPDATE ... RETURNING)
and a DELETE, with the same CBOR payloads, WAL and synchronous=NORMAL. It is the
limit liteq is measured against: liteq adds leases with tokens, attempts, dead
letters, delays, dedup keys, depth counters and stats on top of it.

Not part of the default test run (``testpaths`` is ``tests``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import apsw
import cbor2
import pytest

import liteq
from liteq.backends.sqlite.base import PAGE_SIZE

PAYLOAD = {"to": "someone@example.com", "subject": "hello", "n": 0}
ROUNDS = 3000
BATCH = 100
BATCH_ROUNDS = 200


class RawQueue:
    """The minimal queue in raw apsw: the baseline."""

    def __init__(self, path: Path) -> None:
        self.conn = apsw.Connection(str(path))
        # The same file settings as liteq's (page size, WAL, synchronous): the limit
        # measures the SQL, not a different page size.
        self.conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
        self.conn.execute("PRAGMA journal_mode=WAL").fetchall()
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute(
            "CREATE TABLE q (id INTEGER PRIMARY KEY AUTOINCREMENT, state INTEGER NOT NULL, "
            "priority INTEGER NOT NULL, run_at REAL NOT NULL, payload BLOB NOT NULL, "
            "lease_until REAL, token INTEGER)"
        )
        self.conn.execute("CREATE INDEX q_ready ON q (priority DESC, run_at, id) WHERE state = 0")
        self.cur = self.conn.cursor()

    def put(self, payload: object) -> None:
        self.cur.execute("BEGIN IMMEDIATE")
        self.cur.execute(
            "INSERT INTO q (state, priority, run_at, payload) VALUES (0, 0, ?, ?)",
            (time.time(), cbor2.dumps(payload)),
        )
        self.cur.execute("COMMIT")

    def put_many(self, payloads: list[object]) -> None:
        now = time.time()
        self.cur.execute("BEGIN IMMEDIATE")
        self.cur.executemany(
            "INSERT INTO q (state, priority, run_at, payload) VALUES (0, 0, ?, ?)",
            [(now, cbor2.dumps(p)) for p in payloads],
        )
        self.cur.execute("COMMIT")

    def claim(self, n: int) -> list[tuple[int, int, object]]:
        self.cur.execute("BEGIN IMMEDIATE")
        rows = self.cur.execute(
            "UPDATE q SET state = 2, token = random(), lease_until = ? WHERE id IN "
            "(SELECT id FROM q WHERE state = 0 ORDER BY priority DESC, run_at, id LIMIT ?) "
            "RETURNING id, token, payload",
            (time.time() + 30, n),
        ).fetchall()
        self.cur.execute("COMMIT")
        return [(i, t, cbor2.loads(p)) for i, t, p in rows]

    def ack(self, items: list[tuple[int, int, object]]) -> None:
        self.cur.execute("BEGIN IMMEDIATE")
        self.cur.executemany(
            "DELETE FROM q WHERE id = ? AND token = ? AND state = 2", [(i, t) for i, t, _ in items]
        )
        self.cur.execute("COMMIT")


@pytest.fixture
def raw(tmp_path: Path) -> Iterator[RawQueue]:
    q = RawQueue(tmp_path / "raw.db")
    yield q
    q.conn.close()


@pytest.fixture
def lq(tmp_path: Path) -> Iterator[liteq.Queue]:
    db = liteq.connect(tmp_path / "liteq.db")
    yield db.queue("bench")
    db.close()


@pytest.mark.benchmark(group="put")
def test_put_raw(benchmark, raw: RawQueue) -> None:
    benchmark.pedantic(raw.put, args=(PAYLOAD,), rounds=ROUNDS, warmup_rounds=100)


@pytest.mark.benchmark(group="put")
def test_put_liteq(benchmark, lq: liteq.Queue) -> None:
    benchmark.pedantic(lq.put, args=(PAYLOAD,), rounds=ROUNDS, warmup_rounds=100)


@pytest.mark.benchmark(group="get_ack")
def test_get_ack_raw(benchmark, raw: RawQueue) -> None:
    raw.put_many([PAYLOAD] * (ROUNDS + 200))

    def op() -> None:
        raw.ack(raw.claim(1))

    benchmark.pedantic(op, rounds=ROUNDS, warmup_rounds=100)


@pytest.mark.benchmark(group="get_ack")
def test_get_ack_liteq(benchmark, lq: liteq.Queue) -> None:
    lq.put_many([PAYLOAD] * (ROUNDS + 200))

    def op() -> None:
        msg = lq.get()
        assert msg is not None
        msg.ack()

    benchmark.pedantic(op, rounds=ROUNDS, warmup_rounds=100)


@pytest.mark.benchmark(group="put_batch")
def test_put_batch_raw(benchmark, raw: RawQueue) -> None:
    batch = [PAYLOAD] * BATCH
    benchmark.pedantic(raw.put_many, args=(batch,), rounds=BATCH_ROUNDS, warmup_rounds=10)


@pytest.mark.benchmark(group="put_batch")
def test_put_batch_liteq(benchmark, lq: liteq.Queue) -> None:
    batch = [PAYLOAD] * BATCH
    benchmark.pedantic(lq.put_many, args=(batch,), rounds=BATCH_ROUNDS, warmup_rounds=10)


@pytest.mark.benchmark(group="get_ack_batch")
def test_get_ack_batch_raw(benchmark, raw: RawQueue) -> None:
    for _ in range(BATCH_ROUNDS + 20):
        raw.put_many([PAYLOAD] * BATCH)

    def op() -> None:
        raw.ack(raw.claim(BATCH))

    benchmark.pedantic(op, rounds=BATCH_ROUNDS, warmup_rounds=10)


@pytest.mark.benchmark(group="get_ack_batch")
def test_get_ack_batch_liteq(benchmark, lq: liteq.Queue) -> None:
    for _ in range(BATCH_ROUNDS + 20):
        lq.put_many([PAYLOAD] * BATCH)

    def op() -> None:
        lq.ack_many(lq.get_many(BATCH))

    benchmark.pedantic(op, rounds=BATCH_ROUNDS, warmup_rounds=10)
