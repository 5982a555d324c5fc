"""Workflows against a model (issue 20): random DAGs of chains, groups and chords (nested,
up to ~30 jobs) with random failures, retries, allowed failures and cancellations, run by
a real worker; then a fixed workflow run by two ``liteq worker`` processes that are
SIGKILLed at random and restarted. Each checks what the issue asks:

* every job runs at most once per attempt, and at most once to success;
* a job runs iff its parents' policy allows (each parent succeeded, or ended on a step
  with ``allow_failure``), and gets exactly the inputs the model predicts (a chord's
  callback: every member's result, in order), once;
* every job ends as the model says, and nothing is left waiting.

The model compiles a canvas as the issue defines it, independently of liteq's code.
"""

from __future__ import annotations

import importlib
import itertools
import json
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from dbsql import sql
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from workerapp_tools import PATIENCE, drain, start_worker, wait_until

import liteq
from liteq.workflow import Failed, chain, chord, group

pytestmark = pytest.mark.every_engine

UNFINISHED = {"waiting", "queued", "scheduled", "running", "retrying"}
#: A namespace (labels, queue) per example, never reused.
SPACES = itertools.count(1)


# -- the model ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Leaf:
    """One step: how it behaves (ok, fail: fails at once, flaky: retried once, then ok),
    whether its dependents run when it does not succeed, whether it takes no input."""

    behaviour: str
    allow: bool
    immutable: bool


@dataclass
class Node:
    label: int
    leaf: Leaf
    parents: list[int]
    mode: str | None  # None, "one" (the parent's result), "list" (a group's results)
    state: str = ""
    inputs: list[Any] = field(default_factory=list)


def compile_tree(tree: Any, nodes: list[Node], prev: tuple[list[int], str] | None,
                 make: Any) -> tuple[Any, tuple[list[int], str]]:
    """(canvas, outlets) of *tree*; appends its nodes to *nodes* in the order liteq puts
    their jobs. *make(label, leaf)* builds a leaf's signature."""
    if isinstance(tree, Leaf):
        label = len(nodes)
        mode = None if prev is None or tree.immutable else prev[1]
        nodes.append(Node(label, tree, list(prev[0]) if prev else [], mode))
        return make(label, tree), ([label], "one")
    kind, parts = tree
    if kind == "chain":
        canvases = []
        for part in parts:
            canvas, prev = compile_tree(part, nodes, prev, make)
            canvases.append(canvas)
        assert prev is not None
        return chain(*canvases), prev
    if kind == "group":
        canvases, outs = [], []
        for part in parts:
            canvas, out = compile_tree(part, nodes, prev, make)
            canvases.append(canvas)
            outs.extend(out[0])
        return group(canvases), (outs, "list")
    members, body = parts
    header, out = compile_tree(("group", members), nodes, prev, make)
    callback, last = compile_tree(body, nodes, out, make)
    return chord(header, callback), last


def predict(nodes: list[Node], cancelled: set[int]) -> None:
    """Each node's end state and inputs (nodes are in topological order)."""
    for n in nodes:
        ps = [nodes[p] for p in n.parents]
        if n.label in cancelled or any(p.state != "done" and not p.leaf.allow for p in ps):
            n.state = "cancelled"
            continue
        values = [p.label if p.state == "done" else ["F", p.state] for p in ps]
        n.inputs = [] if n.mode is None else values[:1] if n.mode == "one" else [values]
        n.state = "failed" if n.leaf.behaviour == "fail" else "done"


def shown(value: Any) -> Any:
    if isinstance(value, Failed):
        return ["F", value.outcome]
    if isinstance(value, list):
        return [shown(v) for v in value]
    return value


leaves = st.builds(Leaf, behaviour=st.sampled_from(["ok", "ok", "ok", "fail", "flaky"]),
                   allow=st.sampled_from([False, False, True]), immutable=st.booleans())
trees = st.recursive(
    leaves,
    lambda kids: st.one_of(
        st.tuples(st.just("chain"), st.lists(kids, min_size=1, max_size=3)),
        st.tuples(st.just("group"), st.lists(kids, min_size=1, max_size=4)),
        st.tuples(st.just("chord"), st.tuples(st.lists(kids, min_size=1, max_size=4), kids)),
    ),
    max_leaves=25,
)


# -- random DAGs, one in-process worker --------------------------------------------------------

@pytest.fixture
def step(db: liteq.Database) -> tuple[liteq.Task[Any, Any], list[tuple[int, int, Any]]]:
    runs: list[tuple[int, int, Any]] = []

    @db.task(store_result=True, max_attempts=3)
    def step(*args: Any) -> int:
        *inputs, label, behaviour = args
        job = liteq.current_job()
        assert job is not None
        runs.append((label, job.attempts, shown(inputs)))
        if behaviour == "fail":
            raise liteq.Fail("it fails")
        if behaviour == "flaky" and job.attempts == 1:
            raise liteq.Retry("once more", delay=0)
        return int(label) % 10_000  # the model's label (the namespace is dropped)

    return step, runs


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(tree=trees, data=st.data())
def test_random_workflows_run_each_step_as_the_model_says(db, step, tree, data) -> None:
    task, runs = step
    runs.clear()
    nodes: list[Node] = []
    # Each example on a queue of its own: a failing one leaves nothing for the next.
    space = next(SPACES)
    offset, queue = 10_000 * space, f"q{space}"
    canvas, _out = compile_tree(
        tree, nodes, None, lambda label, leaf: (task.si if leaf.immutable else task.s)(
            offset + label, leaf.behaviour).set(allow_failure=leaf.allow, queue=queue))
    handle = canvas.delay()
    first = (handle.jobs[0] if isinstance(handle, liteq.GroupJob) else handle).workflow
    ids = liteq.workflow.list_jobs(db, workflow=first, limit=10_000)
    assert len(ids) == len(nodes)
    job_of = {n.label: liteq.Job(db, info.id) for n, info in zip(nodes, ids, strict=True)}
    cancelled = set(data.draw(st.lists(st.sampled_from([n.label for n in nodes]),
                                       max_size=3), label="cancelled"))
    for label in sorted(cancelled):
        job_of[label].cancel()
    predict(nodes, cancelled)
    drain(db, concurrency=2, queues=[queue])

    by_label = Counter((label - offset, attempt) for label, attempt, _ in runs)
    assert all(n == 1 for n in by_label.values()), by_label  # at most once per attempt
    for n in nodes:
        info = job_of[n.label].info()
        assert info.state == n.state, (n, info)
        mine = [(a, i) for label, a, i in runs if label - offset == n.label]
        if n.state == "cancelled":
            assert mine == [], n
            continue
        attempts = 2 if n.leaf.behaviour == "flaky" else 1
        assert [a for a, _ in mine] == list(range(1, attempts + 1)), (n, mine)
        assert all(i == n.inputs for _, i in mine), (n, mine)
    assert not {job_of[n.label].state for n in nodes} & UNFINISHED


