"""The database schema and its migrations.

The schema version lives in ``pragma user_version`` and the file is marked as
liteq's with ``pragma application_id``, so a SQLite file of another application is
recognised and left untouched. ``MIGRATIONS[n]`` takes a file from version ``n`` to
``n + 1``; they run in one transaction under a file lock (see ``opening.py``).

Message states are small integers, ordered so that "unfinished" is ``state < DONE``
(and one row that is no message: the tombstone, qid 0, state -1; see ``_V_IDS``):

======== ===== ==========================================================
state    value meaning
======== ===== ==========================================================
ready    0     due now; claimable (in the partial index ``msg_ready``)
delayed  1     ``run_at`` in the future (kept out of ``msg_ready``: rows that
               are not due must never sit ahead of due ones in the claim index)
leased   2     claimed; ``lease_until`` and ``token`` are set
done     3     acked and kept because the queue has ``retention`` > 0
dead     4     gave up: ``error`` says why
cancelled 5    cancelled before it ran
======== ===== ==========================================================
"""

from __future__ import annotations

import re

from .workflow_sql import WFACK_SCHEMA, WFKEEP_SCHEMA, WORKFLOW_SCHEMA

__all__ = ["APPLICATION_ID", "SCHEMA_VERSION", "MIGRATIONS", "STATES", "STATE_NAMES",
           "TASK_NAME", "TASK_PAYLOAD", "TOMBSTONE"]

#: "LITQ" in ASCII: marks a SQLite file as liteq's.
APPLICATION_ID = 0x4C495451

READY, DELAYED, LEASED, DONE, DEAD, CANCELLED = range(6)
STATES = {
    "ready": READY,
    "delayed": DELAYED,
    "leased": LEASED,
    "done": DONE,
    "dead": DEAD,
    "cancelled": CANCELLED,
}
STATE_NAMES = {v: k for k, v in STATES.items()}
#: The state of the tombstone row (``_V_IDS``): outside STATES, in no index, read by no
#: statement (its queue id, 0, is no queue's).
TOMBSTONE = -1

