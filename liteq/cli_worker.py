"""``liteq`` commands for tasks: ``worker``, ``jobs``, ``job``; and the demo's worker step.

``liteq worker APP`` imports APP (``module`` or ``module:attr``, like ``celery -A``)
to find the :class:`~liteq.Database` its tasks are registered on, and serves them.
"""

from __future__ import annotations

import importlib
import inspect
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import click

from .backends.registry import ProgressRecord
from .backends.targets import describe
from .cli_base import DURATION, EX_USAGE, POSITIVE_INT, CliError, CliState, open_db
from .cli_ops import attempt_fields
from .cli_output import (
    Column,
    Output,
    cut,
    fmt_age,
    fmt_duration,
    fmt_time,
    fmt_when,
    jsonable,
    output_options,
    to_json,
)
from .database import Database
from .errors import LiteqError
from .hooks import Hook
from .registry import DEFAULT_HEARTBEAT
from .task import JOB_STATES, Job, JobInfo, ResultTimeout, list_jobs
from .worker import DEFAULT_GRACE, DEFAULT_PREFETCH, POOLS, Worker
from .workflow import workflow_state

__all__ = ["worker", "jobs", "job", "load_app", "load_hook", "AppError", "worker_demo",
           "JsonLogFormatter", "setup_logging", "start_scheduler"]

_RECORD_FIELDS = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message",
                                                                              "asctime"}


class AppError(CliError):
    """``Error: MESSAGE`` on stderr, exit code 2: APP (or a --hook) names the wrong
    kind of thing; nothing was called and nothing written."""

    exit_code = EX_USAGE


def _import(module_name: str, what: str) -> Any:
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # like 'python -m': the current directory first
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise CliError(f"cannot import {what} module {module_name!r}: {exc} (run from the "
                           f"directory that holds it, or set PYTHONPATH)") from exc
        raise CliError(f"importing {module_name!r} failed: {exc}") from exc
    except Exception as exc:
        raise CliError(f"importing {module_name!r} raised {type(exc).__name__}: {exc}") from exc


def _attribute(module: Any, module_name: str, attr: str) -> Any:
    """``module.attr`` (a dotted path), looked up only: nothing is called."""
    obj = module
    for part in attr.split("."):
        try:
            obj = inspect.getattr_static(obj, part)
        except AttributeError:
            raise CliError(f"{module_name!r} has no attribute {attr!r}") from None
    return obj


def _kind(obj: Any) -> str:
    """What a wrong APP or hook is, for an error: 'a liteq Task (app.send)', 'an int'."""
    from .task import Task

    if isinstance(obj, Task):
        return f"a liteq Task ({obj.name})"
    if inspect.isfunction(obj) or inspect.isbuiltin(obj) or inspect.ismethod(obj):
        return "a function"
    if inspect.isclass(obj):
        return f"the class {obj.__name__}"
    if inspect.ismodule(obj):
        return f"the module {obj.__name__}"
    kind = type(obj).__name__
    return f"{'an' if kind[:1].lower() in 'aeiou' else 'a'} {kind}"


def _found(obj: Any) -> str:
    from .task import Task

    if isinstance(obj, Task):
        return f"{_kind(obj)}, not the Database"
    if inspect.isfunction(obj) or inspect.isbuiltin(obj) or inspect.ismethod(obj):
        return f"{_kind(obj)}, not a liteq Database (APP is never called)"
    return f"{_kind(obj)}, not a liteq Database"


