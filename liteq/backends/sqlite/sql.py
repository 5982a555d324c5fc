"""Every SQL statement of liteq, as named constants (the verbs live beside this
module, one per concept; nothing outside ``liteq.backends.sqlite`` sees SQLite SQL)."""

from __future__ import annotations

import functools
import re

from .schema import CANCELLED, DEAD, DELAYED, DONE, LEASED, READY


def compact(sql: str) -> str:
    """*sql* on one line, without the blanks SQLite does not need: apsw looks a statement up
    in its cache by hashing and comparing the whole text on every execute, so a hot
    statement's layout costs instructions on every run (only for statements without
    string literals, whose spaces would change). Measured: ~10 instructions per
    character per execute."""
    return re.sub(r" ?([=,()+<>*]) ?", r"\1", " ".join(sql.split()))


# A bound parameter is written ``+?`` / ``+:name`` wherever it is compared with a
# column or gives a LIMIT: SQLite (apsw's build) otherwise marks the statement as
# planned for that value (to check it against a partial index's WHERE, or a LIMIT)
# and prepares it again on every run after a new binding (measured: the claim's
# SELECT 5.7 -> 0.9 us). The unary plus leaves the plans unchanged (EXPLAIN QUERY
# PLAN compared for every statement); tests/test_sqlite_statements.py checks that no
# statement is prepared twice. Only ``state = :state`` (SQL_PEEK, SQL_PURGE_STATE)
# keeps its plain parameter: its value picks the partial index.

# --- SQL: queues -------------------------------------------------------------------

_QUEUE_COLUMNS = (
    "id, name, max_depth, lease, max_attempts, dead_letter, retention, backoff_base, "
    "backoff_factor, backoff_max, backoff_jitter, topic, pattern, expires_at, count_depth, "
    "paused, rate_limit, rate_burst"
)
SQL_QUEUE_BY_NAME = f"SELECT {_QUEUE_COLUMNS} FROM queues WHERE name = ?"
SQL_QUEUE_BY_ID = f"SELECT {_QUEUE_COLUMNS} FROM queues WHERE id = ?"
SQL_QUEUE_INSERT = """
INSERT INTO queues (name, max_depth, lease, max_attempts, dead_letter, retention,
    backoff_base, backoff_factor, backoff_max, backoff_jitter, topic, pattern,
    expires_at, count_depth, rate_limit, rate_burst, created_at)
VALUES (:name, :max_depth, :lease, :max_attempts, :dead_letter, :retention,
    :backoff_base, :backoff_factor, :backoff_max, :backoff_jitter, :topic, :pattern,
    :expires_at, :count_depth, :rate_limit, :rate_burst, :now)
ON CONFLICT (name) DO NOTHING
"""
SQL_QUEUE_NAMES = "SELECT name FROM queues ORDER BY name"
# RETURNING topic: deleting a subscription changes the routes (subs_version must move).
SQL_QUEUE_DELETE = "DELETE FROM queues WHERE id = ? RETURNING topic"

# Back pressure in one statement: the row changes only if there is room, so a
# missing RETURNING row means "full" (or "unbounded") and nothing was written.
# SQLite's single writer makes the check race-free; no COUNT(*) is ever needed.
#
# The depth counter is kept only while the queue has a max_depth: an UPDATE that
# matches no row dirties no page, and an extra page per commit costs a WAL frame
# (measured: 4 frames per put instead of 3). Setting max_depth counts the
# unfinished messages once, in the same transaction, and the counter runs from there.
SQL_RESERVE = compact("""
UPDATE queues SET depth = depth + :n
WHERE id = :qid AND (max_depth IS NOT NULL OR count_depth)
  AND (max_depth IS NULL OR depth + :n <= max_depth)
RETURNING depth
""")
SQL_RESERVE_FORCE = """
UPDATE queues SET depth = depth + :n
WHERE id = :qid AND (max_depth IS NOT NULL OR count_depth)
"""
SQL_DEPTH = "SELECT depth, max_depth, name, count_depth FROM queues WHERE id = ?"
SQL_RELEASE = compact("""
UPDATE queues SET depth = depth - :n WHERE id = :qid AND (max_depth IS NOT NULL OR count_depth)
""")
SQL_RECOUNT = f"""
UPDATE queues SET depth = CASE WHEN max_depth IS NULL AND NOT count_depth THEN 0 ELSE
  (SELECT count(*) FROM messages WHERE qid = +:qid AND state = {READY}) +
  (SELECT count(*) FROM messages WHERE qid = +:qid AND state = {DELAYED}) +
  (SELECT count(*) FROM messages WHERE qid = +:qid AND state = {LEASED}) END
WHERE id = :qid
"""
SQL_UNFINISHED = f"""
SELECT (SELECT count(*) FROM messages WHERE qid = +:qid AND state = {READY}) +
       (SELECT count(*) FROM messages WHERE qid = +:qid AND state = {DELAYED}) +
       (SELECT count(*) FROM messages WHERE qid = +:qid AND state = {LEASED})
"""
# Totals for rates are statistics, not guarantees: counted in memory and added to
# the row at most once a second, inside a transaction that writes anyway.
SQL_TOTALS = "UPDATE queues SET enqueued = enqueued + ?, finished = finished + ? WHERE id = ?"