_V1 = """
CREATE TABLE queues (
    id             INTEGER PRIMARY KEY,
    name           TEXT NOT NULL UNIQUE,
    max_depth      INTEGER,                    -- NULL: unbounded
    lease          REAL NOT NULL,              -- visibility timeout, seconds
    max_attempts   INTEGER NOT NULL,
    dead_letter    TEXT,                       -- NULL: dead messages stay here
    retention      REAL NOT NULL,              -- seconds to keep finished messages
    backoff_base   REAL NOT NULL,
    backoff_factor REAL NOT NULL,
    backoff_max    REAL NOT NULL,
    backoff_jitter REAL NOT NULL,
    depth          INTEGER NOT NULL DEFAULT 0, -- ready + delayed + leased, kept in step
                                               -- while max_depth is set or count_depth is 1
    count_depth    INTEGER NOT NULL DEFAULT 0, -- keep the counter without a bound
    enqueued       INTEGER NOT NULL DEFAULT 0, -- total ever put (for rates)
    finished       INTEGER NOT NULL DEFAULT 0, -- total ever acked (for rates)
    topic          TEXT,                       -- set for a topic subscription
    pattern        TEXT,                       -- its routing pattern
    expires_at     REAL,                       -- temporary subscriptions: lease of their own
    created_at     REAL NOT NULL
) STRICT;

-- AUTOINCREMENT: without it SQLite may reuse the id of a deleted (acked) row, and
-- an id is also a job handle and half of a receipt.
CREATE TABLE messages (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    qid          INTEGER NOT NULL,
    state        INTEGER NOT NULL,
    priority     INTEGER NOT NULL DEFAULT 0,
    rank         BLOB,                         -- order within a priority (compat.PriorityQueue)
    run_at       REAL NOT NULL,
    payload      BLOB NOT NULL,
    headers      BLOB,
    key          TEXT,
    attempts     INTEGER NOT NULL DEFAULT 0,
    enqueued_at  REAL NOT NULL,
    lease_until  REAL,
    token        INTEGER,
    error        TEXT,
    finished_at  REAL,
    origin       TEXT,                         -- queue a dead-lettered message came from
    cancel       INTEGER NOT NULL DEFAULT 0    -- 1: cancellation asked while leased
) STRICT;

-- The claim walks this index from its first entry: only due rows are in it.
CREATE INDEX msg_ready ON messages (qid, priority DESC, rank, run_at, id) WHERE state = 0;
CREATE INDEX msg_delayed ON messages (qid, run_at) WHERE state = 1;
CREATE INDEX msg_leased ON messages (qid, lease_until) WHERE state = 2;
-- (qid, state, ...): counting one finished state per queue is a covering range scan.
CREATE INDEX msg_finished ON messages (qid, state, finished_at) WHERE state >= 3;
CREATE UNIQUE INDEX msg_key ON messages (qid, key) WHERE key IS NOT NULL AND state < 3;

CREATE INDEX queues_topic ON queues (topic) WHERE topic IS NOT NULL;

-- Outcomes of finished task jobs (a job's id is its message's id), kept until
-- expires_at so that job.state and job.result() work after the message is gone.
CREATE TABLE results (
    id           INTEGER PRIMARY KEY,
    task         TEXT,
    state        INTEGER NOT NULL,             -- DONE, DEAD or CANCELLED
    value        BLOB,                         -- CBOR of the return value, if stored
    error        TEXT,
    attempts     INTEGER NOT NULL DEFAULT 0,
    finished_at  REAL NOT NULL,
    expires_at   REAL
) STRICT;
CREATE INDEX results_expiry ON results (expires_at) WHERE expires_at IS NOT NULL;

-- Schedules: cron / every / at, firing into a queue. A tick takes the due rows,
-- enqueues each fire and advances next_run_at in one BEGIN IMMEDIATE transaction;
-- schedule_runs (unique per schedule and fire time) is the history and a second
-- guard against a fire being enqueued twice.
CREATE TABLE schedules (
    id           INTEGER PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    kind         TEXT NOT NULL,                -- cron | every | at
    spec         TEXT NOT NULL,                -- the cron expression, seconds, or ISO time
    tz           TEXT,                         -- time zone of a cron schedule
    target       TEXT NOT NULL,                -- task | queue | command
    queue        TEXT NOT NULL,                -- where each fire is enqueued
    payload      BLOB NOT NULL,                -- CBOR: what each fire enqueues
    misfire      TEXT NOT NULL,                -- skip | once | all
    misfire_cap  INTEGER NOT NULL,
    enabled      INTEGER NOT NULL DEFAULT 1,
    next_run_at  REAL,                         -- NULL: nothing left to fire
    last_run_at  REAL,
    last_job_id  INTEGER,
    created_at   REAL NOT NULL,
    updated_at   REAL NOT NULL
) STRICT;
CREATE INDEX schedules_due ON schedules (next_run_at)
    WHERE enabled = 1 AND next_run_at IS NOT NULL;

CREATE TABLE schedule_runs (
    id           INTEGER PRIMARY KEY,
    schedule     TEXT NOT NULL,
    fire_at      REAL NOT NULL,                -- the planned fire time
    fired_at     REAL NOT NULL,                -- when a scheduler enqueued it
    job_id       INTEGER,
    UNIQUE (schedule, fire_at)
) STRICT;

-- Small shared settings and counters (e.g. the version of the subscription set).
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value ANY
) STRICT;
"""

# Version 2: a finished job keeps its history with its outcome (``liteq jobs -q``
# and ``liteq job N`` after the message is gone). Written with the results row, so
# only task jobs pay for it; a plain queue's ack is unchanged.
_V2 = """
ALTER TABLE results ADD COLUMN queue TEXT;         -- the queue the job ran on
ALTER TABLE results ADD COLUMN call BLOB;          -- CBOR {"task", "args", "kwargs"}
ALTER TABLE results ADD COLUMN enqueued_at REAL;
ALTER TABLE results ADD COLUMN started_at REAL;    -- start of its last run (NULL: never ran)
ALTER TABLE results ADD COLUMN duration REAL;      -- seconds its last run took
"""

