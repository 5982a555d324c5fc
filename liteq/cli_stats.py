"""``liteq stats``: counts per queue, once or refreshed in place with ``--watch``.

A rate needs two samples: ``acked_total`` and ``enqueued_total`` are counters kept
in the file, and a rate is their change between two samples over the time between
them. One sample shows no rates; ``--interval S`` alone takes two samples S apart;
``--watch`` shows the rate over each refresh interval.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Sequence
from typing import Any

import click

from .cli_base import DURATION, QUEUE, existing_queue, open_db
from .cli_output import (
    Column,
    Output,
    fmt_age,
    fmt_rate,
    output_options,
    render_table,
    terminal_width,
    to_json,
)
from .database import Database
from .errors import LiteqError
from .flow import RateLimit

__all__ = ["stats", "sample", "STATS_COLUMNS", "RATE_COLUMNS", "PAUSED_COLUMN", "with_paused",
           "LIMIT_COLUMNS", "limit_rows"]

STATS_COLUMNS = [
    Column("queue"),
    Column("ready", numeric=True),
    Column("delayed", numeric=True),
    Column("leased", numeric=True),
    Column("dead", numeric=True),
    Column("done", numeric=True),
    Column("max_depth", numeric=True),
    Column("oldest_ready_age", "OLDEST", fmt=fmt_age, numeric=True),
]
RATE_COLUMNS = [
    Column("put_rate", "PUT/S", fmt=fmt_rate, numeric=True),
    Column("ack_rate", "ACK/S", fmt=fmt_rate, numeric=True),
]
#: Shown only when a listed queue is paused (``liteq queue pause``).
PAUSED_COLUMN = Column("paused", fmt=lambda v: "paused" if v else "-")


#: Shown only when a listed queue has limits (issue 19): its own rate limit, the leased
#: jobs under a task's limits (slots in use) and the ready ones a limit holds back.
LIMIT_COLUMNS = [
    Column("rate_limit", "RATE LIMIT", fmt=lambda v: v or "-"),
    Column("limited_running", "SLOTS", numeric=True),
    Column("held", "HELD", numeric=True),
]
#: ``liteq stats --limits``: every task's stored limits.
TASK_LIMIT_COLUMNS = [
    Column("task"),
    Column("max_concurrency", "CAP", fmt=lambda v: "-" if v is None else str(v)),
    Column("rate_limit", "RATE LIMIT", fmt=lambda v: v or "-"),
    Column("running", numeric=True),
    Column("tokens", fmt=lambda v: "-" if v is None else f"{v:.1f}", numeric=True),
]


def with_paused(columns: list[Column], rows: Sequence[dict[str, Any]]) -> list[Column]:
    """*columns*, plus the limit columns when one of *rows* has limits, and the PAUSED
    column when one is a paused queue."""
    if any(r.get("rate_limit") or r.get("limited_running") or r.get("held") for r in rows):
        columns = columns + LIMIT_COLUMNS
    return columns + [PAUSED_COLUMN] if any(r.get("paused") for r in rows) else columns


def limit_rows(db: Database) -> list[dict[str, Any]]:
    """Every task's stored limits (``liteq stats --limits``): its cap (per concurrency
    key when its jobs carry one), rate limit, jobs running under it and bucket tokens."""
    rows = []
    for name, cap, rate, burst, tokens, running in db.backend.flows():
        limit = RateLimit.from_columns(rate, burst)
        rows.append({"task": name, "max_concurrency": cap,
                     "rate_limit": None if limit is None else str(limit),
                     "running": running, "tokens": None if limit is None else tokens})
    return rows


def sample(db: Database, names: Sequence[str] | None = None,
           previous: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """One row per queue (every queue, or *names*): its ``Queue.stats()`` plus
    ``put_rate`` and ``ack_rate`` in messages/s since *previous* (None without one).

    Each row keeps the monotonic time of its sample under ``"_at"``; pass the rows
    back (keyed by queue) as *previous* to get rates.
    """
    rows = []
    for name in names if names is not None else db.queues():
        try:
            row = db.queue(name).stats()
        except LiteqError:
            if db.has_queue(name):
                raise
            continue  # deleted by another process since the listing: not shown
        at = time.monotonic()
        row["put_rate"] = row["ack_rate"] = None
        before = (previous or {}).get(name)
        if before is not None and at > before["_at"]:
            elapsed = at - before["_at"]
            row["put_rate"] = max(0, row["enqueued_total"] - before["enqueued_total"]) / elapsed
            row["ack_rate"] = max(0, row["acked_total"] - before["acked_total"]) / elapsed
        row["_at"] = at
        rows.append(row)
    return rows


def _public(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]


@click.command()
@click.argument("queues", nargs=-1, type=QUEUE)
@click.option("--watch", "-w", is_flag=True,
              help="Refresh in place until Ctrl-C, with rates over each interval.")
@click.option("--interval", "-i", type=DURATION, default=None,
              help="Seconds between refreshes with --watch (default 2); without --watch, "
                   "sample twice this far apart to show rates.")
@click.option("--count", "-c", type=click.IntRange(min=1), default=None, metavar="N",
              help="With --watch, stop after N refreshes.")
@click.option("--limits", is_flag=True,
              help="Show every task's limits instead: cap, rate limit, jobs running, tokens.")
@output_options(rows=True)
def stats(queues: tuple[str, ...], watch: bool, interval: float | None, count: int | None,
          limits: bool, out: Output) -> None:
    """Show counts per queue.

    For each queue (or the QUEUES given): ready, delayed, leased, dead and done
    messages, max_depth, and the age of the oldest ready message (and PAUSED
    when a queue is paused: see 'liteq queue pause'). When a queue has limits:
    its RATE LIMIT, the SLOTS in use (running jobs under a task's limits) and the
    jobs HELD back by a limit right now; --limits lists each task's limits.

    Rates (messages put and acked per
    second) need two samples: use --interval S, or --watch. Expired leases count
    as leased until a consumer's next claim releases them.

    In JSON every row has all the counters: cancelled, depth, enqueued_total,
    acked_total, put_rate, ack_rate, paused, rate_limit, limited_running and held too.

    \b
    Examples:
      liteq stats
      liteq stats emails --interval 5s --json
      liteq stats --watch --interval 1
      liteq stats --limits
    """
    db = open_db()
    if limits:
        if watch or queues:
            raise click.UsageError("--limits lists the tasks' limits: give no QUEUES or --watch")
        out.rows(limit_rows(db), TASK_LIMIT_COLUMNS, empty="no task has limits")
        return
    names = list(queues) or None
    for name in names or []:
        existing_queue(db, name)
    if not watch:
        if count is not None:
            raise click.UsageError("--count needs --watch")
        rows = sample(db, names)
        columns = STATS_COLUMNS
        if interval:
            time.sleep(interval)
            rows = sample(db, names, {r["queue"]: r for r in rows})
            columns = STATS_COLUMNS + RATE_COLUMNS
        out.rows(_public(rows), with_paused(columns, rows), empty=f"no queues in {db.path}")
        return
    if out.fmt == "json":
        raise click.UsageError("--watch prints a stream: use --nl (or the table), not --json")
    _watch(db, names, interval or 2.0, count, out)


def _watch(db: Database, names: list[str] | None, interval: float, count: int | None,
           out: Output) -> None:
    tty = sys.stdout.isatty() and out.fmt == "table"
    previous: dict[str, dict[str, Any]] = {}
    frames = 0
    try:
        while True:
            rows = sample(db, names, previous)
            previous = {r["queue"]: r for r in rows}
            stamp = time.strftime("%H:%M:%S")
            if out.fmt == "nl":
                for r in _public(rows):
                    click.echo(to_json({"time": time.time(), **r}))
            else:
                head = (f"liteq stats  {db.path}  every {fmt_age(interval)}  {stamp}"
                        + ("  (Ctrl-C to stop)" if tty else ""))
                lines = [head, ""]
                if rows:
                    lines += render_table(_public(rows),
                                          with_paused(STATS_COLUMNS + RATE_COLUMNS, rows),
                                          terminal_width())
                else:
                    lines.append(f"no queues in {db.path}")
                _frame(lines, tty, first=frames == 0)
            frames += 1
            if count is not None and frames >= count:
                return
            time.sleep(interval)
    except KeyboardInterrupt:
        if tty:
            click.echo("")


def _frame(lines: list[str], tty: bool, first: bool) -> None:
    if not tty:
        if not first:
            click.echo("")
        click.echo("\n".join(lines))
        return
    # Redraw from the top-left corner, clearing each line's tail and everything
    # below, in one write: no flicker, and no scrolling up the terminal's history.
    # A frame taller than the screen would scroll and smear, so it is cut.
    height = shutil.get_terminal_size((100, 24)).lines
    if len(lines) > height - 1:
        more = len(lines) - (height - 2)
        lines = lines[: height - 2] + [f"... and {more} more (name the queues to show)"]
    text = "\x1b[H" + "".join(line + "\x1b[K\n" for line in lines) + "\x1b[J"
    if first:
        text = "\x1b[2J" + text
    sys.stdout.write(text)
    sys.stdout.flush()

