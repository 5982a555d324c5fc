"""``liteq workers`` and ``liteq metrics``: who is working, and the figures a Prometheus
server scrapes (issue 21)."""

from __future__ import annotations

from typing import Any

import click

from .cli_base import open_db
from .cli_output import Column, Output, fmt_age, output_options
from .metrics import render
from .registry import DEFAULT_STALE, workers

__all__ = ["workers_command", "metrics_command"]


def _jobs_text(jobs: list[dict[str, Any]], now: float) -> str:
    if not jobs:
        return "-"
    parts = []
    for j in jobs:
        text = f"{j['id']} ({fmt_age(now - j['since'])}"
        if j["progress"] is not None:
            text += f", {j['progress']:.0%}"
            if j["note"]:
                text += f" {j['note']}"
        parts.append(text + ")")
    return ", ".join(parts)


@click.command("workers")
@click.option("--stale", type=click.FloatRange(min=0, min_open=True), default=DEFAULT_STALE,
              show_default=True, metavar="SECONDS",
              help="Show a worker as gone once its last heartbeat is older than this.")
@output_options(rows=True)
def workers_command(stale: float, out: Output) -> None:
    """List live workers and schedulers, with the jobs each runs now.

    Each worker and scheduler records itself in the database and updates its
    row every --heartbeat seconds (liteq worker's option). A worker removes its row when it stops cleanly; one that was killed stays
    listed, as gone, once its heartbeat is older than --stale (rows silent for a
    day are removed by the next worker that starts).

    \b
    Examples:
      liteq workers
      liteq workers --stale 60 --json
    """
    db = open_db()
    rows = workers(db, stale)
    now = db.clock()
    for r in rows:
        r["running"] = _jobs_text(r["jobs"], now)
        r["beat"] = now - r["heartbeat_at"]
        r["up"] = now - r["started_at"]
    columns = [Column("id", flex=True), Column("kind"), Column("state"),
                Column("pid", numeric=True), Column("queues", fmt=lambda v: ",".join(v) or "-"),
                Column("pool", fmt=lambda v: v or "-"),
                Column("concurrency", "SLOTS", numeric=True),
                Column("up", fmt=fmt_age), Column("beat", "HEARTBEAT", fmt=fmt_age),
                Column("done", numeric=True), Column("failed", numeric=True),
                Column("running", "RUNNING")]
    if out.json:
        for r in rows:
            for k in ("running", "beat", "up"):
                del r[k]
    out.rows(rows, columns, empty="no workers recorded")


@click.command("metrics")
@click.option("--stale", type=click.FloatRange(min=0, min_open=True), default=DEFAULT_STALE,
              show_default=True, metavar="SECONDS",
              help="Count a worker as gone once its last heartbeat is older than this.")
def metrics_command(stale: float) -> None:
    """Print the database's metrics once, in Prometheus's text format.

    Depth by queue and state (the figures of liteq stats --json), totals, the
    oldest ready message's age, dead messages, workers alive and gone, their
    slots and busy slots, and a histogram of job run times from the history.
    The same text liteq.metrics.render(db) returns for a /metrics endpoint.

    \b
    Examples:
      liteq metrics
      liteq metrics > /var/lib/node_exporter/liteq.prom
    """
    click.echo(render(open_db(), stale=stale), nl=False)
