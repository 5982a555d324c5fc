"""Workflows on PostgreSQL (issue 20): the tables, trigger functions and triggers of the
schema's workflow migration. The same design as SQLite's (``../sqlite/workflow_sql.py``:
a waiting job is a delayed message with ``run_at`` at ``WAITING_AT``; triggers on
``messages`` settle a parent's edges in the transaction that ends it, and a trigger on
``wf_edges`` decrements the child's count of unmet parents, cancels or releases it).
Unlike SQLite's, the ``wf_edges`` trigger is per statement, over its transition tables:
a worker's batch ack of many chord members settles all their edges in one statement and
updates each callback's counter once (bench/results/chord.md). Since :data:`WFACK_SCHEMA`
a success is counted by the statement that writes it (``wf_done``, a function: one round
trip and a plan made once per session), and ``wf_settle`` handles the other endings.

As there, a parent whose row is deleted (the worker's ack, a purge) settles its edges
explicitly (``wf_done``, ``wf_purging``), in the same transaction.

Since ``_V_WFONE`` there is no trigger on ``wf_edges``: its writers hand what they changed
to ``wf_apply`` (``workflow_settle_sql.py``).

What PostgreSQL adds: concurrent endings of a chord's members serialize on the child's
``wf_jobs`` row (the counter's ``UPDATE`` waits for the row lock and decrements the
newest count; the release, a later statement of the same trigger, reads it while the lock
is held), so exactly one of them sees the count reach 0 and releases the callback: two transactions cannot both miss the last parent, as a ``NOT EXISTS`` check
under READ COMMITTED could. A released child is announced on the schema's wake-up
channel (``liteq_<schema>``; a schema name too long for it is left to the poll).
Times are the server's clock (``clock_timestamp()``), as the engine's own.
"""

from __future__ import annotations

from ..workflow import WAITING_AT

__all__ = ["WORKFLOW_SCHEMA", "WFACK_SCHEMA", "WFVAL_SCHEMA", "SQL_WF_DONE",
           "SQL_WF_COUNT", "WAITING"]

# A job that waits for its parents: DELAYED until WAITING_AT. Its state written
# ``state + 0`` (queues_sql.state_is says why): with ``state = 1``, the statements that
# release a child by id read msg_delayed from WAITING_AT on, every waiting job of every
# queue, instead of the primary key (seen with auto_explain, issue 17, session 15).
WAITING = f"m.state + 0 = 1 AND m.run_at >= {WAITING_AT!r}"

# Children whose counter a statement's CTE ``counted`` (id, unmet, delay) brought to 0,
# released if they still wait (a child cancelled meanwhile stays cancelled): the CTE
# ``released``, with each one's queue, to notify (the ack's wf_done, wf_link's count).
_RELEASED = f"""released AS (
    UPDATE {{s}}.messages m SET state = CASE WHEN c.delay > 0 THEN 1 ELSE 0 END,
        run_at = extract(epoch FROM clock_timestamp()) + c.delay
    FROM counted c WHERE m.id = c.id AND c.unmet <= 0 AND {WAITING}
    RETURNING m.qid
)"""

