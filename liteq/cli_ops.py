"""``liteq workers`` and ``liteq metrics``: who is working, and the figures a Prometheus
server scrapes; the attempts timeline ``liteq job N`` shows (issue 21)."""

from __future__ import annotations

from typing import Any

import click

from .cli_base import open_db
from .cli_output import Column, Output, fmt_age, fmt_duration, fmt_time, output_options
from .metrics import render
from .registry import DEFAULT_STALE, workers

__all__ = ["workers_command", "metrics_command", "attempt_fields"]


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


def attempt_fields(db: Any, job_id: int) -> tuple[list[tuple[str, str]], list[dict[str, Any]]]:
    """Job *job_id*'s attempts for ``liteq job``: a field of one line per attempt
    (number, outcome, worker, start, run time, the error's first line), and the same as
    JSON with the whole error text (its traceback)."""
    now = db.clock()
    data, lines = [], []
    for a in db.backend.attempts(job_id):
        took = None if a.started_at is None else max(0.0, a.ended_at - a.started_at)
        data.append({"attempt": a.attempt, "outcome": a.outcome, "worker": a.worker,
                     "started_at": a.started_at, "ended_at": a.ended_at, "duration": took,
                     "error": a.error})
        head = (a.error or "").partition("\n")[0]
        lines.append(f"{a.attempt}. {a.outcome} on {a.worker or 'an unknown worker'}, "
                     f"started {fmt_time(a.started_at, now)}, "
                     f"took {'-' if took is None else fmt_duration(took)}"
                     + (f": {head}" if head else ""))
    return [("timeline", "\n".join(lines) or "-")], data
