"""Workflows (issue 20): signatures, chains, groups, chords and ``depends_on``, and every
way a parent can end settling its dependents in the same transaction.

Jobs are run by an in-process worker in burst mode (it stops once nothing is due: a
dependent released by an ack is due at once, so one drain runs a whole workflow), on
every engine under test.
"""

from __future__ import annotations

import json
import time
from typing import Any

import dbsql
import pytest
from click.testing import CliRunner
from workerapp_tools import drain

import liteq
from liteq import codec
from liteq.backends import State
from liteq.cli import cli
from liteq.errors import InvalidArgument
from liteq.workflow import Failed, GroupJob, chain, chord, group

pytestmark = pytest.mark.every_engine


@pytest.fixture
def tasks(db: liteq.Database) -> dict[str, Any]:
    """A few tasks, and a log of the calls the worker made."""
    calls: list[tuple[str, tuple[Any, ...]]] = []

    @db.task(store_result=True)
    def add(x: int, y: int = 1) -> int:
        calls.append(("add", (x, y)))
        return x + y

    @db.task  # no stored result: dependents still get it
    def double(x: int) -> int:
        calls.append(("double", (x,)))
        return 2 * x

    @db.task(store_result=True)
    def collect(*values: Any) -> list[Any]:
        calls.append(("collect", values))
        return [shown(v) for v in values]

    @db.task(max_attempts=1)
    def boom(*args: Any) -> None:
        calls.append(("boom", args))
        raise RuntimeError("boom")

    return {"add": add, "double": double, "collect": collect, "boom": boom, "calls": calls}


def shown(value: Any) -> Any:
    """A result as a task can return it: a Failed parent as a dict."""
    if isinstance(value, Failed):
        return {"failed": value.job_id, "outcome": value.outcome, "error": value.error}
    if isinstance(value, list):
        return [shown(v) for v in value]
    return value


def message_state(db: liteq.Database, mid: int) -> tuple[int, str | None] | None:
    found = dbsql.sql(db, "SELECT state, error FROM messages WHERE id = ?", (mid,))
    return (found[0][0], found[0][1]) if found else None


# -- 1. signatures, chains, groups, chords, depends_on -------------------------------------

def test_a_chain_passes_each_result_to_the_next_step_even_without_stored_results(
        db, tasks) -> None:
    add, double = tasks["add"], tasks["double"]
    last = chain(add.s(1), double.s(), double.s(), add.s(y=100)).delay()
    assert last.state == "waiting"
    drain(db)
    assert last.result() == 108
    assert [c for c in tasks["calls"]] == [("add", (1, 1)), ("double", (2,)), ("double", (4,)),
                                          ("add", (8, 100))]


def test_a_result_that_is_none_or_cannot_travel_reaches_the_next_step_as_none(
        db, tasks) -> None:
    """None, and a value the codec refuses, both reach the dependent as None; the worker
    keeps them with its ack (SQLite: in the results row, the value that cannot travel as
    an empty one, which the edge reads back as no value, not as a parent pending)."""
    seen: list[Any] = []

    @db.task
    def gives(kind: str) -> Any:
        return None if kind == "none" else object()

    @db.task
    def takes(value: Any, kind: str) -> None:
        seen.append((kind, value))

    jobs = [chain(gives.s(kind), takes.s(kind)).delay() for kind in ("none", "object")]
    drain(db)
    assert sorted(seen) == [("none", None), ("object", None)]
    assert [(e.outcome, e.value) for j in jobs for e in j.edges()[0]] == [
        ("done", codec.encode(None, 99)), ("done", None)]  # None's CBOR; no value at all


def test_then_is_a_chain_and_an_immutable_step_gets_no_result(db, tasks) -> None:
    add, collect = tasks["add"], tasks["collect"]
    last = add.s(1).then(collect.si("alone"), collect.s()).delay()
    drain(db)
    assert last.result() == [["alone"]]


