"""``liteq copy SRC DST``: move a database to another file or engine (``liteq/copy.py``
does the work; this module parses the command line and prints progress)."""

from __future__ import annotations

import json
import time
from dataclasses import asdict

import click

from .cli_base import POSITIVE_INT, CliError, CliState
from .copy import CHUNK_ROWS, CopyReport, choose_tables, copy_database
from .errors import LiteqError

__all__ = ["copy_command"]

#: Seconds between two progress lines of one table.
PROGRESS_EVERY = 2.0


@click.command("copy")
@click.argument("src", metavar="SRC")
@click.argument("dst", metavar="DST")
@click.option("--tables", metavar="T1,T2",
              help="Copy only these tables (queues, flows, messages, wf_jobs, wf_edges, "
                   "results, attempts, schedules, schedule_runs); messages need queues, wf_jobs "
                   "and wf_edges go together with messages.  [default: all]")
@click.option("--dry-run", is_flag=True,
              help="Read SRC and DST, print what would be copied, write nothing.")
@click.option("--force", is_flag=True,
              help="Copy messages under a live lease too (they stay leased on DST until "
                   "their lease runs out).")
@click.option("--chunk", "chunk_rows", type=POSITIVE_INT, default=CHUNK_ROWS,
              show_default=True, help="Rows per transaction on DST.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.pass_context
def copy_command(ctx: click.Context, src: str, dst: str, tables: str | None, dry_run: bool,
                 force: bool, chunk_rows: int, as_json: bool) -> None:
    """Copy a whole liteq database from SRC to DST (SQLite file or postgresql:// URL).

    Queues with their options and subscriptions, messages with their states,
    attempts, delays and keys, job results, schedules with their next fire time
    and their history: every id kept. SRC is read in one snapshot and never
    written (--db is not used). DST must be new or empty; each chunk of rows
    commits with a progress mark, so a copy that was interrupted resumes when run
    again with the same SRC and DST. Messages under a live lease (a worker is
    running them) are refused unless --force. To start over, delete the DST file
    or drop its schema.

    Example: liteq copy app.db postgresql://app@db.internal/appdb
    """
    chosen = choose_tables(tables.split(",")) if tables is not None else None
    state = ctx.find_object(CliState)
    durability = state.durability if state is not None else "normal"
    last = {"at": time.monotonic()}

    def progress(table: str, read: int, total: int) -> None:
        now = time.monotonic()
        if now - last["at"] >= PROGRESS_EVERY and not as_json:
            last["at"] = now
            click.echo(f"  {table}: {read:,} of {total:,} rows read")

    try:
        report = copy_database(src, dst, tables=chosen, dry_run=dry_run, force=force,
                               chunk_rows=chunk_rows, durability=durability,
                               on_progress=progress)
    except LiteqError as exc:
        # One line, even when the driver's text has several (libpq's hints do).
        raise CliError(" ".join(str(exc).split())) from exc
    if as_json:
        click.echo(json.dumps(asdict(report), indent=2))
        return
    _print(report)


def _print(report: CopyReport) -> None:
    verb = "would copy" if report.dry_run else "copied"
    head = {
        "new": "",
        "resumed": " (resuming an interrupted copy)",
        "complete": " (already complete: nothing to do)",
    }[report.status]
    click.echo(f"{report.source} -> {report.destination}{head}")
    for item in report.tables:
        if report.dry_run:
            line = f"{item.rows:,} rows"
        else:
            line = f"{item.copied:,} rows {verb}"
            if item.present:
                line += f", {item.present:,} already there"
            if item.resumed_after:
                line += f" (resumed after id {item.resumed_after})"
        click.echo(f"  {item.table:<14} {line}")
    if report.leased and report.status != "complete":
        needs = " (needs --force)" if report.dry_run else ""
        click.echo(f"  {report.leased:,} leased messages {verb} as leased{needs}: "
                   f"claimable on DST when their lease runs out")
    total = sum(t.rows if report.dry_run else t.copied for t in report.tables)
    if report.dry_run:
        click.echo(f"Dry run: {total:,} rows would be copied; nothing was written.")
    else:
        click.echo(f"Done: {total:,} rows copied in {report.seconds:.1f} s.")