# Version 3: flow control (issue 19). ``paused``: while 1, the claim takes nothing
# from the queue (puts go on); checked inside the claim statement itself.
_V3 = """
ALTER TABLE queues ADD COLUMN paused INTEGER NOT NULL DEFAULT 0;
"""

# Version 4 (issue 21): what operators look at. The registry of live workers and
# schedulers (one row each, rewritten by its heartbeat), the last progress of each job
# that reported any, and per-minute counters per queue and task, written by the paths
# that already write (the put/ack totals flush, a worker's heartbeat) and pruned after
# a window. ``liteq copy`` skips all three: they describe processes and moments of the
# source, not its data.
_V4 = """
CREATE TABLE workers (
    id           TEXT PRIMARY KEY,             -- host:pid:random
    kind         TEXT NOT NULL,                -- worker | scheduler
    host         TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    queues       TEXT NOT NULL,                -- comma-separated
    pool         TEXT NOT NULL,
    concurrency  INTEGER NOT NULL,
    version      TEXT NOT NULL,
    started_at   REAL NOT NULL,
    heartbeat_at REAL NOT NULL,
    interval     REAL NOT NULL,                -- seconds between heartbeats
    jobs         TEXT NOT NULL,                -- JSON [[id, since], ...] running now
    done         INTEGER NOT NULL,
    failed       INTEGER NOT NULL
) STRICT;

CREATE TABLE progress (
    id           INTEGER PRIMARY KEY,          -- the job's message id
    fraction     REAL NOT NULL,
    note         TEXT NOT NULL,
    at           REAL NOT NULL
) STRICT;

CREATE TABLE history (
    qid          INTEGER NOT NULL,
    minute       INTEGER NOT NULL,             -- epoch seconds // 60
    task         TEXT NOT NULL,                -- '' for the queue's own put/acked
    put          INTEGER NOT NULL DEFAULT 0,
    acked        INTEGER NOT NULL DEFAULT 0,
    failed       INTEGER NOT NULL DEFAULT 0,   -- attempts to be retried
    dead         INTEGER NOT NULL DEFAULT 0,
    runs         INTEGER NOT NULL DEFAULT 0,
    run_total    REAL NOT NULL DEFAULT 0,
    run_max      REAL NOT NULL DEFAULT 0,
    le_10ms      INTEGER NOT NULL DEFAULT 0,   -- run-time histogram buckets
    le_100ms     INTEGER NOT NULL DEFAULT 0,
    le_1s        INTEGER NOT NULL DEFAULT 0,
    le_10s       INTEGER NOT NULL DEFAULT 0,
    le_60s       INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (minute, qid, task)
) STRICT, WITHOUT ROWID;
"""

# Workflows (issue 20): the SQL is ``workflow_sql.py``'s (tables, and the triggers that
# settle a job's dependents in the transaction that ends it).
_V_WORKFLOW = WORKFLOW_SCHEMA

