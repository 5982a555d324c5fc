"""The PostgreSQL engine's foundation (issue 17, step B0): opening and migrating a schema,
session settings, transactions, error translation, lost connections, forks, the clock.

Against a real server (``tests/conftest_pg.py``); each test gets its own schema.
"""

from __future__ import annotations

import gc
import inspect
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
from conftest_pg import require_psycopg

require_psycopg()

import liteq  # noqa: E402
from liteq.backends.base import Backend  # noqa: E402
from liteq.backends.postgres import PostgresBackend  # noqa: E402
from liteq.backends.postgres.clock import ServerClock  # noqa: E402
from liteq.backends.postgres.schema import SCHEMA_VERSION  # noqa: E402
from liteq.errors import (  # noqa: E402
    DatabaseBusy,
    InvalidArgument,
    LiteqError,
    StorageError,
)

pytestmark = pytest.mark.postgres

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def backend(pg_url: str, pg_schema: str) -> Iterator[PostgresBackend]:
    b = PostgresBackend(pg_url, schema=pg_schema)
    yield b
    b.close()


def _table(b: PostgresBackend, name: str = "t") -> str:
    """A scratch table of the application's, in the test's schema."""
    b.execute(f'CREATE TABLE IF NOT EXISTS "{b.schema}".{name} (x int PRIMARY KEY)')
    return f'"{b.schema}".{name}'


# -- opening and migrations ------------------------------------------------------------

OPENER = """
import json, sys
from liteq.backends.postgres import PostgresBackend
print("ready", flush=True)
sys.stdin.readline()
b = PostgresBackend(sys.argv[1], schema=sys.argv[2])
print(json.dumps(b.migrated), flush=True)
b.close()
"""


def test_eight_processes_opening_a_fresh_schema_at_once_all_succeed_and_it_is_migrated_once(
    pg_url: str, pg_schema: str
) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", OPENER, pg_url, pg_schema],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, cwd=ROOT,
        )
        for _ in range(8)
    ]
    for p in procs:  # every process has imported liteq before any opens
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    everything = list(range(1, SCHEMA_VERSION + 1))
    assert sorted(results, key=len) == [[]] * 7 + [everything]
    b = PostgresBackend(pg_url, schema=pg_schema)
    try:
        rows = b.execute(f'SELECT version FROM "{pg_schema}".migrations ORDER BY version')
        assert [r[0] for r in rows] == everything
        assert b.integrity_check() == ["ok"]
    finally:
        b.close()


def test_a_second_open_of_a_migrated_schema_runs_no_migration(pg_url: str, pg_schema: str) -> None:
    first = PostgresBackend(pg_url, schema=pg_schema)
    applied = first.execute(f'SELECT version, applied_at FROM "{pg_schema}".migrations')
    second = PostgresBackend(pg_url, schema=pg_schema)
    try:
        assert first.migrated == list(range(1, SCHEMA_VERSION + 1))
        assert second.migrated == []
        assert second.execute(f'SELECT version, applied_at FROM "{pg_schema}".migrations') == applied
    finally:
        first.close()
        second.close()


def test_the_tables_have_the_sqlite_engines_columns(backend: PostgresBackend, tmp_path) -> None:
    db = liteq.connect(str(tmp_path / "same.db"))
    try:
        for table in ("queues", "messages", "results", "schedules", "schedule_runs", "meta"):
            sqlite_columns = {r[1] for r in db.execute(f"PRAGMA table_info({table})")}
            pg_columns = {
                r[0]
                for r in backend.execute(
                    "SELECT column_name FROM information_schema.columns"
                    " WHERE table_schema = %s AND table_name = %s",
                    (backend.schema, table),
                )
            }
            # The depth counter lives in depth_stripes on PostgreSQL (no hot row), for
            # the queues whose ``counted`` flag says so.
            # SQLite's results rows keep a workflow parent's success for its edges
            # (wf_value); PostgreSQL keeps it on the edges.
            expected = (sqlite_columns - {"depth"} | {"counted"} if table == "queues"
                        else sqlite_columns - {"wf_value"} if table == "results"
                        else sqlite_columns)
            assert pg_columns == expected, table
    finally:
        db.close()


