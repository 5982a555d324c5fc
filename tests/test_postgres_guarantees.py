"""PostgreSQL-only guarantees through the public API (issue 17), with real processes.

Most of the issue's PostgreSQL-only list exists as engine-level tests beside the shared
ones, and is not repeated here: a SIGKILLed consumer's messages come back and its stale
ack is LeaseLost, four producers never push a bounded queue past ``max_depth``, the
empty-table plan trap checked with EXPLAIN (``tests/test_backend_queues.py``); three
schedulers fire each time once (``test_backend_schedules.py``, and the three
``liteq scheduler`` processes of ``test_scheduler_processes.py`` on every engine);
subscribe racing publish (``test_backend_topics.py``); a restart under load
(``test_postgres_restart.py``, on its own cluster).
"""

from __future__ import annotations

import multiprocessing
import threading
from collections import Counter
from typing import Any

import pytest
from conftest_pg import require_psycopg

require_psycopg()

import liteq  # noqa: E402

pytestmark = pytest.mark.postgres

PATIENCE = 120.0
MESSAGES = 20_000


def _drain(url: str, schema: str, out: Any, threads: int) -> None:
    db = liteq.connect(url, schema=schema)
    q = db.queue("drain")

    def consume() -> None:
        got: list[int] = []
        idle = 0
        while idle < 3:
            msgs = q.get_many(50, wait=0.2)
            if not msgs:
                idle += 1
                continue
            idle = 0
            got.extend(m.payload for m in msgs)
            q.ack_many(msgs)  # LeaseLost here would fail the count below
        out.put(got)

    ts = [threading.Thread(target=consume) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    db.close()


def test_four_processes_of_two_threads_drain_20000_messages_with_no_duplicate_and_no_loss(
    pg_url: str, pg_schema: str
) -> None:
    db = liteq.connect(pg_url, schema=pg_schema)
    q = db.queue("drain", lease=60)
    for i in range(0, MESSAGES, 2000):
        q.put_many(range(i, i + 2000))
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    procs = [ctx.Process(target=_drain, args=(pg_url, pg_schema, out, 2)) for _ in range(4)]
    for p in procs:
        p.start()
    got: list[int] = []
    for _ in range(8):
        got += out.get(timeout=PATIENCE)
    for p in procs:
        p.join(PATIENCE)
        assert p.exitcode == 0
    counts = Counter(got)
    assert len(counts) == MESSAGES and set(counts.values()) == {1}  # none lost, none twice
    assert sorted(counts) == list(range(MESSAGES))
    assert q.stats()["depth"] == 0
    assert db.integrity_check() == ["ok"]
    db.close()