# Flow control, part 2 (issue 19): rate limits and concurrency caps. ``flows`` holds
# each limited task's limits and its token bucket (tokens, refilled_at: 0, 0 is a full
# bucket); a job under a task's limits names its row (``messages.flow``) and its
# concurrency key (``flow_key``, '' when the cap is task-wide). A queue's own rate limit
# and bucket are columns of its row. ``limited`` marks a queue that ever received a
# limited job: the claim statements of other queues stay as they were (see
# flow.py). ``msg_flow_leased`` counts a key's leased jobs without reading others.
_V_FLOW2 = """
CREATE TABLE flows (
    id              INTEGER PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,      -- the task's name
    max_concurrency INTEGER,                   -- NULL: no cap (per flow_key)
    rate            REAL,                      -- tokens per second; NULL: no rate limit
    burst           REAL,                      -- the most tokens the bucket holds
    tokens          REAL NOT NULL DEFAULT 0,
    refilled_at     REAL NOT NULL DEFAULT 0
) STRICT;
ALTER TABLE messages ADD COLUMN flow INTEGER;   -- flows.id; NULL: no task limits
ALTER TABLE messages ADD COLUMN flow_key TEXT;  -- its concurrency key ('' task-wide)
CREATE INDEX msg_flow_leased ON messages (flow, flow_key, lease_until)
    WHERE state = 2 AND flow IS NOT NULL;
ALTER TABLE queues ADD COLUMN rate_limit REAL;  -- claims per second; NULL: none
ALTER TABLE queues ADD COLUMN rate_burst REAL;
ALTER TABLE queues ADD COLUMN tokens REAL NOT NULL DEFAULT 0;
ALTER TABLE queues ADD COLUMN refilled_at REAL NOT NULL DEFAULT 0;
ALTER TABLE queues ADD COLUMN limited INTEGER NOT NULL DEFAULT 0;
"""

# Observability, part 2 (issue 21, ``_V_OBS``):
# * ``attempts``: the attempts of a job that did not end it (a retry, a lease that ran
#   out), one row each, with the worker, start, end, outcome and the error's traceback.
#   The attempt that ends a job is its results row (now with the ``worker`` that ran
#   it), so a job that succeeds at once writes no attempts row. Retries are written by
#   the worker with the retry (``settle.py``); an expired lease by the trigger below,
#   which finds the worker in the registry (``workers.jobs``) when it is still there.
# * ``history_hours``: the per-minute history rolled up per hour, kept in step by
#   triggers on ``history`` (so every path that writes minutes writes hours, in the
#   same transaction; readers never write). The day and week charts read hours.
# * A leased message that is retried, nacked, failed or buried (by a worker, by hand or
#   by a claim's maintenance) counts in its queue's own history row (task ''): the
#   trigger ``history_failures``. ``unixepoch()`` is the wall clock, as ``clock()``.
# * ``msg_task``: search by task. A task job's payload is the CBOR map {"task", "args",
#   "kwargs"} (``task.task_call``), so its name sits at a fixed place: bytes 1-6 are
#   a3 64 't' 'a' 's' 'k', byte 7 the text header (0x60 + length under 24, else 0x78
#   and a length byte). ``TASK_NAME`` extracts it with built-in functions only, so any
#   SQLite can still write the file; only payloads of that shape enter the index.
_TASK_PREFIX = "X'a3647461736b'"
_LEN_SHORT = "X'" + "".join(f"{b:02x}" for b in range(0x60, 0x78)) + "'"
_LEN_BYTE = "X'" + "".join(f"{b:02x}" for b in range(256)) + "'"
#: The task name (as a BLOB of its UTF-8 bytes) of a task payload, for ``msg_task``.
TASK_NAME = (f"CASE WHEN substr(payload, 7, 1) = X'78' "
             f"THEN substr(payload, 9, instr({_LEN_BYTE}, substr(payload, 8, 1)) - 1) "
             f"WHEN instr({_LEN_SHORT}, substr(payload, 7, 1)) > 0 "
             f"THEN substr(payload, 8, instr({_LEN_SHORT}, substr(payload, 7, 1)) - 1) END")
#: The condition of a payload that names a task (``msg_task``'s WHERE): its first six
#: bytes, as a range of blobs (compared bytewise) rather than ``substr(...) =``, which
#: would copy the prefix on every insert and delete (callgrind: ~200 instructions more).
TASK_PAYLOAD = f"payload >= {_TASK_PREFIX} AND payload < X'a3647461736c'"
_HOUR_COLUMNS = ("put", "acked", "failed", "dead", "runs", "run_total", "le_10ms", "le_100ms",
                 "le_1s", "le_10s", "le_60s")
