"""Workflows on SQLite (issue 20): the tables and triggers of the schema's workflow
migration, and the statements of :mod:`.workflow`.

A dependent job is an ordinary message row held back as a *waiting* one: state
``delayed`` with ``run_at`` at :data:`~liteq.backends.workflow.WAITING_AT` (so no claim,
promotion or index changes: the claim never sees it, ``msg_delayed`` never finds it due).
``wf_jobs`` counts each dependent's parents that have not ended (``unmet``);
``wf_edges`` holds one row per (parent, child) with what the child needs of the parent
once it ended: its outcome, its error and, when it succeeded, its encoded result (kept
here whatever the task's ``store_result``). A parent the worker acked by a DELETE keeps
its success in its results row instead, written in the same transaction, and its edges
stay unsettled on disk: their readers derive "done, with that value"
(:data:`WFKEEP_SCHEMA`).

Every path that ends a message in place (retained ack, fail, burial after the last
attempt or an expired lease, dead-lettering into another queue, cancellation) sets its
``finished_at``, so a trigger on ``UPDATE OF finished_at`` settles the edges in the
transaction of that change: a parent's ending and the release of its dependents commit
together or not at all. Only rows flagged ``wf = 1`` (a parent) pass its WHEN, and a
claim (which does not set ``finished_at``) never invokes it. The two endings that delete
the row settle the edges explicitly in the same transaction, because a DELETE trigger
would cost every plain ack: the worker's ack of a job that has dependents
(``wf_done``, after the ack) and a purge (:data:`SQL_WF_PURGING`, before it). A settled edge decrements its child's
``unmet``; the last one releases the child (ready, or delayed by its own ``delay``), an
edge whose parent did not succeed cancels it unless the edge allows failure. A success
is counted by the statements that write it (the worker's ack, a retained ack,
``wf_link``), set-wise; the triggers on ``wf_edges`` handle the other endings
(:data:`WFACK_SCHEMA` says why: a trigger costs every UPDATE that could fire it). A cancelled
child is itself a parent whose ending settles its own edges: this needs
``PRAGMA recursive_triggers`` (set on every connection, ``opening.py``), and bounds a
cascade by SQLite's trigger depth (1000 frames, two per level: the workflow layer
refuses graphs deeper than ``MAX_DEPTH``). A redriven parent (dead or cancelled back to
ready) unsettles its failed edges, which re-arms the dependents it had cancelled.

Times written by the triggers are the wall clock (``julianday('now')``), not the
store's injectable clock.
"""

from __future__ import annotations

import functools

from ..workflow import WAITING_AT

__all__ = ["WORKFLOW_SCHEMA", "WFACK_SCHEMA", "WFKEEP_SCHEMA", "SQL_WF_PURGING", "sql_wf_done",
           "SQL_WF_COUNT_SOME", "SQL_WF_COUNT", "SQL_WF_RELEASE", "SQL_WF_KEEP_ONE",
           "sql_wf_keep", "SQL_WF_EDGE_SELECT", "SQL_WF_KEEP_EXPIRING"]

_NOW = "((julianday('now') - 2440587.5) * 86400.0)"
_WAITING = f"state = 1 AND run_at >= {WAITING_AT!r}"
# An edge whose parent did not succeed, on a step that does not allow failure.
_BLOCKS = "(new.outcome <> 'done' AND NOT new.allow_failure)"

