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

__all__ = ["UNSET", "PRIORITY_LIMIT", "validate_name", "check_seconds", "check_positive_int",
           "check_priority"]

#: The default of an option that was not given (``None`` can be a real value).
UNSET: Any = object()

#: Priorities are integers strictly between -PRIORITY_LIMIT and PRIORITY_LIMIT.
PRIORITY_LIMIT = 2**62

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
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise InvalidArgument(f"{what} must be a number of seconds >= 0, got {value!r}")
    if value < 0 or math.isinf(value):
        raise InvalidArgument(f"{what} must be a finite number of seconds >= 0, got {value!r}")
    return float(value)


def check_positive_int(value: object, what: str, *, allow_none: bool = False) -> int | None:
    """*value* if it is an integer >= 1 (not a bool)."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        tail = " or None" if allow_none else ""
        raise InvalidArgument(f"{what} must be a positive integer{tail}, got {value!r}")
    return value


def check_priority(value: object) -> int:
    """*value* if it is an integer strictly between -PRIORITY_LIMIT and PRIORITY_LIMIT."""
    if isinstance(value, bool) or not isinstance(value, int) or not -PRIORITY_LIMIT < value < PRIORITY_LIMIT:
        raise InvalidArgument(f"priority must be an integer (higher runs first), got {value!r}")
    return value