_V_OBS = f"""
CREATE TABLE attempts (
    id           INTEGER NOT NULL,             -- the job's message id
    attempt      INTEGER NOT NULL,             -- 1 for its first delivery
    worker       TEXT,                         -- registry id or host:pid; NULL: unknown
    started_at   REAL,                         -- NULL: unknown (a lease that ran out)
    ended_at     REAL NOT NULL,
    outcome      TEXT NOT NULL,                -- retried | lease expired
    error        TEXT,                         -- the error with its traceback
    PRIMARY KEY (id, attempt)
) STRICT, WITHOUT ROWID;
ALTER TABLE results ADD COLUMN worker TEXT;    -- who ran its last attempt

CREATE TRIGGER attempts_lease_expired AFTER UPDATE OF error ON messages
WHEN old.state = 2 AND new.error = 'lease expired'
BEGIN
    INSERT OR REPLACE INTO attempts (id, attempt, worker, started_at, ended_at, outcome, error)
    VALUES (old.id, old.attempts,
        (SELECT w.id FROM workers AS w, json_each(w.jobs) AS j
         WHERE j.value ->> 0 = old.id ORDER BY w.heartbeat_at DESC LIMIT 1),
        (SELECT j.value ->> 1 FROM workers AS w, json_each(w.jobs) AS j
         WHERE j.value ->> 0 = old.id ORDER BY w.heartbeat_at DESC LIMIT 1),
        old.lease_until, 'lease expired', 'lease expired');
END;

CREATE TRIGGER history_failures AFTER UPDATE OF error ON messages
WHEN old.state = 2 AND new.state IN (0, 1, 4)
BEGIN
    INSERT INTO history (qid, minute, task, failed, dead)
    VALUES (old.qid, unixepoch() / 60, '',
            new.state < 3 AND new.qid = old.qid, new.state = 4 OR new.qid <> old.qid)
    ON CONFLICT (minute, qid, task) DO UPDATE SET
        failed = failed + excluded.failed, dead = dead + excluded.dead;
END;

CREATE TABLE history_hours (
    qid          INTEGER NOT NULL,
    hour         INTEGER NOT NULL,             -- epoch seconds // 3600
    task         TEXT NOT NULL,
    put          INTEGER NOT NULL DEFAULT 0,
    acked        INTEGER NOT NULL DEFAULT 0,
    failed       INTEGER NOT NULL DEFAULT 0,
    dead         INTEGER NOT NULL DEFAULT 0,
    runs         INTEGER NOT NULL DEFAULT 0,
    run_total    REAL NOT NULL DEFAULT 0,
    run_max      REAL NOT NULL DEFAULT 0,
    le_10ms      INTEGER NOT NULL DEFAULT 0,
    le_100ms     INTEGER NOT NULL DEFAULT 0,
    le_1s        INTEGER NOT NULL DEFAULT 0,
    le_10s       INTEGER NOT NULL DEFAULT 0,
    le_60s       INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (hour, qid, task)
) STRICT, WITHOUT ROWID;
INSERT INTO history_hours (qid, hour, task, {", ".join(_HOUR_COLUMNS)}, run_max)
SELECT qid, minute / 60, task, {", ".join(f"sum({c})" for c in _HOUR_COLUMNS)}, max(run_max)
FROM history GROUP BY minute / 60, qid, task;

CREATE TRIGGER history_hours_insert AFTER INSERT ON history
BEGIN
    INSERT INTO history_hours (qid, hour, task, {", ".join(_HOUR_COLUMNS)}, run_max)
    VALUES (new.qid, new.minute / 60, new.task, {", ".join(f"new.{c}" for c in _HOUR_COLUMNS)},
            new.run_max)
    ON CONFLICT (hour, qid, task) DO UPDATE SET
        {", ".join(f"{c} = {c} + excluded.{c}" for c in _HOUR_COLUMNS)},
        run_max = max(run_max, excluded.run_max);
END;
CREATE TRIGGER history_hours_update AFTER UPDATE ON history
BEGIN
    UPDATE history_hours SET
        {", ".join(f"{c} = {c} + new.{c} - old.{c}" for c in _HOUR_COLUMNS)},
        run_max = max(run_max, new.run_max)
    WHERE hour = new.minute / 60 AND qid = new.qid AND task = new.task;
END;

CREATE INDEX msg_task ON messages (qid, ({TASK_NAME}), id) WHERE {TASK_PAYLOAD};
"""

