"""Schedules' timing: time zones, instants, cron (by cronsim), fire times, people's
words for them, checking a definition's timing and policy, and the misfire policy
(:func:`plan`, called inside a scheduler's tick). No database here: the schedules and
the scheduler loop are :mod:`liteq.scheduler`.

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
import datetime as dt
import math
import time
from collections.abc import Iterator
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from .backends.records import ScheduleRecord
from .errors import ScheduleError
from .validate import MAX_INSTANT, MAX_SECONDS, short

__all__ = [
    "KINDS", "MISFIRE_POLICIES", "DEFAULT_MISFIRE_CAP", "MAX_MISFIRE_CAP", "MIN_EVERY",
    "MISFIRE_GRACE", "zone_of", "fire_times", "first_fire", "describe", "plan",
    "check_timing", "check_policy", "check_future", "validate", "utc_text",
]

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

#: A fire at most this late (or half the gap to the next fire, if shorter) is on time.
MISFIRE_GRACE = 60.0

_ALIASES = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_SCAN = 1000  # missed cron fires walked forward before jumping back from now


# -- time: zones, instants, cron ------------------------------------------------------

def zone_of(tz: Any) -> ZoneInfo:
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
        it = _cron_after(spec, zone_of(tz), first)
        out += [t for _, t in zip(range(n - 1), it, strict=False)]
    return out


def first_fire(kind: str, spec: str, zone: ZoneInfo, now: float,
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
        missed, nxt = _cron_missed(spec, zone_of(row.tz), first, now, keep)
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


# -- checking a definition's timing and policy --------------------------------------

def check_timing(cron: Any, every: Any, at: Any, tz: Any, start: Any,
            now: float) -> tuple[str, str, str | None, float | None]:
    """Validate the timing; ``(kind, spec, tz, first fire)``. Writes nothing."""
    given = [k for k, v in (("cron", cron), ("every", every), ("at", at)) if v is not None]
    if len(given) != 1:
        raise ScheduleError(f"give exactly one of cron=, every= or at=, got "
                            f"{', '.join(given) or 'none'}")
    kind = given[0]
    if tz is not None and kind == "every":
        raise ScheduleError("tz applies to cron and at schedules, not to every=")
    zone = zone_of(tz)
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
    return kind, spec, tz_name, first_fire(kind, spec, zone, now, first_start)


def check_policy(misfire: Any, misfire_cap: Any) -> tuple[str, int]:
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
    kind, spec, _, first = check_timing(cron, every, at, tz, start, now)
    check_policy(misfire, misfire_cap)
    if kind == "at" and not allow_past:
        check_future(spec, first, now)


def check_future(spec: str, first: float | None, now: float) -> None:
    # A fire this late would still be on time (MISFIRE_GRACE): "now" typed to the
    # minute is not refused.
    if first is not None and first < now - MISFIRE_GRACE:
        raise ScheduleError(
            f"at {spec} is in the past (now {utc_text(now)}); pass allow_past=True "
            f"(liteq schedule add --allow-past) to create it anyway: it then fires at once, "
            f"or not at all with misfire='skip'")


def utc_text(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="milliseconds")
