"""Flow control, part two (issue 19): concurrency caps (per task and per key) and rate
limits, enforced inside the claim's transaction on every engine. A job held back by a
limit is not claimed and not counted as an attempt; the claim moves on to the jobs
behind it; a slot is held by the lease, so a killed worker's slot frees when its lease
runs out; an empty bucket tells waiting consumers when its next token is due."""

from __future__ import annotations

import math
import random
import signal
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from dbsql import sql
from test_cli import as_json, error, ok, run
from workerapp_tools import PATIENCE, start_worker, stop, wait_until

import liteq

pytestmark = pytest.mark.every_engine

#: The most a claimed job waits for its worker thread to start it (s), on a loaded
#: 2-core machine: the full suite once saw 56 starts in a second at 50/s burst 5.
START_LAG = 0.05


def _register(db: liteq.Database) -> dict[str, Any]:
    """The tasks of tests/flowapp.py, registered here to enqueue them (never run here)."""

    @db.task(name="capped", queue="capped", max_concurrency=2)
    def capped(i: int) -> None: ...

    @db.task(name="keyed", queue="keyed", max_concurrency=1,
             concurrency_key=lambda user, i: f"user:{user}")
    def keyed(user: int, i: int) -> None: ...

    @db.task(name="rated", queue="rated", rate_limit="50/s")
    def rated(i: int) -> None: ...

    return {"capped": capped, "keyed": keyed, "rated": rated}


# -- the claim, in one process ---------------------------------------------------------

def test_a_capped_task_never_has_more_than_its_cap_leased_and_the_claim_moves_on_to_others(
    db,
) -> None:
    @db.task(name="capped", queue="work", max_concurrency=2)
    def capped(i: int) -> None: ...

    @db.task(name="free", queue="work")
    def free(i: int) -> None: ...

    for i in range(5):
        capped.delay(i)
    free.delay(99)
    q = db.queue("work")
    first = [q.get(), q.get(), q.get()]
    # The two oldest capped jobs, then the free one behind the held ones.
    assert [m.payload["task"] for m in first if m] == ["capped", "capped", "free"]
    assert q.get_many(10) == [] and q.get() is None
    stats = q.stats()
    assert (stats["ready"], stats["limited_running"], stats["held"]) == (3, 2, 3)
    first[0].ack()  # type: ignore[union-attr]
    [third] = q.get_many(10)
    assert third.payload["args"] == [2]


def test_workflow_steps_of_a_capped_task_keep_its_cap(db) -> None:
    from liteq.workflow import chain, group

    @db.task(name="capped", queue="work", max_concurrency=2,
             concurrency_key=lambda i, *rest: f"k{i % 2}")
    def capped(i: int, *rest: Any) -> int:
        return i

    group(capped.s(i) for i in range(6)).delay()  # keys k0, k1: a cap of 2 per key
    q = db.queue("work")
    got = [q.get() for _ in range(5)]
    assert sorted(m.payload["args"][0] for m in got if m) == [0, 1, 2, 3]
    assert q.get() is None
    for m in got:
        if m:
            m.ack()
    # A chain's waiting step carries its limits too, for when it is released.
    chain(capped.s(10), capped.s(21)).delay()
    assert sql(db, "SELECT count(*) FROM messages WHERE flow IS NULL") == [(0,)]
    assert sql(db, "SELECT count(*) FROM messages WHERE flow_key = 'k1'") == [(2,)]  # 5 and 21


def test_a_given_concurrency_key_with_depends_on_is_refused_and_nothing_is_written(db) -> None:
    @db.task(name="keyed", queue="work", max_concurrency=1)
    def keyed(i: int) -> None: ...

    parent = keyed.delay(1)
    before = sql(db, "SELECT count(*) FROM messages")
    with pytest.raises(liteq.InvalidArgument, match="concurrency_key= and depends_on="):
        keyed.enqueue([2], depends_on=[parent], concurrency_key="user:1")
    assert sql(db, "SELECT count(*) FROM messages") == before


def test_a_claim_takes_at_most_one_capped_job_so_a_batch_never_sits_on_idle_slots(db) -> None:
    @db.task(name="capped", queue="work", max_concurrency=3)
    def capped(i: int) -> None: ...

    for i in range(5):
        capped.delay(i)
    q = db.queue("work")
    assert [len(q.get_many(10)) for _ in range(4)] == [1, 1, 1, 0]