# -- a fixed workflow, two worker processes SIGKILLed at random --------------------------------

@pytest.fixture
def app(db_target: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    monkeypatch.setenv("LITEQ_DB", db_target)
    import workflowapp

    module = importlib.reload(workflowapp)
    yield module
    module.db.close()


def _workers(target: str, log: Path) -> list[Any]:
    return [start_worker(target, "-c", "2", log=log, app="workflowapp") for _ in range(2)]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="real worker processes")
def test_a_workflow_survives_workers_killed_at_random(app, tmp_path: Path) -> None:
    db, step = app.db, app.step
    db.queue("default", lease=1.5, max_attempts=50)
    rng = random.Random(20)
    members = [Leaf("fail" if i % 7 == 3 else "ok", i % 7 == 3, False) for i in range(12)]
    tree = ("chain", [
        Leaf("ok", False, False),
        ("chord", (members, Leaf("ok", False, False))),
        ("group", [("chain", [Leaf("ok", False, False), Leaf("ok", False, False)]),
                   Leaf("fail", False, True)]),
        ("chord", ([Leaf("ok", False, True), Leaf("ok", False, False)],
                   Leaf("ok", False, False))),
        Leaf("ok", False, True),
    ])
    nodes: list[Node] = []
    canvas, _out = compile_tree(tree, nodes, None, lambda label, leaf: (
        step.si if leaf.immutable else step.s)(label, leaf.behaviour).set(
            allow_failure=leaf.allow))
    canvas.delay()
    predict(nodes, set())
    log = tmp_path / "workers.log"
    workers = _workers(os.environ["LITEQ_DB"], log)
    # How long the workflow may take to end, kills and lease expiries included: seconds
    # on a quiet machine. With 60 s a run failed once under heavy load (its output was
    # not kept); the wait ends as soon as the workflow does, so a longer bound costs nothing.
    deadline = time.monotonic() + 180
    for _ in range(4):  # kill one at a random moment, start another in its place
        time.sleep(rng.uniform(0.1, 0.6))
        victim = workers.pop(rng.randrange(len(workers)))
        victim.send_signal(signal.SIGKILL)
        victim.wait(PATIENCE)
        workers.append(start_worker(os.environ["LITEQ_DB"], "-c", "2", log=log,
                                    app="workflowapp"))
    try:
        wait_until(lambda: not {i.state for i in liteq.workflow.list_jobs(
            db, workflow=1, limit=1000)} & UNFINISHED or time.monotonic() > deadline,
            timeout=240, what="the workflow to end")
    finally:
        for w in workers:
            w.send_signal(signal.SIGKILL)
            w.wait(PATIENCE)
    infos = liteq.workflow.list_jobs(db, workflow=1, limit=1000)
    assert [i.state for i in infos] == [n.state for n in nodes], log.read_text()[-3000:]
    finishes = Counter(tag for (tag,) in sql(db, "SELECT tag FROM finishes"))
    assert all(n == 1 for n in finishes.values()), finishes  # never twice to success
    for n in nodes:
        tag = json.dumps([n.label, n.inputs])
        assert finishes[tag] == (1 if n.state == "done" else 0), (n, finishes)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="real worker processes")
@pytest.mark.parametrize("pool", ["thread", "process", "asyncio"])
def test_every_worker_pool_runs_a_chord_to_its_end(app, tmp_path: Path, pool: str) -> None:
    db, step = app.db, app.step
    members = [Leaf("ok", False, False) for _ in range(6)] + [Leaf("fail", True, False)]
    nodes: list[Node] = []
    canvas, _out = compile_tree(("chain", [Leaf("ok", False, False), (
        "chord", (members, Leaf("ok", False, False)))]), nodes, None, lambda label, leaf: (
        step.si if leaf.immutable else step.s)(label, leaf.behaviour).set(
            allow_failure=leaf.allow))
    callback = canvas.delay()
    predict(nodes, set())
    worker = start_worker(os.environ["LITEQ_DB"], "--pool", pool, "-c", "2",
                          log=tmp_path / "worker.log", app="workflowapp")
    try:
        wait_until(lambda: callback.state not in UNFINISHED, what="the chord's callback")
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(PATIENCE)
    assert callback.state == "done", (tmp_path / "worker.log").read_text()[-2000:]
    finishes = Counter(tag for (tag,) in sql(db, "SELECT tag FROM finishes"))
    assert finishes[json.dumps([nodes[-1].label, nodes[-1].inputs])] == 1, finishes