WORKFLOW_SCHEMA = f"""
ALTER TABLE messages ADD COLUMN wf INTEGER;        -- 1: the job has dependents (wf_edges)

CREATE TABLE wf_jobs (
    id            INTEGER PRIMARY KEY,              -- the job's message id
    workflow      INTEGER NOT NULL,                 -- the id of the workflow's first job
    unmet         INTEGER NOT NULL DEFAULT 0,       -- parents that have not ended
    delay         REAL NOT NULL DEFAULT 0,          -- seconds to wait once released
    cancelled_by  INTEGER                           -- the parent whose ending cancelled it
) STRICT;
CREATE INDEX wf_jobs_workflow ON wf_jobs (workflow);

CREATE TABLE wf_edges (
    parent        INTEGER NOT NULL,
    child         INTEGER NOT NULL,
    pos           INTEGER NOT NULL,                 -- order of the child's parents
    allow_failure INTEGER NOT NULL DEFAULT 0,
    outcome       TEXT,                             -- NULL, done, failed, cancelled, purged
    value         BLOB,                             -- CBOR result of a parent that succeeded
    error         TEXT,
    PRIMARY KEY (parent, child)
) STRICT;
CREATE INDEX wf_edges_child ON wf_edges (child, pos);

-- A parent ends: done (a retained ack), dead, cancelled, or moved to a dead-letter queue.
CREATE TRIGGER wf_end AFTER UPDATE OF finished_at ON messages
WHEN old.wf IS NOT NULL AND old.state < 3 AND (new.state >= 3 OR new.qid <> old.qid)
BEGIN
    UPDATE wf_edges SET error = new.error, outcome = CASE
        WHEN new.state = 3 THEN 'done' WHEN new.state = 5 THEN 'cancelled' ELSE 'failed' END
    WHERE parent = new.id AND outcome IS NULL;
END;

-- A dead or cancelled parent redriven in its queue: its dependents wait for it again.
CREATE TRIGGER wf_rearm AFTER UPDATE OF finished_at ON messages
WHEN old.wf IS NOT NULL AND old.state IN (4, 5) AND new.state < 3 AND new.qid = old.qid
BEGIN
    UPDATE wf_edges SET outcome = NULL, error = NULL
    WHERE parent = new.id AND outcome IN ('failed', 'cancelled', 'purged');
END;

-- A parent succeeded, or ended on a step that allows failure: one parent fewer to wait
-- for; the last one releases the child. (Two triggers, so that a chord member's ack runs
-- only these two statements.)
CREATE TRIGGER wf_settle AFTER UPDATE OF outcome ON wf_edges
WHEN old.outcome IS NULL AND new.outcome IS NOT NULL AND NOT {_BLOCKS}
BEGIN
    UPDATE wf_jobs SET unmet = unmet - 1 WHERE id = new.child;
    UPDATE messages SET
        state = CASE WHEN (SELECT delay FROM wf_jobs WHERE id = new.child) > 0 THEN 1 ELSE 0 END,
        run_at = {_NOW} + (SELECT delay FROM wf_jobs WHERE id = new.child)
    WHERE id = new.child AND {_WAITING}
      AND (SELECT unmet FROM wf_jobs WHERE id = new.child) <= 0;
END;

-- A parent that did not succeed, on a step that does not allow it: the child is cancelled
-- (and its own dependents with it, through wf_end).
CREATE TRIGGER wf_block AFTER UPDATE OF outcome ON wf_edges
WHEN old.outcome IS NULL AND new.outcome IS NOT NULL AND {_BLOCKS}
BEGIN
    UPDATE wf_jobs SET unmet = unmet - 1, cancelled_by = coalesce(cancelled_by, new.parent)
    WHERE id = new.child;
    UPDATE queues SET depth = depth - 1
    WHERE (max_depth IS NOT NULL OR count_depth)
      AND id = (SELECT qid FROM messages WHERE id = new.child AND {_WAITING});
    UPDATE messages SET state = 5, finished_at = {_NOW},
        error = 'parent job ' || new.parent || CASE new.outcome
            WHEN 'failed' THEN ' failed' WHEN 'cancelled' THEN ' was cancelled'
            ELSE ' was purged' END
    WHERE id = new.child AND {_WAITING};
END;

CREATE TRIGGER wf_unsettle AFTER UPDATE OF outcome ON wf_edges
WHEN old.outcome IS NOT NULL AND new.outcome IS NULL
BEGIN
    UPDATE wf_jobs SET unmet = unmet + 1 WHERE id = new.child;
    UPDATE wf_jobs SET cancelled_by = NULL
    WHERE id = new.child AND cancelled_by IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM wf_edges WHERE child = new.child AND outcome IS NOT NULL
        AND outcome <> 'done' AND NOT allow_failure);
    UPDATE queues SET depth = depth + 1
    WHERE (max_depth IS NOT NULL OR count_depth) AND id = (
        SELECT m.qid FROM messages m JOIN wf_jobs j ON j.id = m.id
        WHERE m.id = new.child AND m.state = 5 AND j.cancelled_by IS NULL
          AND m.error LIKE 'parent job %');
    UPDATE messages SET state = 1, run_at = {WAITING_AT!r}, finished_at = NULL, error = NULL
    WHERE id = new.child AND state = 5 AND error LIKE 'parent job %'
      AND (SELECT cancelled_by FROM wf_jobs WHERE id = new.child) IS NULL;
END;
"""

