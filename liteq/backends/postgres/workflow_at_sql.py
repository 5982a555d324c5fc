"""Workflows on PostgreSQL, migration ``_V_WFAT`` (issue 20's 1.3x): a parent's edges
settled where the ack's own lookup found them.

The worker's ack looks its jobs' edges up by parent (``wf_among``: one index descent
each, which plain jobs pay too, finding nothing), then settled the edges it found by
parent again (``wf_done``: a second descent per edge, in a join with the values). The
lookup now returns each edge's ``ctid`` with it, and the settling joins on it: a TID
scan, no index. Safe in the ack's transaction, the only place it is used: the rows the
lookup read are the ones the update finds unless something moved them since, and what
can is this transaction's own writes (a retained ack's ``wf_end`` runs before the
lookup) or a prune that deletes the edges of a child gone (an update then finds the
row gone, as by key). An edge not settled through its ``ctid`` (moved, or settled
already) is settled by key, as ``wf_done`` does: the same outcome either way.
``wf_among`` stays in the schema, unused by this release, for processes of the
previous one still running while a deployment rolls over.

And the worker acking one job per transaction looks its edges up and settles them in
one call (``wf_ack1``), not two (``wf_among`` under a savepoint, then ``wf_done1``):
a round trip and a SAVEPOINT with its RELEASE less, for plain jobs too (their result is
then encoded by the client for nothing: a cost of the client's, not the server's).

And ``wf_jobs`` at fillfactor 10: a chord's callback counted down one member at a time
walks fewer versions of its row (see the ALTER below).

Server instructions per ack, plain / member (``bench/chord_server.py``, a fresh
database each), before -> after: one by one (``--sizes 100,300``) 370,962 / 564,354
(1.521x) -> 336,889 / 476,178 (1.413x); the worker's flush (``--sizes 700,1700``, past
psycopg's prepare threshold) 132,080 / 165,525 (1.253x) -> 131,865 / 164,177 (1.245x).
"""

from __future__ import annotations

from .workflow_settle_sql import WFONE_SCHEMA
from .workflow_sql import WFVAL_SCHEMA

__all__ = ["WFAT_SCHEMA", "WFMANY_SCHEMA", "SQL_WF_ACK1", "SQL_WF_ACK_MANY", "SQL_WF_AMONG_AT",
           "SQL_WF_DONE_AT", "SQL_WF_DONE1_AT"]


def _tail(schema: str, start: str) -> str:
    """A function's text in an earlier migration from the one line *start* (a whole
    line) up to its END."""
    i = schema.index("\n" + start + "\n") + 1
    return schema[i:schema.index("END\n$wf$;", i)]


# wf_done's (WFVAL_SCHEMA) per child: the counters locked in id order, counted down, the
# children released at 0 and announced (variables kids, counts, announced, channel).
_COUNT = _tail(WFVAL_SCHEMA, "    PERFORM 1 FROM {s}.wf_jobs WHERE id = ANY(kids) ORDER BY id FOR UPDATE;")
# wf_done1's (WFONE_SCHEMA) one child: counted down, released at 0 and announced.
_COUNT1 = _tail(WFONE_SCHEMA, "    UPDATE {s}.wf_jobs SET unmet = unmet - 1 WHERE id = kid")
# One parent's one edge (variables parent_, kid, val, at_, channel) settled where it was
# read, else by key (wf_done1, which also keeps the value of an edge a retained ack
# settled); then counted.
_ONE_VARIABLES = """    left_ bigint;
    delay_ double precision;
    qid_ bigint;
"""
_ONE = f"""    UPDATE {{s}}.wf_edges SET value = val, outcome = 'done'
    WHERE ctid = at_ AND parent = parent_ AND outcome IS NULL;
    IF NOT FOUND THEN
        PERFORM {{s}}.wf_done1(parent_, kid, val, channel);
        RETURN;
    END IF;
{_COUNT1}"""