def test_a_per_key_cap_holds_back_only_that_key(db) -> None:
    @db.task(name="keyed", queue="work", max_concurrency=1,
             concurrency_key=lambda user, i: f"user:{user}")
    def keyed(user: int, i: int) -> None: ...

    for i in range(6):
        keyed.delay(i % 3, i)
    keyed.enqueue([7, 100], concurrency_key="user:0")  # the key given at enqueue wins
    q = db.queue("work")
    got = [m for m in (q.get() for _ in range(4)) if m is not None]
    assert [m.payload["args"][0] for m in got] == [0, 1, 2]
    assert q.get() is None
    for m in got:
        m.ack()
    assert [q.get().payload["args"][1] for _ in range(3)] == [3, 4, 5]  # type: ignore[union-attr]


def test_a_job_held_back_by_a_cap_is_not_counted_as_an_attempt(db) -> None:
    @db.task(name="capped", queue="work", max_concurrency=1)
    def capped(i: int) -> None: ...

    capped.delay(1)
    second = capped.delay(2)
    q = db.queue("work")
    running = q.get()
    assert running is not None
    for _ in range(20):
        assert q.get() is None
    running.ack()
    msg = q.get()
    assert msg is not None and msg.id == second.id and msg.attempts == 1


def test_a_slot_held_by_a_dead_consumer_frees_when_its_lease_expires_never_later(
    clocked_db, clock,
) -> None:
    @clocked_db.task(name="capped", queue="work", max_concurrency=1)
    def capped(i: int) -> None: ...

    clocked_db.queue("work", lease=10)
    capped.delay(1)
    capped.delay(2)
    q = clocked_db.queue("work")
    dead = q.get()  # its consumer dies: never acked, never extended
    assert dead is not None
    clock.advance(9)
    assert q.get() is None  # the lease still holds the slot
    clock.advance(1)
    msg = q.get()  # the lease ran out: the slot is free again, at once
    assert msg is not None
    assert msg.payload["args"] in ([1], [2])


def test_a_rate_limited_task_takes_a_token_per_job_and_says_when_the_next_is_due(
    clocked_db, clock,
) -> None:
    @clocked_db.task(name="rated", queue="work", rate_limit="2/s")
    def rated(i: int) -> None: ...

    for i in range(4):
        rated.delay(i)
    q = clocked_db.queue("work")
    backend = clocked_db.backend
    assert len(q.get_many(10)) == 1  # burst 1: one token in a full bucket
    assert q.get() is None
    ready, due = backend.probe(q.id)
    assert not ready and due == pytest.approx(clock.now + 0.5)
    assert q.next_due() == pytest.approx(clock.now + 0.5)
    clock.advance(0.5)
    msg = q.get()
    assert msg is not None and msg.attempts == 1
    clock.advance(10)  # a quiet spell fills the bucket to its burst only
    assert len(q.get_many(10)) == 1


def test_a_queue_rate_limit_limits_every_claim_of_the_queue_with_its_burst(
    clocked_db, clock,
) -> None:
    q = clocked_db.queue("work", rate_limit="1/s burst 3")
    assert str(q.config.rate_limit) == "1/s burst 3"
    q.put_many(list(range(10)))
    assert [m.payload for m in q.get_many(10)] == [0, 1, 2]
    assert q.get() is None
    assert q.stats()["held"] == 7
    clock.advance(2)
    assert [m.payload for m in q.get_many(10)] == [3, 4]
    clocked_db.queue("work", rate_limit=None)
    assert len(q.get_many(10)) == 5


def test_a_paused_queue_with_limits_claims_nothing(db) -> None:
    @db.task(name="capped", queue="work", max_concurrency=5)
    def capped(i: int) -> None: ...

    capped.delay(1)
    q = db.queue("work")
    q.pause()
    assert q.get() is None and q.get_many(5) == []
    q.resume()
    assert q.get() is not None


