"""The statements of :mod:`.queues` (queue rows, put, back pressure, administration,
stats) on PostgreSQL, with ``{s}`` for the schema: kept apart from the verbs that run
them, as ``workflow_sql.py`` is. :class:`.queues.Statements` fills in the schema once
per backend and names each ``SQL_X`` as ``x``."""

from __future__ import annotations

from ..records import State
from .depth import COUNTED, COUNTED_CTE, RESERVE_CTES, unfinished_count
from .workflow_settle_sql import SQL_WF_PURGING as SQL_WF_PURGING  # self.qs.wf_purging

READY, DELAYED, LEASED = int(State.READY), int(State.DELAYED), int(State.LEASED)
DONE, DEAD, CANCELLED = int(State.DONE), int(State.DEAD), int(State.CANCELLED)

_QUEUE_COLUMNS = (
    "id, name, max_depth, lease, max_attempts, dead_letter, retention, backoff_base, "
    "backoff_factor, backoff_max, backoff_jitter, topic, pattern, expires_at, count_depth, "
    "paused, rate_limit, rate_burst"
)
_MESSAGE_COLUMNS = (
    "id, qid, state, priority, run_at, payload, headers, key, attempts, enqueued_at, "
    "lease_until, token, error, finished_at, origin, rank, cancel, flow, flow_key"
)
#: The queue order (the msg_ready index's): NULL ranks first, as SQLite sorts them.
QUEUE_ORDER = "priority DESC, rank NULLS FIRST, run_at, id"


def state_is(state: int, alias: str = "") -> str:
    """The state check of a statement that finds its rows by id: ``state + 0 = N``, which
    says ``state = N`` but implies no partial index's predicate. Written ``state = N``,
    it lets the planner read a whole partial index of that state to find the ids (all of
    msg_ready, whose last column is id, or all of msg_leased) instead of the primary key.
    Both look as cheap while the table is small, and a generic plan made then stays:
    issue 17, session 15, where a claim planned at 50 rows read all of msg_ready and
    took 60 us at 3,000 ready rows instead of 28, and more as the queue grows."""
    return f"{alias}state + 0 = {state}"


SQL_QUEUE_BY_NAME = f"SELECT {_QUEUE_COLUMNS} FROM {{s}}.queues WHERE name = %s"
SQL_QUEUE_BY_ID = f"SELECT {_QUEUE_COLUMNS} FROM {{s}}.queues WHERE id = %s"
SQL_QUEUE_INSERT = """
INSERT INTO {s}.queues (name, max_depth, lease, max_attempts, dead_letter, retention,
    backoff_base, backoff_factor, backoff_max, backoff_jitter, topic, pattern,
    expires_at, count_depth, rate_limit, rate_burst, created_at, counted)
VALUES (%(name)s, %(max_depth)s, %(lease)s, %(max_attempts)s, %(dead_letter)s, %(retention)s,
    %(backoff_base)s, %(backoff_factor)s, %(backoff_max)s, %(backoff_jitter)s, %(topic)s,
    %(pattern)s, %(expires_at)s, %(count_depth)s, %(rate_limit)s, %(rate_burst)s, %(now)s,
    %(counted)s)
ON CONFLICT (name) DO NOTHING
RETURNING id
"""
SQL_QUEUE_ID = "SELECT id FROM {s}.queues WHERE name = %s"
SQL_QUEUE_COUNTED = "SELECT counted FROM {s}.queues WHERE name = %s"
# COLLATE "C": byte order, as SQLite sorts, whatever the database's collation.
SQL_QUEUE_NAMES = 'SELECT name FROM {s}.queues ORDER BY name COLLATE "C"'
SQL_QUEUE_TOPIC = "SELECT topic FROM {s}.queues WHERE id = %s"
SQL_QUEUE_LOCK = "SELECT topic FROM {s}.queues WHERE id = %s FOR UPDATE"
SQL_TOPIC_LOCK = "SELECT pg_advisory_xact_lock(hashtext('liteq.topic:' || %s))"
SQL_QUEUE_DELETE = "DELETE FROM {s}.queues WHERE id = %s"
SQL_STRIPES_DELETE = "DELETE FROM {s}.depth_stripes WHERE qid = %s"
SQL_SUBS_BUMP = """
INSERT INTO {s}.meta (key, value) VALUES ('subs_version', 1)
ON CONFLICT (key) DO UPDATE SET value = meta.value + 1
"""
# The per-minute history (issue 21) is added in the same statement.
SQL_TOTALS = """
WITH t AS (SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[]) AS t(id, e, f)),
h AS (
    INSERT INTO {s}.history AS h (qid, minute, task, put, acked)
    SELECT id, %s, '', e, f FROM t ORDER BY id
    ON CONFLICT (minute, qid, task) DO UPDATE
    SET put = h.put + excluded.put, acked = h.acked + excluded.acked
)
UPDATE {s}.queues q SET enqueued = q.enqueued + t.e, finished = q.finished + t.f
FROM t WHERE q.id = t.id
"""