# --- SQL: messages -----------------------------------------------------------------

SQL_INSERT = """
INSERT INTO messages (qid, state, priority, rank, run_at, payload, headers, key, enqueued_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
# The common put (one message, due now, no key, headers or rank) in one statement:
# the row goes in only while the queue keeps no depth counter, read in the same
# transaction, so a max_depth set meanwhile by another process is never missed.
# No row inserted means "counted, full, or deleted": put takes the full path.
# Measured: 2.2 us less per put than SQL_RESERVE + SQL_DEPTH + SQL_INSERT.
SQL_INSERT_UNCOUNTED = compact(f"""
INSERT INTO messages (qid, state, priority, run_at, payload, enqueued_at)
SELECT ?1, {READY}, ?2, ?3, ?4, ?3
WHERE EXISTS (SELECT 1 FROM queues WHERE id = ?1 AND max_depth IS NULL AND NOT count_depth)
""")
# The common batch (put_many: due now, no keys, headers or ranks) in one statement,
# its payloads bound as one array (carray): one INSERT instead of one per row through
# executemany (instructions per message: see bench/README.md). Like
# SQL_INSERT_UNCOUNTED, it inserts only while the queue keeps no depth counter; no
# row inserted means "counted, full, or deleted" and put takes the full path.
# carray yields its values in order, and the rows get consecutive ids in that order
# (max(id) + 1 for each, under the single writer), so ids map back to the payloads.
SQL_INSERT_UNCOUNTED_MANY = compact(f"""
INSERT INTO messages (qid, state, priority, run_at, payload, enqueued_at)
SELECT ?1, {READY}, ?2, ?3, value, ?4 FROM carray(?5)
WHERE EXISTS (SELECT 1 FROM queues WHERE id = +?1 AND max_depth IS NULL AND NOT count_depth)
""")
SQL_FIND_KEY = "SELECT id FROM messages WHERE qid = +? AND key = +? AND state < 3"

# Delayed rows live outside the ready index; move the due ones in before claiming.
# Both settle at most :most rows (MAINTAIN_ROWS), the earliest first, so that no
# claim's transaction grows with the number of messages that fell due at once.
SQL_PROMOTE = f"""
UPDATE messages SET state = {READY}
WHERE id IN (SELECT id FROM messages WHERE qid = +:qid AND state = {DELAYED} AND run_at <= +:now
             ORDER BY run_at LIMIT +:most)
"""
# Whether SQL_PROMOTE has anything to do: an UPDATE that changes nothing still opens
# write cursors on the table and its five indexes and a statement journal (measured:
# ~37k instructions against ~4k for this look, on every maintenance of a queue with no
# delayed message due, i.e. nearly always).
SQL_DUE_DELAYED = compact(f"""
SELECT 1 FROM messages WHERE qid = +:qid AND state = {DELAYED} AND run_at <= +:now LIMIT 1
""")
# A lease is expired when its deadline has passed, or when it lies further ahead
# than any claim or extend can set (the queue's lease plus MAX_EXTEND): such a
# deadline was set before the wall clock stepped back, and would hold the message
# for as long as the step. Settled by the same statement, so claims pay nothing
# more: two range reads of msg_leased (one OR of the two would read every lease).
_HORIZON = "+:now + :max_extend + (SELECT lease FROM queues WHERE id = +:qid)"
_LEASE_GONE = f"(lease_until <= +:now OR lease_until > {_HORIZON})"
SQL_EXPIRED = compact(f"""
SELECT id, attempts, cancel FROM messages
WHERE qid = +:qid AND state = {LEASED} AND lease_until <= +:now
UNION ALL
SELECT id, attempts, cancel FROM messages
WHERE qid = +:qid AND state = {LEASED} AND lease_until > {_HORIZON}
LIMIT +:most
""")
SQL_CANCEL_EXPIRED = f"""
UPDATE messages SET state = {CANCELLED}, token = NULL, lease_until = NULL,
    finished_at = :now, error = 'cancelled while running; lease expired'