def load_app(spec: str) -> Database:
    """The Database named by APP: ``module`` (its one Database, or the one called
    ``db``) or ``module:attr`` (an attribute path to a Database).

    Resolving APP only imports the module and looks attributes up: nothing is
    called (a task named by mistake must not run). Anything but a Database is
    refused with :class:`AppError` (exit code 2), naming what was found and the
    Database to give instead.
    """
    module_name, _, attr = spec.partition(":")
    if not module_name or ":" in attr or (":" in spec and not attr):
        raise click.UsageError(f"APP is module or module:attr (e.g. myapp or myapp.tasks:db), "
                               f"got {spec!r}")
    module = _import(module_name, "APP")
    found = {name: v for name, v in vars(module).items() if isinstance(v, Database)}
    if attr:
        obj = _attribute(module, module_name, attr)
        if isinstance(obj, Database):
            return obj
        mine = [n for n, v in found.items() if v is inspect.getattr_static(obj, "db", None)]
        names = sorted(mine or found) or ["db"]
        suggest = f"{module_name}:{'db' if 'db' in names else names[0]}"
        raise AppError(f"{spec} is {_found(obj)}: APP names the Database the tasks are "
                       f"registered on, e.g. {suggest}")
    if "db" in found:
        return found["db"]
    if len(found) == 1:
        return next(iter(found.values()))
    if not found:
        raise CliError(f"module {module_name!r} has no liteq Database (name it as "
                       f"{module_name}:ATTR)")
    raise CliError(f"module {module_name!r} has several Databases ({', '.join(sorted(found))}): "
                   f"choose one as {module_name}:ATTR")


def load_hook(spec: str) -> Hook:
    """The hook named by ``--hook module:HookClass``: a :class:`~liteq.Hook` subclass,
    made with no arguments (or a Hook instance, used as it is)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr or ":" in attr:
        raise click.BadParameter(f"a hook is module:HookClass (e.g. myapp.hooks:Timing), "
                                 f"got {spec!r}", param_hint="'--hook'")
    obj = _attribute(_import(module_name, "hook"), module_name, attr)
    if isinstance(obj, Hook):
        return obj
    if not inspect.isclass(obj) or not issubclass(obj, Hook):
        raise AppError(f"--hook {spec} is {_kind(obj)}, not a liteq.Hook subclass: a hook "
                       f"is a class that derives from liteq.Hook")
    try:
        return obj()
    except Exception as exc:
        raise CliError(f"--hook {spec}: {obj.__name__}() raised {type(exc).__name__}: {exc} "
                       f"(a hook given on the command line is made with no arguments)") from exc


class JsonLogFormatter(logging.Formatter):
    """One JSON object per log line, with the ``extra`` fields (job_id, task ...)."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": record.created, "level": record.levelname, "logger": record.name,
            "pid": record.process, "message": record.getMessage(),
        }
        data.update({k: v for k, v in vars(record).items() if k not in _RECORD_FIELDS})
        if record.exc_info:
            data["traceback"] = self.formatException(record.exc_info)
        return json.dumps(jsonable(data), ensure_ascii=False)


