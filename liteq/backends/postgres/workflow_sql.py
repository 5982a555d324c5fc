"""Workflows on PostgreSQL (issue 20): the tables, trigger functions and triggers of the
schema's workflow migration. The same design as SQLite's (``../sqlite/workflow_sql.py``:
a waiting job is a delayed message with ``run_at`` at ``WAITING_AT``; triggers on
``messages`` settle a parent's edges in the transaction that ends it, and a trigger on
``wf_edges`` decrements the child's count of unmet parents, cancels or releases it).
Unlike SQLite's, the ``wf_edges`` trigger is per statement, over its transition tables:
a worker's batch ack of many chord members settles all their edges in one statement and
updates each callback's counter once (bench/results/chord.md).

As there, a parent whose row is deleted (the worker's ack, a purge) settles its edges
explicitly (``wf_done``, :data:`SQL_WF_PURGING`), in the same transaction.

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

__all__ = ["WORKFLOW_SCHEMA", "SQL_WF_PURGING"]

_WAITING = f"m.state = 1 AND m.run_at >= {WAITING_AT!r}"

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
            WHERE c.blocker IS NOT NULL AND m.id = c.child AND {_WAITING}
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
          AND {_WAITING}
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

# Before a purge deletes unfinished messages of a queue (all, or those in one state).
SQL_WF_PURGING = """
UPDATE {s}.wf_edges SET outcome = 'purged' WHERE outcome IS NULL AND parent IN (
    SELECT id FROM {s}.messages WHERE qid = %(qid)s AND state < 3 AND wf
    AND (%(state)s::integer IS NULL OR state = %(state)s::integer))
"""