def test_a_group_runs_its_members_and_gives_their_results_in_order(db, tasks) -> None:
    g = group(tasks["add"].s(i) for i in range(5)).delay()
    assert isinstance(g, GroupJob) and len(g) == 5
    assert g.counts() == {"queued": 5}
    drain(db)
    assert g.results(wait=5) == [1, 2, 3, 4, 5]
    assert g.counts() == {"done": 5}
    assert {j.workflow for j in g} == {g.workflow}


def test_cancelling_a_group_cancels_every_member_that_has_not_run(db, tasks) -> None:
    g = group(tasks["add"].s(i) for i in range(3)).delay()
    assert g.cancel() == {"cancelled": 3}
    drain(db)
    assert g.counts() == {"cancelled": 3}
    assert tasks["calls"] == []


def test_a_chord_callback_runs_once_with_every_members_result_in_order(db, tasks) -> None:
    add, collect = tasks["add"], tasks["collect"]
    callback = chord(group(add.s(i) for i in range(10)), collect.s("tail")).delay()
    assert callback.state == "waiting"
    drain(db)
    assert callback.result() == [[i + 1 for i in range(10)], "tail"]
    assert [c for c in tasks["calls"] if c[0] == "collect"] == [
        ("collect", ([i + 1 for i in range(10)], "tail"))]


def test_nested_workflows_chain_groups_and_chords(db, tasks) -> None:
    add, double, collect = tasks["add"], tasks["double"], tasks["collect"]
    flow = chain(add.s(1),
                 group([double.s(), chain(double.s(), double.s())]),
                 collect.s(),
                 chord(group([collect.s(), collect.si(0)]), collect.s()))
    last = flow.delay()
    drain(db)
    inner = [[4, 8]]
    assert last.result() == [[[inner], [0]]]


def test_depends_on_makes_a_job_wait_for_others_whatever_their_queue(db, tasks) -> None:
    add = tasks["add"]
    a = add.enqueue([1])
    b = add.enqueue([2], queue="other")
    after = add.enqueue([3], depends_on=[a, b.id])
    assert after.state == "waiting"
    assert [p.id for p in after.parents] == [a.id, b.id]
    assert [c.id for c in a.children] == [after.id]
    drain(db, queues=["default"])
    assert a.state == "done" and after.state == "waiting"
    drain(db, queues=["other", "default"])
    assert after.result() == 4  # its own arguments, unchanged


def test_depends_on_a_job_that_already_succeeded_runs_at_once(db, tasks) -> None:
    a = tasks["add"].delay(1)
    drain(db)
    after = tasks["add"].s().enqueue(depends_on=[a])
    assert after.state == "queued"
    drain(db)
    assert after.result() == 3


def test_signature_options_apply_to_the_steps_job(db, tasks) -> None:
    add = tasks["add"]
    last = chain(add.s(1), add.s().set(queue="late", priority=7, delay=3600)).delay()
    drain(db)
    info = last.info()
    assert info.state == "scheduled" and info.queue == "late"
    assert message_state(db, last.id) == (State.DELAYED, None)


# -- bad input: refused at the edge, nothing written ---------------------------------------

def test_bad_workflows_are_refused_and_nothing_is_written(db, tasks) -> None:
    add = tasks["add"]

    def unregistered(x: int) -> int:
        return x

    stray = db.task(unregistered)
    db.tasks.pop(stray.name)
    with pytest.raises(InvalidArgument, match="not registered"):
        chain(add.s(1), stray.s()).delay()
    with pytest.raises(InvalidArgument, match="no job with id 999999"):
        chain(add.s(1), add.s()).enqueue(depends_on=[999_999])
    with pytest.raises(InvalidArgument, match="at least one member"):
        chord(group([]), add.s())
    with pytest.raises(InvalidArgument, match="takes signatures"):
        chain(add.s(1), "add")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match=r"first argument.*\.si\(\)"):
        chain(add.s(1), add.s(1, 2)).delay()  # 3 arguments for add(x, y)
    with pytest.raises(InvalidArgument, match="key= is only"):
        chain(add.s(1), add.s().set(key="k")).delay()
    assert dbsql.count(db, "messages") == 0
    assert db.backend.wf_parents_among(list(range(1, 20))) == {}


