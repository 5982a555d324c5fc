"""``liteq`` commands on queues: dead list|redrive|purge, purge, queue
create|config|pause|resume|delete, prune and vacuum."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import click

import liteq

from .cli_base import (
    DEAD_LETTER,
    DURATION,
    MAX_DEPTH,
    POSITIVE_DURATION,
    POSITIVE_INT,
    QUEUE,
    STATE_CHOICES,
    CliError,
    confirm,
    existing_queue,
    open_db,
)
from .cli_output import Column, Output, fmt_age, message_rows, output_options, plural
from .flow import check_rate_limit
from .options import QUEUE_OPTIONS
from .queue import Queue

__all__ = ["dead", "purge", "queue_group", "prune", "vacuum"]


# -- dead messages and purging ---------------------------------------------------------

@click.group()
def dead() -> None:
    """List, re-drive or purge the dead messages of a queue.

    Dead messages used up their attempts, failed, or could not be decoded.

    A queue with a dead_letter queue moves its dead messages there as ready
    messages instead: look at that queue with 'liteq peek'.

    Example: liteq dead list emails
    """


@dead.command("list")
@click.argument("queue", type=QUEUE)
@click.option("--limit", "-n", type=POSITIVE_INT, default=20, show_default=True, metavar="N",
              help="Show at most this many.")
@output_options(rows=True)
def dead_list(queue: str, limit: int, out: Output) -> None:
    """Show the dead messages of QUEUE with the reason each one died.

    Example: liteq dead list emails --nl
    """
    db = open_db()
    q = existing_queue(db, queue)
    rows, columns = message_rows(q.peek(limit, state="dead"), db.clock(), error=True)
    empty = f"no dead messages in queue {queue!r}"
    if q.config.dead_letter:
        empty += f" (it moves them to queue {q.config.dead_letter!r})"
    out.rows(rows, columns, empty=empty)


@dead.command("redrive")
@click.argument("queue", type=QUEUE)
@click.option("--limit", "-n", type=POSITIVE_INT, default=None, metavar="N",
              help="Re-drive at most this many (oldest first; default all).")
@output_options
def dead_redrive(queue: str, limit: int | None, out: Output) -> None:
    """Make the dead messages of QUEUE ready again, their attempts reset.

    Example: liteq dead redrive emails --limit 100
    """
    n = existing_queue(open_db(), queue).redrive(limit)
    out.result({"queue": queue, "redriven": n},
               f"{plural(n, 'dead message')} of queue {queue!r} ready again")


@dead.command("purge")
@click.argument("queue", type=QUEUE)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@output_options
def dead_purge(queue: str, yes: bool, out: Output) -> None:
    """Delete the dead messages of QUEUE for good.

    Example: liteq dead purge emails --yes
    """
    _purge(queue, "dead", yes, out)


@click.command()
@click.argument("queue", type=QUEUE)
@click.option("--state", "-s", type=click.Choice(STATE_CHOICES), default="all",
              show_default=True, help="Delete only the messages in this state.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@output_options
def purge(queue: str, state: str, yes: bool, out: Output) -> None:
    """Delete the messages of QUEUE for good.

    Deletes all of them, or those in one --state. Asks first unless --yes. The
    queue and its options stay.

    Example: liteq purge emails --state delayed --yes
    """
    _purge(queue, None if state == "all" else state, yes, out)


def _purge(queue: str, state: str | None, yes: bool, out: Output) -> None:
    db = open_db()
    q = existing_queue(db, queue)
    counts = q.stats()
    n = counts[state] if state else sum(counts[s] for s in STATE_CHOICES[:-1])
    what = f"{state} message" if state else "message"
    if n == 0:
        out.result({"queue": queue, "state": state, "purged": 0}, f"no {what}s in queue {queue!r}")
        return
    confirm(f"Delete {plural(n, what)} of queue {queue!r} in {db.path} for good?", yes)
    purged = q.purge(state)
    out.result({"queue": queue, "state": state, "purged": purged},
               f"deleted {plural(purged, what)} of queue {queue!r}")


# -- queues ----------------------------------------------------------------------------

class RateLimitType(click.ParamType):
    """``100/s``, ``30/m``, ``500/h``, ``100/s burst 10``, or ``none`` (no limit)."""

    name = "rate|none"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value is None or str(value).lower() == "none":
            return None
        try:
            return check_rate_limit(value, "--rate-limit")
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


#: The click type of each queue option that is a CLI option (see liteq.options).
CLI_TYPES: dict[str, Any] = {
    "rate_limit": RateLimitType(),
    "max_depth": MAX_DEPTH,
    "lease": POSITIVE_DURATION,
    "max_attempts": POSITIVE_INT,
    "dead_letter": DEAD_LETTER,
    "retention": DURATION,
}


def queue_options(f: Any) -> Any:
    """The options of ``queue create`` and ``queue config``: one per declared queue
    option with CLI help (:data:`liteq.options.QUEUE_OPTIONS`), in declared order."""
    for option in reversed(QUEUE_OPTIONS):
        if option.cli_flag is None:
            continue
        kind = CLI_TYPES[option.name]
        f = click.option(option.cli_flag, type=kind, default=None, help=option.cli_help,
                         metavar="N" if kind is POSITIVE_INT else None)(f)
    return f


def _option_updates(ctx: click.Context, **values: Any) -> dict[str, Any]:
    # Only options given on the command line: 'none' (None) is a value to store.
    source = click.core.ParameterSource.COMMANDLINE
    return {k: v for k, v in values.items() if ctx.get_parameter_source(k) == source}


#: How ``queue create|config`` shows each queue option, in declared order
#: (count_depth is in the JSON only).
SHOWN: dict[str, Any] = {
    "max_depth": lambda v: "none (unbounded)" if v is None else str(v),
    "lease": fmt_age,
    "max_attempts": str,
    "dead_letter": lambda v: v or "none (dead messages stay here)",
    "retention": lambda v: fmt_age(v) if v else "0 (delete on ack)",
    "backoff": lambda b: f"{b.base:g}s x{b.factor:g} up to {b.max:g}s, jitter {b.jitter:g}",
    "rate_limit": lambda v: "none" if v is None else f"{v} (claims, across all workers)",
}


def _show_config(q: Queue, out: Output) -> None:
    cfg = q.refresh()
    data = asdict(cfg)
    data["rate_limit"] = None if cfg.rate_limit is None else str(cfg.rate_limit)
    fields = [("queue", cfg.name)] + [
        (o.name, SHOWN[o.name](getattr(cfg, o.name))) for o in QUEUE_OPTIONS if o.name in SHOWN]
    if cfg.topic:
        fields.append(("subscription", f"topic {cfg.topic!r}, pattern {cfg.pattern!r}"))
    fields.append(("paused", "yes (nothing is claimed: 'liteq queue resume')"
                   if cfg.paused else "no"))
    out.record(data, fields)


@click.group("queue")
def queue_group() -> None:
    """Create a queue, show or change its options, pause or resume it, or delete it.

    Example: liteq queue create emails --max-depth 10000 --lease 1m
    """


@queue_group.command("create")
@click.argument("name", type=QUEUE)
@queue_options
@click.option("--ignore", is_flag=True,
              help="If the queue exists, leave it as it is and succeed.")
@output_options
@click.pass_context
def queue_create(ctx: click.Context, name: str, ignore: bool, out: Output, **options: Any) -> None:
    """Create the queue NAME.

    Options not given take their defaults. Makes the database file if it does
    not exist.

    Fails if the queue exists (change its options with 'liteq queue config'),
    unless --ignore.

    Example: liteq queue create emails --max-depth 10000 --dead-letter emails.dead
    """
    db = open_db(create=True)
    try:
        # One transaction: a concurrent creator cannot overwrite these options.
        q = db.create_queue(name, **_option_updates(ctx, **options))
    except liteq.InvalidArgument:
        if not db.has_queue(name):
            raise
        if not ignore:
            raise CliError(f"queue {name!r} already exists (change its options with "
                           f"'liteq queue config {name}', or pass --ignore)") from None
        q = db.queue(name)
    _show_config(q, out)


@queue_group.command("config")
@click.argument("name", type=QUEUE)
@queue_options
@output_options
@click.pass_context
def queue_config(ctx: click.Context, name: str, out: Output, **options: Any) -> None:
    """Show the options of queue NAME, or change those given.

    The options are stored in the file: every process using the queue sees the
    change.

    \b
    Examples:
      liteq queue config emails
      liteq queue config emails --max-depth none --lease 2m
    """
    db = open_db()
    existing_queue(db, name)
    _show_config(db.configure_queue(name, **_option_updates(ctx, **options)), out)


@queue_group.command("pause")
@click.argument("name", type=QUEUE)
@output_options
def queue_pause(name: str, out: Output) -> None:
    """Pause queue NAME: nothing is claimed from it until resumed.

    Workers and consumers claim nothing from the queue until 'liteq queue resume'.
    Puts go on (max_depth still applies); messages already claimed run to their end.

    Example: liteq queue pause emails
    """
    q = existing_queue(open_db(), name)
    q.pause()
    _show_config(q, out)


@queue_group.command("resume")
@click.argument("name", type=QUEUE)
@output_options
def queue_resume(name: str, out: Output) -> None:
    """Resume queue NAME after 'liteq queue pause'; waiting workers start at once.

    Example: liteq queue resume emails
    """
    q = existing_queue(open_db(), name)
    q.resume()
    _show_config(q, out)


@queue_group.command("delete")
@click.argument("name", type=QUEUE)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@output_options
def queue_delete(name: str, yes: bool, out: Output) -> None:
    """Delete the queue NAME and every message in it. Asks first unless --yes.

    Example: liteq queue delete scratch --yes
    """
    db = open_db()
    counts = existing_queue(db, name).stats()
    n = sum(counts[s] for s in STATE_CHOICES[:-1])
    confirm(f"Delete queue {name!r} and its {plural(n, 'message')} in {db.path} for good?", yes)
    db.delete_queue(name)
    out.result({"queue": name, "deleted": True, "messages": n},
               f"deleted queue {name!r} and its {plural(n, 'message')}")


# -- maintenance -----------------------------------------------------------------------

@click.command()
@click.argument("queues", nargs=-1, type=QUEUE)
@click.option("--older-than", type=DURATION, default=None,
              help="Drop finished messages older than this (default: each queue's retention).")
@output_options(rows=True)
def prune(queues: tuple[str, ...], older_than: float | None, out: Output) -> None:
    """Delete old finished messages.

    Deletes the done and cancelled messages (kept by a queue's retention) of
    every queue, or of the QUEUES given, that finished longer ago than
    --older-than (default: each queue's retention), the outcomes of task jobs
    whose result_ttl has run out, and schedule history beyond the newest 1,000
    runs of each schedule.

    \b
    Examples:
      liteq prune
      liteq prune emails --older-than 7d
    """
    db = open_db()
    names = list(queues) or db.queues()
    targets = [existing_queue(db, name) for name in names]
    rows = [{"queue": q.name, "pruned": q.prune(older_than)} for q in targets]
    db.prune_results()  # expired job outcomes (result_ttl)
    db.prune_schedule_runs()  # schedule history: the newest 1,000 runs each
    out.rows(rows, [Column("queue"), Column("pruned", numeric=True)],
             empty=f"no queues in {db.path}")


@click.command()
@output_options
def vacuum(out: Output) -> None:
    """Shrink the database file.

    Checkpoints the write-ahead log and rebuilds the file, giving free pages
    back to the file system. Holds the write lock while it runs.

    Example: liteq vacuum
    """
    db = open_db()
    before = db.storage_size()
    db.checkpoint()
    db.vacuum()
    db.checkpoint()
    after = db.storage_size()
    out.result({"path": db.path, "bytes_before": before, "bytes_after": after},
               f"{db.path}: {_mb(before)} -> {_mb(after)}")


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.1f} kB"