def test_a_read_only_open_of_a_missing_schema_is_refused_and_creates_nothing(
    pg_url: str, pg_schema: str
) -> None:
    with pytest.raises(StorageError, match="open it read-write once"):
        PostgresBackend(pg_url, schema=pg_schema, read_only=True)
    b = PostgresBackend(pg_url, schema="liteq_probe_" + pg_schema[-6:])
    try:
        assert b.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (pg_schema,)) == []
    finally:
        b.execute(f'DROP SCHEMA "{b.schema}" CASCADE')
        b.close()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"schema": "Bad-Name"}, "schema must be a lowercase PostgreSQL name"),
        ({"schema": "pg_liteq"}, "schema must be"),
        ({"durability": "fast"}, "durability must be one of"),
        ({"busy_timeout": -1}, "busy_timeout must be"),
    ],
)
def test_bad_options_are_refused_saying_how_to_fix_them(pg_url: str, kwargs, message) -> None:
    with pytest.raises(InvalidArgument, match=message):
        PostgresBackend(pg_url, **kwargs)


def test_a_server_that_cannot_be_reached_raises_storage_error_without_the_password() -> None:
    with pytest.raises(StorageError, match="cannot connect") as info:
        PostgresBackend("postgresql://someone:s3cret@127.0.0.1:1/nothing")
    assert "s3cret" not in str(info.value)
    assert "postgresql://someone@127.0.0.1:1/nothing" in str(info.value)


# -- session settings ------------------------------------------------------------------


@pytest.mark.parametrize("durability, setting", [("normal", "off"), ("full", "on")])
def test_durability_sets_synchronous_commit_on_every_threads_connection(
    pg_url: str, pg_schema: str, durability: str, setting: str
) -> None:
    b = PostgresBackend(pg_url, schema=pg_schema, durability=durability)
    seen = []
    t = threading.Thread(target=lambda: seen.append(b.execute("SHOW synchronous_commit")))
    t.start()
    t.join()
    try:
        assert b.execute("SHOW synchronous_commit") == [(setting,)]
        assert seen == [[(setting,)]]
    finally:
        b.close()


def test_sessions_keep_generic_plans_of_prepared_statements_and_wait_busy_timeout_for_locks(
    pg_url: str, pg_schema: str
) -> None:
    b = PostgresBackend(pg_url, schema=pg_schema, busy_timeout=2.5)
    try:
        assert b.execute("SHOW plan_cache_mode") == [("auto",)]
        assert b.execute("SHOW lock_timeout") == [("2500ms",)]
    finally:
        b.close()


# -- transactions -----------------------------------------------------------------------


def test_a_transaction_commits_at_the_end_and_rolls_back_on_an_exception(
    backend: PostgresBackend,
) -> None:
    t = _table(backend)
    with backend.transaction():
        backend.execute(f"INSERT INTO {t} VALUES (%s)", (1,))
    with pytest.raises(ZeroDivisionError):
        with backend.transaction():
            backend.execute(f"INSERT INTO {t} VALUES (%s)", (2,))
            1 / 0  # noqa: B018
    assert backend.execute(f"SELECT x FROM {t}") == [(1,)]


def test_a_nested_transaction_is_a_savepoint_that_rolls_back_alone(backend: PostgresBackend) -> None:
    t = _table(backend)
    with backend.transaction():
        backend.execute(f"INSERT INTO {t} VALUES (1)")
        with pytest.raises(KeyError):
            with backend.transaction():
                backend.execute(f"INSERT INTO {t} VALUES (2)")
                raise KeyError("inner")
        with backend.transaction():
            backend.execute(f"INSERT INTO {t} VALUES (3)")
        # Not committed yet: another connection sees nothing.
        seen: list[object] = []
        other = threading.Thread(
            target=lambda: seen.append(backend.execute(f"SELECT count(*) FROM {t}"))
        )
        other.start()
        other.join()
        assert seen == [[(0,)]]
    assert backend.execute(f"SELECT x FROM {t} ORDER BY x") == [(1,), (3,)]