WHERE id = :id AND state = {LEASED}
"""
SQL_UNLEASE = f"""
UPDATE messages SET state = {READY}, token = NULL, lease_until = NULL, error = :error
WHERE id = :id AND state = {LEASED}
"""

# A claim walks msg_ready from its first entry; the UPDATE's guard on state keeps a
# row that is no longer ready from being taken.
# Every claim gets a fresh 64-bit lease token (fencing): random() for one message,
# one bound :token shared by all the messages of a batch claim, so that a batch ack
# is one statement per claim (sql_ack_many) instead of one per message.
_MESSAGE_COLUMNS = (
    "id, qid, state, priority, run_at, payload, headers, key, attempts, enqueued_at, "
    "lease_until, token, error, finished_at, origin, rank, cancel, flow, flow_key"
)
# Flow control (issue 19): a paused queue hands out nothing. Every claim statement
# reads the flag itself, under the write lock the claim holds, so a claim after
# pause() committed takes nothing whatever its process read before; a constant
# subquery (one primary-key lookup, evaluated once per statement).
_NOT_PAUSED = "NOT (SELECT paused FROM queues WHERE id = {q})"
SQL_SET_PAUSED = "UPDATE queues SET paused = ? WHERE id = ?"
# The claim statements below also hand out nothing from a queue with limits (a rate
# limit of its own, or jobs under a task's limits: ``limited``): such a queue is
# claimed by the statements of "flow control, part 2" (flow.py), in the same
# transaction. Still one primary-key lookup per statement for every other queue.
_CLAIMABLE = "(SELECT NOT (paused OR limited) AND rate_limit IS NULL FROM queues WHERE id = {q})"

# One message after maintenance (else SQL_CLAIM_NEXT, one statement): find it, then
# take it by id. Both run inside the same BEGIN IMMEDIATE
# (the write lock is held throughout, so nobody can take it in between) and the UPDATE
# still guards on state. Measured: 8.9 us against 27.9 us for the IN (SELECT ...) form,
# +45% per-message get+ack. (For one row this beats SQL_CLAIM_SELECT + sql_claim_ids:
# 13.6 against 17.2 us, the SELECT of 12 columns is no covering-index read.)
SQL_NEXT_READY = compact(f"""
SELECT id FROM messages WHERE qid = +?1 AND state = {READY} AND {_CLAIMABLE.format(q="?1")}
ORDER BY priority DESC, rank, run_at, id LIMIT 1
""")

# RETURNING only what a claimed message needs: every returned column costs about
# a microsecond per row (measured), a third of the claim with all of them.
CLAIM_COLUMNS = (
    "id, token, attempts, payload, headers, priority, run_at, enqueued_at, key, rank, error, origin"
)
# A batch claim (n > 1) selects its rows in queue order, with the token and attempts
# they are about to get, then updates them by id (IDS_PER_STATEMENT per statement) in
# the same BEGIN IMMEDIATE: the write lock is held throughout, so the rows selected
# are the rows updated. 2.0 us per row against 2.55 for one
# UPDATE ... WHERE id IN (SELECT ... LIMIT n) RETURNING (measured, 100 per claim:
# RETURNING behind a subquery is slow), and the rows need no re-sort.
SQL_CLAIM_SELECT = compact(f"""
SELECT id, :token, attempts + 1, payload, headers, priority, run_at, enqueued_at, key,
       rank, error, origin
