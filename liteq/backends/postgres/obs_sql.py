"""The PostgreSQL side of migration ``_V_OBS`` (issue 21, part 2): attempts, hourly
roll-ups of the history, failures counted by a trigger, and the task-name index; a
module of its own, as ``workflow_sql.py`` is for workflows (``schema.py`` applies it;
``operating.py`` queries with :data:`TASK_NAME` and :data:`TASK_PAYLOAD`)."""

from __future__ import annotations

__all__ = ["OBS_SCHEMA", "TASK_NAME", "TASK_PAYLOAD"]

# ``_V_OBS`` (issue 21, part 2; see liteq/backends/sqlite/schema.py): attempts that did
# not end their job, the worker on a results row, hourly roll-ups of the history kept
# by a trigger on ``history``, failures counted in the queue's history row by a trigger
# on ``messages``, and ``msg_task`` (the task name read out of a task payload's CBOR by
# :data:`TASK_NAME`). Times are the server's clock, as ``ServerClock``'s.
#: The task name (bytes) of a task payload ({"task", ...} CBOR), for ``msg_task``.
TASK_NAME = ("(CASE WHEN get_byte(payload, 6) = 120 "
             "THEN substring(payload FROM 9 FOR get_byte(payload, 7)) "
             "WHEN get_byte(payload, 6) BETWEEN 96 AND 119 "
             "THEN substring(payload FROM 8 FOR get_byte(payload, 6) - 96) END)")
#: The condition of a payload that names a task (``msg_task``'s WHERE).
TASK_PAYLOAD = "(substring(payload FROM 1 FOR 6) = decode('a3647461736b', 'hex'))"
_HOUR_COLUMNS = ("put", "acked", "failed", "dead", "runs", "run_total", "le_10ms", "le_100ms",
                 "le_1s", "le_10s", "le_60s")
_NOW_MINUTE = "floor(extract(epoch FROM clock_timestamp()) / 60)::bigint"
OBS_SCHEMA = f"""
CREATE TABLE {{s}}.attempts (
    id           bigint NOT NULL,
    attempt      bigint NOT NULL,
    worker       text,
    started_at   double precision,
    ended_at     double precision NOT NULL,
    outcome      text NOT NULL,
    error        text,
    PRIMARY KEY (id, attempt)
);
ALTER TABLE {{s}}.results ADD COLUMN worker text;

CREATE FUNCTION {{s}}.attempts_lease_expired() RETURNS trigger LANGUAGE plpgsql AS $obs$
DECLARE
    who text;
    since double precision;
BEGIN
    SELECT w.id, (e ->> 1)::double precision INTO who, since
    FROM {{s}}.workers AS w, jsonb_array_elements(w.jobs::jsonb) AS e
    WHERE (e ->> 0)::bigint = OLD.id ORDER BY w.heartbeat_at DESC LIMIT 1;
    INSERT INTO {{s}}.attempts (id, attempt, worker, started_at, ended_at, outcome, error)
    VALUES (OLD.id, OLD.attempts, who, since, OLD.lease_until, 'lease expired', 'lease expired')
    ON CONFLICT (id, attempt) DO UPDATE SET worker = excluded.worker,
        started_at = excluded.started_at, ended_at = excluded.ended_at,
        outcome = excluded.outcome, error = excluded.error;
    RETURN NULL;
END $obs$;
CREATE TRIGGER attempts_lease_expired AFTER UPDATE OF error ON {{s}}.messages
    FOR EACH ROW WHEN (OLD.state = 2 AND NEW.error = 'lease expired')
    EXECUTE FUNCTION {{s}}.attempts_lease_expired();

-- A transaction that fails messages of two queues locks their history rows in its own
-- order, and the totals flush locks rows in (minute, qid) order: the two can deadlock.
-- A count is statistics: the block gives it up rather than fail the transaction.
CREATE FUNCTION {{s}}.history_failures() RETURNS trigger LANGUAGE plpgsql AS $obs$
BEGIN
    BEGIN
        INSERT INTO {{s}}.history AS h (qid, minute, task, failed, dead)
        VALUES (OLD.qid, {_NOW_MINUTE}, '',
                CASE WHEN NEW.state < 3 AND NEW.qid = OLD.qid THEN 1 ELSE 0 END,
                CASE WHEN NEW.state = 4 OR NEW.qid <> OLD.qid THEN 1 ELSE 0 END)
        ON CONFLICT (minute, qid, task) DO UPDATE SET
            failed = h.failed + excluded.failed, dead = h.dead + excluded.dead;
    EXCEPTION WHEN deadlock_detected THEN
        NULL;
    END;
    RETURN NULL;
END $obs$;
CREATE TRIGGER history_failures AFTER UPDATE OF error ON {{s}}.messages
    FOR EACH ROW WHEN (OLD.state = 2 AND NEW.state IN (0, 1, 4))
    EXECUTE FUNCTION {{s}}.history_failures();

CREATE TABLE {{s}}.history_hours (
    qid          bigint NOT NULL,
    hour         bigint NOT NULL,
    task         text NOT NULL,
    put          bigint NOT NULL DEFAULT 0,
    acked        bigint NOT NULL DEFAULT 0,
    failed       bigint NOT NULL DEFAULT 0,
    dead         bigint NOT NULL DEFAULT 0,
    runs         bigint NOT NULL DEFAULT 0,
    run_total    double precision NOT NULL DEFAULT 0,
    run_max      double precision NOT NULL DEFAULT 0,
    le_10ms      bigint NOT NULL DEFAULT 0,
    le_100ms     bigint NOT NULL DEFAULT 0,
    le_1s        bigint NOT NULL DEFAULT 0,
    le_10s       bigint NOT NULL DEFAULT 0,
    le_60s       bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (hour, qid, task)
);
INSERT INTO {{s}}.history_hours (qid, hour, task, {", ".join(_HOUR_COLUMNS)}, run_max)
SELECT qid, minute / 60, task, {", ".join(f"sum({c})" for c in _HOUR_COLUMNS)}, max(run_max)
FROM {{s}}.history GROUP BY minute / 60, qid, task;

CREATE FUNCTION {{s}}.history_hours_add() RETURNS trigger LANGUAGE plpgsql AS $obs$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO {{s}}.history_hours AS h (qid, hour, task, {", ".join(_HOUR_COLUMNS)}, run_max)
        VALUES (NEW.qid, NEW.minute / 60, NEW.task,
                {", ".join(f"NEW.{c}" for c in _HOUR_COLUMNS)}, NEW.run_max)
        ON CONFLICT (hour, qid, task) DO UPDATE SET
            {", ".join(f"{c} = h.{c} + excluded.{c}" for c in _HOUR_COLUMNS)},
            run_max = greatest(h.run_max, excluded.run_max);
    ELSE
        UPDATE {{s}}.history_hours SET
            {", ".join(f"{c} = {c} + NEW.{c} - OLD.{c}" for c in _HOUR_COLUMNS)},
            run_max = greatest(run_max, NEW.run_max)
        WHERE hour = NEW.minute / 60 AND qid = NEW.qid AND task = NEW.task;
    END IF;
    RETURN NULL;
END $obs$;
CREATE TRIGGER history_hours_add AFTER INSERT OR UPDATE ON {{s}}.history
    FOR EACH ROW EXECUTE FUNCTION {{s}}.history_hours_add();

CREATE INDEX msg_task ON {{s}}.messages (qid, {TASK_NAME}, id) WHERE {TASK_PAYLOAD};
"""