# Ids first (unique, sorted into the caller's order), then the rows with them.
SQL_NEW_IDS = "SELECT nextval('{s}.messages_id_seq') FROM generate_series(1, %s)"
SQL_INSERT_MANY = """
INSERT INTO {s}.messages (id, qid, state, priority, rank, run_at, payload, headers, enqueued_at)
SELECT id, %(qid)s, state, priority, rank, run_at, payload, headers, %(now)s
FROM unnest(%(ids)b::bigint[], %(states)b::int[], %(priorities)b::bigint[], %(ranks)b::bytea[],
            %(run_ats)b::float8[], %(payloads)b::bytea[], %(headers)b::bytea[])
     AS u(id, state, priority, rank, run_at, payload, headers)
"""
SQL_INSERT_KEYED = """
INSERT INTO {s}.messages (id, qid, state, priority, rank, run_at, payload, headers, key, enqueued_at)
VALUES (%(id)s, %(qid)s, %(state)s, %(priority)s, %(rank)s, %(run_at)s, %(payload)s,
        %(headers)s, %(key)s, %(now)s)
ON CONFLICT (qid, key) WHERE key IS NOT NULL AND state < 3 DO NOTHING
RETURNING id
"""
SQL_FIND_KEY = "SELECT id FROM {s}.messages WHERE qid = %s AND key = %s AND state < 3"
# Room for a put: reserved on a stripe by ``r``, or none needed (an uncounted queue:
# the flag is read by this statement, in its CTE ``cq``, after its lock on messages;
# depth.py).
_ROOM = f"(EXISTS (SELECT 1 FROM r) OR NOT {COUNTED})"
# The common put in one statement: count it on a stripe with room nobody holds (when
# the queue is counted), and insert it only then. No row: full, every stripe busy, no
# stripes or no queue; put() takes the full path (and says which).
SQL_PUT_READY = f"""
WITH {COUNTED_CTE}, r AS (
  UPDATE {{s}}.depth_stripes d SET used = d.used + 1
  WHERE d.qid = %(qid)s AND {COUNTED} AND d.stripe = (
    SELECT stripe FROM {{s}}.depth_stripes
    WHERE qid = %(qid)s AND (cap IS NULL OR used + 1 <= cap)
    ORDER BY (stripe + pg_backend_pid()) %% 16 LIMIT 1 FOR UPDATE SKIP LOCKED)
  RETURNING 1
)
INSERT INTO {{s}}.messages (qid, state, priority, run_at, payload, enqueued_at)
SELECT %(qid)s, {READY}, %(priority)s, %(now)s, %(payload)s, %(now)s
WHERE {_ROOM}
RETURNING id
"""
# The same with the NOTIFY folded in, for the puts the throttle says notify: still one
# statement, one round trip (as BEGIN, put, pg_notify, COMMIT it was four). pg_notify
# runs once per inserted row: not at all when nothing went in (then the full path).
SQL_PUT_READY_NOTIFY = f"""
WITH {COUNTED_CTE}, r AS (
  UPDATE {{s}}.depth_stripes d SET used = d.used + 1
  WHERE d.qid = %(qid)s AND {COUNTED} AND d.stripe = (
    SELECT stripe FROM {{s}}.depth_stripes
    WHERE qid = %(qid)s AND (cap IS NULL OR used + 1 <= cap)
    ORDER BY (stripe + pg_backend_pid()) %% 16 LIMIT 1 FOR UPDATE SKIP LOCKED)
  RETURNING 1
), i AS (
  INSERT INTO {{s}}.messages (qid, state, priority, run_at, payload, enqueued_at)
  SELECT %(qid)s, {READY}, %(priority)s, %(now)s, %(payload)s, %(now)s
  WHERE {_ROOM}
  RETURNING id
)
SELECT id, pg_notify(%(channel)s, %(qid)s::text) FROM i
"""
# The common put to a queue last seen uncounted (no max_depth, no count_depth): the
# insert alone, guarded by the flag, read in the statement as SQL_PUT_READY reads it (a
# switch to counted holds a SHARE lock on messages: see depth.py). No row: the queue
# is counted now (or gone); put_ready() sends SQL_PUT_READY. Without SQL_PUT_READY's
# stripe update, which an uncounted queue never runs but every execution still sets up,
# the server's CPU per put fell 52-56 -> 34-42 us (issue 17, session 11).
SQL_PUT_PLAIN = f"""
INSERT INTO {{s}}.messages (qid, state, priority, run_at, payload, enqueued_at)
SELECT %(qid)s, {READY}, %(priority)s, %(now)s, %(payload)s, %(now)s
FROM {{s}}.queues WHERE id = %(qid)s AND NOT counted
RETURNING id
"""
SQL_PUT_PLAIN_NOTIFY = f"""
WITH i AS ({SQL_PUT_PLAIN})
SELECT id, pg_notify(%(channel)s, %(qid)s::text) FROM i
"""