FROM messages WHERE qid = +:qid AND state = {READY} AND {_CLAIMABLE.format(q=":qid")}
ORDER BY priority DESC, rank, run_at, id LIMIT +:n
""")
#: Most ids one claim or ack statement binds (SQLite allows 32,766 variables).
IDS_PER_STATEMENT = 500


@functools.lru_cache(maxsize=64)
def sql_claim_ids(n: int) -> str:
    """Lease *n* messages by id. Parameters: the token, lease_until, then the n ids."""
    ids = ",".join("?" * n)
    return compact(f"UPDATE messages SET state = {LEASED}, token = ?, attempts = attempts + 1, "
                   f"lease_until = ? WHERE id IN ({ids}) AND state = {READY}")


#: The SQL function that reads the store's clock (registered on every connection).
CLOCK_FUNCTION = "liteq_now"

# The common claim (one message, the queue maintained recently) as one autocommit
# statement: SQLite takes the write lock when the statement starts (through the busy
# handler, like BEGIN IMMEDIATE), and the lease deadline is computed inside it from
# the store's clock, so a wait for the lock never shortens the lease. (SQLite's own
# clock is not used: it is not the store's, and a test clock must move leases too.)
# lease_until comes back last. Two autocommit statements per get+ack, like the
# minimal raw queue, instead of four (BEGIN, SELECT, UPDATE, COMMIT) and one.
SQL_CLAIM_NEXT = compact(f"""
UPDATE messages
SET state = {LEASED}, token = random(), attempts = attempts + 1,
    lease_until = {CLOCK_FUNCTION}() + ?2
WHERE id = (SELECT id FROM messages WHERE qid = +?1 AND state = {READY}
            ORDER BY priority DESC, rank, run_at, id LIMIT 1)
  AND state = {READY} AND {_CLAIMABLE.format(q="?1")}
RETURNING {CLAIM_COLUMNS}, lease_until
""")

SQL_CLAIM_ONE = compact(f"""
UPDATE messages
SET state = {LEASED}, token = random(), attempts = attempts + 1, lease_until = ?2
WHERE id = ?1 AND state = {READY}
RETURNING {CLAIM_COLUMNS}
""")

# Every later state change is guarded by the token and the expected state, so a
# stale holder changes zero rows instead of the wrong one.
SQL_ACK_DELETE = f"DELETE FROM messages WHERE id = ? AND token = ? AND state = {LEASED}"
# The common ack (no retention) as one autocommit statement: it deletes only while the
# message's queue keeps no depth counter; no row deleted means "stale token, or a
# counted queue", and ack() takes the full path (delete, release, in one transaction).
SQL_ACK_UNCOUNTED = compact(f"""
DELETE FROM messages WHERE id = ?1 AND token = ?2 AND state = {LEASED}
AND EXISTS (SELECT 1 FROM queues WHERE id = messages.qid AND max_depth IS NULL AND NOT count_depth)
""")
# A hand ack's (settle): a job with dependents (wf) is left to the full path, which
# settles them in the same transaction (messages.py, _ack_locked).
SQL_ACK_LEAF = compact(SQL_ACK_UNCOUNTED + " AND wf IS NULL")
# The full path's delete of one message, saying whether it had dependents.
SQL_ACK_DELETE_WF = SQL_ACK_DELETE + " RETURNING wf"
SQL_ACK_RETAIN = compact(f"""
UPDATE messages SET state = {DONE}, token = NULL, lease_until = NULL, finished_at = ?
WHERE id = ? AND token = ? AND state = {LEASED}
""")


@functools.lru_cache(maxsize=64)
def sql_ack_many(n: int, retain: bool, leaf: bool = False) -> str:
    """Ack *n* messages of one claim (one token) in one statement. Parameters: the n
    ids, then the token; with *retain*, finished_at first. 0.95 against 1.3 us per
    message for one statement each (measured, 100 per batch). *leaf* (a hand ack's
    delete): jobs with dependents are not deleted, so the batch falls to the full path."""
    ids = ",".join("?" * n)
    if retain:
        return compact(
            f"UPDATE messages SET state = {DONE}, token = NULL, lease_until = NULL, "
            f"finished_at = ? WHERE id IN ({ids}) AND token = ? AND state = {LEASED}"
        )
    return compact(f"DELETE FROM messages WHERE id IN ({ids}) AND token = ? AND state = {LEASED}"
                   + (" AND wf IS NULL" if leaf else ""))


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
SELECT id, qid, key FROM messages WHERE qid = +:qid AND state >= {DONE} AND state = {DEAD}
ORDER BY id LIMIT +:limit
"""
# Reviving a finished message must not break the dedup index: if an unfinished
# message already holds its key, the revived one gives the key up.
SQL_REVIVE = f"""
UPDATE messages SET state = {READY}, attempts = 0, run_at = :now, finished_at = NULL,
    token = NULL, lease_until = NULL, cancel = 0, key = CASE WHEN key IS NOT NULL AND EXISTS (
        SELECT 1 FROM messages AS m WHERE m.qid = +:qid AND m.key = +:key AND m.state < {DONE}
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
# qid <> 0: not the tombstone (schema.py, _V_IDS), which may hold the id of a message
# that is gone. Every statement that reads messages by id alone says so.
SQL_MESSAGE = f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE id = ? AND qid <> 0"
SQL_PEEK = f"""
SELECT {_MESSAGE_COLUMNS} FROM messages WHERE qid = :qid AND state = :state
ORDER BY priority DESC, rank, run_at, id LIMIT :n
"""
SQL_PEEK_ALL = f"""
SELECT {_MESSAGE_COLUMNS} FROM messages WHERE qid = +:qid ORDER BY id LIMIT +:n
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
  (SELECT count(*) FROM messages WHERE qid = +:qid AND state = {READY}),
  (SELECT min(run_at) FROM messages WHERE qid = +:qid AND state = {READY}),
  (SELECT count(*) FROM messages WHERE qid = +:qid AND state = {DELAYED}),
  (SELECT count(*) FROM messages WHERE qid = +:qid AND state = {LEASED}),
  (SELECT count(*) FROM messages WHERE qid = +:qid AND state >= {DONE} AND state = {DONE}),
  (SELECT count(*) FROM messages WHERE qid = +:qid AND state >= {DONE} AND state = {DEAD}),
  (SELECT count(*) FROM messages WHERE qid = +:qid AND state >= {DONE} AND state = {CANCELLED}),
  depth, max_depth, enqueued, finished, count_depth,
  (SELECT count(*) FROM messages WHERE qid = +:qid AND state = {LEASED} AND {_LEASE_GONE})
