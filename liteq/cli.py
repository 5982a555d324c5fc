"""The ``liteq`` command (a first version: ``demo`` and ``stats``)."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
import time
from typing import Any

import click

import liteq

EX_TEMPFAIL = 75


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--db", "db_path", envvar="LITEQ_DB", default="liteq.db", show_default=True,
              help="Database file ($LITEQ_DB).")
@click.pass_context
def cli(ctx: click.Context, db_path: str) -> None:
    """liteq: a durable job and message queue in one SQLite file.

    Exit codes: 0 ok, 1 error, 2 usage, 75 queue full (retry later).

    Example: liteq --db app.db stats
    """
    source = ctx.get_parameter_source("db_path")
    ctx.obj = {"db": db_path, "db_default": source == click.core.ParameterSource.DEFAULT}


def _open(ctx: click.Context) -> liteq.Database:
    try:
        return liteq.connect(ctx.obj["db"])
    except liteq.LiteqError as exc:
        raise click.ClickException(str(exc)) from exc


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def stats(ctx: click.Context, as_json: bool) -> None:
    """Show counts per queue.

    Example: liteq stats --json
    """
    db = _open(ctx)
    rows = [db.queue(name).stats() for name in db.queues()]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    _table(rows, ["queue", "ready", "delayed", "leased", "dead", "done", "max_depth"])


def _table(rows: list[dict[str, Any]], cols: list[str]) -> None:
    widths = {c: max([len(c)] + [len(_cell(r.get(c))) for r in rows]) for c in cols}
    click.echo("  ".join(c.upper().ljust(widths[c]) for c in cols))
    for r in rows:
        click.echo("  ".join(_cell(r.get(c)).ljust(widths[c]) for c in cols))


def _cell(v: Any) -> str:
    return "-" if v is None else str(v)


@cli.command()
@click.option("--messages", "-n", default=2000, show_default=True, help="Messages to move.")
@click.pass_context
def demo(ctx: click.Context, messages: int) -> None:
    """Show liteq working end to end on a fresh database file it creates.

    Producers fill a bounded queue until back pressure answers QueueFull,
    consumers drain it, a poison message ends dead, and a lease runs out and its
    message comes back.

    Example: liteq demo
    """
    path = ctx.obj["db"]
    if ctx.obj["db_default"]:
        path = os.path.join(tempfile.mkdtemp(prefix="liteq-demo-"), "demo.db")
    if os.path.exists(path):
        raise click.ClickException(f"{path} exists; the demo needs a fresh file (give another --db)")
    db = liteq.connect(path)
    click.echo(f"liteq demo on {path}")
    q = db.queue("demo", max_depth=500, lease=0.5, max_attempts=3)
    done = {"n": 0}
    full_hits = {"n": 0}

    def consume() -> None:
        while done["n"] < messages:
            msgs = q.get_many(50, wait=0.2)
            q.ack_many(msgs)
            done["n"] += len(msgs)

    start = time.monotonic()
    consumers = [threading.Thread(target=consume) for _ in range(2)]
    time.sleep(0)
    put = 0
    with click.progressbar(length=messages, label="produce (max_depth 500)") as bar:
        while put < messages:
            try:
                q.put_many([{"n": put + i} for i in range(min(100, messages - put))])
                bar.update(min(100, messages - put))
                put += min(100, messages - put)
            except liteq.QueueFull:
                full_hits["n"] += 1
                if full_hits["n"] == 1:
                    for t in consumers:
                        t.start()
                time.sleep(0.002)
    if full_hits["n"] == 0:
        for t in consumers:
            t.start()
    for t in consumers:
        t.join()
    took = time.monotonic() - start
    click.echo(f"back pressure: QueueFull answered {full_hits['n']} times; "
               f"{messages} messages moved in {took:.2f}s ({messages / took:,.0f}/s)")

    poison = db.queue("demo", max_depth=None)
    poison.put("poison")
    for attempt in range(3):
        m = poison.get(wait=1)
        assert m is not None
        m.nack(delay=0, error=f"ValueError: cannot handle {m.payload!r} (attempt {attempt + 1})")
    dead = poison.peek(1, state="dead")[0]
    click.echo(f"poison message {dead.id} is dead after {dead.attempts} attempts: {dead.error}")

    poison.put("slow")
    m = poison.get()
    assert m is not None
    click.echo(f"claimed message {m.id} and let its 0.5s lease run out ...")
    again = poison.get(wait=3)
    assert again is not None
    click.echo(f"message {again.id} came back (attempts {again.attempts}); "
               f"the old lease token is refused:")
    try:
        m.ack()
    except liteq.LeaseLost as exc:
        click.echo(f"  LeaseLost: {exc}")
    again.ack()
    click.echo("")
    rows = [db.queue(name).stats() for name in db.queues()]
    _table(rows, ["queue", "ready", "delayed", "leased", "dead", "done", "acked_total"])


def main() -> None:
    """Entry point of the ``liteq`` console script."""
    try:
        cli(standalone_mode=True)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