def test_a_dead_lettered_job_keeps_its_limits_in_its_new_queue(db) -> None:
    @db.task(name="capped", queue="work", max_concurrency=1)
    def capped(i: int) -> None: ...

    db.queue("work", max_attempts=1, dead_letter="later")
    capped.delay(1)
    capped.delay(2)
    q = db.queue("work")
    for m in q.get_many(2):
        m.fail("no")
    q.get().fail("no")  # type: ignore[union-attr]
    later = db.queue("later")
    first = later.get()
    assert first is not None and later.get() is None  # still capped at 1
    first.ack()
    assert later.get() is not None


# -- unique until done -------------------------------------------------------------------

def test_a_dedup_key_holds_while_its_job_waits_runs_or_waits_to_retry_and_frees_when_done(
    db,
) -> None:
    # issue 19's unique="until_done" is what a key already does: see DESIGN-NOTES.
    @db.task(name="once", queue="work")
    def once(n: int) -> None: ...

    first = once.enqueue([1], key="report")
    assert once.enqueue([2], key="report").id == first.id  # queued
    q = db.queue("work")
    running = q.get()
    assert running is not None and running.id == first.id
    assert once.enqueue([3], key="report").id == first.id  # running
    running.nack(delay=60)
    assert [m.id for m in q.peek(5, state="delayed")] == [first.id]
    assert once.enqueue([4], key="report").id == first.id  # waiting to retry
    assert first.cancel()
    second = once.enqueue([5], key="report")  # finished (cancelled): the key is free
    assert second.id != first.id
    running = q.get()
    assert running is not None and running.id == second.id
    running.ack()
    assert once.enqueue([6], key="report").id not in (first.id, second.id)  # done


# -- bad input -------------------------------------------------------------------------

@pytest.mark.parametrize(("options", "says"), [
    ({"max_concurrency": 0}, "max_concurrency must be a whole number of jobs >= 1"),
    ({"max_concurrency": 1.5}, "max_concurrency must be a whole number"),
    ({"rate_limit": "fast"}, "'100/s', '30/m' or '500/h'"),
    ({"rate_limit": "-1/s"}, "'100/s', '30/m' or '500/h'"),
    ({"rate_limit": "0/s"}, "more than 0"),
    ({"rate_limit": "5/s burst 0"}, "burst must be at least 1"),
    ({"concurrency_key": lambda x: "k"}, "concurrency_key needs max_concurrency"),
    ({"max_concurrency": 1, "concurrency_key": "user"}, "concurrency_key must be a function"),
])
def test_invalid_limits_are_refused_when_the_task_is_registered(db, options, says) -> None:
    with pytest.raises(liteq.InvalidArgument, match=None) as caught:
        db.task(name="t", **options)(lambda x: None)
    assert says in str(caught.value)
    assert "t" not in db.tasks


def test_an_invalid_queue_rate_limit_is_refused_and_nothing_is_written(db) -> None:
    for bad in ("fast", "-1/s", 50, "10/d"):
        with pytest.raises(liteq.InvalidArgument, match="rate_limit"):
            db.queue("work", rate_limit=bad)
    assert not db.has_queue("work")


def test_a_bad_concurrency_key_refuses_the_enqueue_and_writes_nothing(db) -> None:
    @db.task(name="keyed", queue="work", max_concurrency=1,
             concurrency_key=lambda user: None if user == 0 else f"u{user}")
    def keyed(user: int) -> None: ...

    @db.task(name="plain", queue="work")
    def plain(user: int) -> None: ...

    with pytest.raises(liteq.InvalidArgument, match="concurrency key"):
        keyed.delay(0)
    with pytest.raises(liteq.InvalidArgument, match="needs a cap"):
        plain.enqueue([1], concurrency_key="x")
    assert db.queue("work").stats()["ready"] == 0


def test_liteq_queue_config_refuses_a_bad_rate_limit_saying_how_to_write_one(db_target) -> None:
    ok(db_target, "queue", "create", "emails")
    result = run(db_target, "queue", "config", "emails", "--rate-limit", "fast")
    assert "100/s" in error(result, 2)
    assert as_json(db_target, "queue", "config", "emails")["rate_limit"] is None


# -- what users see --------------------------------------------------------------------