def setup_logging(level: str, json_logs: bool) -> None:
    """Log liteq's records to stderr: one text line, or one JSON object, each."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLogFormatter() if json_logs else logging.Formatter(
        "%(asctime)s %(levelname)-7s [%(process)d] %(name)s: %(message)s"))
    log = logging.getLogger("liteq")
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel(level.upper())


@click.command()
@click.argument("app", metavar="APP", required=False)
@click.option("--django-settings", metavar="MODULE",
              help="Instead of APP: set Django up with this settings module (like "
                   "DJANGO_SETTINGS_MODULE) and run the tasks of its liteq task backend.")
@click.option("--django-backend", metavar="ALIAS", default="default", show_default=True,
              help="With --django-settings: the TASKS alias to serve.")
@click.option("--queues", "-Q", metavar="A,B",
              help="Queues to serve, most preferred first (default: the queues of APP's tasks).")
@click.option("--concurrency", "-c", type=POSITIVE_INT, metavar="N",
              help="Jobs run at once (default: 4 threads, one process per CPU, or 100 "
                   "coroutines with --pool asyncio).")
@click.option("--pool", type=click.Choice(POOLS), default="thread", show_default=True,
              help="Threads, child processes (hard timeouts; CPU-bound tasks), or "
                   "asyncio (many async def tasks at once in one event loop).")
@click.option("--grace", type=DURATION, default=DEFAULT_GRACE, show_default=True,
              help="After SIGTERM/SIGINT, how long running jobs may finish before they "
                   "are released.")
@click.option("--prefetch", type=click.IntRange(1, 1000), default=DEFAULT_PREFETCH,
              show_default=True, metavar="N", help="Most jobs one consumer claims at once.")
@click.option("--burst", is_flag=True, help="Exit once no job is due.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              default="info", show_default=True, help="debug logs one line per job start "
                                                        "and finish.")
@click.option("--verbose", "-v", is_flag=True, help="Same as --log-level debug.")
@click.option("--json-logs", is_flag=True, help="Log one JSON object per line.")
@click.option("--summary-interval", type=DURATION, default=60.0, show_default=True,
              help="Seconds between summary log lines (0: none).")
@click.option("--allow-shell", is_flag=True,
              help="Also run shell-command schedule targets (queue 'shell'), with this "
                   "worker's rights. Off by default.")
@click.option("--scheduler", "with_scheduler", is_flag=True,
              help="Also fire due schedules (any number of schedulers may run on a file).")
@click.option("--hook", "hook_specs", multiple=True, metavar="MODULE:CLASS",
              help="Add a liteq.Hook subclass, made with no arguments (repeatable).")
@click.option("--max-tasks-per-child", type=POSITIVE_INT, metavar="N",
              help="Process pool: replace a child once it has run N jobs.")
@click.option("--max-memory-per-child", type=click.FloatRange(min=0, min_open=True),
              metavar="MB", help="Process pool: replace a child whose resident memory is "
                                 "over MB after a job.")
@click.option("--heartbeat", type=DURATION, default=DEFAULT_HEARTBEAT, show_default=True,
              help="Seconds between this worker's updates of its row in 'liteq workers'.")
@click.pass_context
def worker(ctx: click.Context, app: str | None, django_settings: str | None,
           django_backend: str, queues: str | None, concurrency: int | None,
           pool: str, grace: float, prefetch: int, burst: bool, log_level: str,
           verbose: bool, json_logs: bool, summary_interval: float, allow_shell: bool,
           with_scheduler: bool, hook_specs: tuple[str, ...], max_tasks_per_child: int | None,
           max_memory_per_child: float | None, heartbeat: float) -> None:
    """Run the tasks of APP until stopped.

    APP is a module (its Database called db, or its only one) or module:attr
    naming the Database, imported from the current directory; it is looked up,
    never called. The database is APP's: --db, if given, must name the same file.

    SIGTERM or Ctrl-C stops claiming and lets running jobs finish for --grace;
    then they are released so another worker takes them at once. A second
    signal stops now. Exits 0 after a stop by signal.

    --django-settings MODULE replaces APP for a Django project: Django is set
    up, the apps' tasks modules imported, and the tasks of the liteq task
    backend (TASKS[--django-backend]) served, as manage.py liteq_worker does.

    --hook adds a liteq.Hook subclass (metrics, error reporting) by name.
    With --pool process, --max-tasks-per-child and --max-memory-per-child
    replace a child past either limit once its job is done (for leaky
    libraries); the jobs it claimed but did not start go back to the queue.

    \b
    Examples:
      liteq worker myapp --queues emails,default --concurrency 8
      liteq worker myapp --hook myapp.metrics:Timing --hook myapp.metrics:Sentry
      liteq worker myapp.tasks:db --pool process -c 2 --grace 60s
      liteq worker myapp --pool process --max-tasks-per-child 100
      liteq worker --django-settings mysite.settings --concurrency 8
      liteq worker myapp --pool asyncio --concurrency 500
    """
    for name, value in (("--max-tasks-per-child", max_tasks_per_child),
                        ("--max-memory-per-child", max_memory_per_child)):
        if value is not None and pool != "process":
            raise click.BadOptionUsage(name, f"{name} replaces child processes: it needs "
                                             f"--pool process")
    if (app is None) == (django_settings is None):
        raise click.UsageError("give APP, or --django-settings for a Django project (not both)")
    setup_logging("debug" if verbose else log_level, json_logs)
    django_hooks: list[Hook] = []
    if django_settings is not None:
        from .contrib.django.worker import prepare, setup_django

        setup_django(django_settings)
        prepared = prepare(django_backend)
        db, django_hooks = prepared.db, prepared.hooks
        queues = queues or ",".join(prepared.queues)
    else:
        assert app is not None
        db = load_app(app)
    state = ctx.find_object(CliState)
    if state is not None and state.chosen and describe(state.path) != db.path:
        raise CliError(f"APP's database is {db.path}, but --db names {describe(state.path)}")
    hooks = django_hooks + [load_hook(spec) for spec in hook_specs]
    names = [q.strip() for q in queues.split(",") if q.strip()] if queues else None
    if allow_shell:
        from .scheduler import SHELL_QUEUE, register_shell_task

        register_shell_task(db)  # before Worker(): its default queues then include 'shell'
        if names is not None and SHELL_QUEUE not in names:
            names.append(SHELL_QUEUE)
    runner = Worker(db, names, concurrency=concurrency, pool=pool, grace=grace,
                    prefetch=prefetch, burst=burst, summary_interval=summary_interval,
                    hooks=hooks, max_tasks_per_child=max_tasks_per_child,
                    max_memory_per_child=max_memory_per_child, heartbeat=heartbeat)
    stop_scheduler = start_scheduler(db, pool) if with_scheduler else None
    try:
        runner.run()
    finally:
        if stop_scheduler is not None:
            stop_scheduler()


def start_scheduler(db: Database, pool: str) -> Callable[[], None]:
    """Run a scheduler beside the worker; return the function that stops it.

    With the thread pool, a thread. The process pool forks children from a
    single-threaded supervisor (a thread inside SQLite at fork time could leave a
    child holding a lock), so there the scheduler is a process of its own.
    """
    if pool == "process":
        # The database through the environment, not argv: a URL's password stays out
        # of the process list.
        proc = subprocess.Popen([sys.executable, "-m", "liteq", "scheduler"],
                                env={**os.environ, "LITEQ_DB": db.target})

        def stop_process() -> None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()

        return stop_process
    from .scheduler import Scheduler

    sched = Scheduler(db)
    thread = threading.Thread(target=sched.run, name="liteq-scheduler", daemon=True)
    thread.start()

    def stop_thread() -> None:
        sched.stop()
        thread.join(10)

    return stop_thread


def _job_dict(info: JobInfo, result: Any = None, has_result: bool = False) -> dict[str, Any]:
    error = info.error
    out: dict[str, Any] = {
        "id": info.id, "task": info.task, "queue": info.queue, "state": info.state,
        "attempts": info.attempts, "args": info.args, "kwargs": info.kwargs,
        "enqueued_at": info.enqueued_at, "run_at": info.run_at,
        "started_at": info.started_at, "finished_at": info.finished_at,
        "duration": info.duration, "expires_at": info.expires_at,
        "error": None if error is None else {"type": error.type, "message": error.message,
                                             "traceback": error.traceback},
    }
    if has_result:
        out["result"] = jsonable(result)
    return out


def _call_text(info: JobInfo) -> str:
    if info.args is None:
        return "-"
    parts = [to_json(a) for a in info.args]
    parts += [f"{k}={to_json(v)}" for k, v in (info.kwargs or {}).items()]
    return f"({', '.join(parts)})"


@click.command()
@click.option("--state", "-s", type=click.Choice((*JOB_STATES, "dead")),
              help="Only jobs in this state. 'failed' is the canonical name; 'dead' (the "
                   "state of its message) is accepted for it.")
@click.option("--task", "-t", "task_name", metavar="NAME", help="Only jobs of this task.")
@click.option("--queue", "-q", metavar="QUEUE", help="Only jobs on this queue.")
@click.option("--workflow", "-w", type=POSITIVE_INT, metavar="ID",
              help="Only the jobs of this workflow (its id: its first job's), first first.")
@click.option("--limit", "-n", type=POSITIVE_INT, default=20, show_default=True, metavar="N",
              help="Show at most this many.")
@output_options(rows=True)
def jobs(state: str | None, task_name: str | None, queue: str | None, workflow: int | None,
         limit: int, out: Output) -> None:
    """List the newest task jobs, newest first.

    Jobs still in a queue, and finished jobs whose message is gone but whose
    outcome is kept (for the task's result_ttl). With --workflow, the jobs of one
    workflow (chain, group, chord, depends_on) in the order they were enqueued.

    \b
    Examples:
      liteq jobs --state failed
      liteq jobs --task myapp.send_email -n 100 --json
      liteq jobs --workflow 42
    """
    db = open_db()
    if state == "dead":
        state = "failed"
    infos = list_jobs(db, state=state, task=task_name, queue=queue, limit=limit,
                      workflow=workflow)
    now = db.clock()
    if out.json:
        out.rows([_job_dict(i) for i in infos], [])
        return
    rows = [{"id": i.id, "task": i.task or "-", "queue": i.queue or "-", "state": i.state,
             "attempts": i.attempts,
             "when": fmt_when(i.finished_at, now) if i.finished_at else
             fmt_age(now - i.enqueued_at) if i.enqueued_at else "-",
             "took": "-" if i.duration is None else fmt_duration(i.duration),
             "error": cut(str(i.error), 50) if i.error else "-", "call": _call_text(i)}
            for i in infos]
    columns = [Column("id", numeric=True), Column("task"), Column("queue"), Column("state"),
               Column("attempts", numeric=True), Column("when", "AGE/FINISHED"),
               Column("took", numeric=True), Column("error"), Column("call", flex=True)]
    what = f"{state} jobs" if state else "jobs"
    out.rows(rows, columns, empty=f"no {what}" + (f" of task {task_name!r}" if task_name else "")
             + (f" in workflow {workflow}" if workflow else ""))


@click.command()
@click.argument("job_id", metavar="ID", type=POSITIVE_INT)
@click.option("--wait", type=DURATION, default=0.0,
              help="Wait up to this long for the job to finish first.")
@output_options
def job(job_id: int, wait: float, out: Output) -> None:
    """Show one job: its state, each attempt, arguments, error and result.

    The error comes with its traceback; the result is shown when the task stores
    results. The timeline lists every attempt with its worker, start, run time and
    outcome (with --json, each attempt's error with its traceback).

    \b
    Examples:
      liteq job 42
      liteq job 42 --wait 30s --json
    """
    db = open_db()
    handle = Job(db, job_id)
    if wait:
        try:
            handle.result(wait=wait)
        except ResultTimeout:
            pass
        except LiteqError:
            pass  # failed, cancelled or no result: shown below
    info = handle.info()
    result, has_result = None, False
    if info.state == "done" and info.value is not None:
        try:
            result, has_result = handle.result(), True
        except LiteqError:
            pass
    now = db.clock()
    progress = db.backend.progress([info.id]).get(info.id)
    fields = [
        ("id", str(info.id)), ("task", info.task or "-"), ("queue", info.queue or "-"),
        ("state", info.state), ("attempts", str(info.attempts)), ("call", _call_text(info)),
        ("enqueued", fmt_time(info.enqueued_at, now)),
        ("due", fmt_time(info.run_at, now) if info.state in ("queued", "scheduled",
                                                             "retrying") else "-"),
        ("started", fmt_time(info.started_at, now)),
        ("finished", fmt_time(info.finished_at, now)),
        ("duration", "-" if info.duration is None else fmt_duration(info.duration)),
        ("kept until", fmt_time(info.expires_at, now)),
        ("progress", _progress_text(progress)),
        ("error", info.error.format() if info.error else "-"),
        ("result", to_json(result, indent=2) if has_result else
         "-" if info.state != "done" else "(not stored)"),
    ]
    data = _job_dict(info, result, has_result)
    timeline, data["timeline"] = attempt_fields(db, info.id)
    fields += timeline + _workflow_fields(db, handle, data)
    data["progress"] = None if progress is None else {
        "fraction": progress.fraction, "note": progress.note, "at": progress.at}
    out.record(data, fields)


def _workflow_fields(db: Any, handle: Job, data: dict[str, Any]) -> list[tuple[str, str]]:
    """The job's place in its workflow: parents (with how each ended), children, and
    the workflow's state; added to *data* (the JSON) too."""
    parents, children = handle.edges()
    wid = handle.workflow
    data["parents"] = [{"id": e.parent, "outcome": e.outcome, "allow_failure": e.allow_failure}
                       for e in parents]
    data["children"] = [e.child for e in children]
    data["workflow"] = None
    if wid is None and not parents and not children:
        return []
    text = "-"
    if wid is not None:
        state, counts = workflow_state(db, wid)
        data["workflow"] = {"id": wid, "state": state, "jobs": counts}
        text = f"{wid}: {state} ({', '.join(f'{n} {s}' for s, n in sorted(counts.items()))})"
    return [
        ("parents", ", ".join(f"{e.parent} ({e.outcome or 'not ended'}"
                              f"{', failure allowed' if e.allow_failure else ''})"
                              for e in parents) or "-"),
        ("children", ", ".join(str(e.child) for e in children) or "-"),
        ("workflow", text),
    ]


def _progress_text(progress: ProgressRecord | None) -> str:
    if progress is None:
        return "-"
    return f"{progress.fraction:.0%} {progress.note}".rstrip()


def worker_demo(run: Any) -> None:
    """A step for ``liteq demo``: a worker pool runs real tasks, a failing task is
    retried then dead, and the throughput is printed. *run* is a ``DemoRun``."""
    import threading

    from .queue import Backoff

    db, n = run.db, 2000
    run.section(f"Tasks: a worker of 2 threads runs {n:,} jobs; one task always fails")

    @db.task(name="demo.square", queue="demo-tasks", store_result=True)
    def square(x: int) -> int:
        return x * x

    @db.task(name="demo.charge", queue="demo-retries", max_attempts=3,
             backoff=Backoff(base=0.05, factor=2, jitter=0))
    def charge(order: int) -> None:
        raise ValueError(f"card declined for order {order}")

    bad = charge.delay(7)
    jobs_ = square.enqueue_many([(i,) for i in range(n)])
    q = db.queue("demo-tasks")
    quiet = logging.getLogger("liteq.worker")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # the demo prints its own lines
    w = Worker(db, ["demo-tasks", "demo-retries"], concurrency=2, install_signals=False,
               summary_interval=0)
    thread = threading.Thread(target=w.run, daemon=True)
    start = time.monotonic()
    thread.start()
    try:
        while len(q) and time.monotonic() - start < 60:
            time.sleep(0.001)
        took = time.monotonic() - start
        while bad.state not in ("failed", "done") and time.monotonic() - start < 60:
            time.sleep(0.01)
    finally:
        w.stop()
        thread.join(30)
        quiet.setLevel(level)
    run.say(f"{n:,} jobs of demo.square done in {took:.2f}s ({n / took:,.0f} jobs/s); "
            f"square({n - 1}) = {jobs_[-1].result():,}")
    info = bad.info()
    run.say(f"job {info.id} demo.charge is {info.state} after {info.attempts} attempts, "
            f"retried after 0.05s and 0.1s: {info.error}")
    run.say(f"see it:   {run.command(f'job {info.id}')}")
    run.say(f"list them: {run.command('jobs --state failed')}")