# A batch without keys in one statement: counted on one stripe with room for all of
# them (a counted queue), inserted only then, in the caller's order (ORDER BY ord); the
# ids are the column's default and come back in no order: a statement calls nextval in
# the order of its rows, so its ids sorted are its payloads' order, and put() sorts
# them. No row: the full path of put() (full, busy stripes, no stripes or no queue).
# (Until session 11 the ids were drawn first, numbered by a window and joined back by
# position: the common batch's statement took 12.6 us per message, 9.2 now, a scratch
# loop of 100-message batches.)
def _insert_many(rows: str) -> str:
    """The batch's INSERT of *rows* (a SELECT of the columns after id, with ``ord``)."""
    return f"""INSERT INTO {{s}}.messages (qid, state, priority, rank, run_at, payload, headers,
    enqueued_at)
  {rows}
  WHERE {_ROOM}
  ORDER BY ord
  RETURNING id"""


def _put_many(rows: str) -> tuple[str, str]:
    """The batch put of *rows*, without and with the NOTIFY that wakes consumers (when
    the throttle wants one), sent by the smallest id's row only: one round trip instead
    of BEGIN, the put, the NOTIFY and COMMIT (every batch of a loop slower than the
    throttle's window notifies)."""
    insert = _insert_many(rows)
    return (f"""
WITH {RESERVE_CTES}
{insert}
""", f"""
WITH {RESERVE_CTES},
i AS (
  {insert}
)
SELECT id, CASE WHEN id = (SELECT min(id) FROM i) THEN pg_notify(%(channel)s, %(qid)s::text) END
FROM i
""")


SQL_PUT_MANY, SQL_PUT_MANY_NOTIFY = _put_many(
    f"""SELECT %(qid)s, CASE WHEN u.run_at > %(now)s THEN {DELAYED} ELSE {READY} END,
         u.priority, u.rank, u.run_at, u.payload, u.headers, %(now)s
  FROM unnest(%(priorities)b::bigint[], %(ranks)b::bytea[], %(run_ats)b::float8[],
              %(payloads)b::bytea[], %(headers)b::bytea[])
       WITH ORDINALITY AS u(priority, rank, run_at, payload, headers, ord)""")
# The common batch (every message due now, one priority, no rank, headers or keys):
# one array, the payloads, instead of five (each element of each array is written by
# the client and read by the server).
SQL_PUT_MANY_PLAIN, SQL_PUT_MANY_PLAIN_NOTIFY = _put_many(
    f"""SELECT %(qid)s, {READY}, %(priority)s, NULL, %(run_at)s, u.payload, NULL, %(now)s
  FROM unnest(%(payloads)b::bytea[]) WITH ORDINALITY AS u(payload, ord)""")