WFAT_SCHEMA = f"""
-- A chord's callback counts down on one row, once per member acked one by one: each
-- update a new version of it on its page, reached from its index entry by walking the
-- versions since the page was last pruned, which is when its free room falls below what
-- the fillfactor keeps. Full pages (fillfactor 100) gathered ~30-60 versions first; at
-- 10 a page holds ~12 jobs and is pruned every ~11 versions (bench/chord_server.py,
-- --style one: ~15k instructions less per member; the table ~10x larger while its
-- workflows are kept; a chord's enqueue measured no slower).
ALTER TABLE {{s}}.wf_jobs SET (fillfactor = 10);

-- Which of these jobs have dependents: each edge's parent, child and row.
CREATE OR REPLACE FUNCTION {{s}}.wf_among_at(ids bigint[])
RETURNS TABLE (parent bigint, child bigint, at tid)
LANGUAGE plpgsql STABLE SET plan_cache_mode = force_generic_plan SET enable_seqscan = off
SET enable_bitmapscan = off AS $wf$
BEGIN
    RETURN QUERY SELECT e.parent, e.child, e.ctid FROM {{s}}.wf_edges e WHERE e.parent = ANY(ids);
END
$wf$;

-- The success of parents acked by a DELETE in this transaction: one entry per edge,
-- (parent, its CBOR result, the edge's row as wf_among_at read it).
CREATE OR REPLACE FUNCTION {{s}}.wf_done_at(parents bigint[], vals bytea[], ats tid[],
    channel text) RETURNS void
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan SET enable_seqscan = off
SET enable_bitmapscan = off AS $wf$
DECLARE
    announced bigint;
    kids bigint[];
    counts bigint[];
    done_parents bigint[];
    done_kids bigint[];
BEGIN
    WITH settled AS (
        UPDATE {{s}}.wf_edges e SET value = v.value, outcome = 'done'
        FROM unnest(ats, vals) AS v(at, value)
        WHERE e.ctid = v.at AND e.outcome IS NULL
        RETURNING e.parent, e.child
    )
    SELECT array_agg(parent), array_agg(child) INTO done_parents, done_kids FROM settled;
    IF coalesce(cardinality(done_kids), 0) < cardinality(ats) THEN
        -- Edges not found where they were read: by key, those still to settle, then
        -- the values of parents a retained ack settled already (wf_end).
        WITH settled AS (
            UPDATE {{s}}.wf_edges e SET value = v.value, outcome = 'done'
            FROM (SELECT DISTINCT ON (p) p, value FROM unnest(parents, vals) AS u(p, value))
                AS v(parent, value)
            WHERE e.parent = v.parent AND e.outcome IS NULL
            RETURNING e.parent, e.child
        )
        SELECT coalesce(done_parents, '{{}}') || coalesce(array_agg(parent), '{{}}'),
               coalesce(done_kids, '{{}}') || coalesce(array_agg(child), '{{}}')
        INTO done_parents, done_kids FROM settled;
        UPDATE {{s}}.wf_edges e SET value = v.value
        FROM (SELECT DISTINCT ON (p) p, value FROM unnest(parents, vals) AS u(p, value))
            AS v(parent, value)
        WHERE e.parent = v.parent AND e.outcome = 'done' AND NOT (e.parent = ANY(done_parents));
    END IF;
    SELECT array_agg(child ORDER BY child), array_agg(n ORDER BY child) INTO kids, counts
    FROM (SELECT child, count(*) AS n FROM unnest(done_kids) AS k(child) GROUP BY child) AS c;
    IF kids IS NULL THEN
        RETURN;
    END IF;
{_COUNT}END
$wf$;

-- One parent with one child (a chord member, a chain's step acked one by one): its edge
-- where it was read, else wf_done1 (by key).
CREATE OR REPLACE FUNCTION {{s}}.wf_done1_at(parent_ bigint, kid bigint, val bytea, at_ tid,
    channel text) RETURNS void
LANGUAGE plpgsql SET enable_seqscan = off AS $wf$
DECLARE
{_ONE_VARIABLES}BEGIN
{_ONE}END
$wf$;

-- The success of one job acked by a DELETE in this transaction (the worker acking one
-- job per transaction), in one call: its edges looked up, then settled as wf_done1_at
-- (one child) or wf_done_at (several) do. A job without dependents: the lookup alone.
CREATE OR REPLACE FUNCTION {{s}}.wf_ack1(parent_ bigint, val bytea, channel text)
RETURNS void
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan SET enable_seqscan = off
SET enable_bitmapscan = off AS $wf$
DECLARE
    kids bigint[];
    ats tid[];
    kid bigint;
    at_ tid;
{_ONE_VARIABLES}BEGIN
    SELECT array_agg(e.child), array_agg(e.ctid) INTO kids, ats
    FROM {{s}}.wf_edges e WHERE e.parent = parent_;
    IF kids IS NULL THEN
        RETURN;
    ELSIF cardinality(kids) > 1 THEN
        PERFORM {{s}}.wf_done_at(array_fill(parent_, ARRAY[cardinality(kids)]),
            array_fill(val, ARRAY[cardinality(kids)]), ats, channel);
        RETURN;
    END IF;
    kid := kids[1];
    at_ := ats[1];
{_ONE}END
$wf$;
"""

