"""Workflows on PostgreSQL, migration ``_V_WFONE`` (issue 20's 1.3x): no trigger on
``wf_edges``; every writer of an edge's ending hands what it changed to ``wf_apply``.

Until this migration a statement trigger (``wf_settle``, over transition tables) read
every ``UPDATE`` of ``wf_edges``, a success's included: PostgreSQL allows transition
tables only on triggers without a column list, so the trigger could not skip the
successes, which their writers count themselves (``WFACK_SCHEMA``). It cost ~35k server
instructions a member's ack (``bench/chord_server.py``), and filling its transition
tables more. The writers that end or re-arm an edge otherwise are few and all liteq's
own: ``wf_end`` (a parent failed, died, was cancelled, or came back by a redrive),
``wf_purging`` (a purge of unfinished parents) and ``wf_link`` (a child linked to a parent
that had already failed). Each now passes the edges it changed, as its ``UPDATE ...
RETURNING`` gave them, to ``wf_apply``: the same aggregation per child and the same
cancel, release and re-arm as the trigger's, in a statement of its own after the
writer's (the writer's rows are visible to it, as they were to an AFTER trigger).

And a chord member's ack one by one (one parent, one child: the client knows the child
from ``wf_among``) takes ``wf_done1``: scalar arguments, the edge and the counter each
updated by its key, no aggregate. ``wf_done`` (arrays) stays for the rest. Server
instructions per ack (``bench/chord_server.py``, fresh databases), member / plain: one by
one 1.43x-1.46x -> 1.25x-1.28x, the worker's flush 1.43x-1.53x -> 1.30x-1.34x.
"""

from __future__ import annotations

from .workflow_sql import WAITING, WFACK_SCHEMA, WORKFLOW_SCHEMA

__all__ = ["WFONE_SCHEMA", "SQL_WF_APPLY", "SQL_WF_PURGING"]

# The channel a released child is announced on: NULL when the schema's name makes it too
# long for one (the poll finds the child).
_CHANNEL = """CASE WHEN length('liteq_' || TG_TABLE_SCHEMA) <= 63
        THEN 'liteq_' || TG_TABLE_SCHEMA END"""


def _part(schema: str, start: str, end: str) -> str:
    """The text of an earlier migration from *start* up to *end*, its channel test
    made this module's (NULL when the schema's name makes it too long, see _CHANNEL)."""
    i = schema.index(start)
    part = schema[i:schema.index(end, i)]
    assert part.count("length(channel) <= 63") == 1
    return part.replace("length(channel) <= 63", "channel IS NOT NULL")


# wf_apply's counting, cancelling, releasing and re-arming: the trigger's own
# (WORKFLOW_SCHEMA's wf_settle, from the counters' lock to its RETURN).
_SETTLE = _part(WORKFLOW_SCHEMA, "    -- Locked in child id order", "    RETURN NULL;\nEND\n$wf$;")
# wf_end's retained ack, as _V_WFACK made it.
_RETAINED = _part(WFACK_SCHEMA, "    ELSIF NEW.state = 3 THEN", "    ELSE\n")


def _apply_edges(unsettle: str, indent: int) -> str:
    """plpgsql after a CTE ``n`` (an UPDATE of wf_edges RETURNING parent, child,
    allow_failure, outcome): what it changed, handed to wf_apply (needs the variables
    parents, kids, allows, outs and channel)."""
    pad = " " * indent
    return "\n".join(pad + line for line in (
        "SELECT array_agg(parent), array_agg(child), array_agg(allow_failure), array_agg(outcome)",
        "INTO parents, kids, allows, outs FROM n;",
        "IF kids IS NOT NULL THEN",
        f"    PERFORM {{s}}.wf_apply(parents, kids, allows, outs, {unsettle}, channel);",
        "END IF;"))[indent:]


