"""Schedules: cron, every and at, firing tasks, queue payloads or shell commands.

::

    db.schedule("nightly", cron="0 3 * * *", tz="Europe/Berlin", task="app.report", args=[1])
    db.schedule("ping", every=30, queue="pings", payload={"ping": True})
    db.schedule("backup", cron="@daily", command="backup.sh --full")   # a worker with --allow-shell
    liteq.Scheduler(db).run()        # or: liteq scheduler APP / liteq worker APP --scheduler

A schedule is a row in the ``schedules`` table. Each **fire** enqueues the schedule's
stored payload into its queue. The whole tick is one ``BEGIN IMMEDIATE`` transaction
in ``Backend.schedule_tick``: it takes the due rows, asks :func:`plan` which fire times
to enqueue, records each in ``schedule_runs`` (unique per schedule and fire time),
enqueues it with the dedup key ``schedule:NAME:FIRE_AT`` and advances ``next_run_at``.
So any number of schedulers on one file enqueue each (schedule, fire time) once.

Timing (cron, every, at), checking a definition's timing and the misfire policy
(:func:`plan`) are :mod:`liteq.timing`; their names stay importable from here.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import threading
import time
from collections.abc import Sequence
from typing import Any
from zoneinfo import ZoneInfo

from . import codec
from .backends.records import Fire, ScheduleRecord, ScheduleRun
from .context import Context
from .errors import DatabaseBusy, InvalidArgument, LiteqError, ScheduleError, StorageError
from .fdwait import wait_readable
from .outage import Outage
from .registry import DEFAULT_HEARTBEAT, Registration
from .shell import SHELL_QUEUE, SHELL_TASK, CommandFailed, register_shell_task, run_shell
from .task import Job, Task, registry
from .timing import (
    DEFAULT_MISFIRE_CAP,
    KINDS,
    MISFIRE_GRACE,
    MISFIRE_POLICIES,
    check_future,
    check_policy,
    check_timing,
    describe,
    fire_times,
    first_fire,
    plan,
    utc_text,
    validate,
    zone_of,
)
from .timing import MAX_MISFIRE_CAP as MAX_MISFIRE_CAP
from .timing import MIN_EVERY as MIN_EVERY
from .validate import (
    UNSET,
    check_positive_int,
    check_seconds,
    check_text,
    short,
    validate_name,
)

__all__ = [
    "Schedule", "ScheduleRun", "Fire", "Scheduler", "schedule", "unschedule", "schedules",
    "get_schedule", "validate", "plan", "fire_times", "describe", "run_shell", "register_shell_task",
    "CommandFailed", "KINDS", "MISFIRE_POLICIES", "DEFAULT_MISFIRE_CAP", "MISFIRE_GRACE",
    "SHELL_TASK", "SHELL_QUEUE",
]

logger = logging.getLogger("liteq.scheduler")

# The bound on a tick (one write transaction). It takes at most TICK_SCHEDULES due
# schedules, and stops taking more once it has enqueued TICK_FIRES fires or run for
# TICK_SECONDS; each schedule plans at most MAX_MISFIRE_CAP fires and walks at most
# _SCAN + MAX_MISFIRE_CAP cron times (both in liteq.timing). So a tick enqueues fewer
# than TICK_FIRES + MAX_MISFIRE_CAP fires and holds the write lock for about
# TICK_SECONDS plus one schedule's work, whatever the rows say; the schedules it left
# are due at once and the next tick (after a pause that lets other writers in) takes
# them.
TICK_SCHEDULES = 1000
TICK_FIRES = 1000
TICK_SECONDS = 0.2
#: Runs of history kept per schedule, pruned by schedulers every _PRUNE_EVERY seconds.
HISTORY_KEEP = 1000
_PRUNE_EVERY = 60.0
_RETRY_BROKEN = 60.0  # a row plan() cannot handle is looked at again this much later


def _safe_plan(row: ScheduleRecord, now: float) -> tuple[list[float], float | None]:
    # An exception here would roll back the whole tick and block every schedule.
    try:
        return plan(row, now)
    except Exception:
        logger.exception("schedule %r (%s %r) cannot be planned; trying again in %g s",
                         row.name, row.kind, row.spec, _RETRY_BROKEN)
        return [], now + _RETRY_BROKEN


# -- the definition of a schedule --------------------------------------------------------

def _target(db: Context, task: Any, queue: Any, args: Any, kwargs: Any, payload: Any,
            command: Any) -> tuple[str, str, Any]:
    """Validate the target; ``(target, queue, payload to enqueue)``. Writes nothing."""
    has_payload = payload is not UNSET
    given = [k for k, v in (("task", task is not None), ("payload", has_payload),
                            ("command", command is not None)) if v]
    if len(given) != 1:
        hint = " (a queue target is queue= with payload=)" if queue is not None else ""
        raise ScheduleError(f"give exactly one target: task=, payload= (with queue=) or "
                            f"command=, got {', '.join(given) or 'none'}{hint}")
    if queue is not None:
        validate_name(queue)
    if (args is not None or kwargs is not None) and task is None:
        raise ScheduleError("args= and kwargs= go with a task= target")
    if task is not None:
        if isinstance(task, Task):
            name, default_queue = task.name, task.queue
        elif isinstance(task, str) and 0 < len(task) <= 200:
            check_text(task, "task name")
            known = registry(db).get(task)
            name, default_queue = task, known.queue if known else "default"
        else:
            raise ScheduleError(f"task must be a registered Task or a task name, got {task!r}")
        if args is None:
            args = []
        if not isinstance(args, (list, tuple)):
            raise ScheduleError(f"args must be a list, got {type(args).__name__}")
        if kwargs is None:
            kwargs = {}
        if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
            raise ScheduleError("kwargs must be a dict with str keys")
        return "task", queue or default_queue, {"task": name, "args": list(args),
                                                "kwargs": kwargs}
    if command is not None:
        if not isinstance(command, str) or not command.strip():
            raise ScheduleError(f"command must be a non-empty string, got {short(command)}")
        check_text(command, "command")
        return "command", queue or SHELL_QUEUE, {"task": SHELL_TASK, "args": [command],
                                                 "kwargs": {}}
    if queue is None:
        raise ScheduleError("a payload= target needs queue=")
    return "queue", queue, payload


def schedule(db: Context, name: str, *, cron: str | None = None, every: Any = None,
             at: Any = None, tz: str | None = None, task: str | Task[Any, Any] | None = None,
             queue: str | None = None, args: Sequence[Any] | None = None,
             kwargs: dict[str, Any] | None = None, payload: Any = UNSET,
             command: str | None = None, misfire: str = "once",
             misfire_cap: int = DEFAULT_MISFIRE_CAP, start: Any = None,
             allow_past: bool = False) -> Schedule:
    """Create or replace schedule *name* (``db.schedule``); return it.

    Timing, exactly one of: *cron* (with *tz*, an IANA name, default UTC), *every*
    (seconds, or a timedelta; the grid is anchored at *start*, default now, first
    fire one interval later) or *at* (a datetime, epoch seconds or ISO 8601 string;
    without an offset, in *tz*). *start*: no fire before it.

    Target, exactly one of: *task* (a Task or task name, with *args* and *kwargs*;
    enqueued on *queue*, else the task's queue, else ``"default"``), *payload* (any
    CBOR value, enqueued as is on *queue*) or *command* (a shell command run by a
    worker started with ``--allow-shell``, on *queue*, default ``"shell"``).

    *misfire* (``skip``, ``once``, ``all`` up to *misfire_cap*): what a scheduler
    that was down does with the fires it missed.

    Declaring a schedule again with the same timing keeps its next fire time (so a
    restart of the app that declares it loses no fire) and its pause; a new timing
    starts over from now. Its history is kept either way. With only *name*, returns
    the existing schedule.

    *every* is at least MIN_EVERY (1 s). An *at* more than MISFIRE_GRACE (60 s) in
    the past is refused unless *allow_past* (or the schedule exists with that very
    timing, as when an app that declares it starts again).

    Raises :class:`~liteq.ScheduleError` naming the field for a bad cron expression,
    time zone or definition, and writes nothing.
    """
    validate_name(name, "schedule")
    nothing = (cron, every, at, tz, task, queue, args, kwargs, command, start)
    if payload is UNSET and all(v is None for v in nothing):
        found = get_schedule(db, name)
        if found is None:
            raise ScheduleError(f"no schedule named {name!r} (give cron=, every= or at= and "
                                f"a target to create it)")
        return found
    now = db.clock()
    kind, spec, tz_name, first = check_timing(cron, every, at, tz, start, now)
    target, queue_name, value = _target(db, task, queue, args, kwargs, payload, command)
    policy, cap = check_policy(misfire, misfire_cap)
    blob = codec.encode(value, db.max_payload)
    store = db.backend
    with db.transaction():
        # Unchanged timing keeps the stored next_run_at: the upsert decides that itself,
        # so it holds with concurrent writers; this read only spares the past-time
        # check to a schedule whose timing is not changing.
        old = store.schedule(name)
        same = old is not None and (old.kind, old.spec, old.tz) == (kind, spec, tz_name)
        if kind == "at" and not allow_past and not same:
            check_future(spec, first, now)  # raising here rolls back: nothing written
        row = store.schedule_upsert({
            "name": name, "kind": kind, "spec": spec, "tz": tz_name, "target": target,
            "queue": queue_name, "payload": blob, "misfire": policy, "misfire_cap": cap,
            "next_run_at": first,
        })
    return Schedule(db, row)


def get_schedule(db: Context, name: str) -> Schedule | None:
    """Schedule *name*, or None."""
    row = db.backend.schedule(name)
    return None if row is None else Schedule(db, row)


def schedules(db: Context) -> list[Schedule]:
    """Every schedule in the file, by name."""
    return [Schedule(db, row) for row in db.backend.schedules()]


def unschedule(db: Context, name: str) -> bool:
    """Delete schedule *name* and its history; False if there was none. Messages it
    already enqueued stay."""
    return db.backend.schedule_delete(name)


# -- schedule objects ------------------------------------------------------------------

class Schedule:
    """A snapshot of one schedule (``db.schedule(...)``, ``db.schedules()``).

    Attributes are as read; :meth:`refresh` reads them again. Fire times are epoch
    seconds; :meth:`next` gives datetimes in the schedule's time zone.
    """

    def __init__(self, db: Context, row: ScheduleRecord) -> None:
        self.db = db
        self._load(row)

    def _load(self, row: ScheduleRecord) -> None:
        self.id: int = row.id
        self.name: str = row.name
        self.kind: str = row.kind
        self.spec: str = row.spec
        self.tz: str | None = row.tz
        self.target: str = row.target
        self.queue: str = row.queue
        try:
            self.payload: Any = codec.decode(row.payload)
        except LiteqError as exc:
            self.payload = {"$error": str(exc)}
        self.misfire: str = row.misfire
        self.misfire_cap: int = row.misfire_cap
        self.enabled: bool = bool(row.enabled)
        self.next_run_at: float | None = row.next_run_at
        self.last_run_at: float | None = row.last_run_at
        self.last_job_id: int | None = row.last_job_id
        self.created_at: float = row.created_at
        self.updated_at: float = row.updated_at

    @property
    def paused(self) -> bool:
        return not self.enabled

    @property
    def state(self) -> str:
        """``active``, ``paused``, or ``finished`` (nothing left to fire)."""
        if self.next_run_at is None:
            return "finished"
        return "active" if self.enabled else "paused"

    @property
    def task(self) -> str | None:
        """The task a task (or command) target runs."""
        return self.payload.get("task") if self.target != "queue" else None

    @property
    def args(self) -> list[Any] | None:
        return self.payload.get("args") if self.target == "task" else None

    @property
    def kwargs(self) -> dict[str, Any] | None:
        return self.payload.get("kwargs") if self.target == "task" else None

    @property
    def command(self) -> str | None:
        return self.payload["args"][0] if self.target == "command" else None

    @property
    def description(self) -> str:
        """The timing in words (cronsim's explain() for cron expressions)."""
        return describe(self.kind, self.spec, self.tz)

    @property
    def zone(self) -> ZoneInfo:
        return zone_of(self.tz)

    def next(self, n: int = 5) -> list[dt.datetime]:
        """The next *n* fire times, in the schedule's time zone (UTC for ``every``).

        A paused schedule shows those it would have once resumed now. *n* is at
        most 1000.
        """
        check_positive_int(n, "n", most=1000)
        first = self.next_run_at
        if self.paused and self.kind != "at":
            first = first_fire(self.kind, self.spec, self.zone, self.db.clock(), first)
        return [dt.datetime.fromtimestamp(t, self.zone)
                for t in fire_times(self.kind, self.spec, self.tz, first, n)]

    def pause(self) -> Schedule:
        """Stop firing (a scheduler skips it) until :meth:`resume`."""
        if not self.db.backend.schedule_enable(self.name, False, None):
            raise ScheduleError(f"no schedule named {self.name!r}")
        return self.refresh()

    def resume(self) -> Schedule:
        """Fire again, from the next time after now: fires that fell while paused are
        not made up (an ``at`` schedule resumed after its time follows its misfire
        policy)."""
        nxt = None
        if self.kind != "at":
            base = self.next_run_at if self.kind == "every" else None
            nxt = first_fire(self.kind, self.spec, self.zone, self.db.clock(), base)
        if not self.db.backend.schedule_enable(self.name, True, nxt):
            raise ScheduleError(f"no schedule named {self.name!r}")
        return self.refresh()

    def run_now(self) -> Job:
        """Fire once now, outside the timing (paused or not); return the job."""
        fired = self.db.backend.schedule_tick(_safe_plan, only=self.name, fire_now=True)
        if not fired:
            self.refresh()  # raises if it was deleted
            # schedule_runs already holds a fire for this very instant
            raise ScheduleError(f"schedule {self.name!r} already fired at this instant; "
                                f"nothing was enqueued")
        self.refresh()
        return Job(self.db, fired[-1].job_id, task=self.task)

    def history(self, limit: int = 20) -> list[ScheduleRun]:
        """The last *limit* fires, newest first."""
        check_positive_int(limit, "limit")
        return self.db.backend.schedule_runs(self.name, limit)

    def delete(self) -> bool:
        """Delete this schedule and its history (``db.unschedule(name)``)."""
        return unschedule(self.db, self.name)

    def refresh(self) -> Schedule:
        """Read the row again (raises ScheduleError if it was deleted)."""
        row = self.db.backend.schedule(self.name)
        if row is None:
            raise ScheduleError(f"no schedule named {self.name!r} (it was deleted)")
        self._load(row)
        return self

    def __repr__(self) -> str:
        what = f"{self.kind} {self.spec!r}" + (f" {self.tz}" if self.tz else "")
        return f"<Schedule {self.name} {what} -> {self.target} {self.queue!r} {self.state}>"


# -- the scheduler ---------------------------------------------------------------------

_MIN_RECHECK = 0.05  # after a wake-up by someone's commit, look again no sooner than this


class Scheduler:
    """Fires the due schedules of *db*, forever: ``Scheduler(db).run()``.

    Run as many as you like on one file (``liteq scheduler``, ``liteq worker
    --scheduler``): each fire is enqueued once. It sleeps until the next due time,
    at most *interval* seconds, and wakes early when another process commits (a new
    schedule may be due sooner).
    """

    def __init__(self, db: Context, interval: float = 1.0, *,
                 heartbeat: float = DEFAULT_HEARTBEAT) -> None:
        seconds = check_seconds(interval, "interval")
        if not seconds:
            raise InvalidArgument(f"interval must be a number of seconds > 0, got {interval!r}")
        self.db = db
        self.interval = seconds
        self.fired = 0
        self._pruned_at = time.monotonic()
        self._stop = threading.Event()
        self._pipe: tuple[int, int] | None = None
        self._outage = Outage("scheduler", logger)
        #: Its row in the workers registry (``liteq workers``), kept while it runs.
        self.registration = Registration(db, "scheduler", queues=[], pool="", concurrency=0,
                                         interval=check_seconds(heartbeat, "heartbeat")
                                         or DEFAULT_HEARTBEAT)

    def tick(self) -> list[Fire]:
        """Fire every due schedule once per due fire time; return what was enqueued."""
        fires = self.db.backend.schedule_tick(
            _safe_plan, limits=(TICK_SCHEDULES, TICK_FIRES, TICK_SECONDS))
        for f in fires:
            logger.info("schedule %s fired for %s: job %d", f.schedule, utc_text(f.fire_at),
                        f.job_id)
        self.fired += len(fires)
        if time.monotonic() - self._pruned_at > _PRUNE_EVERY:
            # schedule_runs would otherwise grow forever (86,400 rows a day for a
            # per-second schedule); keep each schedule's newest runs.
            self._pruned_at = time.monotonic()
            self.db.backend.prune_schedule_runs(keep=HISTORY_KEEP)
        return fires

    def run(self, stop_event: threading.Event | None = None) -> None:
        """Tick until :meth:`stop` (or *stop_event* is set); errors are logged and
        retried after *interval*."""
        self._stop.clear()
        read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)
        self._pipe = (read_fd, write_fd)
        waiter = self.db.waiter()
        try:
            while not self._stopped(stop_event):
                self.registration.maybe_beat()
                waiter.arm()  # before reading: a commit after the read wakes the wait
                try:
                    due = self.db.backend.next_schedule_due()
                    self._outage.ok()
                    if due <= self.db.clock():
                        began = time.monotonic()
                        fires = self.tick()
                        if len(fires) >= TICK_FIRES or time.monotonic() - began >= TICK_SECONDS:
                            # Cut short (see TICK_SECONDS): let other writers take
                            # the lock before the next tick goes on.
                            wait_readable([read_fd], _MIN_RECHECK)
                        continue
                except StorageError as exc:
                    if isinstance(exc, DatabaseBusy):
                        logger.exception("scheduler tick failed; trying again in %g s",
                                         self.interval)
                        due = self.db.clock() + self.interval
                    else:  # the database is away (a PostgreSQL restart): logged once
                        due = self.db.clock() + self._outage.failed(exc)
                except Exception:  # a locked or broken file must not end the loop
                    logger.exception("scheduler tick failed; trying again in %g s",
                                     self.interval)
                    due = self.db.clock() + self.interval
                delay = min(self.interval, due - self.db.clock() + 0.001)
                if stop_event is not None:
                    delay = min(delay, 0.25)  # an outside event cannot wake the select
                began = time.monotonic()
                if waiter.fd >= 0:
                    wait_readable([waiter.fd, read_fd], max(0.0, delay))
                    early = delay - (time.monotonic() - began)
                    if early > 0:  # woken by a commit: do not spin on a busy file
                        wait_readable([read_fd], min(_MIN_RECHECK, early))
                else:
                    wait_readable([read_fd], max(0.0, delay))
        finally:
            self.registration.stop()
            self._pipe = None
            for fd in (read_fd, write_fd):
                with contextlib.suppress(OSError):
                    os.close(fd)

    def _stopped(self, stop_event: threading.Event | None) -> bool:
        return self._stop.is_set() or (stop_event is not None and stop_event.is_set())

    def stop(self) -> None:
        """Make :meth:`run` return soon. Safe from any thread or a signal handler."""
        self._stop.set()
        pipe = self._pipe
        if pipe is not None:
            with contextlib.suppress(OSError):
                os.write(pipe[1], b"x")

    def __repr__(self) -> str:
        return f"<Scheduler {self.db.path!r} interval={self.interval:g}>"