# Workflows, the member's ack (issue 20): a parent's success is counted set-wise by its
# writer, not by a trigger per edge (``workflow_sql.py``: WFACK_SCHEMA). Triggers only:
# a file migrated with workflows half done goes on with the same counters.
_V_WFACK = WFACK_SCHEMA

# Ids never reused without AUTOINCREMENT (issue 23, ``_V_IDS``). AUTOINCREMENT wrote
# ``sqlite_sequence`` on every put: one more page, so one more WAL frame per commit
# (3.39 frames per put against the minimal raw queue's 2.24). Without it SQLite gives a
# new row max(id) + 1, which would hand out again the id of a deleted top row, and an id
# is a job handle, half of a receipt and the key of results, wf_jobs and wf_edges. So
# max(id) must never go down: when the row with the largest id is deleted (an ack, a
# purge, a prune), the trigger ``msg_top`` puts a *tombstone* in its place (qid 0,
# state TOMBSTONE, no payload: in no index, seen by no statement that names a queue or
# a state) and deletes the previous tombstone, so there is at most one. Its page is the
# table's last leaf, which the delete has just written: no extra frame (bench/frames.py).
# The previous tombstone is found by walking the table backwards from the deleted id;
# every row is walked over at most once in its life (a walk stops at the newest
# tombstone and leaves a newer one above the rows it passed), so the walk costs O(1)
# per put, amortized (the worst single one: 80 ms after a million puts kept since).
#
# Why a trigger, and this one (callgrind, bench/README.md): explicit statements would
# make the common ack BEGIN, DELETE, the tombstone's statement and COMMIT instead of one
# autocommit DELETE (+23k instructions against +2.3k). A trigger program's frame is
# allocated and zeroed each time a statement first runs it, in proportion to its size,
# and its WHEN is evaluated inside it, so ``msg_top`` is kept tiny (the WHEN and an
# INSERT into a view) and the moving of the tombstone (two writes to messages, whose
# code is large: seven indexes) lives in the view's INSTEAD OF trigger, which only a
# deleted top row runs: the plain ack costs ~2.3k instead of 16k more. Moving the
# tombstone by ``UPDATE ... SET id`` instead of INSERT + DELETE measured the same. Its
# WHEN, "no row above", is ~300 instructions per deleted row cheaper than
# ``old.id > coalesce((SELECT max(id) FROM messages), 0)`` (raw apsw, callgrind).
#
# AUTOINCREMENT can only go by rebuilding the table (SQLite's 12-step ALTER TABLE):
# a new table, the rows copied with their ids, the old one dropped (with its indexes,
# its triggers and its sqlite_sequence row), the new one renamed, then every index and
# trigger on messages made again, from the text of the migration that last made it. The
# rename runs with ``legacy_alter_table``: otherwise SQLite checks every trigger that
# names messages (those on wf_edges) while no table has that name, and refuses.
# The sequence is carried forward as a tombstone when it is above every row's id (the
# newest messages were acked), so a migrated file never hands their ids out again.
_MESSAGES_COLUMNS = ("id, qid, state, priority, rank, run_at, payload, headers, key, attempts, "
                     "enqueued_at, lease_until, token, error, finished_at, origin, cancel, "
                     "wf, flow, flow_key")
_ON_MESSAGES = re.compile(
    r"^DROP TRIGGER (\w+);"
    r"|^CREATE (?:UNIQUE )?INDEX (\w+) ON messages .*?;$"
    r"|^CREATE TRIGGER (\w+) [^\n]* ON messages\n.*?^END;$",
    re.S | re.M)


