"""Workflows on PostgreSQL (issue 20): the tables, trigger functions and triggers of the
schema's workflow migration. The same design as SQLite's (``../sqlite/workflow_sql.py``:
a waiting job is a delayed message with ``run_at`` at ``WAITING_AT``; triggers on
``messages`` settle a parent's edges in the transaction that ends it, and a trigger on
``wf_edges`` decrements the child's count of unmet parents, cancels or releases it).

As there, a parent whose row is deleted (the worker's ack, a purge) settles its edges
explicitly (``wf_done``, :data:`SQL_WF_PURGING`), in the same transaction.

What PostgreSQL adds: concurrent endings of a chord's members serialize on the child's
``wf_jobs`` row (the ``UPDATE ... RETURNING unmet`` waits for the row lock and reads
the newest count), so exactly one of them sees the count reach 0 and releases the
callback: two transactions cannot both miss the last parent, as a ``NOT EXISTS`` check
under READ COMMITTED could. A released child is announced on the schema's wake-up
channel (``liteq_<schema>``; a schema name too long for it is left to the poll).
Times are the server's clock (``clock_timestamp()``), as the engine's own.
"""

from __future__ import annotations

from ..workflow import WAITING_AT

__all__ = ["WORKFLOW_SCHEMA", "SQL_WF_PURGING"]

_WAITING = f"state = 1 AND run_at >= {WAITING_AT!r}"

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

CREATE FUNCTION {{s}}.wf_settle() RETURNS trigger LANGUAGE plpgsql AS $wf$
DECLARE
    blocks boolean := NEW.outcome IS NOT NULL AND NEW.outcome <> 'done' AND NOT NEW.allow_failure;
    unmet_left bigint;
    wait_delay double precision;
    q bigint;
    now_ double precision := extract(epoch FROM clock_timestamp());
    channel text := 'liteq_' || TG_TABLE_SCHEMA;
BEGIN
    IF NEW.outcome IS NOT NULL THEN
        UPDATE {{s}}.wf_jobs SET unmet = unmet - 1, cancelled_by = CASE
            WHEN blocks THEN coalesce(cancelled_by, NEW.parent) ELSE cancelled_by END
        WHERE id = NEW.child RETURNING unmet, delay INTO unmet_left, wait_delay;
        IF blocks THEN
            UPDATE {{s}}.messages SET state = 5, finished_at = now_,
                error = 'parent job ' || NEW.parent || CASE NEW.outcome
                    WHEN 'failed' THEN ' failed' WHEN 'cancelled' THEN ' was cancelled'
                    ELSE ' was purged' END
            WHERE id = NEW.child AND {_WAITING} RETURNING qid INTO q;
            IF q IS NOT NULL THEN
                UPDATE {{s}}.depth_stripes SET used = used - 1 WHERE qid = q AND stripe =
                    (SELECT max(stripe) FROM {{s}}.depth_stripes WHERE qid = q);  -- depth.py lock order
            END IF;
        ELSIF unmet_left <= 0 THEN
            UPDATE {{s}}.messages SET state = CASE WHEN wait_delay > 0 THEN 1 ELSE 0 END,
                run_at = now_ + wait_delay
            WHERE id = NEW.child AND {_WAITING} RETURNING qid INTO q;
            IF q IS NOT NULL AND length(channel) <= 63 THEN
                PERFORM pg_notify(channel, q::text);
            END IF;
        END IF;
    ELSE
        UPDATE {{s}}.wf_jobs SET unmet = unmet + 1 WHERE id = NEW.child;
        IF NOT EXISTS (SELECT 1 FROM {{s}}.wf_edges WHERE child = NEW.child
                       AND outcome IS NOT NULL AND outcome <> 'done' AND NOT allow_failure) THEN
            UPDATE {{s}}.wf_jobs SET cancelled_by = NULL
            WHERE id = NEW.child AND cancelled_by IS NOT NULL;
            UPDATE {{s}}.messages SET state = 1, run_at = {WAITING_AT!r}, finished_at = NULL,
                error = NULL
            WHERE id = NEW.child AND state = 5 AND error LIKE 'parent job %' RETURNING qid INTO q;
            IF q IS NOT NULL THEN
                UPDATE {{s}}.depth_stripes SET used = used + 1 WHERE qid = q AND stripe =
                    (SELECT max(stripe) FROM {{s}}.depth_stripes WHERE qid = q);  -- depth.py lock order
            END IF;
        END IF;
    END IF;
    RETURN NULL;
END
$wf$;

CREATE TRIGGER wf_settle AFTER UPDATE OF outcome ON {{s}}.wf_edges FOR EACH ROW
    WHEN ((OLD.outcome IS NULL) <> (NEW.outcome IS NULL))
    EXECUTE FUNCTION {{s}}.wf_settle();
"""

# Before a purge deletes unfinished messages of a queue (all, or those in one state).
SQL_WF_PURGING = """
UPDATE {s}.wf_edges SET outcome = 'purged' WHERE outcome IS NULL AND parent IN (
    SELECT id FROM {s}.messages WHERE qid = %(qid)s AND state < 3 AND wf
    AND (%(state)s::integer IS NULL OR state = %(state)s::integer))
"""