WORKFLOW_SCHEMA = f"""
ALTER TABLE {{s}}.messages ADD COLUMN wf boolean;    -- true: the job has dependents

CREATE TABLE {{s}}.wf_jobs (
    id            bigint PRIMARY KEY,                  -- the job's message id
    workflow      bigint NOT NULL,                     -- the id of the workflow's first job
    unmet         bigint NOT NULL DEFAULT 0,           -- parents that have not ended
    delay         double precision NOT NULL DEFAULT 0, -- seconds to wait once released
    cancelled_by  bigint                               -- the parent whose ending cancelled it
);
CREATE INDEX wf_jobs_workflow ON {{s}}.wf_jobs (workflow);

CREATE TABLE {{s}}.wf_edges (
    parent        bigint NOT NULL,
    child         bigint NOT NULL,
    pos           bigint NOT NULL,
    allow_failure boolean NOT NULL DEFAULT false,
    outcome       text,                                -- NULL, done, failed, cancelled, purged
    value         bytea,
    error         text,
    PRIMARY KEY (parent, child)
);
CREATE INDEX wf_edges_child ON {{s}}.wf_edges (child, pos);

CREATE FUNCTION {{s}}.wf_end() RETURNS trigger LANGUAGE plpgsql AS $wf$
BEGIN
    IF NEW.state < 3 AND NEW.qid = OLD.qid THEN
        UPDATE {{s}}.wf_edges SET outcome = NULL, error = NULL
        WHERE parent = NEW.id AND outcome IN ('failed', 'cancelled', 'purged');
    ELSE
        UPDATE {{s}}.wf_edges SET error = NEW.error, outcome = CASE
            WHEN NEW.state = 3 THEN 'done' WHEN NEW.state = 5 THEN 'cancelled' ELSE 'failed' END
        WHERE parent = NEW.id AND outcome IS NULL;
    END IF;
    RETURN NULL;
END
$wf$;

CREATE TRIGGER wf_end AFTER UPDATE OF finished_at ON {{s}}.messages FOR EACH ROW
    WHEN (OLD.wf AND OLD.state < 3 AND (NEW.state >= 3 OR NEW.qid <> OLD.qid))
    EXECUTE FUNCTION {{s}}.wf_end();
CREATE TRIGGER wf_rearm AFTER UPDATE OF finished_at ON {{s}}.messages FOR EACH ROW
    WHEN (OLD.wf AND OLD.state IN (4, 5) AND NEW.state < 3 AND NEW.qid = OLD.qid)
    EXECUTE FUNCTION {{s}}.wf_end();

-- Every statement that settles or unsettles edges (a parent's ending, a worker's batch
-- ack of many chord members, a purge) is handled set-wise, once per statement: one
-- counter update per child however many of its parents the statement settled, then the
-- children to cancel, release or re-arm in one statement each. What changed is kept in
-- local arrays, so a nested call (a cancel cascading down) cannot disturb it.
CREATE FUNCTION {{s}}.wf_settle() RETURNS trigger LANGUAGE plpgsql AS $wf$
DECLARE
    now_ double precision := extract(epoch FROM clock_timestamp());
    channel text := 'liteq_' || TG_TABLE_SCHEMA;
    children bigint[];
    settled bigint[];
    unsettled bigint[];
    blockers bigint[];
    outcomes text[];
    qids bigint[];
BEGIN
    SELECT array_agg(d.child ORDER BY d.child), array_agg(d.settled ORDER BY d.child),
           array_agg(d.unsettled ORDER BY d.child), array_agg(d.blocker ORDER BY d.child),
           array_agg(d.outcome ORDER BY d.child)
    INTO children, settled, unsettled, blockers, outcomes
    FROM (
        SELECT n.child,
            count(*) FILTER (WHERE o.outcome IS NULL) AS settled,
            count(*) FILTER (WHERE n.outcome IS NULL) AS unsettled,
            (array_agg(n.parent ORDER BY n.parent) FILTER (WHERE o.outcome IS NULL
                AND n.outcome <> 'done' AND NOT n.allow_failure))[1] AS blocker,
            (array_agg(n.outcome ORDER BY n.parent) FILTER (WHERE o.outcome IS NULL
                AND n.outcome <> 'done' AND NOT n.allow_failure))[1] AS outcome
        FROM wf_new n JOIN wf_old o ON o.parent = n.parent AND o.child = n.child
        WHERE (o.outcome IS NULL) <> (n.outcome IS NULL)
        GROUP BY n.child
    ) d;
    IF children IS NULL THEN
        RETURN NULL;  -- only values changed (a retained ack's result added)
    END IF;
    -- Locked in child id order, the lock order of every writer (the worker's batch ack
    -- has locked them already): a join's order is the planner's choice.
    PERFORM 1 FROM {{s}}.wf_jobs WHERE id = ANY(children) ORDER BY id FOR UPDATE;
    UPDATE {{s}}.wf_jobs w SET unmet = w.unmet - d.settled + d.unsettled,
        cancelled_by = coalesce(w.cancelled_by, d.blocker)
    FROM unnest(children, settled, unsettled, blockers) AS d(child, settled, unsettled, blocker)
    WHERE w.id = d.child;

    -- A parent that did not succeed, on a step that does not allow it: the child is
    -- cancelled (and its own dependents with it, through wf_end).
    IF EXISTS (SELECT 1 FROM unnest(blockers) b WHERE b IS NOT NULL) THEN
        WITH cancelled AS (
            UPDATE {{s}}.messages m SET state = 5, finished_at = now_,
                error = 'parent job ' || c.blocker || CASE c.outcome
                    WHEN 'failed' THEN ' failed' WHEN 'cancelled' THEN ' was cancelled'
                    ELSE ' was purged' END
            FROM unnest(children, blockers, outcomes) AS c(child, blocker, outcome)
            WHERE c.blocker IS NOT NULL AND m.id = c.child AND {WAITING}
            RETURNING m.qid
        ), per_queue AS (SELECT qid, count(*) AS n FROM cancelled GROUP BY qid)
        UPDATE {{s}}.depth_stripes d SET used = d.used - p.n FROM per_queue p
        WHERE d.qid = p.qid AND d.stripe =
            (SELECT max(stripe) FROM {{s}}.depth_stripes WHERE qid = p.qid);  -- depth.py lock order
    END IF;

    -- The last parent ended and none blocks: released, announced once per queue.
    WITH released AS (
        UPDATE {{s}}.messages m SET state = CASE WHEN w.delay > 0 THEN 1 ELSE 0 END,
            run_at = now_ + w.delay
        FROM unnest(children, unsettled, blockers) AS c(child, unsettled, blocker)
        JOIN {{s}}.wf_jobs w ON w.id = c.child
        WHERE c.blocker IS NULL AND c.unsettled = 0 AND w.unmet <= 0 AND m.id = c.child
          AND {WAITING}
        RETURNING m.qid
    )
    SELECT array_agg(DISTINCT qid) INTO qids FROM released;
    IF qids IS NOT NULL AND length(channel) <= 63 THEN
        PERFORM pg_notify(channel, q::text) FROM unnest(qids) AS q;
    END IF;

    -- A parent redriven: a child it had cancelled, with no other blocking parent, waits
    -- for it again.
    IF EXISTS (SELECT 1 FROM unnest(unsettled) u WHERE u > 0) THEN
        SELECT array_agg(c.child) INTO children
        FROM unnest(children, unsettled) AS c(child, unsettled)
        WHERE c.unsettled > 0 AND NOT EXISTS (
            SELECT 1 FROM {{s}}.wf_edges e WHERE e.child = c.child
            AND e.outcome IS NOT NULL AND e.outcome <> 'done' AND NOT e.allow_failure);
        IF children IS NOT NULL THEN
            UPDATE {{s}}.wf_jobs SET cancelled_by = NULL
            WHERE id = ANY(children) AND cancelled_by IS NOT NULL;
            WITH rearmed AS (
                UPDATE {{s}}.messages m SET state = 1, run_at = {WAITING_AT!r},
                    finished_at = NULL, error = NULL
                WHERE m.id = ANY(children) AND m.state = 5 AND m.error LIKE 'parent job %'
                RETURNING m.qid
            ), per_queue AS (SELECT qid, count(*) AS n FROM rearmed GROUP BY qid)
            UPDATE {{s}}.depth_stripes d SET used = d.used + p.n FROM per_queue p
            WHERE d.qid = p.qid AND d.stripe =
                (SELECT max(stripe) FROM {{s}}.depth_stripes WHERE qid = p.qid);
        END IF;
    END IF;
    RETURN NULL;
END
$wf$;

CREATE TRIGGER wf_settle AFTER UPDATE ON {{s}}.wf_edges
    REFERENCING OLD TABLE AS wf_old NEW TABLE AS wf_new
    FOR EACH STATEMENT EXECUTE FUNCTION {{s}}.wf_settle();
"""