FROM queues WHERE id = +:qid
"""
_NEXT_DUE = f"""min(
  coalesce((SELECT min(run_at) FROM messages WHERE qid = +:qid AND state = {DELAYED}), 1e999),
  coalesce((SELECT min(lease_until) FROM messages WHERE qid = +:qid AND state = {LEASED}),
           1e999))"""
SQL_NEXT_DUE = f"SELECT {_NEXT_DUE}"
# A waiting consumer's look without the write lock: anything ready, and the next due time.
SQL_PROBE = compact(f"""
SELECT EXISTS (SELECT 1 FROM messages WHERE qid = +:qid AND state = {READY})
       AND {_NOT_PAUSED.format(q=":qid")}, {_NEXT_DUE}
""")


# --- SQL: task results ---------------------------------------------------------------

_RESULT_COLUMNS = ("id, task, state, value, error, attempts, finished_at, expires_at, "
                   "queue, call, enqueued_at, started_at, duration, worker")
_RESULT_ROW = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
SQL_RESULT_PUT = f"""
INSERT INTO results ({_RESULT_COLUMNS})
VALUES {_RESULT_ROW}
ON CONFLICT (id) DO UPDATE SET task = excluded.task, state = excluded.state,
    value = excluded.value, error = excluded.error, attempts = excluded.attempts,
    finished_at = excluded.finished_at, expires_at = excluded.expires_at,
    queue = excluded.queue, call = excluded.call, enqueued_at = excluded.enqueued_at,
    started_at = excluded.started_at, duration = excluded.duration, worker = excluded.worker
