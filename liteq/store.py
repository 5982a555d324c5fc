"""The storage layer: the only module that imports apsw and the only home of SQL.

Everything above this module calls verbs (``put``, ``claim``, ``ack``, ``nack``,
``extend``, ``expire`` ...) and never sees SQL, so a PostgreSQL store with the same
verbs could sit behind the same API.

SQLite facts this module is built on (measured on the project's machine; see
DESIGN.md):

* Every write transaction is ``BEGIN IMMEDIATE``. A deferred transaction that reads
  and then writes fails with SQLITE_BUSY at once, whatever the busy timeout, when
  another connection wrote in between.
* The default busy timeout backs off in steps of up to 100 ms and let claims wait
  1.8 s under 4 processes; a handler sleeping ~1 ms keeps the worst case in tens of
  milliseconds.
* A RETURNING cursor must be read to the end: a half-read one keeps the write lock.
* A read transaction left open stops checkpoints and lets the WAL grow without
  bound, so no cursor is ever handed out half-read, and ``journal_size_limit`` is set.
* A connection must not cross ``fork()``: each thread of each process opens its own.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import apsw
import filelock

from . import schema
from .errors import (
    DatabaseBusy,
    InvalidArgument,
    LeaseLost,
    LiteqError,
    QueueFull,
    SchemaError,
    StorageError,
)
from .schema import CANCELLED, DEAD, DELAYED, DONE, LEASED, READY

__all__ = ["Store", "DURABILITY"]

#: durability name -> PRAGMA synchronous value. The apsw wheel's SQLite defaults to
#: FULL, so the setting is always made explicitly.
DURABILITY = {"normal": "NORMAL", "full": "FULL"}

#: Claims settle delayed and expired messages of a queue at least this often (s).
MAINTAIN_EVERY = 0.05

#: Truncate the WAL back to this size after a checkpoint (64 MiB).
JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024

#: Past this size a process that just committed asks for a RESTART checkpoint.
#: Automatic (PASSIVE) checkpoints copy frames but can never make the WAL start over
#: while readers stay on older snapshots: under 8 busy processes the file grew by
#: 60-90 MB/s to over 1 GiB (measured, tools/contention.py). A RESTART waits until the
#: readers have moved on, so the next writer starts again at the top of the file.
WAL_RESTART_BYTES = 16 * 1024 * 1024
#: How often (seconds, per process) a committing connection looks at the WAL's size,
#: and the most a RESTART checkpoint may wait for readers before giving up for now.
WAL_CHECK_EVERY = 0.25
WAL_RESTART_WAIT = 0.05
#: Pages in the WAL at which a commit checkpoints (SQLite's autocheckpoint default).
WAL_HOOK_PAGES = 1000

# Connections abandoned by a fork: the child must never use or close them (closing
# could disturb the parent's locks), and must not let them be garbage collected.
_ABANDONED: list[Any] = []

# --- SQL: queues -------------------------------------------------------------------

_QUEUE_COLUMNS = (
    "id, name, max_depth, lease, max_attempts, dead_letter, retention, backoff_base, "
    "backoff_factor, backoff_max, backoff_jitter, topic, pattern, expires_at, count_depth"
)
SQL_QUEUE_BY_NAME = f"SELECT {_QUEUE_COLUMNS} FROM queues WHERE name = ?"
SQL_QUEUE_BY_ID = f"SELECT {_QUEUE_COLUMNS} FROM queues WHERE id = ?"
SQL_QUEUE_INSERT = """
INSERT INTO queues (name, max_depth, lease, max_attempts, dead_letter, retention,
    backoff_base, backoff_factor, backoff_max, backoff_jitter, topic, pattern,
    expires_at, count_depth, created_at)
VALUES (:name, :max_depth, :lease, :max_attempts, :dead_letter, :retention,
    :backoff_base, :backoff_factor, :backoff_max, :backoff_jitter, :topic, :pattern,
    :expires_at, :count_depth, :now)
ON CONFLICT (name) DO NOTHING
"""
SQL_QUEUE_NAMES = "SELECT name FROM queues ORDER BY name"
SQL_QUEUE_DELETE = "DELETE FROM queues WHERE id = ?"

# Back pressure in one statement: the row changes only if there is room, so a
# missing RETURNING row means "full" (or "unbounded") and nothing was written.
# SQLite's single writer makes the check race-free; no COUNT(*) is ever needed.
#
# The depth counter is kept only while the queue has a max_depth: an UPDATE that
# matches no row dirties no page, and an extra page per commit costs a WAL frame
# (measured: 4 frames per put instead of 3). Setting max_depth counts the
# unfinished messages once, in the same transaction, and the counter runs from there.
SQL_RESERVE = """
UPDATE queues SET depth = depth + :n
WHERE id = :qid AND (max_depth IS NOT NULL OR count_depth)
  AND (max_depth IS NULL OR depth + :n <= max_depth)
RETURNING depth
"""
SQL_RESERVE_FORCE = """
UPDATE queues SET depth = depth + :n
WHERE id = :qid AND (max_depth IS NOT NULL OR count_depth)
"""
SQL_DEPTH = "SELECT depth, max_depth, name, count_depth FROM queues WHERE id = ?"
SQL_RELEASE = """
UPDATE queues SET depth = depth - :n WHERE id = :qid AND (max_depth IS NOT NULL OR count_depth)
"""
SQL_RECOUNT = f"""
UPDATE queues SET depth = CASE WHEN max_depth IS NULL AND NOT count_depth THEN 0 ELSE
  (SELECT count(*) FROM messages WHERE qid = :qid AND state = {READY}) +
  (SELECT count(*) FROM messages WHERE qid = :qid AND state = {DELAYED}) +
  (SELECT count(*) FROM messages WHERE qid = :qid AND state = {LEASED}) END
WHERE id = :qid
"""
SQL_UNFINISHED = f"""
SELECT (SELECT count(*) FROM messages WHERE qid = :qid AND state = {READY}) +
       (SELECT count(*) FROM messages WHERE qid = :qid AND state = {DELAYED}) +
       (SELECT count(*) FROM messages WHERE qid = :qid AND state = {LEASED})