# The member's ack (issue 20's 1.3x). A trigger on wf_edges, even one whose WHEN is
# false, made every UPDATE of wf_edges that names its column cost ~55k instructions more
# (callgrind: one edge settled per transaction, 80k with the UPDATE OF outcome triggers
# present, 25k without; an empty transaction is 12k): SQLite codes the trigger programs
# into the statement and pays for them on every row. So the triggers now fire on
# ``UPDATE OF error``, which every ending that is not a success writes (wf_end, a purge,
# a redrive, wf_link for a parent that had failed), and the success of a parent, which
# writes only ``value`` and ``outcome``, is counted by its writer, set-wise: the worker's
# ack (``WorkflowVerbs.wf_done``: one counter update and one release check per child),
# a retained ack (``wf_end_done``) and ``wf_link`` for a parent that had already
# succeeded. ``wf_settle`` is left with the edges of a parent that did not succeed on a
# step that allows failure. The counters mean what they meant: a file migrated with
# workflows half done goes on.
WFACK_SCHEMA = f"""
DROP TRIGGER wf_settle;
DROP TRIGGER wf_block;
DROP TRIGGER wf_unsettle;
DROP TRIGGER wf_end;

-- A parent ends without succeeding: dead, cancelled, or moved to a dead-letter queue.
CREATE TRIGGER wf_end AFTER UPDATE OF finished_at ON messages
WHEN old.wf IS NOT NULL AND old.state < 3 AND new.state <> 3
    AND (new.state > 3 OR new.qid <> old.qid)
BEGIN
    UPDATE wf_edges SET error = new.error,
        outcome = CASE WHEN new.state = 5 THEN 'cancelled' ELSE 'failed' END
    WHERE parent = new.id AND outcome IS NULL;
END;

-- A parent succeeds in place (a retained ack): one parent fewer for each child, counted
-- here (its edges' UPDATE names no error: no trigger); the last one releases the child.
CREATE TRIGGER wf_end_done AFTER UPDATE OF finished_at ON messages
WHEN old.wf IS NOT NULL AND old.state < 3 AND new.state = 3
BEGIN
    UPDATE wf_jobs SET unmet = unmet - 1
    WHERE id IN (SELECT child FROM wf_edges WHERE parent = new.id AND outcome IS NULL);
    UPDATE wf_edges SET outcome = 'done' WHERE parent = new.id AND outcome IS NULL;
    UPDATE messages SET
        state = CASE WHEN (SELECT delay FROM wf_jobs WHERE id = messages.id) > 0 THEN 1 ELSE 0 END,
        run_at = {_NOW} + (SELECT delay FROM wf_jobs WHERE id = messages.id)
    WHERE id IN (SELECT child FROM wf_edges WHERE parent = new.id) AND {_WAITING}
      AND (SELECT unmet FROM wf_jobs WHERE id = messages.id) <= 0;
END;

-- A parent that did not succeed, on a step that allows it: one parent fewer to wait
-- for; the last one releases the child.
CREATE TRIGGER wf_settle AFTER UPDATE OF error ON wf_edges
WHEN old.outcome IS NULL AND new.outcome IS NOT NULL AND new.outcome <> 'done'
    AND new.allow_failure
BEGIN
    UPDATE wf_jobs SET unmet = unmet - 1 WHERE id = new.child;
    UPDATE messages SET
        state = CASE WHEN (SELECT delay FROM wf_jobs WHERE id = new.child) > 0 THEN 1 ELSE 0 END,
        run_at = {_NOW} + (SELECT delay FROM wf_jobs WHERE id = new.child)
    WHERE id = new.child AND {_WAITING}
      AND (SELECT unmet FROM wf_jobs WHERE id = new.child) <= 0;
END;

-- A parent that did not succeed, on a step that does not allow it: the child is cancelled
-- (and its own dependents with it, through wf_end).
CREATE TRIGGER wf_block AFTER UPDATE OF error ON wf_edges
WHEN old.outcome IS NULL AND new.outcome IS NOT NULL AND {_BLOCKS}
BEGIN
    UPDATE wf_jobs SET unmet = unmet - 1, cancelled_by = coalesce(cancelled_by, new.parent)
    WHERE id = new.child;
    UPDATE queues SET depth = depth - 1
    WHERE (max_depth IS NOT NULL OR count_depth)
      AND id = (SELECT qid FROM messages WHERE id = new.child AND {_WAITING});
    UPDATE messages SET state = 5, finished_at = {_NOW},
        error = 'parent job ' || new.parent || CASE new.outcome
            WHEN 'failed' THEN ' failed' WHEN 'cancelled' THEN ' was cancelled'
            ELSE ' was purged' END
    WHERE id = new.child AND {_WAITING};
END;

-- A parent redriven (wf_rearm): its failed edges unsettle, the child waits for it again.
CREATE TRIGGER wf_unsettle AFTER UPDATE OF error ON wf_edges
WHEN old.outcome IS NOT NULL AND new.outcome IS NULL
BEGIN
    UPDATE wf_jobs SET unmet = unmet + 1 WHERE id = new.child;
    UPDATE wf_jobs SET cancelled_by = NULL
    WHERE id = new.child AND cancelled_by IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM wf_edges WHERE child = new.child AND outcome IS NOT NULL
        AND outcome <> 'done' AND NOT allow_failure);
    UPDATE queues SET depth = depth + 1
    WHERE (max_depth IS NOT NULL OR count_depth) AND id = (
        SELECT m.qid FROM messages m JOIN wf_jobs j ON j.id = m.id
        WHERE m.id = new.child AND m.state = 5 AND j.cancelled_by IS NULL
          AND m.error LIKE 'parent job %');
    UPDATE messages SET state = 1, run_at = {WAITING_AT!r}, finished_at = NULL, error = NULL
    WHERE id = new.child AND state = 5 AND error LIKE 'parent job %'
      AND (SELECT cancelled_by FROM wf_jobs WHERE id = new.child) IS NULL;
END;
"""