# The worker's flush (session 13, migration ``_V_WFMANY``): the lookup and the settling
# of a batch in one call, as wf_ack1 does for one job. Before, the flush ran wf_among_at
# (a round trip under a savepoint; each edge's row back to the client, parsed there) and
# then, when it found parents, wf_done_at (another round trip, three arrays sent back).
# Every acked job's result goes to the server now, plain ones too (the client cannot tell
# them apart without the lookup): measured, plain flushes cost the same (their savepoint
# and the separate lookup are gone), and a chord member's flush fell from 1.27-1.28x to
# 1.09-1.18x a plain one (bench_chord.py --db postgres --style worker, a prototype).
WFMANY_SCHEMA = """
-- The success of jobs acked by a DELETE in this transaction (the worker's flush): their
-- edges looked up, then settled as wf_done_at does. Jobs without dependents: the lookup.
CREATE OR REPLACE FUNCTION {s}.wf_ack_many(parents bigint[], vals bytea[], channel text)
RETURNS void
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan SET enable_seqscan = off
SET enable_bitmapscan = off AS $wf$
DECLARE
    ps bigint[];
    vs bytea[];
    ats tid[];
BEGIN
    SELECT array_agg(e.parent), array_agg(v.value), array_agg(e.ctid) INTO ps, vs, ats
    FROM unnest(parents, vals) AS v(parent, value)
    JOIN {s}.wf_edges e ON e.parent = v.parent;
    IF ps IS NULL THEN
        RETURN;
    END IF;
    PERFORM {s}.wf_done_at(ps, vs, ats, channel);
END
$wf$;
"""

SQL_WF_ACK_MANY = ("SELECT {s}.wf_ack_many(%(parents)b::bigint[], %(values)b::bytea[],"
                   " %(channel)s::text)")
SQL_WF_AMONG_AT = "SELECT * FROM {s}.wf_among_at(%b::bigint[])"
SQL_WF_DONE_AT = ("SELECT {s}.wf_done_at(%(parents)b::bigint[], %(values)b::bytea[],"
                  " %(ats)b::tid[], %(channel)s::text)")
SQL_WF_DONE1_AT = ("SELECT {s}.wf_done1_at(%(parent)s::bigint, %(child)s::bigint,"
                   " %(value)s::bytea, %(at)s::tid, %(channel)s::text)")
SQL_WF_ACK1 = "SELECT {s}.wf_ack1(%(parent)s::bigint, %(value)s::bytea, %(channel)s::text)"
