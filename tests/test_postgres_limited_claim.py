"""The limited claim on PostgreSQL (issue 19): one round trip, as the plain claim, with
the flow lock's guarantees kept. Round trips are counted on the wire with libpq's trace
(tests/test_postgres_put_round_trips.py); nothing is timed except a lock held on
purpose, whose wait must lengthen no lease's deadline."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from conftest_pg import require_psycopg
from test_postgres_put_round_trips import round_trips

import liteq

psycopg = require_psycopg()


@pytest.fixture
def db(pg_url: str, pg_schema: str) -> Iterator[liteq.Database]:
    d = liteq.connect(f"{pg_url}?schema={pg_schema}")
    yield d
    d.close()


def _capped(db: liteq.Database, cap: int) -> liteq.Queue:
    @db.task(name="capped", queue="capped", max_concurrency=cap)
    def capped(i: int) -> None: ...

    for i in range(20):
        capped.delay(i)
    return db.queue("capped")


def test_a_limited_claim_is_one_round_trip_whether_it_takes_a_job_or_finds_none(
    db: liteq.Database,
) -> None:
    rated = db.queue("rated", rate_limit="1/h burst 2")
    rated.put_many([1, 2, 3])
    capped = _capped(db, 1)
    backend = db.backend
    plain = db.queue("plain")
    for _ in range(6):  # psycopg prepares the statement in a round trip of its own, once
        assert backend.claim_limited(plain.id, 5, 30.0) is None
    got: list[object] = []
    for q in (rated, capped, rated):  # rated twice: its bucket (burst 2) then empty
        for known in (False, True):
            trips = round_trips(db.connection, lambda q=q, known=known: got.append(
                backend.claim_limited(q.id, 5, 30.0, known=known)))
            assert trips == 1  # before: BEGIN, the lock, 3 to 6 statements, COMMIT
    taken = [len(rows) for rows, _ in got]  # type: ignore[attr-defined]
    assert taken == [2, 0, 1, 0, 0, 0]  # the burst, the cap of 1, then nothing
    assert backend.held[rated.id] == pytest.approx(db.backend.clock() + 3600 - 0.5, abs=60)


def test_a_queue_without_limits_asks_once_and_gets_no_answer_from_the_limited_claim(
    db: liteq.Database,
) -> None:
    plain = db.queue("plain")
    plain.put("x")
    answer: list[object] = []
    trips = round_trips(db.connection, lambda: answer.append(
        db.backend.claim_limited(plain.id, 1, 30.0)))
    assert trips == 1 and answer == [None]
    assert plain.get() is not None  # the plain claim's job


def test_a_limited_claim_that_waits_for_the_flow_lock_counts_its_lease_from_when_it_got_it(
    db: liteq.Database, pg_url: str, pg_schema: str,
) -> None:
    q = _capped(db, 5)
    db.queue("capped", lease=30)
    assert q.get() is not None  # the queue is known to be limited from now on
    got: list[liteq.Message | None] = []
    with psycopg.connect(pg_url, autocommit=True) as other:
        with other.transaction():
            other.execute("SELECT pg_advisory_xact_lock(hashtext(%s))",
                          (f'liteq.flow:"{pg_schema}"',))
            claimer = threading.Thread(target=lambda: got.append(q.get()))
            claimer.start()
            time.sleep(1.0)
            assert got == []  # held back by the lock
            released = db.backend.clock()
        claimer.join(10)
    msg = got[0]
    assert msg is not None and msg.lease_until is not None
    assert msg.lease_until >= released + 30 - 0.05  # not start + 30: a second shorter


def test_threads_claiming_a_capped_task_at_once_lease_exactly_its_cap(
    db: liteq.Database, pg_url: str, pg_schema: str,
) -> None:
    _capped(db, 3)
    n = 8
    barrier = threading.Barrier(n)
    taken: list[int] = []
    lock = threading.Lock()

    def claim() -> None:
        d = liteq.connect(f"{pg_url}?schema={pg_schema}")
        try:
            q = d.queue("capped")
            barrier.wait()
            for _ in range(5):
                got = q.get_many(3)
                with lock:
                    taken.extend(m.id for m in got)
        finally:
            d.close()

    threads = [threading.Thread(target=claim) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(taken) == 3 and len(set(taken)) == 3


def test_the_get_pick_kept_for_the_session_walks_the_ready_index_at_5000_jobs(
    db: liteq.Database, pg_url: str, pg_schema: str,
) -> None:
    """The function keeps get()'s pick (LIMIT 1) planned for the session, so its generic
    plan must walk the ready index on a full, analyzed table (with its LIMIT a parameter,
    as a batch's pick has, the generic plan sorts a sequential scan: that one is
    EXECUTEd, planned with its values)."""
    from liteq.backends.postgres.schema import limited_pick, qualify

    q = _capped(db, 3)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("PREPARE pick(bigint, float8) AS "
                     + qualify(limited_pick("$1", "$2", "1"), pg_schema))
        with db.transaction():
            db.queue("capped").put_many(list(range(5000)))
        conn.execute(f'ANALYZE "{pg_schema}".messages')
        conn.execute("SET plan_cache_mode = force_generic_plan")
        plan = "\n".join(r[0] for r in conn.execute(f"EXPLAIN EXECUTE pick({q.id}, 0)"))
    assert "Seq Scan on messages" not in plan and "msg_ready" in plan, plan


def test_an_empty_queues_claims_ask_for_its_limits_once_per_maintenance_not_each_time(
    pg_url: str, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every empty plain claim used to ask claim_limited (a round trip) whether the
    queue had limits: 0.1 extra statements per message at 1 producer + 4 consumers.
    Now only a claim that maintained asks, or the first claim after this process set
    limits on the queue (which therefore takes work at once)."""
    from helpers import FakeClock

    clock = FakeClock()  # frozen: maintenance (every MAINTAIN_EVERY) falls due only once
    d = liteq.connect(f"{pg_url}?schema={pg_schema}", clock=clock)
    try:
        backend = d.backend
        asked: list[int] = []
        real = backend.claim_limited
        monkeypatch.setattr(backend, "claim_limited",
                            lambda qid, *a, **k: (asked.append(qid), real(qid, *a, **k))[1])
        q = d.queue("quiet")
        for _ in range(20):
            assert q.get() is None
        assert len(asked) == 1  # the first claim maintained; the others did not ask
        # Limits set by this process are found by the very next claim, maintained or not.
        q.put_many([1, 2])
        d.queue("quiet", rate_limit="1/h burst 1")
        m = q.get()
        assert m is not None and m.payload == 1
        assert q.get() is None  # the bucket is empty: the limit holds
        m.ack()
    finally:
        d.close()