# -- 2. every ending settles the dependents --------------------------------------------------

def test_a_failure_after_the_last_attempt_cancels_the_dependents_with_the_reason(
        db, tasks) -> None:
    boom, add = tasks["boom"], tasks["add"]
    first = boom.delay()
    second = add.s(1).enqueue(depends_on=[first])
    third = chain(add.s(5), add.s()).enqueue(depends_on=[second])
    drain(db)
    assert first.state == "failed"
    assert second.state == "cancelled"
    assert str(second.error) == f"parent job {first.id} failed"
    assert third.state == "cancelled"
    assert [c for c in tasks["calls"] if c[0] == "add"] == []


def test_allow_failure_lets_the_dependents_run_and_see_the_failure(db, tasks) -> None:
    boom, collect = tasks["boom"], tasks["collect"]
    last = chain(boom.s().set(allow_failure=True), collect.s()).delay()
    drain(db)
    (seen,) = last.result()
    assert seen["failed"] == last.parents[0].id and seen["outcome"] == "failed"
    assert "RuntimeError: boom" in seen["error"]


def test_a_chord_with_an_allowed_failure_still_calls_back_once(db, tasks) -> None:
    add, boom, collect = tasks["add"], tasks["boom"], tasks["collect"]
    callback = chord(group([add.s(1), boom.s().set(allow_failure=True), add.s(3)]),
                     collect.s()).delay()
    drain(db)
    (results,) = callback.result()
    assert results[0] == 2 and results[2] == 4 and results[1]["outcome"] == "failed"


def test_death_by_lease_expiry_cancels_the_dependents(clocked_db, clock) -> None:
    db = clocked_db

    @db.task(queue="short")
    def slow() -> None: ...

    @db.task
    def after() -> None: ...

    db.queue("short", lease=5, max_attempts=1)
    parent = slow.delay()
    child = after.si().enqueue(depends_on=[parent])
    msg = db.queue("short").get()
    assert msg is not None and msg.id == parent.id
    clock.advance(10)
    db.backend.expire(db.queue("short").id)
    assert parent.state == "failed"
    assert child.state == "cancelled"
    assert str(child.error) == f"parent job {parent.id} failed"


def test_death_by_unknown_task_cancels_the_dependents(db, tasks) -> None:
    db.queue("ghosts", max_attempts=1)

    @db.task(queue="ghosts")
    def ghost() -> None: ...

    child = chain(ghost.s(), tasks["add"].si(1)).delay()
    db.tasks.pop(ghost.name)
    drain(db, queues=["ghosts", "default"])
    assert child.state == "cancelled"
    assert child.parents[0].state == "failed"


def test_cancelling_a_parent_cancels_its_dependents(db, tasks) -> None:
    add = tasks["add"]
    last = chain(add.s(1), add.s(), add.s()).delay()
    first = last.parents[0].parents[0]
    assert first.cancel() == "cancelled"
    assert last.state == "cancelled"
    assert str(last.parents[0].error) == f"parent job {first.id} was cancelled"
    drain(db)
    assert tasks["calls"] == []


def test_purging_a_parent_cancels_its_dependents(db, tasks) -> None:
    add = tasks["add"]
    parent = add.enqueue([1], queue="doomed")
    child = add.s().enqueue(depends_on=[parent])
    db.queue("doomed").purge()
    assert child.state == "cancelled"
    assert str(child.error) == f"parent job {parent.id} was purged"


