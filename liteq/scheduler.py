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

Timing:

* ``cron``: five fields, or six with seconds first (``"*/15 * * * * *"``), or an
  ``@hourly``/``@daily``/``@weekly``/``@monthly``/``@yearly`` alias, evaluated by
  cronsim in ``tz`` (an IANA name; default UTC). DST is cronsim's (Debian cron's): a
  job at a fixed local time that falls in the spring-forward gap runs when the gap
  ends; one in the repeated fall-back hour runs once, at its first occurrence; jobs
  with a wildcard minute or hour (``"30 * * * *"``) follow real elapsed time.
* ``every``: every N seconds, on a grid anchored at ``start`` (default: first fire
  N seconds from now).
* ``at``: once, at an instant. Times without an offset are in ``tz`` (default UTC).

Misfires: when a scheduler comes back after the fires ``F1 < ... < Fk <= now`` were
due, the latest, ``Fk``, is *on time* if it is at most the grace late (60 s, or half
the gap to the next fire if that is shorter); the policy then decides:

======= =================================================================
skip    fire ``Fk`` if on time, else nothing; go on with the next future time
once    fire ``Fk`` (one fire, however many were missed)
all     fire every one of them, the latest ``misfire_cap`` if there are more
======= =================================================================
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import logging
import math
import os
import select
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from . import codec
from .backends.records import Fire, ScheduleRecord, ScheduleRun
from .context import Context
from .errors import InvalidArgument, LiteqError, ScheduleError
from .shell import SHELL_QUEUE, SHELL_TASK, CommandFailed, register_shell_task, run_shell
from .task import Job, Task, registry
from .validate import (
    MAX_INSTANT,
    MAX_SECONDS,
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

KINDS = ("cron", "every", "at")
MISFIRE_POLICIES = ("skip", "once", "all")
#: Most fires one catch-up of a ``misfire="all"`` schedule enqueues (the latest ones).
DEFAULT_MISFIRE_CAP = 100
#: The largest misfire_cap accepted (a stored one above it counts as this).
MAX_MISFIRE_CAP = 1000
#: The shortest ``every`` accepted, in seconds. A scheduler looks about once a second
#: and each fire is a transaction and a message: work more often than this belongs in
#: a loop of its own. A stored interval below it (an old version, a hand-written row)
#: fires at this interval.
MIN_EVERY = 1.0

# The bound on a tick (one write transaction). It takes at most TICK_SCHEDULES due
# schedules, and stops taking more once it has enqueued TICK_FIRES fires or run for
# TICK_SECONDS; each schedule plans at most MAX_MISFIRE_CAP fires and walks at most
# _SCAN + MAX_MISFIRE_CAP cron times. So a tick enqueues fewer than TICK_FIRES +
# MAX_MISFIRE_CAP fires and holds the write lock for about TICK_SECONDS plus one
# schedule's work, whatever the rows say; the schedules it left are due at once and
# the next tick (after a pause that lets other writers in) takes them.
TICK_SCHEDULES = 1000
TICK_FIRES = 1000
TICK_SECONDS = 0.2
#: A fire at most this late (or half the gap to the next fire, if shorter) is on time.
MISFIRE_GRACE = 60.0
#: Runs of history kept per schedule, pruned by schedulers every _PRUNE_EVERY seconds.
HISTORY_KEEP = 1000
_PRUNE_EVERY = 60.0

_ALIASES = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_SCAN = 1000  # missed cron fires walked forward before jumping back from now
_RETRY_BROKEN = 60.0  # a row plan() cannot handle is looked at again this much later



# -- time: zones, instants, cron ------------------------------------------------------

def _zone(tz: Any) -> ZoneInfo:
    if tz is None:
        return ZoneInfo("UTC")
    if isinstance(tz, ZoneInfo):
        return tz
    if tz is dt.UTC:
        return ZoneInfo("UTC")
    try:
        if not isinstance(tz, str) or not tz:
            raise ValueError
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ScheduleError(
            f"tz {tz!r} is not a known time zone: give an IANA name such as "
            f"'Europe/Berlin', 'America/New_York' or 'UTC'") from None


def _moment(value: Any, zone: ZoneInfo, what: str) -> dt.datetime:
    """*value* as an aware datetime: a datetime, epoch seconds (UTC), or an ISO 8601
    string; a time without an offset is in *zone*."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        _check_instant(value, what)
        return dt.datetime.fromtimestamp(value, dt.UTC)
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            raise ScheduleError(
                f"{what} {short(value)} is not an ISO 8601 time (e.g. 2030-01-31T09:00:00+01:00, "
                f"2030-01-31 09:00 with tz=..., or ...Z for UTC)") from None
    if isinstance(value, dt.datetime):
        moment = value.replace(tzinfo=zone) if value.tzinfo is None else value
        try:
            instant = moment.timestamp()
        except (OverflowError, ValueError):  # year 1 in a zone east of UTC
            instant = -1.0
        _check_instant(instant, what, value)
        return moment
    raise ScheduleError(f"{what} must be a datetime, epoch seconds or an ISO 8601 string, "
                        f"got {value!r}")


def _check_instant(instant: float, what: str, given: Any = None) -> None:
    if not 0 <= instant <= MAX_INSTANT:  # NaN fails too
        raise ScheduleError(
            f"{what} must be a time from 1970-01-01 to 3000-01-01 UTC (epoch seconds 0 to "
            f"{MAX_INSTANT:.0f}), got {short(instant if given is None else given)}")


def _every(spec: str) -> float:
    """A stored interval, raised to MIN_EVERY (ValueError if it is not a finite number)."""
    every = float(spec)
    if not math.isfinite(every):
        raise ValueError(f"interval {spec!r} is not a finite number")
    return max(every, MIN_EVERY)


def _instant(value: Any, zone: ZoneInfo, what: str) -> float:
    return _moment(value, zone, what).timestamp()


def _expand(expr: str) -> str:
    return _ALIASES.get(expr.strip().lower(), expr)


def _check_cron(expr: Any, zone: ZoneInfo, now: float) -> str:
    if not isinstance(expr, str) or not expr.strip():
        raise ScheduleError(f"cron expression must be a non-empty string, got {expr!r}")
    expr = " ".join(expr.split())
    try:
        it = CronSim(_expand(expr), dt.datetime.fromtimestamp(now, zone))
        next(it)
    except StopIteration:
        raise ScheduleError(f"cron expression {expr!r} never fires (no match in 50 years)") \
            from None
    except (CronSimError, ValueError, IndexError, KeyError) as exc:
        raise ScheduleError(
            f"cron expression {expr!r} is invalid: {exc or type(exc).__name__} (five fields: "
            f"minute hour day-of-month month day-of-week; or six with seconds first; or "
            f"@hourly, @daily, @weekly, @monthly, @yearly)") from None
    return expr


def _cron_after(expr: str, zone: ZoneInfo, after: float) -> Iterator[float]:
    """Fire times of *expr* strictly after *after*, ascending (cronsim's DST rules)."""
    try:
        it = CronSim(_expand(expr), dt.datetime.fromtimestamp(after, zone))
        last = after
        for when in it:
            t = when.timestamp()
            # After a fall-back, a fixed-time job's naive walk can land before the
            # start (the first occurrence of the repeated hour): never go backwards.
            if t > last:
                last = t
                yield t
    except StopIteration:
        return


def _cron_back(expr: str, zone: ZoneInfo, until: float) -> Iterator[float]:
    """Fire times of *expr* at or before *until*, newest first."""
    start = dt.datetime.fromtimestamp(math.floor(until) + 1, zone)
    last = math.inf
    for when in CronSim(_expand(expr), start, reverse=True):
        t = when.timestamp()
        if t <= until and t < last:
            last = t
            yield t


def fire_times(kind: str, spec: str, tz: str | None, first: float | None,
               n: int) -> list[float]:
    """The next *n* fire times (epoch seconds) of a schedule whose next fire is *first*."""
    if first is None or n < 1:
        return []
    out = [first]
    if kind == "every":
        every = _every(spec)
        out += [first + k * every for k in range(1, n)]
    elif kind == "cron":
        it = _cron_after(spec, _zone(tz), first)
        out += [t for _, t in zip(range(n - 1), it, strict=False)]
    return out


def _first_fire(kind: str, spec: str, zone: ZoneInfo, now: float,
                start: float | None) -> float | None:
    """When a new (or changed, or resumed) schedule fires first."""
    if kind == "at":
        return _instant(spec, zone, "at")
    if kind == "every":
        every = _every(spec)
        if start is None:
            return now + every
        if start >= now:
            return start
        k = math.ceil((now - start) / every)  # the first grid point at or after now
        while start + (k - 1) * every >= now:
            k -= 1
        while start + k * every < now:
            k += 1
        return start + k * every
    after = now if start is None or start <= now else start - 1e-6
    return next(_cron_after(spec, zone, after), None)


def describe(kind: str, spec: str, tz: str | None) -> str:
    """People's words for a schedule's timing (cronsim's ``explain()`` for cron)."""
    if kind == "cron":
        try:
            text = CronSim(_expand(spec), dt.datetime.now(dt.UTC)).explain()
        except Exception:  # explain() does not cover every expression
            text = f"cron {spec}"
        return f"{text} ({tz or 'UTC'})"
    if kind == "every":
        return f"every {_seconds_text(float(spec))}"
    return f"once, at {spec}"


def _seconds_text(s: float) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if s >= size and s % size == 0:
            n = int(s // size)
            return f"{n} {unit}" if n == 1 else f"{n} {unit}s"
    return "second" if s == 1 else f"{s:g} seconds"


# -- the misfire policy ----------------------------------------------------------------

def plan(row: ScheduleRecord, now: float) -> tuple[list[float], float | None]:
    """``(fire_times, next_run_at)`` for a due schedule: the misfire policy.

    Called by ``Backend.schedule_tick`` inside its transaction for each row whose
    ``next_run_at <= now``. Fire times are those in ``[next_run_at, now]``; see the
    module docstring for what each policy fires.
    """
    kind, spec, first = row.kind, row.spec, row.next_run_at
    if first is None or first > now:
        return [], first
    policy, cap = row.misfire, min(max(1, int(row.misfire_cap)), MAX_MISFIRE_CAP)
    keep = cap if policy == "all" else 1
    nxt: float | None
    if kind == "at":
        missed, nxt = [first], None
    elif kind == "every":
        every = _every(spec)
        k = math.floor((now - first) / every)  # index of the latest fire at or before now
        while k > 0 and first + k * every > now:
            k -= 1
        while first + (k + 1) * every <= now:
            k += 1
        missed = [first + i * every for i in range(max(0, k + 1 - keep), k + 1)]
        nxt = first + (k + 1) * every
    else:
        missed, nxt = _cron_missed(spec, _zone(row.tz), first, now, keep)
    latest = missed[-1]
    if policy == "all":
        return missed, nxt
    if policy == "once":
        return [latest], nxt
    grace = MISFIRE_GRACE if nxt is None else min(MISFIRE_GRACE, (nxt - latest) / 2)
    return ([latest] if now - latest <= grace else []), nxt


def _cron_missed(expr: str, zone: ZoneInfo, first: float, now: float,
                 keep: int) -> tuple[list[float], float | None]:
    """The latest *keep* fires in ``[first, now]`` and the first fire after *now*."""
    missed: collections.deque[float] = collections.deque([first], maxlen=keep)
    it = _cron_after(expr, zone, first)
    for _ in range(_SCAN):
        t = next(it, None)
        if t is None or t > now:
            return list(missed), t
        missed.append(t)
    # Down for a long time: walk back from now rather than forward from first.
    back = [t for _, t in zip(range(keep), _cron_back(expr, zone, now), strict=False)
            if t >= first]
    return sorted(back) or list(missed), next(_cron_after(expr, zone, now), None)


def _safe_plan(row: ScheduleRecord, now: float) -> tuple[list[float], float | None]:
    # An exception here would roll back the whole tick and block every schedule.
    try:
        return plan(row, now)
    except Exception:
        logger.exception("schedule %r (%s %r) cannot be planned; trying again in %g s",
                         row.name, row.kind, row.spec, _RETRY_BROKEN)
        return [], now + _RETRY_BROKEN


# -- the definition of a schedule --------------------------------------------------------

def _timing(cron: Any, every: Any, at: Any, tz: Any, start: Any,
            now: float) -> tuple[str, str, str | None, float | None]:
    """Validate the timing; ``(kind, spec, tz, first fire)``. Writes nothing."""
    given = [k for k, v in (("cron", cron), ("every", every), ("at", at)) if v is not None]
    if len(given) != 1:
        raise ScheduleError(f"give exactly one of cron=, every= or at=, got "
                            f"{', '.join(given) or 'none'}")
    kind = given[0]
    if tz is not None and kind == "every":
        raise ScheduleError("tz applies to cron and at schedules, not to every=")
    zone = _zone(tz)
    tz_name: str | None = zone.key if kind == "cron" or tz is not None else None
    first_start = None if start is None else _instant(start, zone, "start")
    if kind == "cron":
        spec = _check_cron(cron, zone, now)
    elif kind == "every":
        if isinstance(every, dt.timedelta):
            every = every.total_seconds()
        if isinstance(every, bool) or not isinstance(every, (int, float)) \
                or not MIN_EVERY <= every <= MAX_SECONDS:  # NaN fails too
            raise ScheduleError(
                f"every must be a number of seconds from {MIN_EVERY:g} to {MAX_SECONDS:.0f}, "
                f"got {short(every)} (liteq's schedules fire at most once a second)")
        spec = repr(float(every))
    else:
        if start is not None:
            raise ScheduleError("start applies to cron and every schedules, not to at=")
        moment = _moment(at, zone, "at")
        spec = (moment.astimezone(zone) if tz is not None else moment).isoformat()
    return kind, spec, tz_name, _first_fire(kind, spec, zone, now, first_start)


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


def _policy(misfire: Any, misfire_cap: Any) -> tuple[str, int]:
    if misfire not in MISFIRE_POLICIES:
        raise ScheduleError(f"misfire must be one of skip, once, all; got {misfire!r}")
    if isinstance(misfire_cap, bool) or not isinstance(misfire_cap, int) \
            or not 1 <= misfire_cap <= MAX_MISFIRE_CAP:
        raise ScheduleError(f"misfire_cap must be an integer from 1 to {MAX_MISFIRE_CAP}, "
                            f"got {short(misfire_cap)}")
    return misfire, misfire_cap


def validate(*, cron: Any = None, every: Any = None, at: Any = None, tz: Any = None,
             start: Any = None, misfire: Any = "once",
             misfire_cap: Any = DEFAULT_MISFIRE_CAP, now: float | None = None,
             allow_past: bool = False) -> None:
    """Check a schedule's timing and policy without a database (the CLI's first step)."""
    now = time.time() if now is None else now
    kind, spec, _, first = _timing(cron, every, at, tz, start, now)
    _policy(misfire, misfire_cap)
    if kind == "at" and not allow_past:
        _check_future(spec, first, now)


def _check_future(spec: str, first: float | None, now: float) -> None:
    # A fire this late would still be on time (MISFIRE_GRACE): "now" typed to the
    # minute is not refused.
    if first is not None and first < now - MISFIRE_GRACE:
        raise ScheduleError(
            f"at {spec} is in the past (now {_utc(now)}); pass allow_past=True "
            f"(liteq schedule add --allow-past) to create it anyway: it then fires at once, "
            f"or not at all with misfire='skip'")


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
    kind, spec, tz_name, first = _timing(cron, every, at, tz, start, now)
    target, queue_name, value = _target(db, task, queue, args, kwargs, payload, command)
    policy, cap = _policy(misfire, misfire_cap)
    blob = codec.encode(value, db.max_payload)
    store = db.backend
    with db.transaction():
        # Unchanged timing keeps the stored next_run_at: the upsert decides that itself,
        # so it holds with concurrent writers; this read only spares the past-time
        # check to a schedule whose timing is not changing.
        old = store.schedule(name)
        same = old is not None and (old.kind, old.spec, old.tz) == (kind, spec, tz_name)
        if kind == "at" and not allow_past and not same:
            _check_future(spec, first, now)  # raising here rolls back: nothing written
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
        return _zone(self.tz)

    def next(self, n: int = 5) -> list[dt.datetime]:
        """The next *n* fire times, in the schedule's time zone (UTC for ``every``).

        A paused schedule shows those it would have once resumed now. *n* is at
        most 1000.
        """
        check_positive_int(n, "n", most=1000)
        first = self.next_run_at
        if self.paused and self.kind != "at":
            first = _first_fire(self.kind, self.spec, self.zone, self.db.clock(), first)
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
            nxt = _first_fire(self.kind, self.spec, self.zone, self.db.clock(), base)
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

    def __init__(self, db: Context, interval: float = 1.0) -> None:
        seconds = check_seconds(interval, "interval")
        if not seconds:
            raise InvalidArgument(f"interval must be a number of seconds > 0, got {interval!r}")
        self.db = db
        self.interval = seconds
        self.fired = 0
        self._pruned_at = time.monotonic()
        self._stop = threading.Event()
        self._pipe: tuple[int, int] | None = None

    def tick(self) -> list[Fire]:
        """Fire every due schedule once per due fire time; return what was enqueued."""
        fires = self.db.backend.schedule_tick(
            _safe_plan, limits=(TICK_SCHEDULES, TICK_FIRES, TICK_SECONDS))
        for f in fires:
            logger.info("schedule %s fired for %s: job %d", f.schedule, _utc(f.fire_at),
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
                waiter.arm()  # before reading: a commit after the read wakes the wait
                try:
                    due = self.db.backend.next_schedule_due()
                    if due <= self.db.clock():
                        began = time.monotonic()
                        fires = self.tick()
                        if len(fires) >= TICK_FIRES or time.monotonic() - began >= TICK_SECONDS:
                            # Cut short (see TICK_SECONDS): let other writers take
                            # the lock before the next tick goes on.
                            select.select([read_fd], [], [], _MIN_RECHECK)
                        continue
                except Exception:  # a locked or broken file must not end the loop
                    logger.exception("scheduler tick failed; trying again in %g s",
                                     self.interval)
                    due = self.db.clock() + self.interval
                delay = min(self.interval, due - self.db.clock() + 0.001)
                if stop_event is not None:
                    delay = min(delay, 0.25)  # an outside event cannot wake the select
                began = time.monotonic()
                if waiter.fd >= 0:
                    select.select([waiter.fd, read_fd], [], [], max(0.0, delay))
                    early = delay - (time.monotonic() - began)
                    if early > 0:  # woken by a commit: do not spin on a busy file
                        select.select([read_fd], [], [], min(_MIN_RECHECK, early))
                else:
                    select.select([read_fd], [], [], max(0.0, delay))
        finally:
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


def _utc(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="milliseconds")