# The member's ack (issue 20's 1.3x). The worker's batch ack fired ``wf_settle`` with
# every member's edge in its transition tables, and the function aggregated, locked,
# counted and released in six statements of its own: 3-6x a plain ack in the server's
# CPU (bench_chord.py --mode ack). Now a parent's *success* is counted by its writer,
# set-wise and without plpgsql: the worker's ack (:data:`SQL_WF_DONE`, one statement), a
# retained ack (``wf_end``, below) and ``wf_link`` for a parent that had already
# succeeded (:data:`SQL_WF_COUNT`); ``wf_settle`` returns at once for a statement that
# only settles successes (the transition tables are still filled: PostgreSQL allows them
# only on triggers without a column list). Functions replaced in place: the counters
# mean what they meant, a schema migrated with workflows half done goes on.
WFACK_SCHEMA = f"""
CREATE OR REPLACE FUNCTION {{s}}.wf_end() RETURNS trigger LANGUAGE plpgsql AS $wf$
DECLARE
    channel text := 'liteq_' || TG_TABLE_SCHEMA;
    qids bigint[];
BEGIN
    IF NEW.state < 3 AND NEW.qid = OLD.qid THEN
        UPDATE {{s}}.wf_edges SET outcome = NULL, error = NULL
        WHERE parent = NEW.id AND outcome IN ('failed', 'cancelled', 'purged');
    ELSIF NEW.state = 3 THEN
        -- A retained ack: one parent fewer for each child, counted here; the children's
        -- counters locked in id order first (the lock order of every writer).
        PERFORM 1 FROM {{s}}.wf_jobs WHERE id = ANY(ARRAY(
            SELECT child FROM {{s}}.wf_edges WHERE parent = NEW.id AND outcome IS NULL))
        ORDER BY id FOR UPDATE;
        WITH settled AS (
            UPDATE {{s}}.wf_edges SET error = NEW.error, outcome = 'done'
            WHERE parent = NEW.id AND outcome IS NULL RETURNING child
        ), counted AS (
            UPDATE {{s}}.wf_jobs w SET unmet = w.unmet - 1 FROM settled s WHERE w.id = s.child
            RETURNING w.id, w.unmet, w.delay
        ), released AS (
            UPDATE {{s}}.messages m SET state = CASE WHEN c.delay > 0 THEN 1 ELSE 0 END,
                run_at = extract(epoch FROM clock_timestamp()) + c.delay
            FROM counted c WHERE m.id = c.id AND c.unmet <= 0 AND {WAITING}
            RETURNING m.qid
        )
        SELECT array_agg(DISTINCT qid) INTO qids FROM released;
        IF qids IS NOT NULL AND length(channel) <= 63 THEN
            PERFORM pg_notify(channel, q::text) FROM unnest(qids) AS q;
        END IF;
    ELSE
        UPDATE {{s}}.wf_edges SET error = NEW.error,
            outcome = CASE WHEN NEW.state = 5 THEN 'cancelled' ELSE 'failed' END
        WHERE parent = NEW.id AND outcome IS NULL;
    END IF;
    RETURN NULL;
END
$wf$;

-- The worker's ack of parents that succeeded (``wf_done``), in one statement: their
-- edges settle with their results, each child's counter goes down by the number of its
-- parents settled here (``old``, the statement's snapshot, tells the edges a retained
-- ack had settled already), a child whose count reaches 0 is released, its queue
-- announced. The children's counters are locked in id order first, as a one-time filter:
-- two workers acking members of two chords in opposite orders would otherwise take the
-- two callbacks' rows in opposite orders (a deadlock; its victim's acks would roll back).
-- A function with a generic plan: as a statement with array parameters PostgreSQL
-- planned it again at every bind (0.46 ms, three times its execution; server log).
CREATE FUNCTION {{s}}.wf_done(parents bigint[], vals bytea[], channel text) RETURNS void
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan SET enable_seqscan = off AS $wf$
DECLARE
    announced bigint;
BEGIN
    WITH v AS (
        SELECT * FROM unnest(parents, vals) AS v(parent, value)
    ), old AS MATERIALIZED (
        SELECT e.parent, e.child, e.outcome IS NULL AS fresh
        FROM {{s}}.wf_edges e WHERE e.parent = ANY(parents)
    ), locked AS MATERIALIZED (
        SELECT id FROM {{s}}.wf_jobs WHERE id = ANY(ARRAY(SELECT child FROM old WHERE fresh))
        ORDER BY id FOR UPDATE
    ), settled AS (
        UPDATE {{s}}.wf_edges e SET value = v.value, outcome = 'done' FROM v
        WHERE e.parent = v.parent AND coalesce(e.outcome, 'done') = 'done'
          AND (SELECT count(*) FROM locked) >= 0
        RETURNING e.parent, e.child
    ), counted AS (
        UPDATE {{s}}.wf_jobs w SET unmet = w.unmet - c.n
        FROM (SELECT s.child, count(*) AS n FROM settled s
              JOIN old o ON o.parent = s.parent AND o.child = s.child AND o.fresh
              GROUP BY s.child) AS c
        WHERE w.id = c.child
        RETURNING w.id, w.unmet, w.delay
    ), {_RELEASED}
    SELECT count(pg_notify(channel, r.qid::text)) INTO announced
    FROM (SELECT DISTINCT qid FROM released) AS r WHERE channel IS NOT NULL;
END
$wf$;

-- Which of these jobs have dependents, and their children (a function for the same
-- reason: 0.18 ms of planning at every worker's ack, plain ones included).
CREATE FUNCTION {{s}}.wf_among(ids bigint[]) RETURNS TABLE (parent bigint, child bigint)
LANGUAGE plpgsql STABLE SET plan_cache_mode = force_generic_plan SET enable_seqscan = off AS $wf$
BEGIN
    RETURN QUERY SELECT e.parent, e.child FROM {{s}}.wf_edges e WHERE e.parent = ANY(ids);
END
$wf$;
""" + WORKFLOW_SCHEMA[WORKFLOW_SCHEMA.index("CREATE FUNCTION {s}.wf_settle()"):
                      WORKFLOW_SCHEMA.index("CREATE TRIGGER wf_settle")].replace(
    "CREATE FUNCTION", "CREATE OR REPLACE FUNCTION").replace(
    """BEGIN
    SELECT array_agg(d.child ORDER BY d.child)""", """BEGIN
    IF NOT EXISTS (SELECT 1 FROM wf_new WHERE outcome IS DISTINCT FROM 'done') THEN
        RETURN NULL;  -- successes only (or their values): counted by their writers
    END IF;
    SELECT array_agg(d.child ORDER BY d.child)""").replace(
    """        WHERE (o.outcome IS NULL) <> (n.outcome IS NULL)
        GROUP BY n.child""", """        WHERE (o.outcome IS NULL) <> (n.outcome IS NULL)
          AND n.outcome IS DISTINCT FROM 'done'
        GROUP BY n.child""")