def test_a_retained_ack_releases_the_dependents(db, tasks) -> None:
    db.queue("kept", retention=3600)
    add = tasks["add"]
    last = chain(add.s(1).set(queue="kept"), add.s()).delay()
    drain(db, queues=["kept", "default"])
    assert last.result() == 3


def test_a_parent_acked_by_hand_releases_its_dependents_with_no_result(db, tasks) -> None:
    """Every success releases the dependents, a hand ack's too (Message.ack, ack_many, a
    receipt), in the transaction that acks it, whether the queue keeps finished jobs
    or deletes them, counts its depth or not. With no result: the dependents get
    None for it. Plain messages acked beside them are acked as ever."""
    db.queue("kept", retention=3600)
    db.queue("counted", max_depth=100)
    add, collect = tasks["add"], tasks["collect"]
    parents = {name: add.enqueue([1], queue=name) for name in ("kept", "deleted", "counted")}
    children = {name: collect.s().enqueue(depends_on=[job]) for name, job in parents.items()}
    for name in parents:
        msg = db.queue(name).get()
        assert msg is not None and msg.id == parents[name].id
        msg.ack()
    # a batch of two plain messages and a parent; and a receipt
    batch_q = db.queue("batch")
    plain = [batch_q.put({"n": i}) for i in range(2)]
    in_batch = add.enqueue([1], queue="batch")
    by_batch = collect.s().enqueue(depends_on=[in_batch])
    claimed = batch_q.get_many(10)
    assert sorted(m.id for m in claimed) == sorted([*plain, in_batch.id])
    batch_q.ack_many(claimed)
    receipt_parent = add.enqueue([1], queue="receipts")
    by_receipt = collect.s().enqueue(depends_on=[receipt_parent])
    msg = db.queue("receipts").get()
    assert msg is not None
    db.ack(msg.receipt)
    released = [*children.values(), by_batch, by_receipt]
    assert [job.state for job in released] == ["queued"] * len(released)
    assert len(batch_q) == 0 and len(db.queue("counted")) == 0  # the depth counter released
    drain(db)
    assert [job.result() for job in released] == [[None]] * len(released)


def test_a_stale_hand_ack_of_a_parent_changes_nothing(db, tasks) -> None:
    add, collect = tasks["add"], tasks["collect"]
    for how in ("ack", "ack_many", "receipt"):
        q = db.queue(how, lease=0.2)
        parent = add.enqueue([1], queue=how)
        child = collect.s().enqueue(depends_on=[parent])
        first = q.get()
        assert first is not None
        time.sleep(0.3)
        second = q.get()  # the lease ran out: claimed again, a new token
        assert second is not None and second.id == first.id
        with pytest.raises(liteq.LeaseLost):
            if how == "ack":
                first.ack()
            elif how == "ack_many":
                q.ack_many([first])
            else:
                db.ack(first.receipt)
        assert child.state == "waiting" and len(q) == 1
        second.ack()
        assert child.state == "queued"
    drain(db)


def test_redriving_a_failed_parent_re_arms_the_dependents_it_cancelled(db, tasks) -> None:
    broken = {"yes": True}

    @db.task(queue="flaky", max_attempts=1, store_result=True)
    def flaky(x: int) -> int:
        if broken["yes"]:
            raise RuntimeError("not yet")
        return x

    add = tasks["add"]
    last = chain(flaky.s(1), add.s(), add.s()).delay()
    drain(db, queues=["flaky", "default"])
    assert last.state == "cancelled"
    broken["yes"] = False
    assert db.queue("flaky").redrive() == 1
    assert last.state == "waiting"
    drain(db, queues=["flaky", "default"])
    assert last.result() == 3


# -- 3. visible: Job.parents/.children/.workflow, liteq job N, liteq jobs --workflow ---------

def run_cli(db_target: str, *args: str) -> Any:
    return CliRunner().invoke(cli, ["--db", db_target, *args], prog_name="liteq",
                              catch_exceptions=False)