def test_a_failing_statement_inside_a_transaction_leaves_the_transaction_usable(
    backend: PostgresBackend,
) -> None:
    t = _table(backend)
    with backend.transaction():
        backend.execute(f"INSERT INTO {t} VALUES (1)")
        with pytest.raises(StorageError, match="duplicate key"):
            backend.execute(f"INSERT INTO {t} VALUES (1)")
        backend.execute(f"INSERT INTO {t} VALUES (2)")
    assert backend.execute(f"SELECT x FROM {t} ORDER BY x") == [(1,), (2,)]


# -- errors -----------------------------------------------------------------------------


def test_a_server_side_error_becomes_a_storage_error_that_names_it(backend: PostgresBackend) -> None:
    with pytest.raises(StorageError, match="no_such_table") as info:
        backend.execute("SELECT * FROM no_such_table")
    assert "SQLSTATE 42P01" in str(info.value)
    assert backend.execute("SELECT 1") == [(1,)]


def _deadlock_on_first_insert(b: PostgresBackend, times: int = 1) -> None:
    """Make the next *times* inserts into liteq's messages fail as a deadlock victim
    does (SQLSTATE 40P01; a sequence counts them, since the failure rolls back
    everything else)."""
    s = f'"{b.schema}"'
    b.execute(f"CREATE SEQUENCE IF NOT EXISTS {s}.victims")
    b.execute(f"ALTER SEQUENCE {s}.victims RESTART WITH 1")
    b.execute(
        f"CREATE OR REPLACE FUNCTION {s}.victim() RETURNS trigger LANGUAGE plpgsql AS $$ "
        f"BEGIN IF nextval('{s}.victims') <= {times} THEN "
        f"RAISE EXCEPTION 'deadlock detected (a test)' USING ERRCODE = '40P01'; END IF; "
        f"RETURN NEW; END $$"
    )
    b.execute(f"DROP TRIGGER IF EXISTS victim ON {s}.messages")
    b.execute(f"CREATE TRIGGER victim BEFORE INSERT ON {s}.messages "
              f"FOR EACH ROW EXECUTE FUNCTION {s}.victim()")


def test_a_put_the_server_rolled_back_as_a_deadlock_victim_is_tried_again_once(
    backend: PostgresBackend,
) -> None:
    from liteq.backends.sqlite import default_queue_options

    qid = backend.ensure_queue("q", default_queue_options(), {}).id
    _deadlock_on_first_insert(backend)
    mid = backend.put_ready(qid, 0, b"\xa0")
    assert [r[0] for r in backend.execute(
        f'SELECT id FROM "{backend.schema}".messages')] == [mid]  # once, not twice
    assert backend.room(qid) == (1, None)
    _deadlock_on_first_insert(backend, times=2)  # two in a row: the second one surfaces
    with pytest.raises(DatabaseBusy, match="rolled back") as info:
        backend.put_ready(qid, 0, b"\xa0")
    assert info.value.rolled_back
    assert backend.room(qid) == (1, None)


def test_a_deadlock_victim_inside_a_transaction_is_not_tried_again(
    backend: PostgresBackend,
) -> None:
    from liteq.backends.sqlite import default_queue_options

    qid = backend.ensure_queue("q", default_queue_options(), {}).id
    _deadlock_on_first_insert(backend)
    with pytest.raises(DatabaseBusy), backend.transaction():
        backend.put_ready(qid, 0, b"\xa0")  # the block's own commit must decide
    assert backend.room(qid) == (0, None)
    assert backend.execute(f'SELECT count(*) FROM "{backend.schema}".messages') == [(0,)]


def test_a_lock_held_past_busy_timeout_raises_database_busy(pg_url: str, pg_schema: str) -> None:
    b = PostgresBackend(pg_url, schema=pg_schema, busy_timeout=0.2)
    t = _table(b)
    holding = threading.Event()
    done = threading.Event()

    def hold() -> None:
        with b.transaction():
            b.execute(f"LOCK TABLE {t} IN ACCESS EXCLUSIVE MODE")
            holding.set()
            done.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(30)
        with pytest.raises(DatabaseBusy, match="busy_timeout"):
            b.execute(f"SELECT * FROM {t}")
    finally:
        done.set()
        holder.join()
    assert b.execute(f"SELECT * FROM {t}") == []
    b.close()