# The member's ack, one by one (issue 20's 1.3x): ``wf_done`` of one parent, the worker
# acking one job per transaction, ran the statement above, whose plan of ~20 nodes the
# executor set up and tore down at every call: ~450k instructions of the server per ack
# (callgrind on the backend), where a plain ack's whole transaction takes ~650k. One
# parent now takes small statements: its edges settled, returning their children (an
# ack's own edges: no other ack writes them), the children's counters locked in id order
# when several, and per child a counter update and, at 0, the release. Several parents
# (the worker's flush) likewise, set-wise: the edges settled by one statement that
# returns them (no snapshot of them read first, no join back to it), the counters locked
# and counted from what it returned. Replaced in place: counters mean what they meant.
# And room on wf_edges' pages (new ones) for the settled version of each edge beside the
# old (a HOT update: no new index entries): a chord's edges are inserted together, pages
# full, and each member's settling moved its edge (server instructions per member ack in
# the worker's flush -8k of ~185k, bench/chord_server.py).
WFVAL_SCHEMA = f"""
ALTER TABLE {{s}}.wf_edges SET (fillfactor = 70);

CREATE OR REPLACE FUNCTION {{s}}.wf_done(parents bigint[], vals bytea[], channel text)
RETURNS void
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan SET enable_seqscan = off AS $wf$
DECLARE
    announced bigint;
    kids bigint[];
    counts bigint[];
    fresh bigint[];
    kid bigint;
    left_ bigint;
    delay_ double precision;
    qid_ bigint;
BEGIN
    IF cardinality(parents) = 1 THEN
        WITH settled AS (
            UPDATE {{s}}.wf_edges e SET value = vals[1], outcome = 'done'
            WHERE e.parent = parents[1] AND e.outcome IS NULL RETURNING e.child
        )
        SELECT array_agg(child ORDER BY child) INTO kids FROM settled;
        IF kids IS NULL THEN
            -- None left to settle: a retained ack settled them (wf_end): its value only.
            UPDATE {{s}}.wf_edges SET value = vals[1]
            WHERE parent = parents[1] AND outcome = 'done';
            RETURN;
        END IF;
        IF cardinality(kids) > 1 THEN  -- the lock order of every writer
            PERFORM 1 FROM {{s}}.wf_jobs WHERE id = ANY(kids) ORDER BY id FOR UPDATE;
        END IF;
        FOREACH kid IN ARRAY kids LOOP
            UPDATE {{s}}.wf_jobs w SET unmet = w.unmet - 1 WHERE w.id = kid
            RETURNING w.unmet, w.delay INTO left_, delay_;
            IF left_ <= 0 THEN  -- the last parent: released if it still waits
                UPDATE {{s}}.messages m SET state = CASE WHEN delay_ > 0 THEN 1 ELSE 0 END,
                    run_at = extract(epoch FROM clock_timestamp()) + delay_
                WHERE m.id = kid AND {WAITING}
                RETURNING m.qid INTO qid_;
                IF qid_ IS NOT NULL AND channel IS NOT NULL THEN
                    PERFORM pg_notify(channel, qid_::text);
                END IF;
            END IF;
        END LOOP;
        RETURN;
    END IF;
    -- Several parents (the worker's flush): their edges settled in one statement, which
    -- returns them; the count per child taken from what it returned.
    WITH settled AS (
        UPDATE {{s}}.wf_edges e SET value = v.value, outcome = 'done'
        FROM unnest(parents, vals) AS v(parent, value)
        WHERE e.parent = v.parent AND e.outcome IS NULL
        RETURNING e.parent, e.child
    ), per_child AS (
        SELECT child, count(*) AS n FROM settled GROUP BY child
    )
    SELECT array_agg(child ORDER BY child), array_agg(n ORDER BY child),
        (SELECT array_agg(DISTINCT parent) FROM settled)
    INTO kids, counts, fresh FROM per_child;
    IF coalesce(cardinality(fresh), 0) < cardinality(parents) THEN
        -- Parents with none left to settle: retained acks (wf_end): their values only.
        UPDATE {{s}}.wf_edges e SET value = v.value
        FROM unnest(parents, vals) AS v(parent, value)
        WHERE e.parent = v.parent AND e.outcome = 'done'
          AND NOT (e.parent = ANY(coalesce(fresh, '{{}}')));
    END IF;
    IF kids IS NULL THEN
        RETURN;
    END IF;
    PERFORM 1 FROM {{s}}.wf_jobs WHERE id = ANY(kids) ORDER BY id FOR UPDATE;
    WITH counted AS (
        UPDATE {{s}}.wf_jobs w SET unmet = w.unmet - c.n
        FROM unnest(kids, counts) AS c(child, n) WHERE w.id = c.child
        RETURNING w.id, w.unmet, w.delay
    ), {_RELEASED}
    SELECT count(pg_notify(channel, r.qid::text)) INTO announced
    FROM (SELECT DISTINCT qid FROM released) AS r WHERE channel IS NOT NULL;
END
$wf$;
"""

# The worker's ack of parents that succeeded (the function above: one round trip).
SQL_WF_DONE = "SELECT {s}.wf_done(%(parents)b::bigint[], %(values)b::bytea[], %(channel)s)"

# Children whose parents ``wf_link`` found succeeded already: counted down by the edges
# it settled (a new child: nobody else sees its counter yet), released at 0.
SQL_WF_COUNT = f"""
WITH counted AS (
    UPDATE {{s}}.wf_jobs w SET unmet = w.unmet - c.n
    FROM unnest(%(children)s::bigint[], %(counts)s::bigint[]) AS c(child, n)
    WHERE w.id = c.child
    RETURNING w.id, w.unmet, w.delay
), {_RELEASED}
SELECT count(pg_notify(%(channel)s, r.qid::text))
FROM (SELECT DISTINCT qid FROM released) AS r WHERE %(channel)s::text IS NOT NULL
"""