def test_a_job_knows_its_parents_children_and_workflow(db, tasks) -> None:
    add = tasks["add"]
    callback = chord(group([add.s(1), add.s(2)]), add.s(0)).delay()
    members = callback.parents
    assert [m.state for m in members] == ["queued", "queued"]
    assert all(m.children == [callback] for m in members)
    assert {m.workflow for m in [*members, callback]} == {members[0].id}
    assert tasks["add"].delay(5).workflow is None


def test_liteq_job_shows_the_parents_children_and_workflow_state(db, db_target, tasks) -> None:
    add, boom = tasks["add"], tasks["boom"]
    last = chain(add.s(1), boom.s().set(allow_failure=True), add.si(2)).delay()
    first = last.parents[0].parents[0]
    shown = run_cli(db_target, "job", str(last.parents[0].id))
    assert shown.exit_code == 0, shown.output
    assert f"parents     {first.id} (not ended)" in shown.output
    assert f"children    {last.id}" in shown.output
    assert f"workflow    {first.id}: running (1 queued, 2 waiting)" in shown.output
    drain(db)
    data = json.loads(run_cli(db_target, "job", str(last.id), "--json").output)
    assert data["parents"] == [{"id": last.parents[0].id, "outcome": "failed",
                                "allow_failure": True}]
    assert data["workflow"] == {"id": first.id, "state": "finished",
                                "jobs": {"done": 2, "failed": 1}}


def test_liteq_jobs_lists_one_workflow_in_order(db, db_target, tasks) -> None:
    add = tasks["add"]
    add.delay(100)  # not in the workflow
    g = group(add.s(i) for i in range(3)).delay()
    listed = json.loads(run_cli(db_target, "jobs", "--workflow", str(g.workflow),
                                "--json").output)
    assert [j["id"] for j in listed] == g.ids
    empty = run_cli(db_target, "jobs", "--workflow", "999999")
    assert empty.exit_code == 0 and "no jobs in workflow 999999" in empty.output


# -- records of jobs that are gone ---------------------------------------------------------

def test_pruning_expired_results_forgets_the_workflow_records_of_jobs_gone(db) -> None:
    @db.task(result_ttl=0)
    def fleeting(x: int) -> int:
        return x + 1

    @db.task(store_result=True)
    def keep(x: int) -> int:
        return x * 10

    last = chain(fleeting.s(1), fleeting.s(), keep.s().set(queue="later")).delay()
    workflow = last.workflow
    drain(db)  # the two fleeting steps; the last one waits in "later"
    read = [(e.outcome, codec.decode(e.value)) for e in last.edges()[0]]
    assert read == [("done", 3)]
    db.prune_results()  # (SQLite: the result kept in the results row moves to the edge)
    assert [(e.outcome, codec.decode(e.value)) for e in last.edges()[0]] == read
    assert db.backend.wf_members(workflow) == [last.id]  # the gone ones are forgotten...
    assert [e.parent for e in last.edges()[0]] == [last.id - 1]  # ...not what it reads
    drain(db, queues=["later"])
    assert last.result() == 30


def test_a_parent_moved_to_its_dead_letter_queue_cancels_the_dependents(db, tasks) -> None:
    db.queue("risky", max_attempts=1, dead_letter="risky.dead")

    @db.task(queue="risky")
    def shaky() -> None:
        raise RuntimeError("no")

    child = chain(shaky.s(), tasks["add"].si(1)).delay()
    drain(db, queues=["risky", "default"])
    assert child.parents[0].state == "failed"
    assert child.state == "cancelled"


def test_liteq_jobs_lists_the_waiting_jobs(db, db_target, tasks) -> None:
    last = chain(tasks["add"].s(1), tasks["add"].s()).delay()
    listed = json.loads(run_cli(db_target, "jobs", "--state", "waiting", "--json").output)
    assert [j["id"] for j in listed] == [last.id]