def test_a_connection_killed_mid_transaction_raises_storage_error_and_the_next_call_works(
    backend: PostgresBackend, pg_admin
) -> None:
    t = _table(backend)
    with pytest.raises(StorageError, match="connection was lost inside db.transaction"):
        with backend.transaction():
            backend.execute(f"INSERT INTO {t} VALUES (1)")
            [(pid,)] = backend.execute("SELECT pg_backend_pid()")
            pg_admin.execute("SELECT pg_terminate_backend(%s, 10000)", (pid,))
            try:
                backend.execute(f"INSERT INTO {t} VALUES (2)")
            except StorageError:
                pass
            # The rest of the block must not run on a new connection (it would commit alone).
            backend.execute(f"INSERT INTO {t} VALUES (3)")
    assert backend.execute(f"SELECT x FROM {t}") == []
    assert backend.execute("SELECT pg_backend_pid()") != [(pid,)]


def test_a_connection_killed_while_idle_is_replaced_before_the_next_call_which_succeeds(
    backend: PostgresBackend, pg_admin
) -> None:
    [(pid,)] = backend.execute("SELECT pg_backend_pid()")
    pg_admin.execute("SELECT pg_terminate_backend(%s, 10000)", (pid,))
    assert backend.execute("SELECT 1") == [(1,)]  # nothing had been sent on the dead one
    assert backend.execute("SELECT pg_backend_pid()") != [(pid,)]
    [(pid,)] = backend.execute("SELECT pg_backend_pid()")
    pg_admin.execute("SELECT pg_terminate_backend(%s, 10000)", (pid,))
    with backend.transaction():  # a transaction's BEGIN too
        assert backend.execute("SELECT 1") == [(1,)]


# -- threads and processes ---------------------------------------------------------------


def test_each_thread_has_its_own_connection_and_ended_threads_give_theirs_back(
    backend: PostgresBackend,
) -> None:
    pids: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(4)

    def use() -> None:
        [(pid,)] = backend.execute("SELECT pg_backend_pid()")
        with lock:
            pids.append(pid)
        barrier.wait(30)

    threads = [threading.Thread(target=use) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(set(pids)) == 4
    assert backend.conns.count() == 5  # the four threads' and this one's
    last = threading.Thread(target=lambda: backend.execute("SELECT 1"))
    last.start()
    last.join()
    assert backend.conns.count() == 2  # this one's and the last thread's


def test_a_forked_child_uses_its_own_connection_and_never_ends_the_parents(
    backend: PostgresBackend,
) -> None:
    [(parent_pid,)] = backend.execute("SELECT pg_backend_pid()")
    inherited = backend.connection()
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover (runs in the child)
        code = 1
        try:
            os.close(read)
            [(pid,)] = backend.execute("SELECT pg_backend_pid()")
            os.write(write, str(pid).encode())
            # What garbage collection or a careless close would do to the inherited one.
            inherited.close()
            backend.close()
            gc.collect()
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read) as f:
        child_pid = int(f.read())
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert child_pid != parent_pid
    assert backend.execute("SELECT pg_backend_pid()") == [(parent_pid,)]


def test_a_child_forked_while_another_thread_was_opening_a_connection_can_open_its_own(
    backend: PostgresBackend,
) -> None:
    # As if another thread were inside Connections._open (holding its lock) at the fork.
    backend.conns._all_lock.acquire()
    try:
        child = os.fork()
        if child == 0:  # pragma: no cover (runs in the child)
            code = 1
            try:
                backend.execute("SELECT 1")
                code = 0
            finally:
                os._exit(code)
    finally:
        backend.conns._all_lock.release()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        done, status = os.waitpid(child, os.WNOHANG)
        if done:
            break
        time.sleep(0.05)
    else:
        os.kill(child, 9)
        os.waitpid(child, 0)
        pytest.fail("the child hung on the lock it inherited")
    assert os.waitstatus_to_exitcode(status) == 0


