"""The root of the ``liteq`` command: the group, ``--db``, the error edge, and the
parameter types and helpers that every command module shares.

Commands live in modules of their own (``cli.py`` for queues and messages,
``cli_stats.py``, ``cli_demo.py``; topics, workers and schedules add theirs) and
are attached to :data:`cli` in ``cli.py``. A command opens the database with
:func:`open_db`, finds a queue with :func:`existing_queue`, and lets liteq's
exceptions fly: :class:`LiteqGroup` turns them into ``Error: ...`` and an exit
code at the edge, never a traceback.
"""

from __future__ import annotations

import errno
import inspect
import json
import os
import re
import shlex
from dataclasses import dataclass
from typing import Any

import click

from . import __version__
from .backends.base import DURABILITY_LEVELS
from .backends.targets import is_postgres
from .database import Database, connect, parse_receipt
from .errors import LiteqError, QueueFull
from .queue import Queue
from .validate import INT64_MAX, validate_name

__all__ = [
    "cli",
    "CliError",
    "TryLater",
    "CliState",
    "EX_OK",
    "EX_ERROR",
    "EX_USAGE",
    "EX_TEMPFAIL",
    "DURATION",
    "POSITIVE_INT",
    "STATE_CHOICES",
    "POSITIVE_DURATION",
    "QUEUE",
    "RECEIPT",
    "MAX_DEPTH",
    "DEAD_LETTER",
    "open_db",
    "looks_only",
    "writes",
    "READ_ONLY_COMMANDS",
    "existing_queue",
    "parse_json",
    "confirm",
]

EX_OK = 0
EX_ERROR = 1
EX_USAGE = 2
#: sysexits.h EX_TEMPFAIL: "try again later". A put that meets a full queue exits
#: with it, so a shell script can tell back pressure from a real error.
EX_TEMPFAIL = 75


class CliError(click.ClickException):
    """``Error: MESSAGE`` on stderr, exit code 1."""

    exit_code = EX_ERROR


class TryLater(CliError):
    """``Error: MESSAGE`` on stderr, exit code 75: a full queue; retry later."""

    exit_code = EX_TEMPFAIL