def test_queue_config_and_stats_show_the_limits_slots_in_use_and_jobs_held_back(
    db, db_target,
) -> None:
    tasks = _register(db)
    ok(db_target, "queue", "create", "rated", "--rate-limit", "20/m")
    assert as_json(db_target, "queue", "config", "rated")["rate_limit"] == "20/m"
    assert "20/m" in ok(db_target, "queue", "config", "rated").stdout
    for i in range(3):
        tasks["capped"].delay(i)
    assert [len(db.queue("capped").get_many(5)) for _ in range(3)] == [1, 1, 0]
    [row] = as_json(db_target, "stats", "capped")
    assert (row["limited_running"], row["held"], row["rate_limit"]) == (2, 1, None)
    [rated] = as_json(db_target, "stats", "rated")
    assert rated["rate_limit"] == "20/m"
    table = ok(db_target, "stats").stdout
    assert "HELD" in table.splitlines()[0]
    limits = as_json(db_target, "stats", "--limits")
    assert {r["task"]: (r["max_concurrency"], r["running"]) for r in limits} == {
        "capped": (2, 2)}


# -- workers in processes --------------------------------------------------------------

def _spans(log: Path, killed: dict[int, float]) -> list[tuple[float, float, str]]:
    """Each run of a job in the log: (start, end, key); a run whose process was killed
    ends when it was killed (at the latest)."""
    open_runs: dict[tuple[str, str], tuple[float, str]] = {}
    spans = []
    for line in log.read_text().splitlines():
        kind, i, key, pid, at = line.split()
        if kind == "start":
            open_runs[(i, pid)] = (float(at), key)
        else:
            start, key = open_runs.pop((i, pid))
            spans.append((start, float(at), key))
    for (_, pid), (start, key) in open_runs.items():
        spans.append((start, killed[int(pid)], key))
    return spans


def _running(log: Path, workers: list[Any]) -> list[Any]:
    """The workers with a job started and not ended, per the log."""
    if not log.exists():
        return []
    runs: set[str] = set()
    for line in log.read_text().splitlines():
        kind, i, _, pid, _ = line.split()
        (runs.add if kind == "start" else runs.discard)(f"{i}:{pid}")
    pids = {int(run.split(":")[1]) for run in runs}
    return [w for w in workers if w.pid in pids]


def _busy(log: Path, workers: list[Any]) -> list[Any]:
    """Wait for a worker running a job; those that are."""
    deadline = time.monotonic() + PATIENCE
    while not (found := _running(log, workers)):
        assert time.monotonic() < deadline, "no worker ran a job"
        time.sleep(0.01)
    return found


def _most_at_once(spans: list[tuple[float, float, str]]) -> int:
    events = sorted([(s, 1) for s, _, _ in spans] + [(e, -1) for _, e, _ in spans])
    most = now = 0
    for _, step in events:  # an end sorts before a start at the same instant
        now += step
        most = max(most, now)
    return most


@pytest.fixture
def flow_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    log = tmp_path / "flow.log"
    monkeypatch.setenv("FLOW_LOG", str(log))
    return log


def test_a_cap_of_2_holds_across_3_worker_processes_killed_at_random_and_every_job_succeeds(
    db, db_target, flow_log: Path, tmp_path: Path,
) -> None:
    tasks = _register(db)
    db.queue("capped", lease=2, max_attempts=50)
    jobs = [tasks["capped"].delay(i) for i in range(60)]
    out = tmp_path / "workers.log"
    rng = random.Random(7)
    workers = [start_worker(db_target, "--queues", "capped", "-c", "3", log=out, app="flowapp")
               for _ in range(3)]
    killed: dict[int, float] = {}
    try:
        q = db.queue("capped")
        for _ in range(3):
            # SIGKILL a worker in the middle of a job: its slot stays held by the lease.
            time.sleep(rng.uniform(0.2, 0.5))
            victim = rng.choice(_busy(flow_log, workers))
            workers.remove(victim)
            victim.send_signal(signal.SIGKILL)
            victim.wait(PATIENCE)
            killed[victim.pid] = time.time()
            workers.append(start_worker(db_target, "--queues", "capped", "-c", "3", log=out,
                                        app="flowapp"))
        wait_until(lambda: q.stats()["depth"] == 0, what="every job to finish")
    finally:
        for w in workers:
            stop(w)
    assert all(db.job(j.id).state == "done" for j in jobs)
    spans = _spans(flow_log, killed)
    assert _most_at_once(spans) == 2
    assert len(spans) >= 60 + 3  # every job ran, the 3 killed ones twice


