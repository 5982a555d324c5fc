"""Flow control's values, checked at the edge (issue 19): rate limits and concurrency caps.

A **rate limit** is a token bucket kept in the database: ``"50/s"`` (also ``/m``,
``/h``) refills 50 tokens a second, each job start takes one, and the bucket holds at
most *burst* tokens (``"50/s burst 10"``; by default a tenth of a second's worth,
at least 1), so after a quiet spell at most *burst* jobs start at once. A **concurrency
cap** (``max_concurrency=N``) allows at most N jobs of a task under a lease at once,
across every worker; with a concurrency key, N per key.

Both are enforced by the engines inside the claim's transaction
(``liteq/backends/*/flow.py``); this module only parses and checks what users give.
A leaf module (errors and validation only), so that options, tasks and the CLI can read it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from .errors import InvalidArgument
from .validate import INT64_MAX, check_text, short

__all__ = ["RateLimit", "FlowSpec", "check_rate_limit", "check_max_concurrency",
           "check_concurrency_key", "PERIODS", "MAX_RATE"]

#: The periods a rate limit may name, in seconds.
PERIODS: dict[str, float] = {"s": 1.0, "m": 60.0, "h": 3600.0}
#: The highest rate accepted, per second (far beyond what one database can start).
MAX_RATE = 1e6

_SYNTAX = re.compile(
    r"\s*(?P<n>\d+(?:\.\d+)?)\s*/\s*(?P<per>[smh])\s*(?:burst\s+(?P<burst>\d+)\s*)?",
    re.IGNORECASE)
_HOW = ("a rate limit is a string like '100/s', '30/m' or '500/h', optionally with a "
        "burst: '100/s burst 10'")


@dataclass(frozen=True)
class RateLimit:
    """A parsed rate limit: *rate* tokens per second, at most *burst* stored."""

    #: Tokens added per second.
    rate: float
    #: The most tokens the bucket holds (jobs that may start at once after a pause).
    burst: float
    #: As the user wrote it (shown by ``liteq stats`` and ``queue config``).
    text: str

    @classmethod
    def from_columns(cls, rate: float | None, burst: float | None) -> RateLimit | None:
        """The limit stored as *rate* (per second) and *burst*; None if none."""
        if rate is None:
            return None
        burst = float(burst if burst is not None else default_burst(rate))
        return cls(float(rate), burst, describe(float(rate), burst))

    def __str__(self) -> str:
        return self.text


def default_burst(rate: float) -> float:
    """A tenth of a second's tokens, at least 1: jobs that start a little late (a
    worker's wake-up) catch up instead of being lost to the rate."""
    return float(max(1, math.floor(rate / 10)))


def describe(rate: float, burst: float) -> str:
    """``"50/s"``, ``"30/m burst 2"``: a stored rate in the shortest period that keeps
    it a whole number (else per hour), with its burst unless that is the default."""
    text = f"{rate * 3600:g}/h"
    for per, seconds in PERIODS.items():
        n = rate * seconds
        if n >= 1 and abs(n - round(n)) <= 1e-9 * n:
            text = f"{round(n)}/{per}"
            break
    if burst != default_burst(rate):
        text += f" burst {burst:g}"
    return text


def check_rate_limit(value: Any, what: str = "rate_limit") -> RateLimit | None:
    """*value* (``"100/s"``, ``"30/m"``, ``"500/h"``, ``"100/s burst 10"``, or None)
    parsed; anything else raises InvalidArgument saying how to write one."""
    if value is None:
        return None
    if isinstance(value, RateLimit):
        return value
    if not isinstance(value, str):
        raise InvalidArgument(f"{what} must be a string or None, got {short(value)}: {_HOW}")
    found = _SYNTAX.fullmatch(value)
    if found is None:
        raise InvalidArgument(f"{what} {value!r} is not understood: {_HOW}")
    n = float(found["n"])
    rate = n / PERIODS[found["per"].lower()]
    if n <= 0 or rate > MAX_RATE:
        raise InvalidArgument(f"{what} {value!r} must allow more than 0 and at most "
                              f"{MAX_RATE:.0f} jobs a second: {_HOW}")
    burst = float(found["burst"]) if found["burst"] is not None else default_burst(rate)
    if not 1 <= burst <= INT64_MAX:
        raise InvalidArgument(f"{what} {value!r}: the burst must be at least 1: {_HOW}")
    return RateLimit(rate, burst, describe(rate, burst))


def check_max_concurrency(value: Any, what: str = "max_concurrency") -> int | None:
    """*value* as a cap of running jobs (an int >= 1), or None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= INT64_MAX:
        raise InvalidArgument(f"{what} must be a whole number of jobs >= 1 (or None for no "
                              f"cap), got {short(value)}")
    return value


def check_concurrency_key(value: Any, task: str) -> str:
    """A job's concurrency key (what a task's ``concurrency_key`` callable returned, or
    ``enqueue(concurrency_key=...)``): a non-empty string of up to 200 characters."""
    if not isinstance(value, str) or not value or len(value) > 200:
        raise InvalidArgument(
            f"the concurrency key of a job of task {task} must be a non-empty string of up "
            f"to 200 characters, got {short(value)}")
    check_text(value, "concurrency key")
    return value


@dataclass(frozen=True)
class FlowSpec:
    """A task's limits, as stored in the ``flows`` table under its name."""

    #: The task's name (the row's key).
    name: str
    #: At most this many of its jobs under a lease at once (per concurrency key, if its
    #: jobs carry one); None: no cap.
    max_concurrency: int | None
    #: Its rate limit; None: none.
    rate: RateLimit | None