"""
# Totals for rates are statistics, not guarantees: counted in memory and added to
# the row at most once a second, inside a transaction that writes anyway.
SQL_TOTALS = "UPDATE queues SET enqueued = enqueued + ?, finished = finished + ? WHERE id = ?"
TOTALS_EVERY = 1.0

# --- SQL: messages -----------------------------------------------------------------

SQL_INSERT = """
INSERT INTO messages (qid, state, priority, rank, run_at, payload, headers, key, enqueued_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
SQL_FIND_KEY = "SELECT id FROM messages WHERE qid = ? AND key = ? AND state < 3"

# Delayed rows live outside the ready index; move the due ones in before claiming.
SQL_PROMOTE = f"""
UPDATE messages SET state = {READY}
WHERE qid = :qid AND state = {DELAYED} AND run_at <= :now
"""
SQL_EXPIRED = f"""
SELECT id, attempts, cancel FROM messages
WHERE qid = :qid AND state = {LEASED} AND lease_until <= :now
"""
SQL_CANCEL_EXPIRED = f"""
UPDATE messages SET state = {CANCELLED}, token = NULL, lease_until = NULL,
    finished_at = :now, error = 'cancelled while running; lease expired'
WHERE id = :id AND state = {LEASED}
"""
SQL_UNLEASE = f"""
UPDATE messages SET state = {READY}, token = NULL, lease_until = NULL, error = :error
WHERE id = :id AND state = {LEASED}
"""

# The claim is one statement. The subquery walks msg_ready from its first entry;
# the outer guard on state keeps a row that is no longer ready from being taken.
# random() gives every claim a fresh 64-bit lease token (fencing).
_MESSAGE_COLUMNS = (
    "id, qid, state, priority, run_at, payload, headers, key, attempts, enqueued_at, "
    "lease_until, token, error, finished_at, origin, rank, cancel"
)
# One message: find it, then take it by id. Both run inside the same BEGIN IMMEDIATE
# (the write lock is held throughout, so nobody can take it in between) and the UPDATE
# still guards on state. Measured: 8.9 us against 27.9 us for the IN (SELECT ...) form,
# +45% per-message get+ack. Batches keep the one-statement form (faster for n > 1).
SQL_NEXT_READY = f"""
SELECT id FROM messages WHERE qid = :qid AND state = {READY}
ORDER BY priority DESC, rank, run_at, id LIMIT 1
"""

# RETURNING only what a claimed message needs: every returned column costs about
# a microsecond per row (measured), a third of the claim with all of them.
CLAIM_COLUMNS = (
    "id, token, attempts, payload, headers, priority, run_at, enqueued_at, key, rank, error, origin"
)
SQL_CLAIM = f"""
UPDATE messages
SET state = {LEASED}, token = random(), attempts = attempts + 1,
    lease_until = :now + :lease
WHERE id IN (
    SELECT id FROM messages WHERE qid = :qid AND state = {READY}
    ORDER BY priority DESC, rank, run_at, id LIMIT :n
) AND state = {READY}
RETURNING {CLAIM_COLUMNS}
"""
SQL_CLAIM_ONE = f"""
UPDATE messages
SET state = {LEASED}, token = random(), attempts = attempts + 1,
    lease_until = :now + :lease
WHERE id = :id AND state = {READY}
RETURNING {CLAIM_COLUMNS}
"""

# Every later state change is guarded by the token and the expected state, so a
# stale holder changes zero rows instead of the wrong one.
SQL_ACK_DELETE = f"DELETE FROM messages WHERE id = ? AND token = ? AND state = {LEASED}"
SQL_ACK_RETAIN = f"""
UPDATE messages SET state = {DONE}, token = NULL, lease_until = NULL, finished_at = ?
WHERE id = ? AND token = ? AND state = {LEASED}
"""
SQL_GET_LEASED = f"""
SELECT attempts, cancel FROM messages WHERE id = :id AND token = :token AND state = {LEASED}
"""
SQL_RETRY = f"""
UPDATE messages SET state = :state, run_at = :run_at, token = NULL, lease_until = NULL,
    error = :error
WHERE id = :id AND token = :token AND state = {LEASED}
"""
SQL_EXTEND = f"""
UPDATE messages SET lease_until = :until
WHERE id = :id AND token = :token AND state = {LEASED}
"""
SQL_BURY_HERE = f"""
UPDATE messages SET state = {DEAD}, token = NULL, lease_until = NULL, error = :error,
    finished_at = :now
WHERE id = :id
"""
SQL_BURY_MOVE = f"""
UPDATE messages SET qid = :target, state = {READY}, token = NULL, lease_until = NULL,
    attempts = 0, error = :error, origin = :origin, run_at = :now, finished_at = NULL,
    key = NULL
WHERE id = :id
"""
SQL_DEAD_IDS = f"""
SELECT id, qid, key FROM messages WHERE qid = :qid AND state >= {DONE} AND state = {DEAD}
ORDER BY id LIMIT :limit
"""
# Reviving a finished message must not break the dedup index: if an unfinished
# message already holds its key, the revived one gives the key up.
SQL_REVIVE = f"""
UPDATE messages SET state = {READY}, attempts = 0, run_at = :now, finished_at = NULL,
    token = NULL, lease_until = NULL, cancel = 0, key = CASE WHEN key IS NOT NULL AND EXISTS (
        SELECT 1 FROM messages AS m WHERE m.qid = :qid AND m.key = :key AND m.state < {DONE}
    ) THEN NULL ELSE key END
WHERE id = :id AND state IN ({DEAD}, {CANCELLED})
"""
SQL_FINISHED_ROW = f"""
SELECT id, qid, key FROM messages WHERE id = ? AND state IN ({DEAD}, {CANCELLED})
"""
SQL_CANCEL = f"""
UPDATE messages SET state = {CANCELLED}, finished_at = :now
WHERE id = :id AND state IN ({READY}, {DELAYED})
RETURNING qid
"""
SQL_MESSAGE = f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE id = ?"
SQL_PEEK = f"""
SELECT {_MESSAGE_COLUMNS} FROM messages WHERE qid = :qid AND state = :state
ORDER BY priority DESC, rank, run_at, id LIMIT :n
"""
SQL_PEEK_ALL = f"""
SELECT {_MESSAGE_COLUMNS} FROM messages WHERE qid = :qid ORDER BY id LIMIT :n
"""
SQL_PRUNE = f"""
DELETE FROM messages WHERE qid = :qid AND state IN ({DONE}, {CANCELLED})
AND finished_at < :before
"""
SQL_PURGE_STATE = "DELETE FROM messages WHERE qid = :qid AND state = :state"
SQL_PURGE_ALL = "DELETE FROM messages WHERE qid = :qid"

# Exact counts come from the partial indexes (one index scan each), not the table.
SQL_STATS = f"""
SELECT
  (SELECT count(*) FROM messages WHERE qid = :qid AND state = {READY}),
  (SELECT min(run_at) FROM messages WHERE qid = :qid AND state = {READY}),
  (SELECT count(*) FROM messages WHERE qid = :qid AND state = {DELAYED}),
  (SELECT count(*) FROM messages WHERE qid = :qid AND state = {LEASED}),
  (SELECT count(*) FROM messages WHERE qid = :qid AND state >= {DONE} AND state = {DONE}),
  (SELECT count(*) FROM messages WHERE qid = :qid AND state >= {DONE} AND state = {DEAD}),
  (SELECT count(*) FROM messages WHERE qid = :qid AND state >= {DONE} AND state = {CANCELLED}),
  depth, max_depth, enqueued, finished, count_depth,
  (SELECT count(*) FROM messages WHERE qid = :qid AND state = {LEASED} AND lease_until <= :now)
FROM queues WHERE id = :qid
"""
SQL_NEXT_DUE = f"""
SELECT min(
  coalesce((SELECT min(run_at) FROM messages WHERE qid = :qid AND state = {DELAYED}), 1e999),
  coalesce((SELECT min(lease_until) FROM messages WHERE qid = :qid AND state = {LEASED}),
           1e999))
"""


# --- SQL: task results ---------------------------------------------------------------

SQL_RESULT_PUT = """
INSERT INTO results (id, task, state, value, error, attempts, finished_at, expires_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET task = excluded.task, state = excluded.state,
    value = excluded.value, error = excluded.error, attempts = excluded.attempts,
    finished_at = excluded.finished_at, expires_at = excluded.expires_at
"""
SQL_RESULT_GET = """
SELECT id, task, state, value, error, attempts, finished_at, expires_at FROM results WHERE id = ?
"""
SQL_JOB_MESSAGES = f"""
SELECT {_MESSAGE_COLUMNS} FROM messages WHERE id < ? AND state IN ({{marks}})
ORDER BY id DESC LIMIT ?
"""
SQL_ORPHAN_RESULTS = """
SELECT r.id, r.task, r.state, r.value, r.error, r.attempts, r.finished_at, r.expires_at
FROM results AS r WHERE r.id < ? {where}
  AND NOT EXISTS (SELECT 1 FROM messages AS m WHERE m.id = r.id)
ORDER BY r.id DESC LIMIT ?
"""
# Give a lease back without counting the attempt (a worker shutting down): ready at
# once, in its old place (run_at kept).
SQL_RELEASE_LEASE = f"""
UPDATE messages SET state = {READY}, token = NULL, lease_until = NULL,
    attempts = max(attempts - 1, 0)
WHERE id = ? AND token = ? AND state = {LEASED}
"""
SQL_RESULT_PRUNE = "DELETE FROM results WHERE expires_at IS NOT NULL AND expires_at < ?"
SQL_CANCEL_LEASED = f"UPDATE messages SET cancel = 1 WHERE id = ? AND state = {LEASED}"
SQL_CANCEL_FLAG = "SELECT cancel FROM messages WHERE id = ?"

# --- SQL: schedules ----------------------------------------------------------------

_SCHEDULE_COLUMNS = (
    "id, name, kind, spec, tz, target, queue, payload, misfire, misfire_cap, enabled, "
    "next_run_at, last_run_at, last_job_id, created_at, updated_at"
)
SQL_SCHEDULE_UPSERT = """
INSERT INTO schedules (name, kind, spec, tz, target, queue, payload, misfire, misfire_cap,
    enabled, next_run_at, created_at, updated_at)
VALUES (:name, :kind, :spec, :tz, :target, :queue, :payload, :misfire, :misfire_cap,
    1, :next_run_at, :now, :now)
ON CONFLICT (name) DO UPDATE SET kind = excluded.kind, spec = excluded.spec,
    tz = excluded.tz, target = excluded.target, queue = excluded.queue,
    payload = excluded.payload, misfire = excluded.misfire,
    misfire_cap = excluded.misfire_cap, next_run_at = excluded.next_run_at,
    updated_at = excluded.updated_at
"""
SQL_SCHEDULE_GET = f"SELECT {_SCHEDULE_COLUMNS} FROM schedules WHERE name = ?"
SQL_SCHEDULE_ALL = f"SELECT {_SCHEDULE_COLUMNS} FROM schedules ORDER BY name"
SQL_SCHEDULE_DELETE = "DELETE FROM schedules WHERE name = ?"
SQL_SCHEDULE_DUE = f"""
SELECT {_SCHEDULE_COLUMNS} FROM schedules
WHERE enabled = 1 AND next_run_at IS NOT NULL AND next_run_at <= ?
ORDER BY next_run_at
"""
SQL_SCHEDULE_NEXT = """
SELECT min(next_run_at) FROM schedules WHERE enabled = 1 AND next_run_at IS NOT NULL
"""
SQL_SCHEDULE_ADVANCE = """
UPDATE schedules SET next_run_at = :next_run_at, last_run_at = coalesce(:last_run_at, last_run_at),
    last_job_id = coalesce(:last_job_id, last_job_id)
WHERE id = :id
"""
SQL_SCHEDULE_ENABLE = """
UPDATE schedules SET enabled = :enabled, next_run_at = coalesce(:next_run_at, next_run_at),
    updated_at = :now
WHERE name = :name
"""
SQL_RUN_INSERT = """
INSERT INTO schedule_runs (schedule, fire_at, fired_at, job_id) VALUES (?, ?, ?, NULL)
ON CONFLICT (schedule, fire_at) DO NOTHING
"""
SQL_RUN_JOB = "UPDATE schedule_runs SET job_id = ? WHERE schedule = ? AND fire_at = ?"
SQL_RUNS = """
SELECT fire_at, fired_at, job_id FROM schedule_runs WHERE schedule = ?
ORDER BY fire_at DESC LIMIT ?
"""
SQL_RUNS_DELETE = "DELETE FROM schedule_runs WHERE schedule = ?"
# Keep each schedule's newest runs. Safe: a fire time before a schedule's
# next_run_at is never planned again, so its run row is history only.
SQL_RUNS_PRUNE = """
DELETE FROM schedule_runs WHERE id IN (
    SELECT id FROM (
        SELECT id, fired_at, row_number() OVER (PARTITION BY schedule ORDER BY fire_at DESC) AS n
        FROM schedule_runs
    ) WHERE n > :keep OR fired_at < :before
)
"""

# --- SQL: topics -------------------------------------------------------------------

# Any change to the set of subscriptions bumps this counter, so a publisher can keep
# its routing table cached and re-read it only when the counter moved.
SQL_SUBS_VERSION = "SELECT value FROM meta WHERE key = 'subs_version'"
SQL_SUBS_BUMP = """
INSERT INTO meta (key, value) VALUES ('subs_version', 1)
ON CONFLICT (key) DO UPDATE SET value = value + 1
"""
SQL_SUBSCRIPTIONS = f"SELECT {_QUEUE_COLUMNS} FROM queues WHERE topic = ? ORDER BY name"
SQL_TOPICS = "SELECT DISTINCT topic FROM queues WHERE topic IS NOT NULL ORDER BY topic"
SQL_EXPIRED_SUBS = """
SELECT id FROM queues WHERE topic IS NOT NULL AND expires_at IS NOT NULL AND expires_at < ?
"""


class StaleRoutes(Exception):
    """The subscription set changed since the caller read it: re-read and retry."""


class Store:
    """One database file, with one apsw connection per thread (and per process).

    Not used directly by applications: :class:`liteq.Database` wraps it.
    """

    def __init__(
        self,
        path: str,
        *,
        durability: str = "normal",
        busy_timeout: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if durability not in DURABILITY:
            raise InvalidArgument(
                f"durability must be one of {sorted(DURABILITY)}, got {durability!r}"
            )
        if not (isinstance(busy_timeout, (int, float)) and busy_timeout >= 0):
            raise InvalidArgument(
                f"busy_timeout must be a number of seconds >= 0, got {busy_timeout!r}"
            )
        self.path = os.path.abspath(os.fspath(path))
        self.durability = durability
        self.busy_timeout = float(busy_timeout)
        self.clock = clock
        self._local = threading.local()
        self._maintained: dict[int, float] = {}
        self._wal_checked = time.monotonic()
        self._totals: dict[int, list[int]] = {}
        self._totals_at = time.monotonic()
        self._totals_lock = threading.Lock()
        self._all: list[apsw.Connection] = []
        self._all_lock = threading.Lock()
        # Open once now so that a bad path fails at connect(), not at first use.
        self.conn()

    # -- connections ----------------------------------------------------------------

    def conn(self) -> apsw.Connection:
        """This thread's connection, opened on first use and after a fork."""
        local = self._local
        if getattr(local, "pid", None) == os.getpid():
            return local.conn
        old = getattr(local, "conn", None)
        if old is not None:
            _ABANDONED.append(old)
        local.conn = self._open()
        local.pid = os.getpid()
        return local.conn

    def _wal_hook(self, conn: Any, dbname: str, pages: int) -> int:
        # Replaces SQLite's autocheckpoint (which is itself a WAL hook doing PASSIVE
        # checkpoints every 1,000 pages) with RESTART ones, waiting at most
        # WAL_RESTART_WAIT for readers: passive ones never let the WAL start over
        # while busy readers stay on older snapshots (see WAL_RESTART_BYTES).
        if pages >= WAL_HOOK_PAGES:
            local = self._local
            local.busy_limit = WAL_RESTART_WAIT
            try:
                conn.wal_checkpoint(dbname, apsw.SQLITE_CHECKPOINT_RESTART)
            except apsw.Error:
                pass  # busy: as much as could be copied was; the next commit tries again
            finally:
                local.busy_limit = None
        return 0  # SQLITE_OK

    def _after_commit(self, conn: Any) -> None:
        """Keep the WAL bounded: see WAL_RESTART_BYTES."""
        now = time.monotonic()
        if now - self._wal_checked < WAL_CHECK_EVERY:
            return
        self._wal_checked = now
        try:
            size = os.stat(self.path + "-wal").st_size
        except OSError:
            return
        if size <= WAL_RESTART_BYTES:
            return
        local = self._local
        local.busy_limit = WAL_RESTART_WAIT
        try:
            conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()
        except apsw.Error:
            pass  # busy readers or writers: the next commit past the check tries again
        finally:
            local.busy_limit = None

    def _cursor(self, conn: apsw.Connection) -> Any:
        local = self._local
        cur = getattr(local, "cur", None)
        if cur is None or cur.connection is not conn:
            cur = local.cur = conn.cursor()
        return cur

    def _open(self) -> apsw.Connection:
        path = self.path
        if os.path.isdir(path):
            raise LiteqError(f"cannot open {path}: it is a directory, not a database file")
        parent = os.path.dirname(path) or "."
        if not os.path.isdir(parent):
            raise LiteqError(f"cannot open {path}: directory {parent} does not exist")
        try:
            conn = apsw.Connection(
                path, flags=apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE
            )
        except apsw.Error as exc:
            raise LiteqError(f"cannot open {path}: {_reason(exc)}") from exc
        conn.set_busy_handler(self._busy_handler())
        conn.set_wal_hook(self._wal_hook)
        try:
            self._check_and_migrate(conn)
            self._pragmas(conn)
        except BaseException:
            conn.close()
            raise
        with self._all_lock:
            self._all.append(conn)
        return conn

    def _busy_handler(self) -> Callable[[int], bool]:
        # Short sleeps first: a consumer woken by a commit often meets the tail of
        # that very commit. Then ~1 ms with jitter, so waiters do not move in step.
        timeout = self.busy_timeout
        state = {"start": 0.0}
        local = self._local

        def handler(count: int) -> bool:
            now = time.monotonic()
            if count == 0:
                state["start"] = now
            elif now - state["start"] >= (getattr(local, "busy_limit", None) or timeout):
                return False
            time.sleep(0.0001 if count < 5 else random.uniform(0.0005, 0.0015))
            return True

        return handler

    def _read_header(self, conn: Any) -> tuple[int, int, list[str]]:
        # One read transaction: three autocommit reads could straddle another
        # process's schema creation and see tables without the liteq marks.
        try:
            conn.execute("BEGIN")
            try:
                app_id = conn.execute("PRAGMA application_id").fetchall()[0][0]
                version = conn.execute("PRAGMA user_version").fetchall()[0][0]
                names = [
                    r[0]
                    for r in conn.execute(
                        "SELECT name FROM sqlite_schema WHERE name NOT LIKE 'sqlite_%'"
                    ).fetchall()
                ]
            finally:
                if conn.in_transaction:
                    conn.execute("COMMIT")
        except apsw.NotADBError as exc:
            raise LiteqError(
                f"cannot open {self.path}: not a SQLite database (file is not a database)"
            ) from exc
        except apsw.Error as exc:
            raise LiteqError(f"cannot open {self.path}: {_reason(exc)}") from exc
        return app_id, version, names

    def _check_and_migrate(self, conn: apsw.Connection) -> None:
        app_id, version, names = self._read_header(conn)
        if app_id == schema.APPLICATION_ID and version == schema.SCHEMA_VERSION:
            return
        self._refuse_foreign(app_id, version, names)
        # New file or an older schema: create/migrate under a file lock so that many
        # processes opening a brand-new file at the same moment all succeed.
        try:
            lock = filelock.FileLock(self.path + ".lock", timeout=max(self.busy_timeout, 1))
            with lock:
                app_id, version, names = self._read_header(conn)
                self._refuse_foreign(app_id, version, names)
                if version < schema.SCHEMA_VERSION:
                    self._migrate(conn, version)
        except filelock.Timeout as exc:
            raise DatabaseBusy(
                f"cannot open {self.path}: timed out waiting for the schema lock {exc.lock_file}"
            ) from exc
        except OSError as exc:
            raise LiteqError(f"cannot open {self.path}: {exc.strerror or exc}") from exc

    def _refuse_foreign(self, app_id: int, version: int, names: list[str]) -> None:
        if app_id == schema.APPLICATION_ID:
            if version > schema.SCHEMA_VERSION:
                raise SchemaError(
                    f"{self.path} has liteq schema version {version}, but this liteq "
                    f"understands up to version {schema.SCHEMA_VERSION}: upgrade liteq"
                )
            return
        if app_id != 0 or names or version != 0:
            shown = ", ".join(sorted(names)[:5]) or "none"
            raise LiteqError(
                f"cannot open {self.path}: it is a SQLite database of another application "
                f"(application_id {app_id}, user_version {version}, tables: {shown}); "
                f"liteq leaves it untouched"
            )

    def _migrate(self, conn: apsw.Connection, version: int) -> None:
        try:
            # journal_mode cannot change inside a transaction; WAL before the schema.
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchall()[0][0]
            if str(mode).lower() != "wal":
                raise LiteqError(f"cannot open {self.path}: WAL mode refused (got {mode})")
            conn.execute("BEGIN IMMEDIATE")
            try:
                for step in schema.MIGRATIONS[version:]:
                    conn.execute(step)
                conn.execute(f"PRAGMA application_id = {schema.APPLICATION_ID}")
                conn.execute(f"PRAGMA user_version = {schema.SCHEMA_VERSION}")
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except apsw.ReadOnlyError as exc:
            raise LiteqError(f"cannot open {self.path}: the file is not writable") from exc
        except apsw.Error as exc:
            raise LiteqError(f"cannot open {self.path}: {_reason(exc)}") from exc

    def _pragmas(self, conn: apsw.Connection) -> None:
        try:
            mode = conn.execute("PRAGMA journal_mode").fetchall()[0][0]
            if str(mode).lower() != "wal":
                conn.execute("PRAGMA journal_mode=WAL").fetchall()
            conn.execute(f"PRAGMA synchronous = {DURABILITY[self.durability]}")
            conn.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}").fetchall()
            conn.execute("PRAGMA temp_store = MEMORY")
            # Touch the file so the -wal exists (the wake-up watches it).
            conn.execute("SELECT count(*) FROM queues").fetchall()
        except apsw.ReadOnlyError as exc:
            raise LiteqError(f"cannot open {self.path}: the file is not writable") from exc
        except apsw.Error as exc:
            raise LiteqError(f"cannot open {self.path}: {_reason(exc)}") from exc

    def close(self) -> None:
        """Close every connection this store opened in this process."""
        try:
            self.flush_totals()
        except LiteqError:
            pass
        with self._all_lock:
            conns, self._all = self._all, []
        for c in conns:
            try:
                c.close()
            except apsw.Error:
                pass
        self._local = threading.local()

    # -- transactions ---------------------------------------------------------------

    def write(self) -> _Write:
        """A write transaction: ``BEGIN IMMEDIATE``, or a savepoint inside one the
        caller already opened (so every verb joins ``db.transaction()``).

        Used as ``with store.write() as cur:``; an apsw error inside becomes a
        LiteqError after the rollback.
        """
        return _Write(self)

    @contextmanager
    def read(self) -> Iterator[Any]:
        """A short read transaction (one consistent snapshot), never left open."""
        conn = self.conn()
        if conn.in_transaction:
            try:
                yield conn.cursor()
            except apsw.Error as exc:
                raise _translate(exc, self.path) from exc
            return
        try:
            conn.execute("BEGIN")
            yield conn.cursor()
        except apsw.Error as exc:
            raise _translate(exc, self.path) from exc
        finally:
            if conn.in_transaction:
                try:
                    conn.execute("COMMIT")
                except apsw.Error:
                    pass

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """The application's transaction (see ``Database.transaction``); nested use
        is a savepoint."""
        with _Write(self, app=True):
            yield

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[tuple[Any, ...]]:
        """Run the application's own SQL on this thread's connection; rows as a list.

        The cursor is always read to the end, so no read or write lock outlives
        the call.
        """
        conn = self.conn()
        broken = getattr(self._local, "broken", None)
        if broken is not None:
            raise StorageError(broken)  # see _Write: it would commit on its own
        try:
            return [tuple(r) for r in conn.execute(sql, params)]
        except apsw.Error as exc:
            if getattr(self._local, "app_tx", False) and not conn.in_transaction:
                self._local.broken = (
                    f"{self.path}: the transaction was rolled back by an earlier error "
                    f"({exc}); nothing of it was committed"
                )
                raise StorageError(self._local.broken) from exc
            raise _translate(exc, self.path) from exc

    # -- queues ---------------------------------------------------------------------

    def queue_row(self, name: str) -> tuple[Any, ...] | None:
        with self.read() as cur:
            rows = cur.execute(SQL_QUEUE_BY_NAME, (name,)).fetchall()
        return tuple(rows[0]) if rows else None

    def queue_row_by_id(self, qid: int) -> tuple[Any, ...] | None:
        with self.read() as cur:
            rows = cur.execute(SQL_QUEUE_BY_ID, (qid,)).fetchall()
        return tuple(rows[0]) if rows else None

    def ensure_queue(
        self, name: str, defaults: dict[str, Any], updates: dict[str, Any]
    ) -> tuple[Any, ...]:
        """Create queue *name* with *defaults* if missing, then apply *updates*."""
        row = self.queue_row(name)
        if row is not None and not updates:
            return row
        with self.write() as cur:
            self._create_queue(cur, name, defaults)
            if updates:
                sets = ", ".join(f"{col} = :{col}" for col in updates)
                cur.execute(f"UPDATE queues SET {sets} WHERE name = :name", {**updates, "name": name})
            row = tuple(cur.execute(SQL_QUEUE_BY_NAME, (name,)).fetchall()[0])
            if "max_depth" in updates or "count_depth" in updates:
                cur.execute(SQL_RECOUNT, {"qid": row[0]})
        return row

    def create_queue(self, name: str, options: dict[str, Any]) -> tuple[Any, ...]:
        """Create queue *name* with *options* (full column values), or raise
        InvalidArgument if it exists: one transaction, so two creators cannot race."""
        with self.write() as cur:
            if cur.execute("SELECT 1 FROM queues WHERE name = ?", (name,)).fetchall():
                raise InvalidArgument(f"queue {name!r} already exists")
            qid = self._create_queue(cur, name, options)
            if options.get("max_depth") is not None or options.get("count_depth"):
                cur.execute(SQL_RECOUNT, {"qid": qid})
            return tuple(cur.execute(SQL_QUEUE_BY_ID, (qid,)).fetchall()[0])

    def _create_queue(self, cur: Any, name: str, options: dict[str, Any]) -> int:
        cur.execute(SQL_QUEUE_INSERT, {**options, "name": name, "now": self.clock()})
        return int(cur.execute("SELECT id FROM queues WHERE name = ?", (name,)).fetchall()[0][0])

    def queue_names(self) -> list[str]:
        with self.read() as cur:
            return [r[0] for r in cur.execute(SQL_QUEUE_NAMES).fetchall()]

    def delete_queue(self, qid: int) -> None:
        with self.write() as cur:
            cur.execute(SQL_PURGE_ALL, {"qid": qid})
            cur.execute(SQL_QUEUE_DELETE, (qid,))

    # -- put ------------------------------------------------------------------------

    def put(
        self,
        qid: int,
        rows: Sequence[tuple[int, bytes | None, float, bytes, bytes | None, str | None]],
        *,
        force: bool = False,
    ) -> list[int]:
        """Insert messages ``(priority, rank, run_at, payload, headers, key)`` in one transaction.

        A row whose key matches an unfinished message (or an earlier row of the
        same batch) gets that message's id and is not inserted. Raises QueueFull,
        writing nothing, if the new rows do not fit under max_depth.
        """
        with self.write() as cur:
            now = self.clock()  # after BEGIN IMMEDIATE: a wait for the lock must not age it
            ids, added = self._put(cur, qid, rows, now, force)
        self._tally(qid, added, 0)
        return ids

    def _put(
        self,
        cur: Any,
        qid: int,
        rows: Sequence[tuple[int, bytes | None, float, bytes, bytes | None, str | None]],
        now: float,
        force: bool,
    ) -> tuple[list[int], int]:
        ids: list[int | None] = [None] * len(rows)
        new: list[tuple[Any, ...]] = []
        new_index: list[int] = []
        seen: dict[str, int] = {}
        for i, (priority, rank, run_at, payload, headers, key) in enumerate(rows):
            if key is not None:
                if key in seen:
                    ids[i] = -1 - seen[key]  # resolved after insert
                    continue
                found = cur.execute(SQL_FIND_KEY, (qid, key)).fetchall()
                if found:
                    ids[i] = found[0][0]
                    continue
                seen[key] = len(new)
            state = DELAYED if run_at > now else READY
            new.append((qid, state, priority, rank, run_at, payload, headers, key, now))
            new_index.append(i)
        if new:
            self._reserve(cur, qid, len(new), force)
            if len(new) == 1:
                cur.execute(SQL_INSERT, new[0])
            else:
                cur.executemany(SQL_INSERT, new)
            # AUTOINCREMENT under the single write lock: the ids are consecutive.
            last = cur.connection.last_insert_rowid()
            first = last - len(new) + 1
            for k, i in enumerate(new_index):
                ids[i] = first + k
        out: list[int] = []
        for value in ids:
            assert value is not None
            out.append(first + (-1 - value) if value < 0 else value)
        return out, len(new)

    def _reserve(self, cur: Any, qid: int, n: int, force: bool) -> None:
        if force:
            cur.execute(SQL_RESERVE_FORCE, {"n": n, "qid": qid})
            return
        if cur.execute(SQL_RESERVE, {"n": n, "qid": qid}).fetchall():
            return
        row = cur.execute(SQL_DEPTH, (qid,)).fetchall()
        if not row:
            raise LiteqError(f"queue id {qid} no longer exists (it was deleted)")
        depth, max_depth, name, _ = row[0]
        if max_depth is None:
            return  # unbounded and not counted: no counter to keep
        raise QueueFull(name, depth, max_depth, n)

    def _tally(self, qid: int, enqueued: int, finished: int) -> None:
        # Called after the commit, so a rolled-back operation is not counted (one
        # inside an application transaction that later rolls back still is).
        with self._totals_lock:
            t = self._totals.get(qid)
            if t is None:
                self._totals[qid] = [enqueued, finished]
            else:
                t[0] += enqueued
                t[1] += finished
            now = time.monotonic()
            due = now - self._totals_at >= TOTALS_EVERY
            if due:
                self._totals_at = now
        if due and not self.conn().in_transaction:
            try:
                self.flush_totals()
            except LiteqError:
                pass  # statistics only; the counts were kept for the next flush

    def flush_totals(self) -> None:
        """Write the in-memory put/ack totals now, in a transaction of their own (they
        are written about once a second anyway). On failure they stay in memory."""
        with self._totals_lock:
            pending, self._totals = self._totals, {}
        if not pending:
            return
        try:
            with self.write() as cur:
                cur.executemany(SQL_TOTALS, [(e, f, q) for q, (e, f) in pending.items()])
        except BaseException:
            with self._totals_lock:
                for qid, (e, f) in pending.items():
                    t = self._totals.setdefault(qid, [0, 0])
                    t[0] += e
                    t[1] += f
            raise

    def room(self, qid: int) -> tuple[int, int | None]:
        """``(unfinished messages, max_depth)`` of a queue, read without a write lock:
        the counter for a bounded queue, an index count for an unbounded one."""
        with self.read() as cur:
            row = cur.execute(SQL_DEPTH, (qid,)).fetchall()
            if not row:
                raise LiteqError(f"queue id {qid} no longer exists (it was deleted)")
            depth, max_depth, _, counted = row[0]
            if max_depth is None and not counted:
                depth = cur.execute(SQL_UNFINISHED, {"qid": qid}).fetchall()[0][0]
        return int(depth), max_depth

    # -- claim and expiry -----------------------------------------------------------

    def claim(self, qid: int, n: int, lease: float) -> tuple[list[tuple[Any, ...]], float]:
        """Lease up to *n* due messages of queue *qid* in one transaction.

        Returns ``(rows, lease_until)``: rows in ``CLAIM_COLUMNS`` order, sorted as
        the queue orders them, and the deadline stored for their leases (taken
        after the write lock was granted, so waiting for it does not shorten them).

        Due delayed messages are promoted and expired leases released (or buried
        after their last attempt) in the same transaction: always when the claim
        comes up short, and otherwise at most every ``MAINTAIN_EVERY`` seconds per
        queue and process (so a due delayed message may wait that long behind
        ready ones of lower priority under load).
        """
        with self.write() as cur:
            now = self.clock()  # after BEGIN IMMEDIATE: a wait for the lock must not age it
            params = {"qid": qid, "n": n, "now": now, "lease": lease}
            # On the store's clock (injectable), so a test that moves time sees
            # expiry at once; a clock stepping backwards also triggers maintenance.
            tick = now
            if not 0 <= tick - self._maintained.get(qid, -1e18) < MAINTAIN_EVERY:
                self._maintained[qid] = tick
                self._maintain(cur, qid, now)
                rows = self._claim_rows(cur, params)
            else:
                rows = self._claim_rows(cur, params)
                if len(rows) < n:
                    self._maintained[qid] = tick
                    if self._maintain(cur, qid, now):
                        params["n"] = n - len(rows)
                        rows += self._claim_rows(cur, params)
        if len(rows) > 1:
            rows.sort(key=_claim_order)
        return rows, now + lease

    def _claim_rows(self, cur: Any, params: dict[str, Any]) -> list[Any]:
        # Every RETURNING cursor is read to the end: a half-read one keeps the lock.
        if params["n"] != 1:
            return list(cur.execute(SQL_CLAIM, params).fetchall())
        found = cur.execute(SQL_NEXT_READY, params).fetchall()
        if not found:
            return []
        return list(cur.execute(SQL_CLAIM_ONE, {**params, "id": found[0][0]}).fetchall())

    def expire(self, qid: int) -> None:
        """Promote due delayed messages and release expired leases of queue *qid*."""
        with self.write() as cur:
            now = self.clock()  # after BEGIN IMMEDIATE: a wait for the lock must not age it
            self._maintain(cur, qid, now)

    def _maintain(self, cur: Any, qid: int, now: float) -> bool:
        """Promote due delayed rows and settle expired leases; True if any row changed."""
        cur.execute(SQL_PROMOTE, {"qid": qid, "now": now})
        changed = cur.connection.changes() > 0
        expired = cur.execute(SQL_EXPIRED, {"qid": qid, "now": now}).fetchall()
        if not expired:
            return changed
        qrow = cur.execute(SQL_QUEUE_BY_ID, (qid,)).fetchall()[0]
        max_attempts = qrow[4]
        for mid, attempts, cancel in expired:
            if cancel:
                cur.execute(SQL_CANCEL_EXPIRED, {"id": mid, "now": now})
                cur.execute(SQL_RELEASE, {"n": 1, "qid": qid})
            elif attempts >= max_attempts:
                self._bury(cur, qrow, mid, "lease expired", now)
            else:
                cur.execute(SQL_UNLEASE, {"id": mid, "error": "lease expired"})
        return True

    def next_due(self, qid: int) -> float:
        """The earliest time a delayed message falls due or a lease runs out (inf if none)."""
        with self.read() as cur:
            value = cur.execute(SQL_NEXT_DUE, {"qid": qid}).fetchall()[0][0]
        return float(value) if value is not None else float("inf")

    # -- finishing ------------------------------------------------------------------

    def ack(self, qid: int, items: Iterable[tuple[int, int]], retention: float) -> list[int]:
        """Finish leased messages ``(id, token)``; return the ids whose token was stale."""
        pairs = list(items)
        with self.write() as cur:
            now = self.clock()  # after BEGIN IMMEDIATE: a wait for the lock must not age it
            if len(pairs) == 1:
                mid, token = pairs[0]
                if retention > 0:
                    cur.execute(SQL_ACK_RETAIN, (now, mid, token))
                else:
                    cur.execute(SQL_ACK_DELETE, (mid, token))
                done = cur.connection.changes()
                lost = [] if done else [mid]
            else:
                if retention > 0:
                    acked = cur.executemany(
                        SQL_ACK_RETAIN + " RETURNING id", [(now, m, t) for m, t in pairs]
                    ).fetchall()
                else:
                    acked = cur.executemany(SQL_ACK_DELETE + " RETURNING id", pairs).fetchall()
                done = len(acked)
                if done == len(pairs):
                    lost = []
                else:
                    ok = {r[0] for r in acked}
                    lost = [m for m, _ in pairs if m not in ok]
            if done:
                cur.execute(SQL_RELEASE, {"n": done, "qid": qid})
        self._tally(qid, 0, done)
        return lost

    def retry(
        self, qid: int, mid: int, token: int, delay: float | Callable[[int], float], error: str | None
    ) -> bool:
        """Give a leased message back for another delivery after *delay* seconds,
        or bury it if that was its last attempt (or cancel it if cancellation was
        requested meanwhile). Returns False if it will not be delivered again."""
        with self.write() as cur:
            now = self.clock()  # after BEGIN IMMEDIATE: a wait for the lock must not age it
            found = cur.execute(SQL_GET_LEASED, {"id": mid, "token": token}).fetchall()
            if not found:
                raise LeaseLost(_lost_text(mid), [mid])
            attempts, cancel = found[0]
            if cancel:
                # Cancellation was asked while it ran: no more attempts.
                cur.execute(
                    f"UPDATE messages SET state = {CANCELLED}, finished_at = ?, token = NULL, "
                    f"lease_until = NULL, error = ? WHERE id = ?",
                    (now, error, mid),
                )
                cur.execute(SQL_RELEASE, {"n": 1, "qid": qid})
                return False
            qrow = cur.execute(SQL_QUEUE_BY_ID, (qid,)).fetchall()[0]
            if attempts >= qrow[4]:
                self._bury(cur, qrow, mid, error or f"gave up after {attempts} attempts", now)
                return False
            seconds = delay(attempts) if callable(delay) else delay
            run_at = now + seconds
            cur.execute(
                SQL_RETRY,
                {
                    "state": DELAYED if seconds > 0 else READY,
                    "run_at": run_at,
                    "error": error,
                    "id": mid,
                    "token": token,
                },
            )
            return True

    def extend(self, mid: int, token: int, seconds: float) -> float:
        """Move the lease deadline to now + *seconds*; return the new deadline."""
        with self.write() as cur:
            until = self.clock() + seconds  # after BEGIN IMMEDIATE: see claim()
            cur.execute(SQL_EXTEND, {"until": until, "id": mid, "token": token})
            if not cur.connection.changes():
                raise LeaseLost(_lost_text(mid), [mid])
        return until

    def heartbeat(
        self, items: Sequence[tuple[int, int]], seconds: float
    ) -> tuple[list[int], list[int]]:
        """Extend many leases ``(id, token)`` to now + *seconds* in one transaction.

        Returns ``(lost, cancel)``: ids whose token was stale (nothing changed), and
        ids whose cancellation was requested meanwhile.
        """
        lost: list[int] = []
        cancel: list[int] = []
        with self.write() as cur:
            until = self.clock() + seconds  # after BEGIN IMMEDIATE: see claim()
            for mid, token in items:
                rows = cur.execute(
                    SQL_EXTEND + " RETURNING cancel", {"until": until, "id": mid, "token": token}
                ).fetchall()
                if not rows:
                    lost.append(mid)
                elif rows[0][0]:
                    cancel.append(mid)
        return lost, cancel

    def fail(self, qid: int, mid: int, token: int, reason: str) -> None:
        """Bury a leased message now (no more attempts), keeping *reason*."""
        with self.write() as cur:
            now = self.clock()  # after BEGIN IMMEDIATE: a wait for the lock must not age it
            if not cur.execute(SQL_GET_LEASED, {"id": mid, "token": token}).fetchall():
                raise LeaseLost(_lost_text(mid), [mid])
            qrow = cur.execute(SQL_QUEUE_BY_ID, (qid,)).fetchall()[0]
            self._bury(cur, qrow, mid, reason, now)

    def _bury(self, cur: Any, qrow: Sequence[Any], mid: int, reason: str, now: float) -> None:
        qid, name, dead_letter = qrow[0], qrow[1], qrow[5]
        if dead_letter is None:
            cur.execute(SQL_BURY_HERE, {"id": mid, "error": reason, "now": now})
            cur.execute(SQL_RELEASE, {"n": 1, "qid": qid})
            return
        target = cur.execute("SELECT id FROM queues WHERE name = ?", (dead_letter,)).fetchall()
        if target:
            tid = target[0][0]
        else:
            tid = self._create_queue(cur, dead_letter, default_queue_options())
        # Dead-lettering never fails for lack of room: losing the message would be
        # worse than a dead-letter queue over its max_depth.
        cur.execute(
            SQL_BURY_MOVE,
            {"target": tid, "error": reason, "origin": name, "now": now, "id": mid},
        )
        cur.execute(SQL_RELEASE, {"n": 1, "qid": qid})
        cur.execute(SQL_RESERVE_FORCE, {"n": 1, "qid": tid})

    # -- task results -----------------------------------------------------------------

    def save_results(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Record job outcomes ``(id, task, state, value, error, attempts, finished_at,
        expires_at)``; joins the caller's transaction (so it can commit with the ack)."""
        with self.write() as cur:
            if len(rows) == 1:
                cur.execute(SQL_RESULT_PUT, rows[0])
            elif rows:
                cur.executemany(SQL_RESULT_PUT, rows)

    def result(self, mid: int) -> tuple[Any, ...] | None:
        with self.read() as cur:
            rows = cur.execute(SQL_RESULT_GET, (mid,)).fetchall()
        return tuple(rows[0]) if rows else None

    def job_messages(self, states: Sequence[int], before: int, n: int) -> list[tuple[Any, ...]]:
        """Message rows with ``id < before`` in one of *states*, newest first."""
        sql = SQL_JOB_MESSAGES.replace("{marks}", ",".join("?" * len(states)))
        with self.read() as cur:
            return [tuple(r) for r in cur.execute(sql, (before, *states, n)).fetchall()]

    def orphan_results(self, state: int | None, before: int, n: int) -> list[tuple[Any, ...]]:
        """Results rows with ``id < before`` (in *state*, if given) whose message is
        gone, newest first."""
        sql = SQL_ORPHAN_RESULTS.replace("{where}", "" if state is None else "AND r.state = ?")
        params = (before,) + (() if state is None else (state,)) + (n,)
        with self.read() as cur:
            return [tuple(r) for r in cur.execute(sql, params).fetchall()]

    def release(self, qid: int, items: Sequence[tuple[int, int]]) -> list[int]:
        """Give leased messages ``(id, token)`` back, ready at once and without counting
        the attempt; return the ids whose token was stale (left unchanged)."""
        lost = []
        with self.write() as cur:
            for mid, token in items:
                cur.execute(SQL_RELEASE_LEASE, (mid, token))
                if not cur.connection.changes():
                    lost.append(mid)
        return lost

    def prune_results(self, before: float) -> int:
        with self.write() as cur:
            cur.execute(SQL_RESULT_PRUNE, (before,))
            return int(cur.connection.changes())

    def request_cancel(self, mid: int) -> str:
        """Cancel a job's message: ``"cancelled"`` if it had not started, ``"requested"``
        if it is running (the flag survives restarts), ``"finished"`` otherwise."""
        with self.write() as cur:
            now = self.clock()
            rows = cur.execute(SQL_CANCEL, {"id": mid, "now": now}).fetchall()
            if rows:
                cur.execute(SQL_RELEASE, {"n": 1, "qid": rows[0][0]})
                return "cancelled"
            cur.execute(SQL_CANCEL_LEASED, (mid,))
            if cur.connection.changes():
                return "requested"
            return "finished"

    def cancel_requested(self, mid: int) -> bool:
        with self.read() as cur:
            rows = cur.execute(SQL_CANCEL_FLAG, (mid,)).fetchall()
        return bool(rows and rows[0][0])

    # -- schedules ------------------------------------------------------------------

    def schedule_upsert(self, values: dict[str, Any]) -> tuple[Any, ...]:
        """Create or replace schedule ``values["name"]`` (its history is kept)."""
        with self.write() as cur:
            cur.execute(SQL_SCHEDULE_UPSERT, {**values, "now": self.clock()})
            return tuple(cur.execute(SQL_SCHEDULE_GET, (values["name"],)).fetchall()[0])

    def schedule(self, name: str) -> tuple[Any, ...] | None:
        with self.read() as cur:
            rows = cur.execute(SQL_SCHEDULE_GET, (name,)).fetchall()
        return tuple(rows[0]) if rows else None

    def schedules(self) -> list[tuple[Any, ...]]:
        with self.read() as cur:
            return [tuple(r) for r in cur.execute(SQL_SCHEDULE_ALL).fetchall()]

    def schedule_delete(self, name: str) -> bool:
        """Delete a schedule and its history; False if there was none."""
        with self.write() as cur:
            cur.execute(SQL_SCHEDULE_DELETE, (name,))
            gone = cur.connection.changes() > 0
            cur.execute(SQL_RUNS_DELETE, (name,))
        return bool(gone)

    def schedule_enable(self, name: str, enabled: bool, next_run_at: float | None) -> bool:
        """Pause or resume (optionally moving ``next_run_at``); False if no such schedule."""
        with self.write() as cur:
            cur.execute(
                SQL_SCHEDULE_ENABLE,
                {"enabled": int(enabled), "next_run_at": next_run_at, "now": self.clock(),
                 "name": name},
            )
            return bool(cur.connection.changes())

    def schedule_runs(self, name: str, limit: int) -> list[tuple[Any, ...]]:
        with self.read() as cur:
            return [tuple(r) for r in cur.execute(SQL_RUNS, (name, limit)).fetchall()]

    def prune_schedule_runs(self, keep: int = 1000, older_than: float | None = None) -> int:
        """Delete each schedule's runs but the newest *keep*, and any fired more than
        *older_than* seconds ago; return how many."""
        before = -1e18 if older_than is None else self.clock() - older_than
        with self.write() as cur:
            cur.execute(SQL_RUNS_PRUNE, {"keep": keep, "before": before})
            return int(cur.connection.changes())

    def next_schedule_due(self) -> float:
        """The earliest ``next_run_at`` of an enabled schedule (inf if none)."""
        with self.read() as cur:
            value = cur.execute(SQL_SCHEDULE_NEXT).fetchall()[0][0]
        return float(value) if value is not None else float("inf")

    def schedule_tick(
        self,
        plan: Callable[[tuple[Any, ...], float], tuple[list[float], float | None]],
        *,
        only: str | None = None,
        fire_now: bool = False,
    ) -> list[tuple[str, float, int]]:
        """Fire every due schedule once per fire time, in one transaction.

        ``plan(row, now)`` returns ``(fire_times, next_run_at)`` for a due row (the
        misfire policy lives there). Each fire time is recorded in schedule_runs
        (unique per schedule) and enqueued with the dedup key
        ``schedule:NAME:FIRE_AT``; ``next_run_at`` advances in the same transaction,
        so any number of schedulers on one file enqueue each fire exactly once.
        With *only* and *fire_now*, fires that schedule now, whatever its time.
        Returns ``(schedule, fire_at, job_id)`` for each fire enqueued.
        """
        fired: list[tuple[str, float, int]] = []
        added: dict[int, int] = {}
        with self.write() as cur:
            now = self.clock()  # after BEGIN IMMEDIATE
            if only is not None:
                rows = cur.execute(SQL_SCHEDULE_GET, (only,)).fetchall()
            else:
                rows = cur.execute(SQL_SCHEDULE_DUE, (now,)).fetchall()
            for row in rows:
                row = tuple(row)
                sid, name, queue_name, payload = row[0], row[1], row[6], row[7]
                if fire_now:
                    times, next_run_at = [now], row[11]
                else:
                    times, next_run_at = plan(row, now)
                qrow = cur.execute("SELECT id FROM queues WHERE name = ?", (queue_name,)).fetchall()
                qid = qrow[0][0] if qrow else self._create_queue(cur, queue_name, default_queue_options())
                last_job = None
                for fire_at in times:
                    cur.execute(SQL_RUN_INSERT, (name, fire_at, now))
                    if not cur.connection.changes():
                        continue  # already fired (belt and braces)
                    key = f"schedule:{name}:{fire_at!r}"
                    ids, n = self._put(cur, qid, [(0, None, now, payload, None, key)], now, True)
                    added[qid] = added.get(qid, 0) + n
                    last_job = ids[0]
                    cur.execute(SQL_RUN_JOB, (last_job, name, fire_at))
                    fired.append((name, fire_at, last_job))
                cur.execute(
                    SQL_SCHEDULE_ADVANCE,
                    {"next_run_at": next_run_at, "id": sid,
                     "last_run_at": times[-1] if times else None, "last_job_id": last_job},
                )
        for qid, n in added.items():
            self._tally(qid, n, 0)
        return fired

    # -- topics ---------------------------------------------------------------------

    def subs_version(self) -> int:
        with self.read() as cur:
            rows = cur.execute(SQL_SUBS_VERSION).fetchall()
        return int(rows[0][0]) if rows else 0

    def subscriptions(self, topic: str) -> tuple[int, list[tuple[Any, ...]]]:
        """``(version, rows)``: the subscription set of *topic* and its version."""
        with self.read() as cur:
            rows = cur.execute(SQL_SUBS_VERSION).fetchall()
            version = int(rows[0][0]) if rows else 0
            subs = [tuple(r) for r in cur.execute(SQL_SUBSCRIPTIONS, (topic,)).fetchall()]
        return version, subs

    def topics(self) -> list[str]:
        with self.read() as cur:
            return [r[0] for r in cur.execute(SQL_TOPICS).fetchall()]

    def subscribe(
        self, topic: str, name: str, pattern: str, defaults: dict[str, Any], updates: dict[str, Any]
    ) -> tuple[Any, ...]:
        """Create (or update the pattern and options of) subscription queue *name*."""
        with self.write() as cur:
            existing = cur.execute(SQL_QUEUE_BY_NAME, (name,)).fetchall()
            if existing and existing[0][11] != topic:
                raise InvalidArgument(
                    f"queue {name!r} exists and is not a subscription of topic {topic!r}"
                )
            self._create_queue(cur, name, {**defaults, "topic": topic, "pattern": pattern})
            cols = {**updates, "pattern": pattern}
            sets = ", ".join(f"{col} = :{col}" for col in cols)
            cur.execute(f"UPDATE queues SET {sets} WHERE name = :name", {**cols, "name": name})
            cur.execute(SQL_SUBS_BUMP)
            row = tuple(cur.execute(SQL_QUEUE_BY_NAME, (name,)).fetchall()[0])
            if "max_depth" in updates or "count_depth" in updates:
                cur.execute(SQL_RECOUNT, {"qid": row[0]})
            return row

    def unsubscribe(self, qid: int) -> None:
        with self.write() as cur:
            cur.execute(SQL_PURGE_ALL, {"qid": qid})
            cur.execute(SQL_QUEUE_DELETE, (qid,))
            cur.execute(SQL_SUBS_BUMP)

    def touch_subscription(self, qid: int, expires_at: float) -> bool:
        """Renew a temporary subscription's own lease; False if it is gone."""
        with self.write() as cur:
            cur.execute("UPDATE queues SET expires_at = ? WHERE id = ?", (expires_at, qid))
            return bool(cur.connection.changes())

    def drop_expired_subscriptions(self) -> int:
        """Delete temporary subscriptions whose own lease ran out (their owner died)."""
        with self.read() as cur:
            if not cur.execute(SQL_EXPIRED_SUBS, (self.clock(),)).fetchall():
                return 0
        with self.write() as cur:
            now = self.clock()  # after BEGIN IMMEDIATE: a wait for the lock must not age it
            ids = [r[0] for r in cur.execute(SQL_EXPIRED_SUBS, (now,)).fetchall()]
            for qid in ids:
                cur.execute(SQL_PURGE_ALL, {"qid": qid})
                cur.execute(SQL_QUEUE_DELETE, (qid,))
            if ids:
                cur.execute(SQL_SUBS_BUMP)
        return len(ids)

    def publish(
        self,
        version: int,
        deliveries: dict[int, list[tuple[int, bytes | None, float, bytes, bytes | None, str | None]]],
    ) -> int:
        """Insert each subscription's rows in one transaction: all or nothing.

        Raises :class:`StaleRoutes` if the subscription set is no longer *version*
        (the caller re-routes), and QueueFull naming the first full subscription.
        """
        total = 0
        with self.write() as cur:
            now = self.clock()  # after BEGIN IMMEDIATE: a wait for the lock must not age it
            rows = cur.execute(SQL_SUBS_VERSION).fetchall()
            if (int(rows[0][0]) if rows else 0) != version:
                raise StaleRoutes()
            added = {}
            for qid, msgs in deliveries.items():
                ids, added[qid] = self._put(cur, qid, msgs, now, False)
                total += len(ids)
        for qid, n in added.items():
            self._tally(qid, n, 0)
        return total

    # -- administration -------------------------------------------------------------

    def redrive(self, qid: int, limit: int | None) -> int:
        """Make dead messages of *qid* ready again (attempts reset); return how many."""
        with self.write() as cur:
            rows = cur.execute(
                SQL_DEAD_IDS, {"qid": qid, "limit": -1 if limit is None else limit}
            ).fetchall()
            self._revive(cur, rows)
        return len(rows)

    def _revive(self, cur: Any, rows: list[Any]) -> None:
        # One row at a time, so that two revived messages with one key see each other.
        now = self.clock()
        for mid, qid, key in rows:
            cur.execute(SQL_REVIVE, {"id": mid, "qid": qid, "key": key, "now": now})
        if rows:
            cur.execute(SQL_RESERVE_FORCE, {"n": len(rows), "qid": rows[0][1]})

    def cancel(self, mid: int) -> bool:
        """Cancel a ready or delayed message; False if it is leased or finished."""
        with self.write() as cur:
            rows = cur.execute(SQL_CANCEL, {"id": mid, "now": self.clock()}).fetchall()
            if rows:
                cur.execute(SQL_RELEASE, {"n": 1, "qid": rows[0][0]})
        return bool(rows)

    def retry_finished(self, mid: int) -> bool:
        """Make a dead or cancelled message ready again; False if it is neither."""
        with self.write() as cur:
            rows = cur.execute(SQL_FINISHED_ROW, (mid,)).fetchall()
            self._revive(cur, rows)
        return bool(rows)

    def purge(self, qid: int, state: int | None) -> int:
        """Delete messages of *qid* (all, or in one state); return how many."""
        with self.write() as cur:
            conn = cur.connection
            if state is None:
                unfinished = cur.execute("SELECT depth FROM queues WHERE id = ?", (qid,)).fetchall()[0][0]
                cur.execute(SQL_PURGE_ALL, {"qid": qid})
                n = conn.changes()
                cur.execute("UPDATE queues SET depth = 0 WHERE id = ?", (qid,))
                del unfinished
            else:
                cur.execute(SQL_PURGE_STATE, {"qid": qid, "state": state})
                n = conn.changes()
                if state < DONE and n:
                    cur.execute(SQL_RELEASE, {"n": n, "qid": qid})
        return n

    def prune(self, qid: int, before: float) -> int:
        """Delete done and cancelled messages of *qid* finished before *before*."""
        with self.write() as cur:
            cur.execute(SQL_PRUNE, {"qid": qid, "before": before})
            return int(cur.connection.changes())

    def message(self, mid: int) -> tuple[Any, ...] | None:
        with self.read() as cur:
            rows = cur.execute(SQL_MESSAGE, (mid,)).fetchall()
        return tuple(rows[0]) if rows else None

    def peek(self, qid: int, state: int | None, n: int) -> list[tuple[Any, ...]]:
        with self.read() as cur:
            if state is None:
                return cur.execute(SQL_PEEK_ALL, {"qid": qid, "n": n}).fetchall()
            return cur.execute(SQL_PEEK, {"qid": qid, "state": state, "n": n}).fetchall()

    def stats(self, qid: int) -> tuple[Any, ...]:
        """Exact counts per state (``state >= DONE AND state = X`` lets the partial
        index msg_finished serve the finished states), depth, max_depth, totals."""
        with self.read() as cur:
            rows = cur.execute(SQL_STATS, {"qid": qid, "now": self.clock()}).fetchall()
        if not rows:
            raise LiteqError(f"queue id {qid} no longer exists (it was deleted)")
        row = list(rows[0])
        if row[8] is None and not row[11]:
            row[7] = row[0] + row[2] + row[3]  # no counter kept: depth from the counts
        del row[11]  # count_depth; expired leases are now row[11]
        with self._totals_lock:
            pending = self._totals.get(qid)
            if pending:
                row[9] += pending[0]
                row[10] += pending[1]
        return tuple(row)

    def integrity_check(self) -> list[str]:
        """``PRAGMA integrity_check`` lines (``['ok']`` for a healthy file)."""
        return [r[0] for r in self.execute("PRAGMA integrity_check")]

    def checkpoint(self, mode: str = "TRUNCATE") -> None:
        self.execute(f"PRAGMA wal_checkpoint({mode})")

    def vacuum(self) -> None:
        self.execute("VACUUM")


class _Write:
    """The context manager behind :meth:`Store.write` (a class, not a generator:
    it runs on every operation, and this is several times cheaper)."""

    __slots__ = ("store", "conn", "nested", "app")

    def __init__(self, store: Store, app: bool = False) -> None:
        self.store = store
        self.conn = store.conn()
        self.nested = False
        self.app = app  # the application's own db.transaction()

    def __enter__(self) -> Any:
        conn = self.conn
        local = self.store._local
        broken = getattr(local, "broken", None)
        if broken is not None:
            # SQLite rolled back the application's transaction under it: nothing
            # more may run until that transaction's block ends (it would commit alone).
            raise StorageError(broken)
        try:
            if conn.in_transaction:
                # Inside the application's transaction: a savepoint makes this one
                # operation all-or-nothing without ending the outer transaction.
                self.nested = True
                conn.execute("SAVEPOINT liteq_op")
            else:
                conn.execute("BEGIN IMMEDIATE")
                if self.app:
                    local.app_tx = True
        except apsw.Error as exc:
            raise _translate(exc, self.store.path) from exc
        return self.store._cursor(conn)

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        conn = self.conn
        local = self.store._local
        outer_app = self.app and not self.nested
        try:
            broken = getattr(local, "broken", None)
            if outer_app and broken is not None:
                if exc is None:
                    raise StorageError(broken)
                return  # the block's own exception says what went wrong
            if exc is None:
                try:
                    conn.execute("RELEASE liteq_op" if self.nested else "COMMIT")
                except apsw.Error as err:
                    exc = err
                else:
                    if not self.nested:
                        self.store._after_commit(conn)
                    return
            try:
                if self.nested:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK TO liteq_op; RELEASE liteq_op")
                elif conn.in_transaction:
                    conn.execute("ROLLBACK")
            except apsw.Error:
                pass
            if self.nested and not conn.in_transaction and getattr(local, "app_tx", False):
                # An I/O error or disk full during a cache spill makes SQLite roll back
                # the whole transaction, not just this savepoint: say so, and refuse
                # further work in the application's block.
                local.broken = (
                    f"{self.store.path}: the transaction was rolled back by an earlier error "
                    f"({exc}); nothing of it was committed"
                )
                raise StorageError(local.broken) from exc
            if isinstance(exc, apsw.Error):
                raise _translate(exc, self.store.path) from exc
        finally:
            if outer_app:
                local.app_tx = False
                local.broken = None


def default_queue_options() -> dict[str, Any]:
    """Column values for a queue created implicitly (e.g. as a dead-letter target)."""
    return {
        "max_depth": None,
        "lease": 30.0,
        "max_attempts": 5,
        "dead_letter": None,
        "retention": 0.0,
        "backoff_base": 1.0,
        "backoff_factor": 2.0,
        "backoff_max": 300.0,
        "backoff_jitter": 0.1,
        "topic": None,
        "pattern": None,
        "expires_at": None,
        "count_depth": 0,
    }


def _claim_order(row: tuple[Any, ...]) -> tuple[Any, ...]:
    return (-row[5], row[9] or b"", row[6], row[0])


def _lost_text(mid: int) -> str:
    return (
        f"lease on message {mid} is lost: the token is stale (the lease ran out and the "
        f"message was claimed again, or it was finished, cancelled or purged)"
    )


def _reason(exc: apsw.Error) -> str:
    if isinstance(exc, apsw.CantOpenError):
        return "unable to open the file (missing directory or no permission)"
    if isinstance(exc, apsw.ReadOnlyError):
        return "the file is not writable"
    if isinstance(exc, apsw.NotADBError):
        return "not a SQLite database"
    if isinstance(exc, apsw.CorruptError):
        return "the database file is corrupt"
    text = str(exc)
    return text.split(": ", 1)[1] if ": " in text else text


def _translate(exc: apsw.Error, path: str) -> LiteqError:
    if isinstance(exc, apsw.BusyError | apsw.LockedError):
        return DatabaseBusy(f"{path}: the database stayed locked past busy_timeout ({exc})")
    if isinstance(exc, apsw.FullError):
        return StorageError(f"{path}: disk full; the operation was rolled back")
    if isinstance(exc, apsw.IOError):
        return StorageError(f"{path}: I/O error ({exc}); the operation was rolled back")
    if isinstance(exc, apsw.CorruptError | apsw.NotADBError):
        return StorageError(f"{path}: the database file is corrupt ({exc})")
    if isinstance(exc, apsw.ReadOnlyError):
        return StorageError(f"{path}: the database is read-only ({exc})")
    return StorageError(f"{path}: {type(exc).__name__}: {exc}")