def test_a_per_key_cap_of_1_over_1000_jobs_and_10_keys_never_runs_two_of_a_key(
    db, db_target, flow_log: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FLOW_RUN", "0.002")
    tasks = _register(db)
    tasks["keyed"].enqueue_many([(i % 10, i) for i in range(1000)])
    out = tmp_path / "workers.log"
    workers = [start_worker(db_target, "--queues", "keyed", "-c", "4", log=out, app="flowapp")
               for _ in range(2)]
    try:
        q = db.queue("keyed")
        wait_until(lambda: q.stats()["depth"] == 0, what="every job to finish")
    finally:
        for w in workers:
            stop(w)
    spans = _spans(flow_log, {})
    assert len(spans) == 1000
    by_key: dict[str, list[tuple[float, float, str]]] = defaultdict(list)
    for span in spans:
        by_key[span[2]].append(span)
    assert sorted(by_key) == [str(k) for k in range(10)]
    assert all(_most_at_once(runs) == 1 for runs in by_key.values())
    assert _most_at_once(spans) > 1  # different keys ran side by side


def test_a_rate_of_50_per_second_holds_across_4_worker_processes_of_4_threads(
    db, db_target, flow_log: Path, tmp_path: Path,
) -> None:
    tasks = _register(db)
    tasks["rated"].enqueue_many([(i,) for i in range(800)])
    out = tmp_path / "workers.log"
    workers = [start_worker(db_target, "--queues", "rated", "-c", "4", log=out, app="flowapp")
               for _ in range(4)]

    def starts() -> list[float]:
        text = flow_log.read_text() if flow_log.exists() else ""
        return sorted(float(line.split()[4]) for line in text.splitlines())

    try:
        wait_until(lambda: len(starts()) > 0, what="a first job")
        first = starts()[0]
        wait_until(lambda: time.time() > first + 10.2, timeout=PATIENCE, every=0.2)
    finally:
        for w in workers:
            stop(w)
    seen = [t for t in starts() if t < first + 10]
    burst = 5  # "50/s": a tenth of a second's tokens
    # The bucket limits claims; a job starts a little after its claim (its worker
    # thread's turn, the jobs before it in the same claim), so a second of starts holds
    # the claims of a second and that lag: at most LAG more seconds' worth of tokens.
    lag = math.ceil(50 * START_LAG)
    busiest = max(sum(1 for u in seen if t <= u < t + 1) for t in seen)
    assert busiest <= 50 + burst + lag, busiest
    assert 45 <= len(seen) / 10 <= 55, len(seen) / 10


# -- the schema ------------------------------------------------------------------------

@pytest.mark.sqlite_only("a hand-built file of the SQLite schema before flow control part 2")
def test_a_file_from_before_the_limits_opens_migrated_and_its_jobs_run(tmp_path: Path) -> None:
    import apsw

    from liteq.backends.sqlite.schema import MIGRATIONS, SCHEMA_VERSION

    path = str(tmp_path / "old.db")
    conn = apsw.Connection(path)
    conn.execute("PRAGMA journal_mode=WAL")
    before = MIGRATIONS.index(next(m for m in MIGRATIONS if "CREATE TABLE flows" in m))
    for migration in MIGRATIONS[:before]:
        conn.execute(migration)
    conn.execute(
        "INSERT INTO queues (name, lease, max_attempts, retention, backoff_base, "
        "backoff_factor, backoff_max, backoff_jitter, created_at) "
        "VALUES ('old', 30, 5, 0, 1, 2, 300, 0.1, 1.0)")
    conn.execute("INSERT INTO messages (qid, state, run_at, payload, enqueued_at) "
                 "VALUES (1, 0, 1.0, x'6161', 1.0)")
    conn.execute("PRAGMA application_id = 0x4C495451")
    conn.execute(f"PRAGMA user_version = {before}")
    conn.close()
    db = liteq.connect(path)
    try:
        assert db.execute("PRAGMA user_version") == [(SCHEMA_VERSION,)]
        q = db.queue("old")
        assert q.config.rate_limit is None
        msg = q.get()
        assert msg is not None and msg.payload == "a"
        db.queue("old", rate_limit="1/h")
        q.put("b")
        msg.ack()
        assert q.get() is not None and q.get() is None
    finally:
        db.close()