# The worker's ack of a parent (session 13, issue 20's 1.3x): its success is kept in the
# results row the same transaction has just written, not on each of its edges. One by
# one, the member's edge was a page of its own in every commit (wf_edges; the results
# row's page is written anyway), and a page in a commit costs ~2.5-3 us here: without
# the edge's write a member's ack measured 1.30x -> 1.17x a plain one (bench_chord.py
# --style worker-one, a prototype). ``wf_value`` set (X'' for a result that is None or
# could not be encoded) says "this job succeeded and its edges still unsettled are done,
# with this value": the edges' readers derive it (SQL_WF_EDGE_SELECT), and before a
# results row expires its value goes onto those edges (SQL_WF_KEEP_EXPIRING). Only a
# job acked by a DELETE: a retained ack (the row stays, done) settled its edges through
# wf_end_done already, so the statement skips a job whose message is still there.
WFKEEP_SCHEMA = """
ALTER TABLE results ADD COLUMN wf_value BLOB;  -- a parent's success kept for its edges
"""

# One parent (parameters: id, value). Changes nothing for a retained ack.
SQL_WF_KEEP_ONE = """
UPDATE results SET wf_value = ?2
WHERE id = ?1 AND NOT EXISTS (SELECT 1 FROM messages WHERE id = ?1 AND qid <> 0)
"""


@functools.cache
def sql_wf_keep(n: int) -> str:
    """SQL_WF_KEEP_ONE for *n* parents (parameters: id, value, id, value, ...). Not
    ``RETURNING`` the ids kept: it cost the worker's flush ~5k instructions a member
    (bench_chord.py --style worker --instructions); the caller counts the changes."""
    values = ",".join(["(?,?)"] * n)
    return ("UPDATE results SET wf_value = v.value "
            f"FROM (SELECT column1 AS id, column2 AS value FROM (VALUES {values})) AS v "
            "WHERE results.id = v.id "
            "AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.id = v.id AND m.qid <> 0)")


