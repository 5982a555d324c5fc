"""A queue's options, declared once: each option's name, default, validation, the
column(s) it is stored in, and its help text.

Everything else derives from :data:`QUEUE_OPTIONS`: the keywords of
``Database.queue`` (whose docstring states the defaults), :func:`option_columns`
(validation at the edge), :class:`QueueConfig` (the options as read back),
:func:`default_columns` (a new queue's row, for every engine), the ``liteq queue
create|config`` options and what ``queue config`` shows. ``tests/test_options.py``
checks that all of them agree with this declaration and with the engines' columns.

A leaf module (no liteq imports but validation, errors and the records), so that the
facade, the domain objects, the CLI and the engines can all read it.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .backends.records import QueueRecord
from .errors import InvalidArgument
from .flow import RateLimit, check_rate_limit
from .validate import UNSET, check_number, check_positive_int, check_seconds, validate_name

__all__ = [
    "Backoff", "QueueOption", "QUEUE_OPTIONS", "SUBSCRIPTION_COLUMNS", "STATE_COLUMNS",
    "QueueConfig",
    "option_columns", "default_columns", "MAX_BACKOFF_FACTOR",
]

#: The largest backoff factor (each retry waits at most this many times longer).
MAX_BACKOFF_FACTOR = 1000.0


@dataclass(frozen=True)
class Backoff:
    """Retry delay after the n-th failed attempt: ``min(max, base * factor**(n-1))``,
    then spread by ``± jitter`` (a fraction) so that retries do not arrive in step."""

    base: float = 1.0
    factor: float = 2.0
    max: float = 300.0
    jitter: float = 0.1

    def __post_init__(self) -> None:
        check_seconds(self.base, "backoff base")
        check_seconds(self.max, "backoff max")
        check_number(self.factor, "backoff factor", least=1, most=MAX_BACKOFF_FACTOR)
        check_number(self.jitter, "backoff jitter (a fraction)", least=0, most=1)

    def delay(self, attempt: int, rand: random.Random | None = None) -> float:
        """Seconds to wait before the retry that follows failed attempt number *attempt*."""
        try:
            # In floats: an int factor ** a large attempt number would be a huge int.
            raw = min(self.max, self.base * float(self.factor) ** max(attempt - 1, 0))
        except OverflowError:  # passed 1e308
            raw = self.max
        if self.jitter:
            raw *= 1 + (rand or random).uniform(-self.jitter, self.jitter)
        return max(0.0, raw)


@dataclass(frozen=True)
class QueueOption:
    """One queue option."""

    #: The keyword of ``Database.queue`` and the field of :class:`QueueConfig`.
    name: str
    #: The value of a new queue that does not give it.
    default: Any
    #: How ``Database.queue``'s docstring states the default (``"lease=30`` s" ...).
    doc: str
    #: The stored columns, in the engines' ``queues`` table.
    columns: tuple[str, ...]
    #: A given value, checked, as column values (raises InvalidArgument saying how to fix it).
    check: Callable[[Any], dict[str, Any]]
    #: The value from column values (a record's, or a dict of columns).
    read: Callable[[Mapping[str, Any]], Any]
    #: Help of ``liteq queue create|config --NAME``; None: not a CLI option.
    cli_help: str | None = None

    @property
    def cli_flag(self) -> str | None:
        """``--max-depth`` ..., or None."""
        return None if self.cli_help is None else "--" + self.name.replace("_", "-")


def _lease(value: Any) -> dict[str, Any]:
    seconds = check_seconds(value, "lease")
    if seconds == 0:
        raise InvalidArgument("lease must be a number of seconds > 0, got 0")
    return {"lease": seconds}


def _dead_letter(value: Any) -> dict[str, Any]:
    return {"dead_letter": None if value is None else validate_name(value, "dead_letter queue")}


def _count_depth(value: Any) -> dict[str, Any]:
    if not isinstance(value, bool):
        raise InvalidArgument(f"count_depth must be True or False, got {value!r}")
    return {"count_depth": int(value)}


_BACKOFF_PARTS = ("base", "factor", "max", "jitter")


def _backoff(value: Any) -> dict[str, Any]:
    if not isinstance(value, Backoff):
        raise InvalidArgument(f"backoff must be a liteq.Backoff, got {value!r}")
    return {f"backoff_{p}": float(getattr(value, p)) for p in _BACKOFF_PARTS}


def _rate_limit(value: Any) -> dict[str, Any]:
    limit = check_rate_limit(value)
    return {"rate_limit": None if limit is None else limit.rate,
            "rate_burst": None if limit is None else limit.burst}


def _column(name: str) -> Callable[[Mapping[str, Any]], Any]:
    return lambda cols: cols[name]


#: Every queue option, in the order they are shown.
QUEUE_OPTIONS: tuple[QueueOption, ...] = (
    QueueOption(
        "max_depth", None, "``max_depth=None`` (unbounded)", ("max_depth",),
        lambda v: {"max_depth": check_positive_int(v, "max_depth", allow_none=True)},
        _column("max_depth"),
        "Most unfinished messages; a put beyond it fails with exit 75 ('none': unbounded)."),
    QueueOption(
        "lease", 30.0, "``lease=30`` s", ("lease",), _lease, _column("lease"),
        "How long a claimed message stays leased before it is delivered again (default 30s)."),
    QueueOption(
        "max_attempts", 5, "``max_attempts=5``", ("max_attempts",),
        lambda v: {"max_attempts": check_positive_int(v, "max_attempts")},
        _column("max_attempts"),
        "Deliveries before a message goes dead (default 5)."),
    QueueOption(
        "dead_letter", None, "``dead_letter=None`` (dead messages stay in this queue)",
        ("dead_letter",), _dead_letter, _column("dead_letter"),
        "Move dead messages to this queue, as ready messages ('none': keep them here, "
        "in state dead)."),
    QueueOption(
        "retention", 0.0, "``retention=0`` (delete on ack)", ("retention",),
        lambda v: {"retention": check_seconds(v, "retention")}, _column("retention"),
        "Keep acked messages this long, in state done (default 0: delete on ack)."),
    QueueOption(
        "backoff", Backoff(), "``backoff=Backoff()``",
        tuple(f"backoff_{p}" for p in _BACKOFF_PARTS), _backoff,
        lambda cols: Backoff(*(cols[f"backoff_{p}"] for p in _BACKOFF_PARTS))),
    QueueOption(
        "count_depth", False, "``count_depth=False``", ("count_depth",), _count_depth,
        lambda cols: bool(cols["count_depth"])),
    QueueOption(
        "rate_limit", None, "``rate_limit=None`` (no limit)", ("rate_limit", "rate_burst"),
        _rate_limit, lambda cols: RateLimit.from_columns(cols["rate_limit"], cols["rate_burst"]),
        "Most claims per period across all workers: '100/s', '30/m', '500/h', "
        "'100/s burst 10' ('none': no limit)."),
)

#: The other columns of a queue's row: a topic subscription's (None for a plain queue).
SUBSCRIPTION_COLUMNS: tuple[str, ...] = ("topic", "pattern", "expires_at")

#: Columns of a queue's state rather than its options, changed by their own verbs
#: (``Queue.pause()``/``resume()``), never by ``Database.queue`` or ``queue config``.
STATE_COLUMNS: tuple[str, ...] = ("paused",)


def option_columns(**given: Any) -> dict[str, Any]:
    """Validate queue options given by the caller (keywords of ``Database.queue``;
    ``UNSET`` ones are skipped); return the columns to store."""
    cols: dict[str, Any] = {}
    for option in QUEUE_OPTIONS:
        value = given.pop(option.name, UNSET)
        if value is not UNSET:
            cols.update(option.check(value))
    if given:
        names = ", ".join(o.name for o in QUEUE_OPTIONS)
        raise InvalidArgument(f"unknown queue option(s) {', '.join(sorted(given))}; "
                              f"the options are {names}")
    return cols


def default_columns() -> dict[str, Any]:
    """The column values of a new queue that gives no option (every engine's
    implicit creation: a dead-letter target, a schedule's queue)."""
    cols: dict[str, Any] = {}
    for option in QUEUE_OPTIONS:
        cols.update(option.check(option.default))
    cols.update(dict.fromkeys(SUBSCRIPTION_COLUMNS))
    return cols


@dataclass(frozen=True)
class QueueConfig:
    """A queue's stored options (read back from the database), one field per
    :data:`QUEUE_OPTIONS` entry plus the queue's name, its subscription and its
    state (:data:`STATE_COLUMNS`)."""

    name: str
    max_depth: int | None
    lease: float
    max_attempts: int
    dead_letter: str | None
    retention: float
    backoff: Backoff
    topic: str | None = None
    pattern: str | None = None
    count_depth: bool = False
    #: Paused (``Queue.pause()``): nothing is claimed until ``resume()``.
    paused: bool = False
    #: Most claims per period (a token bucket in the database); None: no limit.
    rate_limit: RateLimit | None = None

    @classmethod
    def from_record(cls, rec: QueueRecord) -> QueueConfig:
        """The options of a queue's stored record."""
        cols = rec._asdict()
        return cls(name=rec.name, topic=rec.topic, pattern=rec.pattern,
                   paused=bool(rec.paused), **{o.name: o.read(cols) for o in QUEUE_OPTIONS})