def _made_on_messages(migrations: list[str]) -> list[str]:
    """The CREATE statements of the indexes and triggers on ``messages`` that
    *migrations* leave, each as the migration that last made it wrote it."""
    made: dict[str, str] = {}
    for text in migrations:
        for found in _ON_MESSAGES.finditer(text):
            dropped, index, trigger = found.groups()
            if dropped:
                made.pop(dropped, None)
            else:
                made.pop(index or trigger, None)  # made again: it moves to the end
                made[index or trigger] = found.group(0)
    return list(made.values())


_V_IDS_HEAD = f"""
CREATE TABLE messages_new (
    id           INTEGER PRIMARY KEY,          -- never reused: see msg_top
    qid          INTEGER NOT NULL,
    state        INTEGER NOT NULL,
    priority     INTEGER NOT NULL DEFAULT 0,
    rank         BLOB,
    run_at       REAL NOT NULL,
    payload      BLOB NOT NULL,
    headers      BLOB,
    key          TEXT,
    attempts     INTEGER NOT NULL DEFAULT 0,
    enqueued_at  REAL NOT NULL,
    lease_until  REAL,
    token        INTEGER,
    error        TEXT,
    finished_at  REAL,
    origin       TEXT,
    cancel       INTEGER NOT NULL DEFAULT 0,
    wf           INTEGER,
    flow         INTEGER,
    flow_key     TEXT
) STRICT;
INSERT INTO messages_new ({_MESSAGES_COLUMNS})
SELECT {_MESSAGES_COLUMNS} FROM messages ORDER BY id;
INSERT INTO messages_new (id, qid, state, run_at, payload, enqueued_at)
SELECT seq, 0, {TOMBSTONE}, 0, X'', 0 FROM sqlite_sequence
WHERE name = 'messages' AND seq > coalesce((SELECT max(id) FROM messages), 0);
DROP TABLE messages;
PRAGMA legacy_alter_table = ON;
ALTER TABLE messages_new RENAME TO messages;
PRAGMA legacy_alter_table = OFF;
"""
_MSG_TOP = f"""
-- INSERT INTO msg_tombstone (id): the newest id ever handed out is id (msg_top, liteq copy).
CREATE VIEW msg_tombstone (id) AS SELECT id FROM messages WHERE qid = 0;
CREATE TRIGGER msg_tombstone_move INSTEAD OF INSERT ON msg_tombstone
BEGIN
    INSERT INTO messages (id, qid, state, run_at, payload, enqueued_at)
    VALUES (new.id, 0, {TOMBSTONE}, 0, X'', 0);
    DELETE FROM messages WHERE id = (
        SELECT id FROM messages WHERE id < new.id AND qid = 0 ORDER BY id DESC LIMIT 1);
END;
CREATE TRIGGER msg_top AFTER DELETE ON messages
WHEN NOT EXISTS (SELECT 1 FROM messages WHERE id > old.id)
BEGIN
    INSERT INTO msg_tombstone (id) VALUES (old.id);
END;
"""
_BEFORE_IDS = [_V1, _V2, _V3, _V4, _V_WORKFLOW, _V_FLOW2, _V_OBS, _V_WFACK]
_V_IDS = _V_IDS_HEAD + "\n".join(_made_on_messages(_BEFORE_IDS)) + "\n" + _MSG_TOP

# Workflows: a parent acked by the worker keeps its success in its results row, not on
# its edges (``workflow_sql.py``: WFKEEP_SCHEMA). A column; existing edges keep theirs.
_V_WFKEEP = WFKEEP_SCHEMA

#: MIGRATIONS[n] upgrades a file at user_version n to n + 1.
MIGRATIONS: list[str] = [*_BEFORE_IDS, _V_IDS, _V_WFKEEP]
SCHEMA_VERSION = len(MIGRATIONS)
