"""Prometheus metrics (issue 21): :func:`render` gives the text a ``/metrics`` endpoint
serves (the Prometheus text exposition format, version 0.0.4), and ``liteq metrics``
prints it once.

What is in it:

* ``liteq_queue_messages{queue, state}``: messages per queue and state (ready, delayed,
  leased, dead, done, cancelled): the figures of ``liteq stats --json``;
* ``liteq_queue_depth{queue}`` and ``liteq_queue_max_depth{queue}`` (when bounded);
* ``liteq_queue_oldest_ready_age_seconds{queue}``;
* ``liteq_queue_enqueued_total{queue}``, ``liteq_queue_acked_total{queue}``: counters;
* ``liteq_dead_messages``: dead messages in all queues;
* ``liteq_queue_failed_total{queue}`` (deliveries given back: retried, nacked, lease
  expired) and ``liteq_queue_dead_total{queue}`` (messages that went dead), from the
  history's hourly roll-ups over its window (so, like the histogram below, they may
  step down when old hours are pruned);
* ``liteq_workers{kind, state}``: registry rows alive and gone (see ``liteq workers``),
  ``liteq_worker_slots`` and ``liteq_worker_busy_slots`` of the live workers;
* ``liteq_job_run_seconds{queue, task}``: a histogram of job run times, from the
  per-minute history. It covers the history's window (7 days), so it may step down
  when old minutes are pruned; Prometheus's ``rate()`` treats that as a reset.

Every figure is read; nothing is written.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .backends.registry import HISTORY_BUCKETS
from .context import Context
from .errors import LiteqError
from .registry import DEFAULT_STALE, HISTORY_WINDOW, workers

__all__ = ["render", "CONTENT_TYPE", "STATES"]

#: The Content-Type a ``/metrics`` endpoint answers with.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: The message states counted per queue, as ``liteq stats --json`` names them.
STATES = ("ready", "delayed", "leased", "dead", "done", "cancelled")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items()) + "}"


def _number(value: float) -> str:
    if value == float("inf"):
        return "+Inf"
    return repr(float(value)) if isinstance(value, float) else str(value)


class _Text:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, text: str,
               samples: Iterable[tuple[str, dict[str, str], float]]) -> None:
        self.lines.append(f"# HELP {name} {text}")
        self.lines.append(f"# TYPE {name} {kind}")
        for suffix, labels, value in samples:
            self.lines.append(f"{name}{suffix}{_labels(labels)} {_number(value)}")


def _failures(db: Context, stats: list[dict[str, Any]]) -> dict[str, tuple[int, int]]:
    """Each queue's (failed, dead) over the history's window, from its own hourly
    roll-ups (every path counts there: workers, ``nack()``/``fail()`` by hand, leases
    that ran out)."""
    since = int((db.clock() - HISTORY_WINDOW) // 3600) * 60  # a whole hour: the roll-ups
    out = {}
    for s in stats:
        sums = db.backend.history_sums(since, 60, db.queue(s["queue"]).id)
        out[s["queue"]] = (sum(b.failed for b in sums), sum(b.dead for b in sums))
    return out


def render(db: Context, *, stale: float = DEFAULT_STALE) -> str:
    """The metrics of *db* now, in the Prometheus text format (ends with a newline).
    A registry row whose heartbeat is older than *stale* seconds counts as gone."""
    stats: list[dict[str, Any]] = []
    for name in db.backend.queue_names():
        try:
            stats.append(db.queue(name).stats())
        except LiteqError:  # deleted since the listing: not shown (as in liteq stats)
            if name in db.backend.queue_names():
                raise
    out = _Text()
    out.family("liteq_queue_messages", "gauge", "Messages in the queue, by state.",
               (("", {"queue": s["queue"], "state": state}, s[state])
                for s in stats for state in STATES))
    out.family("liteq_queue_depth", "gauge",
               "Unfinished messages (ready, delayed and leased).",
               (("", {"queue": s["queue"]}, s["depth"]) for s in stats))
    out.family("liteq_queue_max_depth", "gauge", "The queue's bound, where it has one.",
               (("", {"queue": s["queue"]}, s["max_depth"]) for s in stats
                if s["max_depth"] is not None))
    out.family("liteq_queue_oldest_ready_age_seconds", "gauge",
               "Age of the oldest ready message (0 when none is ready).",
               (("", {"queue": s["queue"]}, float(s["oldest_ready_age"] or 0.0))
                for s in stats))
    out.family("liteq_queue_enqueued_total", "counter", "Messages ever put.",
               (("", {"queue": s["queue"]}, s["enqueued_total"]) for s in stats))
    out.family("liteq_queue_acked_total", "counter", "Messages ever acked.",
               (("", {"queue": s["queue"]}, s["acked_total"]) for s in stats))
    out.family("liteq_dead_messages", "gauge", "Dead messages in all queues.",
               [("", {}, sum(s["dead"] for s in stats))])
    failures = _failures(db, stats)
    out.family("liteq_queue_failed_total", "counter",
               "Deliveries given back for another attempt (retried, nacked, lease expired), "
               "over the history's window.",
               (("", {"queue": q}, f) for q, (f, _d) in failures.items()))
    out.family("liteq_queue_dead_total", "counter",
               "Messages that went dead (failed for good, or moved to a dead-letter queue), "
               "over the history's window.",
               (("", {"queue": q}, d) for q, (_f, d) in failures.items()))

    registry = workers(db, stale)
    kinds: dict[tuple[str, str], int] = {(k, st): 0 for k in ("worker", "scheduler")
                                         for st in ("alive", "gone")}
    for w in registry:
        kinds[(w["kind"], w["state"])] = kinds.get((w["kind"], w["state"]), 0) + 1
    alive = [w for w in registry if w["state"] == "alive" and w["kind"] == "worker"]
    out.family("liteq_workers", "gauge", "Registered workers and schedulers, alive or gone.",
               (("", {"kind": k, "state": st}, n) for (k, st), n in sorted(kinds.items())))
    out.family("liteq_worker_slots", "gauge", "Jobs the live workers can run at once.",
               [("", {}, sum(w["concurrency"] for w in alive))])
    out.family("liteq_worker_busy_slots", "gauge", "Jobs the live workers are running now.",
               [("", {}, sum(len(w["jobs"]) for w in alive))])

    names = {db.queue(s["queue"]).id: s["queue"] for s in stats}
    since = int((db.clock() - HISTORY_WINDOW) // 60)
    runs: dict[tuple[str, str], list[float]] = {}
    for r in db.backend.history_runs(since):  # summed per (queue, task) by the engine
        if not r.task or not r.runs or r.qid not in names:
            continue
        acc = runs.setdefault((names[r.qid], r.task), [0.0] * (len(HISTORY_BUCKETS) + 2))
        for k, n in enumerate((r.le_10ms, r.le_100ms, r.le_1s, r.le_10s, r.le_60s)):
            acc[k] += n
        acc[-2] += r.runs
        acc[-1] += r.run_total

    def histogram() -> Iterable[tuple[str, dict[str, str], float]]:
        for (queue, task), acc in sorted(runs.items()):
            labels = {"queue": queue, "task": task}
            for k, bound in enumerate(HISTORY_BUCKETS):
                yield "_bucket", {**labels, "le": _number(bound)}, int(acc[k])
            yield "_bucket", {**labels, "le": "+Inf"}, int(acc[-2])
            yield "_sum", labels, acc[-1]
            yield "_count", labels, int(acc[-2])

    out.family("liteq_job_run_seconds", "histogram",
               "Run time of jobs, per queue and task, over the history's window.",
               histogram())
    return "\n".join(out.lines) + "\n"