class LiteqGroup(click.Group):
    """The root group: liteq's exceptions become ``Error: ...`` with an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except QueueFull as exc:
            raise TryLater(f"{exc} (try again later)") from exc
        except OSError as exc:
            if exc.errno == errno.EPIPE:
                raise  # click exits quietly when stdout's reader went away
            raise CliError(exc.strerror and f"{exc.strerror}: {exc.filename}" or str(exc)) from exc
        except (LiteqError, ValueError) as exc:
            raise CliError(str(exc)) from exc
        except NotImplementedError as exc:
            # An engine still being written (PostgreSQL, issue 17) lacks this verb.
            raise CliError(f"{exc}; this command does not work on this database yet") from exc


@dataclass
class CliState:
    """What the root group knows: the database path and whether the user chose it;
    the durability a command that writes opens it with (its ``--durability``)."""

    path: str
    chosen: bool
    durability: str = "normal"


# -- parameter types -------------------------------------------------------------------

class Duration(click.ParamType):
    """Seconds, as ``1.5`` or with a unit: ``250ms``, ``90s``, ``5m``, ``2h``, ``7d``."""

    name = "seconds"
    _FORM = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d)?\s*$")
    _UNITS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

    def __init__(self, positive: bool = False) -> None:
        self.positive = positive

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
            seconds = float(value)
        else:
            match = self._FORM.match(str(value))
            if not match:
                self.fail(
                    f"{value!r} is not a duration: give seconds (1.5) or a number with a unit "
                    f"(250ms, 90s, 5m, 2h, 7d)", param, ctx)
            seconds = float(match.group(1)) * self._UNITS[match.group(2)]
        if self.positive and seconds <= 0:
            self.fail(f"must be more than 0 seconds, got {value!r}", param, ctx)
        return seconds


class QueueName(click.ParamType):
    """A valid queue name (checked before anything is opened)."""

    name = "queue"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        try:
            return validate_name(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class Receipt(click.ParamType):
    """``ID:TOKEN`` as printed by ``liteq get``."""

    name = "receipt"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        try:
            parse_receipt(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        return str(value)


class MaxDepth(click.ParamType):
    """A positive integer, or ``none`` for an unbounded queue."""

    name = "n|none"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int | None:
        if value is None or str(value).lower() in ("none", "unbounded"):
            return None
        try:
            n = int(value)
        except (TypeError, ValueError):
            n = 0
        if not 1 <= n <= INT64_MAX:
            self.fail(f"max depth must be a positive integer (at most {INT64_MAX}) or 'none', "
                      f"got {value!r}", param, ctx)
        return n


class DeadLetter(click.ParamType):
    """A queue name to move dead messages to, or ``none`` to keep them in place."""

    name = "queue|none"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str | None:
        if value is None or str(value).lower() == "none":
            return None
        try:
            return validate_name(value, "dead_letter queue")
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


#: Message states a command can select, and "all".
STATE_CHOICES = ["ready", "delayed", "leased", "done", "dead", "cancelled", "all"]
# No upper bound here (click would print it in every help): the library refuses
# integers past 64 bits with InvalidArgument, shown as Error: (exit 1).
POSITIVE_INT = click.IntRange(min=1)
DURATION = Duration()
POSITIVE_DURATION = Duration(positive=True)
QUEUE = QueueName()
RECEIPT = Receipt()
MAX_DEPTH = MaxDepth()
DEAD_LETTER = DeadLetter()


# -- helpers ---------------------------------------------------------------------------

def quoting_hint(text: str) -> str:
    """How to quote *text*, which is not JSON, so that it is: for a bare word, a
    word in 'single quotes' or an object written with single quotes. The example
    is quoted for a POSIX shell (the outer single quotes are the shell's)."""
    s = text.strip()
    if len(s) >= 2 and s[0] == s[-1] == "'" and "'" not in s[1:-1]:
        fixed, why = json.dumps(s[1:-1], ensure_ascii=False), "double quotes, not single"
    elif s[:1] in ("{", "[") and "'" in s and "\"" not in s:
        fixed, why = s.replace("'", '"'), "double quotes, not single"
        try:
            json.loads(fixed)
        except ValueError:
            return ""
    elif s and s[0] not in '{["-0123456789tfn':
        fixed, why = json.dumps(s, ensure_ascii=False), ""
    else:
        return ""
    if len(fixed) > 40:
        return "; a string needs JSON quotes, e.g. '\"text\"'"
    if why:
        return f"; JSON needs {why}, e.g. {shlex.quote(fixed)}"
    return f"; a string needs JSON quotes, e.g. {shlex.quote(fixed)}"


def parse_json(text: str, what: str) -> Any:
    """*text* parsed as JSON, or a usage error (exit 2) saying where it went wrong."""
    try:
        return json.loads(text)
    except RecursionError:
        raise click.UsageError(f"{what} is nested too deeply to read") from None
    except ValueError as exc:
        if not isinstance(exc, json.JSONDecodeError):  # e.g. a number of 5,000 digits
            raise click.UsageError(f"{what} is not usable JSON: {str(exc).split(';')[0]}") \
                from None
        hint = quoting_hint(text)
        assert isinstance(exc, json.JSONDecodeError)
        where = f"line {exc.lineno} column {exc.colno}" if "\n" in text.strip() else \
            f"column {exc.colno}"
        raise click.UsageError(f"{what} is not valid JSON: {exc.msg} at {where}{hint}") from None


def open_db(ctx: click.Context | None = None, *, create: bool = False,
            read_only: bool | None = None) -> Database:
    """Connect to the database chosen by ``--db``; closed when the command ends.

    Unless *create*, a missing (or empty) file, or a PostgreSQL database without
    liteq's schema, is an error rather than a new database: a command that only looks
    must not leave a file (or schema) behind. A command
    marked with :func:`looks_only` opens it read-only (or as *read_only* says, for a
    command that looks or writes by an option of its own, such as ``liteq web``); one
    marked with :func:`writes` with its ``--durability``.
    """
    ctx = ctx or click.get_current_context()
    state = ctx.find_object(CliState)
    assert state is not None, "open_db() outside the liteq command"
    path = state.path
    # A URL names a server's database: connect() itself refuses a missing liteq schema.
    if not create and not is_postgres(path):
        if not os.path.exists(path):
            raise CliError(
                f"no liteq database at {path} (choose one with --db PATH or $LITEQ_DB; "
                f"'liteq put' and 'liteq queue create' make a new one)")
        if os.path.isfile(path) and os.path.getsize(path) == 0:
            raise CliError(f"{path} is an empty file, not a liteq database")
    if read_only is None:
        read_only = ctx.command in READ_ONLY_COMMANDS
    db = connect(path, durability=state.durability, read_only=read_only, create=create)
    ctx.find_root().call_on_close(db.close)
    return db


#: The commands that only look: :func:`open_db` opens the file read-only for them.
READ_ONLY_COMMANDS: set[click.Command] = set()

_READ_ONLY_NOTE = (
    "Read-only: opens the file with SQLite mode=ro and never writes it, so read access "
    "to the database file is enough."
)


def _before_example(help_text: str | None, paragraph: str) -> str:
    """*help_text* with *paragraph* added before its closing example."""
    text = inspect.cleandoc(help_text or "")
    at = max(text.rfind("\n\nExample"), text.rfind("\n\n\b\nExample"))
    if at < 0:
        return f"{text}\n\n{paragraph}"
    return f"{text[:at]}\n\n{paragraph}{text[at:]}"


def looks_only(command: click.Command) -> click.Command:
    """Mark *command* as one that only looks: it opens the database read-only
    (an operator without write access can run it), and its help says so."""
    READ_ONLY_COMMANDS.add(command)
    command.help = _before_example(command.help, _READ_ONLY_NOTE)
    return command


def _remember_durability(ctx: click.Context, param: click.Parameter, value: str) -> str:
    state = ctx.find_object(CliState)
    if state is not None:
        state.durability = value
    return value


def writes(command: click.Command, note: str = "") -> click.Command:
    """Give *command*, one that writes, the ``--durability`` option
    (``$LITEQ_DURABILITY``) that :func:`open_db` opens the database with; *note* is
    added to the option's help."""
    command.params.append(click.Option(
        ["--durability"], type=click.Choice(DURABILITY_LEVELS), default="normal",
        envvar="LITEQ_DURABILITY", show_default=True, show_envvar=True, expose_value=False,
        callback=_remember_durability,
        help="normal: commits survive a process crash; full: a power cut too "
             f"(slower).{note}"))
    return command


def existing_queue(db: Database, name: str) -> Queue:
    """The queue *name*, or ``Error: no queue named 'x'`` (never creates one)."""
    if not db.has_queue(name):
        raise CliError(f"no queue named {name!r}")
    return db.queue(name)


def confirm(question: str, yes: bool) -> None:
    """Ask *question* on the terminal unless *yes*; a no (or no answer) is an error."""
    if yes:
        return
    try:
        agreed = click.confirm(question, default=False, err=True)
    except click.Abort:  # end of input, or Ctrl-C at the question
        click.echo("", err=True)
        agreed = False
    if not agreed:
        raise CliError("cancelled: nothing was changed (pass --yes to skip this question)")


# -- the root group --------------------------------------------------------------------

@click.group(cls=LiteqGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--db", "db_path", envvar="LITEQ_DB", default="liteq.db", show_default=True,
              metavar="PATH|URL",
              help="The database: a SQLite file, or a postgresql://USER@HOST/DBNAME URL "
                   "(?schema=NAME for another schema than liteq) (or set $LITEQ_DB).")
@click.version_option(__version__, "-V", "--version", prog_name="liteq")
@click.pass_context
def cli(ctx: click.Context, db_path: str) -> None:
    """liteq: a durable job and message queue in one SQLite file.

    Look inside a queue database and act on it. The database is --db PATH (or a
    postgresql:// URL), else $LITEQ_DB, else ./liteq.db. Only put, queue create and
    demo make a new file (or schema); the other commands say so when it is
    missing. Commands that only look (stats, peek, show, jobs ...) open it
    read-only: read access is enough. Commands that write take --durability
    normal|full (or $LITEQ_DURABILITY).

    Output is an aligned table; --json (and --nl, one object per line, on
    commands that list rows) prints JSON for scripts, with bytes in payloads as
    {"$bytes": BASE64}. Durations are seconds or a number with a unit: 1.5, 250ms,
    90s, 5m, 2h, 7d.

    \b
    Exit codes:
      0   ok
      1   error: unknown queue or message, missing or foreign database file,
          stale receipt ...
      2   usage: unknown option, bad value, malformed JSON payload
      75  a put met a full queue (QueueFull, sysexits EX_TEMPFAIL): retry later

    Example: liteq --db app.db stats --watch
    """
    source = ctx.get_parameter_source("db_path")
    ctx.obj = CliState(path=db_path, chosen=source != click.core.ParameterSource.DEFAULT)