# -- the clock ----------------------------------------------------------------------------


def test_the_clock_is_the_servers_and_its_offset_is_near_zero_on_this_machine(
    backend: PostgresBackend,
) -> None:
    assert isinstance(backend.clock, ServerClock)
    before = time.time()
    now = backend.clock()
    after = time.time()
    # The server runs on this machine: the same clock, give or take a round trip.
    assert before - 0.5 <= now <= after + 0.5
    assert abs(backend.clock.offset) < 0.5


def test_an_injected_clock_is_used_as_it_is(pg_url: str, pg_schema: str) -> None:
    b = PostgresBackend(pg_url, schema=pg_schema, clock=lambda: 1000.0)
    try:
        assert b.clock() == 1000.0
    finally:
        b.close()


def test_the_server_clock_measures_again_when_due_and_keeps_its_offset_when_it_cannot() -> None:
    offsets: list[float | None] = [2.0, None, 3.0]
    calls = []

    def measure() -> float | None:
        calls.append(1)
        return offsets.pop(0)

    clock = ServerClock(measure, every=0.0)  # due at every reading
    assert clock.offset == 2.0
    assert abs(clock() - time.time() - 2.0) < 0.5  # could not measure: kept 2.0
    clock.refresh()
    assert clock.offset == 3.0
    assert len(calls) == 3


# -- the interface ------------------------------------------------------------------------


def test_the_engine_has_every_verb_of_the_interface_with_its_signature(
    backend: PostgresBackend,
) -> None:
    def params(fn: object) -> list[tuple[str, str, object]]:
        sig = inspect.signature(fn)  # type: ignore[arg-type]
        return [(p.name, p.kind.name, p.default) for p in sig.parameters.values()]

    for name in sorted(Backend.__abstractmethods__):
        assert params(getattr(PostgresBackend, name)) == params(getattr(Backend, name)), name
    assert backend.capabilities.engine == "postgres"
    assert backend.capabilities.paramstyle == "format"


def test_integrity_check_reports_rows_that_break_liteqs_invariants(backend: PostgresBackend) -> None:
    assert backend.integrity_check() == ["ok"]
    backend.execute(
        f'INSERT INTO "{backend.schema}".messages (qid, state, run_at, payload, enqueued_at)'
        " VALUES (1, 9, 0, %s, 0)",
        (b"x",),
    )
    report = backend.integrity_check()
    assert "1 messages with a state outside 0-5" in report
    assert "1 messages of a queue that does not exist" in report


def test_vacuum_and_storage_size_work_on_the_schema(backend: PostgresBackend) -> None:
    assert backend.storage_size() > 0
    backend.vacuum()
    with backend.transaction(), pytest.raises(LiteqError, match="inside db.transaction"):
        backend.vacuum()


def test_a_schema_from_before_the_flow_limits_opens_migrated_and_its_jobs_run(
    pg_url: str, pg_schema: str,
) -> None:
    import psycopg
    from dbsql import pg_schema_before

    from liteq.backends.postgres.schema import MIGRATIONS, qualify

    with psycopg.connect(pg_url, autocommit=True) as conn:
        before = pg_schema_before(conn, pg_schema, next(
            m for m in MIGRATIONS if "CREATE TABLE {s}.flows" in m))
        conn.execute(qualify(
            "INSERT INTO {s}.queues (name, lease, max_attempts, retention, backoff_base, "
            "backoff_factor, backoff_max, backoff_jitter, created_at) "
            "VALUES ('old', 30, 5, 0, 1, 2, 300, 0.1, 1.0)", pg_schema))
    backend = PostgresBackend(pg_url, schema=pg_schema)
    assert backend.migrated == list(range(before + 1, SCHEMA_VERSION + 1))
    backend.close()
    db = liteq.connect(pg_url, schema=pg_schema)
    try:
        q = db.queue("old")
        q.put("a")
        assert q.config.rate_limit is None
        db.queue("old", rate_limit="1/h")
        first = q.get()
        assert first is not None and first.payload == "a"
        q.put("b")
        assert q.get() is None  # the hour's one token is spent
    finally:
        db.close()
