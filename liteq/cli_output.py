"""Output of the ``liteq`` command: one set of options for every command.

:func:`output_options` gives a command ``--json`` (and ``--nl`` when it lists rows)
and hands it an :class:`Output`, which prints an aligned table for people, or JSON
for scripts. The table is the default whether or not stdout is a terminal, so a
command prints the same thing in a pipe as on screen; scripts ask for ``--json``.

Payloads are any CBOR value, which JSON cannot always hold, and may hold bytes or
control characters that would garble a terminal. :func:`jsonable` maps them onto
JSON: bytes become ``{"$bytes": "<base64>"}``, datetimes ISO 8601 strings, sets and
tuples lists, Decimals and UUIDs strings, non-finite floats ``{"$float": "nan"}``,
unknown CBOR tags ``{"$tag": N, "value": ...}``. Table cells additionally escape
every control character (``\\x1b`` is shown, never sent).
"""

from __future__ import annotations

import base64
import datetime as _dt
import functools
import json
import math
import os
import re
import shutil
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import click

from .queue import Message

__all__ = [
    "Column",
    "Output",
    "output_options",
    "jsonable",
    "to_json",
    "fmt_duration",
    "last_line",
    "table_width",
    "safe",
    "message_dict",
    "message_rows",
    "render_table",
    "render_record",
    "terminal_width",
    "fmt_age",
    "fmt_when",
    "fmt_time",
    "fmt_rate",
    "fmt_payload",
    "cut",
    "plural",
]