# An edge as its child reads it (WfEdge's fields): unsettled, with its parent's success
# kept in the parent's results row, it is done with that value.
SQL_WF_EDGE_SELECT = """
SELECT e.parent, e.child, e.pos, e.allow_failure,
       CASE WHEN e.outcome IS NULL AND r.wf_value IS NOT NULL THEN 'done' ELSE e.outcome END,
       CASE WHEN e.outcome IS NULL THEN nullif(r.wf_value, X'') ELSE e.value END, e.error
FROM wf_edges e LEFT JOIN results r ON e.outcome IS NULL AND r.id = e.parent
"""

# Before results rows expire (parameter: the prune's time): the successes they keep go
# onto the edges still reading them. Already counted, and it names no error: no trigger.
SQL_WF_KEEP_EXPIRING = """
UPDATE wf_edges SET outcome = 'done',
    value = (SELECT nullif(wf_value, X'') FROM results WHERE id = wf_edges.parent)
WHERE outcome IS NULL AND parent IN (
    SELECT id FROM results
    WHERE expires_at IS NOT NULL AND expires_at < ? AND wf_value IS NOT NULL)
"""


@functools.cache
def sql_wf_done(n: int) -> str:
    """The success of *n* parents, written by the worker's ack (no trigger: see
    WFACK_SCHEMA): every edge of theirs still unsettled gets its parent's result, in one
    statement (parameters: parent, value, parent, value, ...). The pairs are a VALUES
    list joined to the edges by parent (a search of the primary key each): a ``CASE
    parent WHEN ? THEN ? ...`` of n branches, as before, was evaluated for every edge,
    n / 2 comparisons each (the worker's flush of 100 members: 1.15 -> 0.73 us a member).
    Not an executemany: apsw's statement cache is emptied by an executemany of ~100
    rows (measured with ``Connection.cache_stats``), and every statement of the next ack
    was prepared again (~60k instructions each)."""
    if n == 1:  # one by one: no VALUES list
        return ("UPDATE wf_edges SET value = ?2, outcome = 'done' "
                "WHERE parent = ?1 AND outcome IS NULL")
    values = ",".join(["(?,?)"] * n)
    return ("UPDATE wf_edges SET value = v.value, outcome = 'done' "
            f"FROM (SELECT column1 AS parent, column2 AS value FROM (VALUES {values})) AS v "
            "WHERE wf_edges.parent = v.parent AND wf_edges.outcome IS NULL")

# Parents fewer for a child once their edges settled as succeeded, when they were not
# its last ones (no change: they were, see SQL_WF_COUNT) ...
SQL_WF_COUNT_SOME = "UPDATE wf_jobs SET unmet = unmet - ?1 WHERE id = ?2 AND unmet > ?1"
# ... else the count, and the child released if none is left
SQL_WF_COUNT = "UPDATE wf_jobs SET unmet = unmet - ? WHERE id = ?"
# (if it still waits: a child cancelled by another parent stays cancelled). Names no
# finished_at: no trigger on messages runs.
SQL_WF_RELEASE = f"""
UPDATE messages SET
    state = CASE WHEN (SELECT delay FROM wf_jobs WHERE id = :id) > 0 THEN 1 ELSE 0 END,
    run_at = {_NOW} + (SELECT delay FROM wf_jobs WHERE id = :id)
WHERE id = :id AND {_WAITING} AND (SELECT unmet FROM wf_jobs WHERE id = :id) <= 0
"""

# Before a purge deletes unfinished messages of a queue (all, or those in :state): their
# edges settle as "purged" (which cancels the dependents; ``error`` is named so that the
# triggers of WFACK_SCHEMA run). A row's deletion settles no edge by trigger: every
# plain ack runs the DELETE triggers, even when their WHEN is false (~4% more
# instructions, measured with bench/instructions.py), so the one there is (msg_top,
# schema.py's _V_IDS) is kept tiny.
SQL_WF_PURGING = """
UPDATE wf_edges SET outcome = 'purged', error = NULL WHERE outcome IS NULL AND parent IN (
    SELECT id FROM messages WHERE qid = :qid AND state < 3 AND wf IS NOT NULL
    AND (:state IS NULL OR state = :state))
"""
