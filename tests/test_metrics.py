"""Prometheus metrics (issue 21): ``liteq.metrics.render(db)`` and ``liteq metrics`` parse
with prometheus_client's own parser, and their depth figures equal ``liteq stats
--json``. On every engine."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families
from workerapp_tools import drain

import liteq
from liteq.cli import cli
from liteq.metrics import STATES, render
from liteq.registry import Registration

pytestmark = pytest.mark.every_engine


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _fill(db: liteq.Database) -> None:
    @db.task(name="ok")
    def ok() -> None:
        pass

    @db.task(name="bad", max_attempts=1)
    def bad() -> None:
        raise ValueError("no")

    for _ in range(3):
        ok.delay()
    bad.delay()
    drain(db)
    emails = db.queue("emails", max_depth=50)
    emails.put_many([{"n": n} for n in range(5)])
    emails.put("later", delay=3600)
    emails.get()  # leased
    db.queue("empty")
    db.backend.flush_totals()  # totals are written about once a second; now, for the CLI


def _stats_json(target: str) -> list[dict[str, Any]]:
    result = CliRunner().invoke(cli, ["--db", target, "stats", "--json"], prog_name="liteq",
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return list(json.loads(result.stdout))


def test_the_metrics_parse_and_their_depth_figures_equal_liteq_stats_json(
        db: liteq.Database, db_target: str) -> None:
    _fill(db)
    samples = _samples(render(db))
    rows = _stats_json(db_target)
    assert {r["queue"] for r in rows} == {"default", "emails", "empty"}
    for row in rows:
        q = row["queue"]
        for state in STATES:
            assert samples[("liteq_queue_messages", (("queue", q), ("state", state)))] == row[state]
        assert samples[("liteq_queue_depth", (("queue", q),))] == row["depth"]
        assert samples[("liteq_queue_enqueued_total", (("queue", q),))] == row["enqueued_total"]
        assert samples[("liteq_queue_acked_total", (("queue", q),))] == row["acked_total"]
    assert samples[("liteq_queue_max_depth", (("queue", "emails"),))] == 50
    assert samples[("liteq_dead_messages", ())] == sum(r["dead"] for r in rows) == 1
    assert samples[("liteq_queue_oldest_ready_age_seconds", (("queue", "emails"),))] >= 0


def test_the_run_time_histogram_counts_each_tasks_runs(db: liteq.Database) -> None:
    _fill(db)
    samples = _samples(render(db))
    ok = (("queue", "default"), ("task", "ok"))
    assert samples[("liteq_job_run_seconds_count", ok)] == 3
    assert samples[("liteq_job_run_seconds_bucket", (("le", "+Inf"), *ok))] == 3
    assert samples[("liteq_job_run_seconds_bucket", (("le", "60.0"), *ok))] == 3
    assert samples[("liteq_job_run_seconds_sum", ok)] >= 0
    bad = (("queue", "default"), ("task", "bad"))
    assert samples[("liteq_job_run_seconds_count", bad)] == 1


def test_workers_and_busy_slots_come_from_the_registry(db: liteq.Database) -> None:
    a = Registration(db, "worker", queues=["a"], pool="thread", concurrency=4,
                     running=lambda: [11, 12])
    b = Registration(db, "worker", queues=["b"], pool="process", concurrency=2)
    s = Registration(db, "scheduler", queues=[], pool="", concurrency=0)
    for r in (a, b, s):
        r.start()
    samples = _samples(render(db))
    assert samples[("liteq_workers", (("kind", "worker"), ("state", "alive")))] == 2
    assert samples[("liteq_workers", (("kind", "scheduler"), ("state", "alive")))] == 1
    assert samples[("liteq_workers", (("kind", "worker"), ("state", "gone")))] == 0
    assert samples[("liteq_worker_slots", ())] == 6
    assert samples[("liteq_worker_busy_slots", ())] == 2
    stale = _samples(render(db, stale=1e-9))
    assert stale[("liteq_workers", (("kind", "worker"), ("state", "gone")))] == 2
    assert stale[("liteq_worker_slots", ())] == 0


def test_liteq_metrics_prints_what_render_returns(db: liteq.Database, db_target: str) -> None:
    _fill(db)
    result = CliRunner().invoke(cli, ["--db", db_target, "metrics"], prog_name="liteq",
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    printed, rendered = _samples(result.stdout), _samples(render(db))
    age = "liteq_queue_oldest_ready_age_seconds"
    assert {k: v for k, v in printed.items() if k[0] != age} == \
        {k: v for k, v in rendered.items() if k[0] != age}


def test_failures_by_a_worker_and_by_hand_are_counted_per_queue(db: liteq.Database) -> None:
    _fill(db)  # one job of "default" failed for good through the worker
    plain = db.queue("plain", max_attempts=2)
    plain.put_many([1, 2, 3])
    plain.get().nack()  # type: ignore[union-attr]  # failed once, ready again
    plain.get().fail("bad")  # type: ignore[union-attr]  # dead
    samples = _samples(render(db))
    # prometheus_client's parser drops a counter's _total suffix from the family name.
    assert samples[("liteq_queue_failed_total", (("queue", "plain"),))] == 1
    assert samples[("liteq_queue_dead_total", (("queue", "plain"),))] == 1
    assert samples[("liteq_queue_dead_total", (("queue", "default"),))] == 1
    assert samples[("liteq_queue_failed_total", (("queue", "emails"),))] == 0