# The stripes' sum, or the messages counted (an uncounted queue, or one whose stripes
# are not made yet).
SQL_ROOM = f"""
SELECT coalesce(CASE WHEN q.counted THEN
                  (SELECT sum(used) FROM {{s}}.depth_stripes WHERE qid = q.id) END,
                {unfinished_count("q.id")}),
       q.max_depth
FROM {{s}}.queues q WHERE q.id = %s
"""
SQL_DEAD_IDS = f"""
SELECT id, qid, key FROM {{s}}.messages WHERE qid = %s AND state = {DEAD}
ORDER BY id LIMIT %s FOR UPDATE
"""
SQL_FINISHED_ROW = f"""
SELECT id, qid, key FROM {{s}}.messages WHERE id = %s AND state IN ({DEAD}, {CANCELLED}) FOR UPDATE
"""
SQL_REVIVE = f"""
UPDATE {{s}}.messages SET state = {READY}, attempts = 0, run_at = %(now)s, finished_at = NULL,
    token = NULL, lease_until = NULL, cancel = false, key = CASE WHEN %(drop_key)s THEN NULL ELSE key END
WHERE id = %(id)s AND state IN ({DEAD}, {CANCELLED})
"""
SQL_CANCEL = f"""
UPDATE {{s}}.messages SET state = {CANCELLED}, finished_at = %s
WHERE id = %s AND state IN ({READY}, {DELAYED})
RETURNING qid
"""
SQL_PURGE_STATE = "DELETE FROM {s}.messages WHERE qid = %s AND state = %s"
SQL_PURGE_ALL = f"""
WITH d AS (DELETE FROM {{s}}.messages WHERE qid = %s RETURNING state)
SELECT count(*), count(*) FILTER (WHERE state < {DONE}) FROM d
"""
SQL_PRUNE = f"""
DELETE FROM {{s}}.messages WHERE qid = %s AND state IN ({DONE}, {CANCELLED}) AND finished_at < %s
"""
SQL_MESSAGE = f"SELECT {_MESSAGE_COLUMNS} FROM {{s}}.messages WHERE id = %s"
SQL_PEEK = f"""
SELECT {_MESSAGE_COLUMNS} FROM {{s}}.messages WHERE qid = %s AND state = %s
ORDER BY {QUEUE_ORDER} LIMIT %s
"""
SQL_PEEK_ALL = f"SELECT {_MESSAGE_COLUMNS} FROM {{s}}.messages WHERE qid = %s ORDER BY id LIMIT %s"
# Each count is one range read of a partial index. Depth is the stripes' sum (NULL when
# the queue is uncounted or has none yet: then the counts).
_HORIZON = "%(now)s + %(max_extend)s + q.lease"
SQL_STATS = f"""
SELECT
  (SELECT count(*) FROM {{s}}.messages WHERE qid = q.id AND state = {READY}),
  (SELECT min(run_at) FROM {{s}}.messages WHERE qid = q.id AND state = {READY}),
  (SELECT count(*) FROM {{s}}.messages WHERE qid = q.id AND state = {DELAYED}),
  (SELECT count(*) FROM {{s}}.messages WHERE qid = q.id AND state = {LEASED}),
  (SELECT count(*) FROM {{s}}.messages WHERE qid = q.id AND state >= {DONE} AND state = {DONE}),
  (SELECT count(*) FROM {{s}}.messages WHERE qid = q.id AND state >= {DONE} AND state = {DEAD}),
  (SELECT count(*) FROM {{s}}.messages WHERE qid = q.id AND state >= {DONE} AND state = {CANCELLED}),
  CASE WHEN q.counted THEN (SELECT sum(used) FROM {{s}}.depth_stripes WHERE qid = q.id) END,
  q.max_depth, q.enqueued, q.finished,
  (SELECT count(*) FROM {{s}}.messages WHERE qid = q.id AND state = {LEASED}
     AND (lease_until <= %(now)s OR lease_until > {_HORIZON}))
FROM {{s}}.queues q WHERE q.id = %(qid)s
"""
