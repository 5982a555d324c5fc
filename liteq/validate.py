"""Validation at the edge: the checks every public call makes on its arguments.

Each function returns the value it was given (normalised, e.g. seconds as a float)
or raises :class:`~liteq.InvalidArgument` with a message that says what is allowed.
They live here, public, so that every module (and the CLI) checks the same way.
"""

from __future__ import annotations

import math
import re
from typing import Any

from .errors import InvalidArgument

__all__ = [
    "UNSET", "PRIORITY_LIMIT", "INT64_MIN", "INT64_MAX", "MAX_SECONDS", "MAX_INSTANT", "MAX_EXTEND",
    "validate_name", "check_seconds", "check_positive_int", "check_priority", "check_id",
    "check_int64", "check_text", "check_number", "short", "storable",
]

#: The default of an option that was not given (``None`` can be a real value).
UNSET: Any = object()

#: Priorities are integers strictly between -PRIORITY_LIMIT and PRIORITY_LIMIT.
PRIORITY_LIMIT = 2**62

#: SQLite stores an INTEGER as a signed 64-bit number: every integer that reaches
#: the file (ids, tokens, limits, counts) is checked against this range first.
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

#: The longest duration liteq accepts (delay, lease, timeout, retention ...), about 31.7
#: years: longer than anything real, and short enough that now + it is a valid date
#: and an operating-system wait (threading, select) accepts it.
MAX_SECONDS = 1e9

#: The latest instant (epoch seconds) a schedule accepts: 3000-01-01T00:00:00Z. The
#: earliest is the epoch (0). Every fire time stays a date Python can show.
MAX_INSTANT = 32503680000.0

#: The longest ``extend`` in seconds (or the queue's lease, if that is longer). With
#: it, no real lease ends more than ``lease + MAX_EXTEND`` from now: a deadline
#: further ahead was set before the wall clock stepped back, and a claim treats it
#: as expired (so a backward step holds a dead consumer's message at most this long).
MAX_EXTEND = 3600.0

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:\-]{0,199}$")


def validate_name(name: object, what: str = "queue") -> str:
    """Return *name* if it is a valid queue/topic/schedule name, else raise InvalidArgument."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidArgument(
            f"{what} name must be 1-200 characters of letters, digits, '_', '-', '.' or ':' "
            f"(not starting with a punctuation mark), got {name!r}"
        )
    return name


def check_seconds(value: object, what: str, *, allow_none: bool = False) -> float | None:
    """*value* as a float number of seconds >= 0 (finite, not a bool)."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or math.isnan(number := _float(value)):
        raise InvalidArgument(f"{what} must be a number of seconds >= 0, got {short(value)}")
    if number < 0 or math.isinf(number):
        raise InvalidArgument(f"{what} must be a finite number of seconds >= 0, got {short(value)}")
    if number > MAX_SECONDS:
        raise InvalidArgument(f"{what} must be at most {MAX_SECONDS:.0f} seconds (about 31 years), "
                              f"got {short(value)}")
    return number


def _float(value: int | float) -> float:
    """float(value), or an infinity of its sign for an int past 1e308."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def check_positive_int(value: object, what: str, *, allow_none: bool = False,
                       most: int = INT64_MAX) -> int | None:
    """*value* if it is an integer from 1 to *most* (a signed 64-bit one by default;
    not a bool)."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
        tail = " or None" if allow_none else ""
        raise InvalidArgument(f"{what} must be a positive integer{tail} (at most {most}), "
                              f"got {short(value)}")
    return value


def check_id(value: object, what: str = "message id") -> int:
    """*value* if it can be the id of a row: an integer from 1 to INT64_MAX."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= INT64_MAX:
        raise InvalidArgument(f"{what} must be an integer from 1 to {INT64_MAX}, got {short(value)}")
    return value


def check_int64(value: object, what: str) -> int:
    """*value* if it is an integer SQLite can store (signed 64-bit; not a bool)."""
    if isinstance(value, bool) or not isinstance(value, int) or not INT64_MIN <= value <= INT64_MAX:
        raise InvalidArgument(f"{what} must be an integer from {INT64_MIN} to {INT64_MAX}, "
                              f"got {short(value)}")
    return value


def check_number(value: object, what: str, *, least: float, most: float) -> float:
    """*value* as a float in [*least*, *most*]: a finite int or float, not a bool."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidArgument(f"{what} must be a number from {least:g} to {most:g}, got {short(value)}")
    number = _float(value)
    if not least <= number <= most:  # NaN fails both comparisons
        raise InvalidArgument(f"{what} must be a number from {least:g} to {most:g}, got {short(value)}")
    return number


def check_text(value: object, what: str, *, allow_none: bool = False) -> str | None:
    """*value* if it is a str that UTF-8 can encode (SQLite stores text as UTF-8: a lone
    surrogate such as ``"\\ud800"`` cannot be stored)."""
    if value is None and allow_none:
        return None
    if not isinstance(value, str):
        raise InvalidArgument(f"{what} must be a string, got {short(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidArgument(
            f"{what} contains a lone surrogate ({value[exc.start]!r} at position {exc.start}), "
            f"which is not text UTF-8 can store") from None
    return value


def storable(text: str) -> str:
    """*text* with any lone surrogate written as ``\\udXXX``: for text liteq stores on
    its own (a task's traceback), which is recorded rather than refused."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def short(value: object) -> str:
    """repr(value), cut to a readable length (a refused 10 MB string is not echoed)."""
    try:
        text = repr(value)
    except ValueError:  # an int of more digits than Python converts to text
        return f"an integer of about {value.bit_length() * 0.30103:.0f} digits" \
            if isinstance(value, int) else type(value).__name__
    return text if len(text) <= 80 else f"{text[:60]}... ({len(text)} characters)"


def check_priority(value: object) -> int:
    """*value* if it is an integer strictly between -PRIORITY_LIMIT and PRIORITY_LIMIT."""
    if isinstance(value, bool) or not isinstance(value, int) or not -PRIORITY_LIMIT < value < PRIORITY_LIMIT:
        raise InvalidArgument(f"priority must be an integer (higher runs first), got {value!r}")
    return value