WFONE_SCHEMA = f"""
DROP TRIGGER IF EXISTS wf_settle ON {{s}}.wf_edges;
DROP FUNCTION IF EXISTS {{s}}.wf_settle();

-- Room on wf_edges' new pages for the settled versions of their edges: a page pruned at
-- every settling (it has less free room than its fillfactor keeps) costs per edge on it.
-- At 70, ~95 edges a page: ~34k instructions of pruning per member acked one by one;
-- at 30, ~40 a page: ~19k (the table 2.3x larger while its workflows are kept).
ALTER TABLE {{s}}.wf_edges SET (fillfactor = 30);
-- The worker's flush looks up and settles a hundred parents' edges: an index scan per
-- parent, not a bitmap built for each (~6k instructions per member).
ALTER FUNCTION {{s}}.wf_among(bigint[]) SET enable_bitmapscan = off;
ALTER FUNCTION {{s}}.wf_done(bigint[], bytea[], text) SET enable_bitmapscan = off;

-- Edges a statement settled (unsettle false: from NULL to an outcome) or re-armed
-- (unsettle true: back to NULL), one entry per edge. Successes are counted by their
-- writers and skipped here. Per child: one counter update however many of its parents
-- changed, then the children to cancel, release or re-arm in one statement each. What
-- changed is kept in local arrays, so a nested call (a cancel cascading down through
-- wf_end) cannot disturb it.
CREATE OR REPLACE FUNCTION {{s}}.wf_apply(parents bigint[], kids bigint[], allows boolean[],
    outcomes_ text[], unsettle boolean, channel text) RETURNS void
LANGUAGE plpgsql AS $wf$
DECLARE
    now_ double precision := extract(epoch FROM clock_timestamp());
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
        SELECT c.child,
            count(*) FILTER (WHERE NOT unsettle) AS settled,
            count(*) FILTER (WHERE unsettle) AS unsettled,
            (array_agg(c.parent ORDER BY c.parent) FILTER (WHERE NOT unsettle
                AND NOT c.allow))[1] AS blocker,
            (array_agg(c.outcome ORDER BY c.parent) FILTER (WHERE NOT unsettle
                AND NOT c.allow))[1] AS outcome
        FROM unnest(parents, kids, allows, outcomes_) AS c(parent, child, allow, outcome)
        WHERE c.outcome IS DISTINCT FROM 'done'
        GROUP BY c.child
    ) d;
    IF children IS NULL THEN
        RETURN;
    END IF;
{_SETTLE}END
$wf$;

-- A parent's ending (or its return by a redrive), row by row: its edges settled or
-- re-armed here, then handed to wf_apply. A retained success counts its children itself.
CREATE OR REPLACE FUNCTION {{s}}.wf_end() RETURNS trigger LANGUAGE plpgsql AS $wf$
DECLARE
    channel text := {_CHANNEL};
    qids bigint[];
    parents bigint[];
    kids bigint[];
    allows boolean[];
    outs text[];
BEGIN
    IF NEW.state < 3 AND NEW.qid = OLD.qid THEN
        WITH n AS (
            UPDATE {{s}}.wf_edges SET outcome = NULL, error = NULL
            WHERE parent = NEW.id AND outcome IN ('failed', 'cancelled', 'purged')
            RETURNING parent, child, allow_failure, outcome
        )
{_apply_edges('true', 8)}
{_RETAINED}    ELSE
        WITH n AS (
            UPDATE {{s}}.wf_edges SET error = NEW.error,
                outcome = CASE WHEN NEW.state = 5 THEN 'cancelled' ELSE 'failed' END
            WHERE parent = NEW.id AND outcome IS NULL
            RETURNING parent, child, allow_failure, outcome
        )
{_apply_edges('false', 8)}
    END IF;
    RETURN NULL;
END
$wf$;

-- Before a purge deletes unfinished messages of a queue (all, or those in one state):
-- their dependents are cancelled ("parent job N was purged").
CREATE OR REPLACE FUNCTION {{s}}.wf_purging(qid_ bigint, state_ integer, channel text)
RETURNS void LANGUAGE plpgsql AS $wf$
DECLARE
    parents bigint[];
    kids bigint[];
    allows boolean[];
    outs text[];
BEGIN
    WITH n AS (
        UPDATE {{s}}.wf_edges SET outcome = 'purged' WHERE outcome IS NULL AND parent IN (
            SELECT id FROM {{s}}.messages WHERE qid = qid_ AND state < 3 AND wf
            AND (state_ IS NULL OR state = state_))
        RETURNING parent, child, allow_failure, outcome
    )
{_apply_edges('false', 4)}
END
$wf$;

-- One parent with one child succeeded (a chord member, a chain's step, acked one by
-- one): its edge settled with its value, the child's counter down by one, the child
-- released at 0. No edge left to settle: a retained ack settled it (wf_end), its value
-- only. The plans are generic (scalar arguments); enable_seqscan off keeps them on the
-- keys while the tables are young.
CREATE OR REPLACE FUNCTION {{s}}.wf_done1(parent_ bigint, kid bigint, val bytea, channel text)
RETURNS void LANGUAGE plpgsql SET enable_seqscan = off AS $wf$
DECLARE
    left_ bigint;
    delay_ double precision;
    qid_ bigint;
BEGIN
    UPDATE {{s}}.wf_edges SET value = val, outcome = 'done'
    WHERE parent = parent_ AND outcome IS NULL;
    IF NOT FOUND THEN
        UPDATE {{s}}.wf_edges SET value = val WHERE parent = parent_ AND outcome = 'done';
        RETURN;
    END IF;
    UPDATE {{s}}.wf_jobs SET unmet = unmet - 1 WHERE id = kid
    RETURNING unmet, delay INTO left_, delay_;
    IF left_ <= 0 THEN
        UPDATE {{s}}.messages m SET state = CASE WHEN delay_ > 0 THEN 1 ELSE 0 END,
            run_at = extract(epoch FROM clock_timestamp()) + delay_
        WHERE m.id = kid AND {WAITING}
        RETURNING m.qid INTO qid_;
        IF qid_ IS NOT NULL AND channel IS NOT NULL THEN
            PERFORM pg_notify(channel, qid_::text);
        END IF;
    END IF;
END
$wf$;
"""

SQL_WF_APPLY = "SELECT {s}.wf_apply(%s::bigint[], %s::bigint[], %s::boolean[], %s::text[], false, %s)"
SQL_WF_PURGING = "SELECT {s}.wf_purging(%(qid)s::bigint, %(state)s::integer, %(channel)s::text)"