# C0 and C1 control characters and the bidirectional overrides (which can make a
# terminal show text in another order than it is stored).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
# json.dumps(ensure_ascii=False) escapes C0 controls but lets DEL and C1 through.
_UNSAFE_IN_JSON = re.compile("[\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def jsonable(value: Any) -> Any:
    """*value* (a decoded CBOR payload) as something ``json.dumps`` accepts, losslessly
    where JSON has a form for it and tagged (``{"$bytes": ...}``) where it has not."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"$float": repr(value)}
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$bytes": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, Mapping):
        return {_key(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (set, frozenset)):
        items = [jsonable(v) for v in value]
        try:
            return sorted(items)
        except TypeError:
            return items
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return value.isoformat()
    tag = getattr(value, "tag", None)
    if isinstance(tag, int) and hasattr(value, "value"):  # cbor2.CBORTag
        return {"$tag": tag, "value": jsonable(value.value)}
    if type(value).__name__ in ("Decimal", "UUID", "Fraction", "IPv4Address", "IPv6Address",
                                "IPv4Network", "IPv6Network"):
        return str(value)
    if isinstance(value, re.Pattern):
        return {"$regex": value.pattern}
    return {"$repr": repr(value)}


def _key(key: Any) -> str:
    if isinstance(key, str):
        return key
    if key is None or isinstance(key, (bool, int, float)):
        return json.dumps(key)
    return json.dumps(jsonable(key), sort_keys=True)


def to_json(value: Any, *, indent: int | None = None) -> str:
    """JSON text of *value* (run through :func:`jsonable`), safe to print on a terminal."""
    separators = None if indent is not None else (", ", ": ")
    text = json.dumps(jsonable(value), ensure_ascii=False, indent=indent, separators=separators)
    return _UNSAFE_IN_JSON.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def safe(text: str) -> str:
    """*text* with control characters escaped, fit for one table cell."""
    return _UNSAFE.sub(lambda m: _ESCAPES.get(m.group(), f"\\x{ord(m.group()):02x}")
                       if ord(m.group()) < 0x100 else f"\\u{ord(m.group()):04x}", text)


def message_dict(msg: Message, *, receipt: bool = False) -> dict[str, Any]:
    """Everything about one message, for JSON output (times are epoch seconds)."""
    out: dict[str, Any] = {"id": msg.id, "queue": msg.queue, "state": msg.state}
    if receipt:
        out["receipt"] = msg.receipt
    out.update(
        priority=msg.priority,
        attempts=msg.attempts,
        key=msg.key,
        enqueued_at=msg.enqueued_at,
        run_at=msg.run_at,
        lease_until=msg.lease_until,
        finished_at=msg.finished_at,
        error=msg.error,
        origin=msg.origin,
        headers=jsonable(msg.headers),
        payload=jsonable(msg.payload),
    )
    return out


# -- human formats ---------------------------------------------------------------------

def fmt_age(seconds: float | None, spaced: bool = False) -> str:
    """A duration for people: ``0.4s``, ``12s``, ``3m05s``, ``2h10m``, ``3d4h``; *spaced*
    (the dashboard): ``3m 5s``, ``2h 10m``, ``3d 4h``."""
    if seconds is None:
        return "-"
    s = max(0.0, float(seconds))
    if s < 10:
        return f"{s:.1f}s"
    if s < 60:
        return f"{s:.0f}s"
    n = int(s)
    if n < 3600:
        big, small, units = n // 60, n % 60, "ms"
    elif n < 86400:
        big, small, units = n // 3600, n % 3600 // 60, "hm"
    else:
        big, small, units = n // 86400, n % 86400 // 3600, "dh"
    if spaced:
        return f"{big}{units[0]} {small}{units[1]}"
    pad = "02d" if n < 86400 else "d"
    return f"{big}{units[0]}{small:{pad}}{units[1]}"


def fmt_duration(seconds: float) -> str:
    """How long something ran: ``850µs``, ``13.2ms``, ``1.50s``, then as :func:`fmt_age`."""
    if seconds < 0.001:
        return f"{seconds * 1e6:.0f}µs"
    if seconds < 1:
        return f"{seconds * 1e3:.1f}ms"
    if seconds < 10:
        return f"{seconds:.2f}s"
    return fmt_age(seconds)


def fmt_when(ts: float | None, now: float) -> str:
    """A moment relative to *now*: ``3s ago``, ``in 5m00s``, or ``now``."""
    if ts is None:
        return "-"
    delta = ts - now
    if abs(delta) < 0.05:
        return "now"
    return f"in {fmt_age(delta)}" if delta > 0 else f"{fmt_age(-delta)} ago"


def fmt_time(ts: float | None, now: float) -> str:
    """Local wall-clock time and the same moment relative to *now*."""
    if ts is None:
        return "-"
    stamp = _dt.datetime.fromtimestamp(ts).isoformat(sep=" ", timespec="milliseconds")
    return f"{stamp} ({fmt_when(ts, now)})"


def fmt_rate(rate: float | None) -> str:
    """Messages per second, or ``-`` when not measured."""
    if rate is None:
        return "-"
    return f"{rate:.1f}" if rate < 100 else f"{rate:.0f}"


def fmt_payload(value: Any) -> str:
    """A payload on one line, as JSON (bytes as ``{"$bytes": ...}``)."""
    return to_json(value)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


# -- tables and the output options ----------------------------------------------------

@dataclass(frozen=True)
class Column:
    """One column of a table: the row key, its header, how to show a value, and
    whether it is numeric (right-aligned) or the one column cut to fit the width."""

    key: str
    header: str = ""
    fmt: Callable[[Any], str] = _cell
    numeric: bool = False
    flex: bool = False

    @property
    def title(self) -> str:
        return self.header or self.key.upper()


def render_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[Column],
                 width: int | None = None) -> list[str]:
    """Lines of an aligned table; the ``flex`` column is cut so a line fits *width*."""
    cells = [[safe(c.fmt(r.get(c.key))) for c in columns] for r in rows]
    widths = [max([len(c.title)] + [len(line[i]) for line in cells])
              for i, c in enumerate(columns)]
    if width is not None:
        for i, c in enumerate(columns):
            if c.flex:
                others = sum(w for j, w in enumerate(widths) if j != i) + 2 * (len(columns) - 1)
                room = max(len(c.title), 16, width - others)
                if widths[i] > room:
                    widths[i] = room
                    for line in cells:
                        if len(line[i]) > room:
                            line[i] = cut(line[i], room)

    def join(values: Sequence[str]) -> str:
        parts = [v.rjust(widths[i]) if columns[i].numeric else v.ljust(widths[i])
                 for i, v in enumerate(values)]
        return "  ".join(parts).rstrip()

    return [join([c.title for c in columns])] + [join(line) for line in cells]


def render_record(fields: Sequence[tuple[str, str]]) -> list[str]:
    """Lines of a two-column ``label  value`` listing; multi-line values stay aligned."""
    width = max((len(label) for label, _ in fields), default=0)
    lines = []
    for label, value in fields:
        first, *rest = value.split("\n") if value else [""]
        lines.append(f"{label.ljust(width)}  {first}".rstrip())
        lines.extend(" " * (width + 2) + more for more in rest)
    return lines


def terminal_width() -> int:
    """Columns of the terminal ($COLUMNS wins; 100 when not a terminal)."""
    return shutil.get_terminal_size((100, 24)).columns


def table_width() -> int | None:
    """The width a table is cut to: the terminal's (or $COLUMNS); None, no cut,
    when stdout is a pipe or a file, so that nothing is lost to a script."""
    if "COLUMNS" in os.environ or sys.stdout.isatty():
        return terminal_width()
    return None


class Output:
    """Where a command's results go: ``table`` (default), ``json`` or ``nl``."""

    def __init__(self, fmt: str = "table") -> None:
        if fmt not in ("table", "json", "nl"):
            raise ValueError(f"unknown output format {fmt!r}")
        self.fmt = fmt

    @property
    def json(self) -> bool:
        """True for ``--json`` and ``--nl``."""
        return self.fmt != "table"

    def rows(self, rows: Sequence[Mapping[str, Any]], columns: Sequence[Column],
             *, empty: str | None = None) -> None:
        """Print rows: a table, one JSON array (``--json``) or one object per line
        (``--nl``). With no rows, a table prints *empty* on stderr instead."""
        if self.fmt == "json":
            click.echo(to_json(list(rows), indent=2))
        elif self.fmt == "nl":
            for r in rows:
                click.echo(to_json(r))
        elif rows:
            for line in render_table(rows, columns, table_width()):
                click.echo(line)
        elif empty:
            click.echo(empty, err=True)

    def record(self, data: Mapping[str, Any], fields: Iterable[tuple[str, str]]) -> None:
        """Print one object: *data* as JSON, or *fields* (label, text) as a listing."""
        if self.json:
            click.echo(to_json(dict(data), indent=2 if self.fmt == "json" else None))
        else:
            for line in render_record([(label, safe_lines(text)) for label, text in fields]):
                click.echo(line)

    def result(self, data: Mapping[str, Any], text: str) -> None:
        """Print the outcome of an action: *text* for people, *data* as JSON."""
        if self.json:
            click.echo(to_json(dict(data), indent=2 if self.fmt == "json" else None))
        else:
            click.echo(safe_lines(text))


def safe_lines(text: str) -> str:
    """Like :func:`safe`, but keeps line breaks (for multi-line values)."""
    return "\n".join(safe(line) for line in text.split("\n"))


def output_options(fn: Callable[..., Any] | None = None, *, rows: bool = False) -> Any:
    """Give a command the shared output options and pass it ``out: Output``.

    ``--json`` prints JSON; with ``rows=True`` (a command that lists rows) also
    ``--nl``, newline-delimited JSON, one object per line. Use it below the
    command's own options so that these come last in ``--help``::

        @cli.command()
        @click.argument("queue")
        @output_options(rows=True)
        def peek(queue: str, out: Output) -> None: ...
    """

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(f)
        def wrapper(*args: Any, as_json: bool = False, as_nl: bool = False, **kwargs: Any) -> Any:
            if as_json and as_nl:
                raise click.UsageError("use --json or --nl, not both")
            return f(*args, out=Output("json" if as_json else "nl" if as_nl else "table"),
                     **kwargs)

        if rows:
            wrapper = click.option(
                "--nl", "as_nl", is_flag=True,
                help="Print newline-delimited JSON: one object per line.")(wrapper)
        return click.option("--json", "as_json", is_flag=True, help="Print JSON.")(wrapper)

    return decorate(fn) if fn is not None else decorate


def message_rows(msgs: Sequence[Message], now: float, *,
                 error: bool = False) -> tuple[list[dict[str, Any]], list[Column]]:
    """Messages as rows (for JSON: :func:`message_dict`) and the table's columns.

    Finished messages show when they finished instead of when they were due; an
    ERROR column (the last line of the error, cut to 60 characters; ``show`` has it
    whole) comes when *error* is set or any message has one. Only ready and delayed
    messages are "due": a leased one shows when its lease ends.
    """
    rows = [message_dict(m) for m in msgs]
    finished = bool(msgs) and all(m.finished_at is not None for m in msgs)
    leased = bool(msgs) and all(m.state == "leased" for m in msgs)
    due = {m.id: _due(m, now) for m in msgs}
    columns = [
        Column("id", numeric=True),
        Column("state"),
        Column("priority", numeric=True),
        Column("attempts", numeric=True),
        Column("enqueued_at", "AGE", fmt=lambda t: fmt_age(now - t), numeric=True),
        Column("finished_at", "FINISHED", fmt=lambda t: fmt_when(t, now)) if finished else
        Column("lease_until", "LEASE ENDS", fmt=lambda t: fmt_when(t, now)) if leased else
        Column("id", "DUE", fmt=lambda i: due[i]),
    ]
    if error or any(m.error for m in msgs):
        # The last line of a traceback is the exception; 'liteq show ID' has it all.
        columns.append(Column("error", fmt=lambda e: cut(last_line(e), 60) if e else "-"))
    columns.append(Column("payload", fmt=fmt_payload, flex=True))
    return rows, columns


#: Where a cut text may end: after a space or a separator, not inside a word or number.
_BREAKS = " ,;:)]}"


def _due(msg: Message, now: float) -> str:
    """When a message is due: only ready and delayed ones are; a leased one says
    when its lease ends; a finished one (done, dead, cancelled) is not due: ``-``."""
    if msg.state in ("ready", "delayed"):
        return fmt_when(msg.run_at, now) if msg.run_at > now else "now"
    if msg.state == "leased" and msg.lease_until is not None:
        return f"leased, ends {fmt_when(msg.lease_until, now)}"
    return "-"


def cut(text: str, width: int) -> str:
    """*text* cut to *width* characters, ending in an ellipsis when cut; it ends
    after a space or separator when one is in its second half, not mid-token."""
    if len(text) <= width:
        return text
    head = text[: width - 1]
    if head and head[-1] not in _BREAKS and text[len(head)] not in _BREAKS:
        at = max(head.rfind(c) for c in _BREAKS)
        if at >= (width - 1) // 2:
            head = head[: at + 1]
    return head.rstrip() + "…"


def last_line(text: str) -> str:
    """The last non-blank line of *text*: of a traceback, the exception itself."""
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1].strip() if lines else text


def plural(n: int, noun: str) -> str:
    """``1 message``, ``2 messages``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
