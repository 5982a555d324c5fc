"""Workflows: signatures, chains, groups, chords and ``depends_on`` (issue 20).

::

    a.s(1).then(b.s(), c.s()).delay()          # a(1), then b(<a's result>), then c(<b's>)
    chain(a.s(1), b.si(2)).delay()              # .si(): b(2) gets no result
    g = group(fetch.s(url) for url in urls).delay()    # a GroupJob
    g.results(wait=60)                          # [result of each member, in order]
    chord(group(fetch.s(u) for u in urls), merge.s()).delay()   # merge([results...])
    report.enqueue([day], depends_on=[job1, job2])          # any DAG

A workflow is inserted in one transaction: every job's message, and the edges that make
a job wait for its parents (a job with parents is *waiting*: a message no claim takes).
The engines settle the edges in the transaction that ends a parent, whatever the ending
(ack, failure after the last attempt, death by lease expiry or unknown task, cancel,
purge): the last parent's ending releases the child; a parent that did not succeed
cancels it ("parent job 42 failed"), unless the parent's step was ``.set(
allow_failure=True)``, in which case the child runs and receives a :class:`Failed` in
place of that result. A redriven parent re-arms the dependents it had cancelled.

A step after one job receives that job's result as its first argument; a step after a
group (a chord's callback) receives the list of the members' results, in order. Results
travel on the edges, so they reach dependents whatever the tasks' ``store_result``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from . import codec
from .backends.workflow import WfNode
from .errors import InvalidArgument, LiteqError, SerializationError
from .flow import FlowSpec
from .job import Job, ResultTimeout, list_jobs
from .outbox import on_connection
from .validate import check_priority, check_seconds, short, validate_name

if TYPE_CHECKING:
    from .context import Context


class StepTask(Protocol):
    """What a signature needs of its task (a :class:`liteq.Task`; a protocol, so that
    this module needs no import of ``task.py``, which imports it)."""

    db: Context
    name: str
    queue: str
    priority: int
    #: Its flow limits (``max_concurrency``, ``rate_limit``), or None.
    flow: FlowSpec | None

    def binding_error(self, args: Sequence[Any], kwargs: dict[str, Any]) -> str | None: ...

    def flow_key(self, args: Any, kwargs: Any, given: str | None) -> str | None: ...

__all__ = ["Signature", "Chain", "Group", "Chord", "GroupJob", "Failed", "chain", "group",
           "chord", "workflow_state", "MAX_DEPTH"]

#: The longest path of parent -> child steps a workflow may have: a failure cascades
#: down it in one transaction (through SQLite's triggers, whose depth is bounded).
MAX_DEPTH = 400

_UNSET: Any = object()


@dataclass(frozen=True)
class Failed:
    """What a dependent of an ``allow_failure=True`` step receives in place of its
    result when that step did not succeed: the job's id, how it ended (``failed``,
    ``cancelled`` or ``purged``) and its last error text (or None)."""

    job_id: int
    outcome: str
    error: str | None


# -- the canvas ---------------------------------------------------------------------------

class Canvas:
    """What can be enqueued as (part of) a workflow: a :class:`Signature`, a
    :class:`Chain`, a :class:`Group` or a :class:`Chord`."""

    def then(self, *steps: Canvas) -> Chain:
        """This, then each of *steps* in turn (see :func:`chain`)."""
        return Chain(self, *steps)

    def delay(self) -> Any:
        """Enqueue the whole workflow now (see :meth:`enqueue`)."""
        return self.enqueue()

    def enqueue(self, *, depends_on: Iterable[Job | int] | None = None,
                connection: Any = None) -> Any:
        """Enqueue the workflow in one transaction and return its handle: the last
        step's :class:`~liteq.Job` (a :class:`GroupJob` for a group). *depends_on*: jobs
        that must end before its first steps run. *connection*: as for
        :meth:`liteq.Task.enqueue` (PostgreSQL: inside the application's transaction).

        Bad input (a signature of a task not registered on the database, a job in
        *depends_on* that does not exist, an empty group, arguments that do not fit
        the task) raises :class:`~liteq.InvalidArgument` and writes nothing."""
        return _enqueue(self, depends_on, connection)

    def _build(self, b: _Builder, prev: _Outlets | None) -> _Outlets:
        raise NotImplementedError

    def _depth(self) -> int:
        raise NotImplementedError


class Signature(Canvas):
    """A call of a task not yet enqueued: ``task.s(*args, **kwargs)`` (receives the
    previous step's result as its first argument) or ``task.si(...)`` (immutable:
    receives nothing)."""

    __slots__ = ("task", "args", "kwargs", "immutable", "options")

    def __init__(self, task: StepTask, args: Sequence[Any] = (),
                 kwargs: dict[str, Any] | None = None, *, immutable: bool = False,
                 options: dict[str, Any] | None = None) -> None:
        if not hasattr(task, "binding_error") or not hasattr(task, "db"):
            raise InvalidArgument(f"a signature needs a registered task (@db.task), got "
                                  f"{short(task)}")
        if not isinstance(args, (list, tuple)):
            raise InvalidArgument(f"args of {task.name}.s() must be a list or tuple, got "
                                  f"{type(args).__name__}")
        if kwargs is not None and (not isinstance(kwargs, dict)
                                   or not all(isinstance(k, str) for k in kwargs)):
            raise InvalidArgument(f"kwargs of {task.name}.s() must be a dict with str keys")
        self.task = task
        self.args = list(args)
        self.kwargs = dict(kwargs or {})
        self.immutable = immutable
        self.options: dict[str, Any] = dict(options or {})

    def set(self, *, queue: str | None = _UNSET, delay: float = _UNSET,
            priority: int | None = _UNSET, key: str | None = _UNSET,
            allow_failure: bool = _UNSET) -> Signature:
        """A copy with options: the *queue* and *priority* of its job (default the
        task's), a *delay* in seconds counted from when it is released, a dedup *key*
        (only for a first step: a dependent is always a new job), and *allow_failure*:
        let this step's dependents run, with a :class:`Failed`, if it does not succeed."""
        options = dict(self.options)
        if queue is not _UNSET:
            options["queue"] = None if queue is None else validate_name(queue)
        if delay is not _UNSET:
            options["delay"] = check_seconds(delay, "delay")
        if priority is not _UNSET:
            options["priority"] = None if priority is None else check_priority(priority)
        if key is not _UNSET:
            if key is not None and (not isinstance(key, str) or not key):
                raise InvalidArgument(f"key must be a non-empty string or None, got {short(key)}")
            options["key"] = key
        if allow_failure is not _UNSET:
            options["allow_failure"] = bool(allow_failure)
        return Signature(self.task, self.args, self.kwargs, immutable=self.immutable,
                         options=options)

    def _build(self, b: _Builder, prev: _Outlets | None) -> _Outlets:
        mode = None if prev is None or self.immutable else prev.shape
        return _Outlets([b.add(self, prev.nodes if prev else [], mode)], "one")

    def _depth(self) -> int:
        return 1

    def __repr__(self) -> str:
        call = ", ".join([*map(repr, self.args), *(f"{k}={v!r}" for k, v in self.kwargs.items())])
        return f"{self.task.name}.{'si' if self.immutable else 's'}({call})"


class Chain(Canvas):
    """Steps run one after the other: ``chain(a.s(1), b.s(), c.s())``."""

    def __init__(self, *steps: Canvas) -> None:
        flat: list[Canvas] = []
        self.steps: list[Canvas]
        for step in steps:
            _check_canvas(step, "chain()")
            flat.extend(step.steps if isinstance(step, Chain) else [step])
        if not flat:
            raise InvalidArgument("chain() needs at least one step, e.g. chain(a.s(1), b.s())")
        self.steps = flat

    def _build(self, b: _Builder, prev: _Outlets | None) -> _Outlets:
        for step in self.steps:
            prev = step._build(b, prev)
        assert prev is not None
        return prev

    def _depth(self) -> int:
        return sum(step._depth() for step in self.steps)

    def __repr__(self) -> str:
        return " | ".join(map(repr, self.steps))


class Group(Canvas):
    """Members run in parallel: ``group(a.s(i) for i in range(10))``; its result (for
    the step after it) is the list of its members' results, in order."""

    def __init__(self, members: Iterable[Canvas]) -> None:
        if isinstance(members, Canvas):
            members = [members]
        self.members = list(members)
        for m in self.members:
            _check_canvas(m, "group()")
        if not self.members:
            raise InvalidArgument("a group needs at least one member, e.g. "
                                  "group(task.s(i) for i in range(3)); got none")

    def _build(self, b: _Builder, prev: _Outlets | None) -> _Outlets:
        nodes: list[int] = []
        for m in self.members:
            nodes.extend(m._build(b, prev).nodes)
        return _Outlets(nodes, "list")

    def _depth(self) -> int:
        return max(m._depth() for m in self.members)

    def __repr__(self) -> str:
        return f"group({', '.join(map(repr, self.members))})"


class Chord(Chain):
    """``chord(group, callback)``: *callback* runs once, after every member of *group*
    ended, with the list of their results in order."""

    def __init__(self, header: Group | Iterable[Canvas], body: Canvas) -> None:
        if not isinstance(header, Group):
            if isinstance(header, Canvas):
                raise InvalidArgument(f"chord() takes a group and a callback, got "
                                      f"{short(header)} as the group")
            header = Group(header)
        _check_canvas(body, "chord()")
        super().__init__(header, body)


def chain(*steps: Canvas) -> Chain:
    """Steps run one after the other, each receiving the previous one's result as its
    first argument (unless it is an ``.si()`` signature)."""
    return Chain(*steps)


def group(members: Iterable[Canvas]) -> Group:
    """Members that run in parallel; ``.delay()`` returns a :class:`GroupJob`."""
    return Group(members)


def chord(header: Group | Iterable[Canvas], body: Canvas) -> Chord:
    """*body* runs once after every member of *header* ended, receiving their results."""
    return Chord(header, body)


def _check_canvas(step: Any, where: str) -> None:
    if not isinstance(step, Canvas):
        raise InvalidArgument(f"{where} takes signatures (task.s(...)), chains, groups and "
                              f"chords, got {short(step)}")


# -- building and inserting one workflow --------------------------------------------------

@dataclass
class _Outlets:
    nodes: list[int]  # indexes in _Builder.nodes, or -id for an existing job
    shape: str        # "one": a job's result; "list": a group's results


@dataclass
class _Node:
    sig: Signature
    parents: list[int]
    mode: str | None


class _Builder:
    def __init__(self) -> None:
        self.nodes: list[_Node] = []

    def add(self, sig: Signature, parents: list[int], mode: str | None) -> int:
        self.nodes.append(_Node(sig, list(parents), mode))
        return len(self.nodes) - 1


def _enqueue(canvas: Canvas, depends_on: Iterable[Job | int] | None, connection: Any) -> Any:
    after = _check_depends_on(depends_on)
    if canvas._depth() > MAX_DEPTH:
        raise InvalidArgument(f"a workflow may be at most {MAX_DEPTH} steps deep, this one is "
                              f"{canvas._depth()}: split it, enqueueing the rest from its "
                              f"last step")
    b = _Builder()
    prev = _Outlets([-i for i in after], "list" if len(after) > 1 else "one") if after else None
    out = canvas._build(b, prev)
    db = _check_nodes(b.nodes)
    payloads = [_payload(n) for n in b.nodes]
    store = db.backend
    with on_connection(store, connection), db.transaction():
        ids = _put_all(db, b.nodes, payloads)
        _set_limits(db, b.nodes, ids)
        workflow = next((w for w in map(store.wf_workflow, after) if w is not None), min(ids))
        parent_of = [
            tuple((ids[p] if p >= 0 else -p, bool(_option(b.nodes[p].sig, "allow_failure", False))
                   if p >= 0 else False) for p in n.parents)
            for n in b.nodes]
        if any(len(set(p for p, _ in ps)) != len(ps) for ps in parent_of) or \
                len(set(ids)) != len(ids):
            raise InvalidArgument("a dedup key of this workflow matched another of its jobs "
                                  "or one of its parents: give each step its own key")
        nodes = [WfNode(ids[i], workflow,
                        float(_option(n.sig, "delay", 0.0)) if n.parents else 0.0,
                        parent_of[i]) for i, n in enumerate(b.nodes)]
        missing = store.wf_link(nodes)
        if missing:
            raise InvalidArgument(
                f"depends_on: no job with id {missing[0]} (it never existed, or its record "
                f"was pruned); nothing was enqueued")
    jobs = [Job(db, ids[i], task=b.nodes[i].sig.task.name) for i in out.nodes]
    if out.shape == "list":
        return GroupJob(db, jobs, workflow)
    return jobs[0]


def _check_depends_on(depends_on: Iterable[Job | int] | None) -> list[int]:
    if depends_on is None:
        return []
    if isinstance(depends_on, (Job, int)):
        depends_on = [depends_on]
    ids = []
    for job in depends_on:
        if isinstance(job, Job):
            ids.append(job.id)
        elif isinstance(job, int) and not isinstance(job, bool) and job > 0:
            ids.append(job)
        else:
            raise InvalidArgument(f"depends_on takes jobs (or job ids), got {short(job)}")
    return list(dict.fromkeys(ids))


def _option(sig: Signature, name: str, default: Any) -> Any:
    value = sig.options.get(name)
    return default if value is None else value


def _check_nodes(nodes: list[_Node]) -> Context:
    db = nodes[0].sig.task.db
    for n in nodes:
        task = n.sig.task
        if task.db is not db:
            raise InvalidArgument(f"every step of a workflow must be a task of one database; "
                                  f"{task.name} is registered on another")
        if db.tasks.get(task.name) is not task:
            raise InvalidArgument(f"task {task.name} is not registered on this database: "
                                  f"register it with @db.task before building signatures")
        if n.parents and n.sig.options.get("key") is not None:
            raise InvalidArgument(f"{n.sig!r}: key= is only for a workflow's first steps (a "
                                  f"step that waits for others is always a new job)")
        lead: list[Any] = [] if n.mode is None else [[] if n.mode == "list" else None]
        why = task.binding_error([*lead, *n.sig.args], n.sig.kwargs)
        if why is not None:
            gets = {"one": " (it receives the previous step's result as its first argument: "
                           "use .si() for a step that takes none)",
                    "list": " (it receives the list of the group's results as its first "
                            "argument: use .si() for a step that takes none)"}.get(n.mode or "", "")
            raise InvalidArgument(f"cannot enqueue {n.sig!r}: {why}{gets}")
    return db


def _payload(n: _Node) -> dict[str, Any]:
    payload: dict[str, Any] = {"task": n.sig.task.name, "args": n.sig.args, "kwargs": n.sig.kwargs}
    if n.mode is not None:
        payload["wf"] = n.mode
    return payload


def _put_all(db: Context, nodes: list[_Node], payloads: list[dict[str, Any]]) -> list[int]:
    """Put every node's message, consecutive ones with the same options in one put_many."""
    ids: list[int] = []
    i = 0
    while i < len(nodes):
        sig = nodes[i].sig
        queue = _option(sig, "queue", sig.task.queue)
        priority = _option(sig, "priority", sig.task.priority)
        delay = 0.0 if nodes[i].parents else float(_option(sig, "delay", 0.0))
        key = sig.options.get("key")
        j = i + 1
        if key is None:
            while j < len(nodes) and _same(nodes[j], queue, priority, delay):
                j += 1
        q = db.queue(queue)
        try:
            if j - i == 1:
                ids.append(q.put(payloads[i], delay=delay, priority=priority, key=key))
            else:
                ids.extend(q.put_many(payloads[i:j], delay=delay, priority=priority))
        except SerializationError as exc:
            raise SerializationError(f"cannot enqueue {sig!r}: {exc}") from exc
        i = j
    return ids


def _set_limits(db: Context, nodes: list[_Node], ids: list[int]) -> None:
    """Give the steps of tasks with flow limits (``max_concurrency``, ``rate_limit``)
    their limits, in the workflow's transaction, as ``Task.enqueue`` does for a single
    job. A step's concurrency key is computed from its own arguments (a result it will
    receive from a parent is not known yet)."""
    by_target: dict[tuple[int, Any, str | None], list[int]] = {}
    for n, mid in zip(nodes, ids, strict=True):
        task = n.sig.task
        if task.flow is None:
            continue
        key = task.flow_key(n.sig.args, n.sig.kwargs, None)
        q = db.queue(_option(n.sig, "queue", task.queue))
        by_target.setdefault((q.id, task.flow, key), []).append(mid)
    for (qid, spec, key), some in by_target.items():
        db.backend.set_flow(qid, some, spec, key)


def _same(n: _Node, queue: str, priority: int, delay: float) -> bool:
    sig = n.sig
    return (sig.options.get("key") is None
            and _option(sig, "queue", sig.task.queue) == queue
            and _option(sig, "priority", sig.task.priority) == priority
            and (0.0 if n.parents else float(_option(sig, "delay", 0.0))) == delay)


# -- a group's handle ---------------------------------------------------------------------

class GroupJob:
    """The jobs of an enqueued group, in order (what ``group(...).delay()`` returns)."""

    def __init__(self, db: Context, jobs: list[Job], workflow: int) -> None:
        self.db = db
        self.jobs = jobs
        self.workflow = workflow

    @property
    def ids(self) -> list[int]:
        """The members' job ids, in order."""
        return [j.id for j in self.jobs]

    def __len__(self) -> int:
        return len(self.jobs)

    def __iter__(self) -> Iterator[Job]:
        return iter(self.jobs)

    def results(self, wait: float = 0) -> list[Any]:
        """Every member's result in order, waiting up to *wait* seconds in all; raises as
        :meth:`liteq.Job.result` does for the first member that failed, was cancelled,
        has no stored result (register the tasks with ``store_result=True``) or has not
        finished in time."""
        w = check_seconds(wait, "wait")
        assert w is not None
        deadline = time.monotonic() + w
        out = []
        for job in self.jobs:
            try:
                out.append(job.result(wait=max(0.0, deadline - time.monotonic())))
            except ResultTimeout as exc:
                raise ResultTimeout(f"group: {exc}") from None
        return out

    def counts(self) -> dict[str, int]:
        """How many members are in each job state (``waiting``, ``queued``, ``running``,
        ``done``, ``failed``...)."""
        counts: dict[str, int] = {}
        for job in self.jobs:
            try:
                state = job.state
            except LiteqError:
                state = "unknown"
            counts[state] = counts.get(state, 0) + 1
        return counts

    def cancel(self) -> dict[str, int]:
        """Cancel every member (see :meth:`liteq.Job.cancel`); how many got each answer."""
        answers: dict[str, int] = {}
        for job in self.jobs:
            answer = job.cancel()
            answers[answer] = answers.get(answer, 0) + 1
        return answers

    def __repr__(self) -> str:
        return f"<GroupJob of {len(self.jobs)} in workflow {self.workflow}>"


# -- looking at a workflow ------------------------------------------------------------------

#: Job states of a workflow's members that are not over yet.
_UNFINISHED = ("waiting", "queued", "scheduled", "running", "retrying")


def workflow_state(db: Context, workflow: int) -> tuple[str, dict[str, int]]:
    """A workflow's state and how many of its jobs are in each job state: ``running``
    while any job has not ended, else ``done`` (every job succeeded) or ``finished``
    (some failed or were cancelled)."""
    counts: dict[str, int] = {}
    for info in list_jobs(db, workflow=workflow, limit=2**62):
        counts[info.state] = counts.get(info.state, 0) + 1
    if any(counts.get(s) for s in _UNFINISHED):
        return "running", counts
    return ("done" if set(counts) <= {"done"} else "finished"), counts


# -- what a worker does for workflow jobs ---------------------------------------------------

def inputs(db: Context, mid: int, mode: Any) -> list[Any]:
    """The arguments a waiting job's parents give it, to put before its own: ``[result]``
    after one job (mode ``one``), ``[[results...]]`` after a group (``list``); a parent
    that did not succeed gives a :class:`Failed`."""
    parents, _children = db.backend.wf_edges(mid)
    values = [_value(e.parent, e.outcome, e.value, e.error) for e in parents]
    if mode == "one":
        return values[:1]
    if mode == "list":
        return [values]
    return []


def _value(parent: int, outcome: str | None, value: bytes | None, error: str | None) -> Any:
    if outcome != "done":
        return Failed(parent, outcome or "pending", error)
    if value is None:
        return None
    try:
        return codec.decode(value)
    except SerializationError:
        return None


def record(db: Context, done: Sequence[tuple[int, Any]], results_rows: bool = False) -> None:
    """In the transaction that acked jobs ``(id, result)``, after the ack: settle the
    edges of those that have dependents, with their results (one lookup for the whole
    batch; nothing more for jobs without dependents). *results_rows*: the transaction
    wrote their results rows already (the worker), where an engine may keep the results
    for the dependents (``WorkflowVerbs.wf_done``)."""
    store = db.backend
    if len(done) == 1:  # one by one: no comprehensions (each is a call of its own)
        mid, result = done[0]
        store.wf_done_one(mid, lambda: _encoded(db, result), results_rows)
        return
    store.wf_record(done, lambda result: _encoded(db, result), results_rows)


def _encoded(db: Context, result: Any) -> bytes | None:
    try:
        return codec.encode(result, db.max_payload)
    except LiteqError:
        return None  # dependents get None: the value cannot travel