"""
SQL_RESULT_GET = f"SELECT {_RESULT_COLUMNS} FROM results WHERE id = ?"


@functools.cache
def sql_result_put(n: int) -> str:
    """:data:`SQL_RESULT_PUT` for *n* rows in one statement (parameters: the rows'
    columns, one row after the other). Not an executemany: apsw puts an executemany's
    statement back into its cache at every row, one slot further each time, and a
    statement in a reached slot is dropped; the worker's flush (its results rows, up to
    100 by default) emptied the cache's 100 slots, and the next claim and ack prepared
    every statement again (bench_chord.py --instructions: ~4.6k instructions per job of
    a plain flush, ~20k of a chord member's, whose statements are longer). The caller
    keeps *n* to a few sizes (:func:`chunk_sizes`), so that few texts are cached."""
    return SQL_RESULT_PUT.replace(f"VALUES {_RESULT_ROW}", "VALUES " + ", ".join([_RESULT_ROW] * n))


def chunk_sizes(n: int, most: int = 64) -> list[int]:
    """*n* as a sum of powers of two of at most *most* each, largest first (100: 64, 32,
    4): the row counts of the statements that write *n* rows, from a handful of texts."""
    sizes = [most] * (n // most)
    rest = n % most
    bit = most
    while rest:
        if rest >= bit:
            sizes.append(bit)
            rest -= bit
        bit //= 2
    return sizes
SQL_JOB_MESSAGES = f"""
SELECT {_MESSAGE_COLUMNS} FROM messages WHERE id < ? AND state IN ({{marks}})
ORDER BY id DESC LIMIT ?
"""
SQL_ORPHAN_RESULTS = f"""
SELECT {", ".join("r." + c for c in _RESULT_COLUMNS.split(", "))}
FROM results AS r WHERE r.id < ? {{where}}
  AND NOT EXISTS (SELECT 1 FROM messages AS m WHERE m.id = r.id AND m.qid <> 0)
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
SQL_CANCEL_FLAG = "SELECT cancel FROM messages WHERE id = ? AND qid <> 0"

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
    misfire_cap = excluded.misfire_cap, updated_at = excluded.updated_at,
    -- Unchanged timing keeps the planned next fire (decided here, under the row's
    -- write, not by a read before it: right with concurrent writers too).
    next_run_at = CASE WHEN schedules.kind = excluded.kind AND schedules.spec = excluded.spec
                        AND schedules.tz IS excluded.tz
                       THEN schedules.next_run_at ELSE excluded.next_run_at END
"""
SQL_SCHEDULE_GET = f"SELECT {_SCHEDULE_COLUMNS} FROM schedules WHERE name = ?"
SQL_SCHEDULE_ALL = f"SELECT {_SCHEDULE_COLUMNS} FROM schedules ORDER BY name"
SQL_SCHEDULE_DELETE = "DELETE FROM schedules WHERE name = ?"
SQL_SCHEDULE_DUE = f"""
SELECT {_SCHEDULE_COLUMNS} FROM schedules
WHERE enabled = 1 AND next_run_at IS NOT NULL AND next_run_at <= +?
ORDER BY next_run_at LIMIT +?
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
SELECT fire_at, fired_at, job_id FROM schedule_runs WHERE schedule = +?
ORDER BY fire_at DESC LIMIT +?
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
SQL_SUBSCRIPTIONS = f"SELECT {_QUEUE_COLUMNS} FROM queues WHERE topic = +? ORDER BY name"
SQL_TOPICS = "SELECT DISTINCT topic FROM queues WHERE topic IS NOT NULL ORDER BY topic"
SQL_EXPIRED_SUBS = """
SELECT id FROM queues WHERE topic IS NOT NULL AND expires_at IS NOT NULL AND expires_at < ?
"""

# --- SQL: flow control, part 2: rate limits and concurrency caps (issue 19) --------

# A bucket's tokens now: what it held, refilled at its rate since, up to its burst.
_FLOW_TOKENS = "min(f.burst, f.tokens + (+:now - f.refilled_at) * f.rate)"
SQL_QUEUE_LIMITS = """
SELECT paused, limited, rate_limit, rate_burst, tokens, refilled_at FROM queues WHERE id = ?
"""
SQL_QUEUE_TAKE = "UPDATE queues SET tokens = :tokens, refilled_at = :now WHERE id = :qid"
# The ready messages in queue order that no limit holds back (at most :n): no task
# limits, or their flow's cap not reached (its key's leases still running, counted
# through msg_flow_leased: an expired lease holds no slot) and a token in their flow's
# bucket, as the claim's transaction began. A message held back is skipped, not
# claimed, so one capped key never blocks the others behind it; a flow row missing (a
# copy in progress) holds nothing back. Selected with the columns a claim returns
# (as SQL_CLAIM_SELECT), then each one's flow, whether that has a cap and a rate:
# flow.py takes them in order, a token at a time (SQL_FLOW_TAKE), and stops after
# the first capped one, then leases them by id (sql_claim_ids).
SQL_LIMITED_SELECT = f"""
SELECT m.id, :token, m.attempts + 1, m.payload, m.headers, m.priority, m.run_at,
       m.enqueued_at, m.key, m.rank, m.error, m.origin, m.flow,
       f.max_concurrency IS NOT NULL, f.rate IS NOT NULL
FROM messages AS m LEFT JOIN flows AS f ON f.id = m.flow
WHERE m.qid = +:qid AND m.state = {READY}
  AND (f.id IS NULL OR (
    (f.max_concurrency IS NULL OR (
       SELECT count(*) FROM messages AS r
       WHERE r.flow = m.flow AND r.flow_key = m.flow_key AND r.state = {LEASED}
         AND r.lease_until > +:now) < f.max_concurrency)
    AND (f.rate IS NULL OR {_FLOW_TOKENS} >= 1)))
ORDER BY m.priority DESC, m.rank, m.run_at, m.id LIMIT +:n
"""
# A claimed message takes a token from its flow's bucket; no row changed: the bucket
# ran dry within this claim (the message stays ready).
SQL_FLOW_TAKE = """
UPDATE flows SET tokens = min(burst, tokens + (+:now - refilled_at) * rate) - 1,
    refilled_at = :now
WHERE id = +:flow AND min(burst, tokens + (+:now - refilled_at) * rate) >= 1
"""
# Seconds until the first empty bucket of a flow holds a token again (NULL: none empty).
SQL_FLOW_NEXT_TOKEN = f"""
SELECT min((1 - {_FLOW_TOKENS}) / f.rate) FROM flows AS f
WHERE f.rate IS NOT NULL AND {_FLOW_TOKENS} < 1
"""
# A task's limits: the row is made once; its values are updated once per process.
SQL_FLOW_INSERT = """
INSERT INTO flows (name, max_concurrency, rate, burst) VALUES (?, ?, ?, ?)
ON CONFLICT (name) DO NOTHING
"""
SQL_FLOW_UPDATE = """
UPDATE flows SET max_concurrency = :cap, rate = :rate, burst = :burst
WHERE name = :name AND (max_concurrency, rate, burst) IS NOT (:cap, :rate, :burst)
"""
# A job put under its task's limits (in the put's transaction); the dedup key may have
# returned an older message, which keeps the limits it had.
SQL_FLOW_MARK = f"""
UPDATE messages SET flow = (SELECT id FROM flows WHERE name = :name), flow_key = :key
WHERE id = :id AND state < {DONE} AND flow IS NULL
"""
SQL_QUEUE_LIMITED = "UPDATE queues SET limited = 1 WHERE id = ? AND NOT limited"
# Dead-lettering moves a job with its limits: its new queue is limited too.
SQL_TARGET_LIMITED = """
UPDATE queues SET limited = 1 WHERE id = :target AND NOT limited
  AND EXISTS (SELECT 1 FROM messages WHERE id = :id AND flow IS NOT NULL)
"""
# What stats() shows of the limits: leased jobs under a task's limits (the slots in
# use) and ready ones that a task's limits hold back now.
SQL_LIMIT_STATS = f"""
SELECT
  (SELECT count(*) FROM messages WHERE qid = +:qid AND state = {LEASED} AND flow IS NOT NULL),
  (SELECT count(*) FROM messages AS m
   WHERE m.qid = +:qid AND m.state = {READY} AND m.flow IS NOT NULL AND NOT coalesce((
    SELECT (f.max_concurrency IS NULL OR (
              SELECT count(*) FROM messages AS r
              WHERE r.flow = m.flow AND r.flow_key = m.flow_key AND r.state = {LEASED}
                AND r.lease_until > +:now) < f.max_concurrency)
       AND (f.rate IS NULL OR {_FLOW_TOKENS} >= 1)
    FROM flows AS f WHERE f.id = m.flow), 1))
"""
SQL_FLOWS = f"""
SELECT f.name, f.max_concurrency, f.rate, f.burst, {_FLOW_TOKENS.replace("+:now", "+?1")},
  (SELECT count(*) FROM messages AS r WHERE r.flow = f.id AND r.state = {LEASED}
     AND r.lease_until > +?1)
FROM flows AS f ORDER BY f.name
"""
