"""``liteq`` commands for schedules: ``schedule add|list|next|pause|resume|rm|run|history``
and ``scheduler``; and the demo's schedule step.

Bad timing (an invalid cron expression, an unknown time zone) is refused before the
database is opened: ``Error: ...``, exit 2, nothing written.
"""

from __future__ import annotations

import datetime as dt
import logging
import signal
import threading
import time
from typing import Any

import click

from .backends.targets import describe
from .cli_base import (
    POSITIVE_DURATION,
    POSITIVE_INT,
    QUEUE,
    CliError,
    CliState,
    open_db,
    parse_json,
)
from .cli_output import Column, Output, fmt_when, jsonable, output_options, plural, to_json
from .cli_worker import load_app, setup_logging
from .database import Database
from .errors import InvalidArgument, ScheduleError
from .scheduler import (
    DEFAULT_MISFIRE_CAP,
    MISFIRE_POLICIES,
    Schedule,
    Scheduler,
    get_schedule,
    schedules,
    unschedule,
    validate,
)
from .scheduler import schedule as save_schedule
from .task import Task, registry
from .validate import validate_name

__all__ = ["schedule_group", "scheduler", "schedule_demo", "schedule_dict"]


# -- formats ---------------------------------------------------------------------------

def _stamp(moment: dt.datetime) -> str:
    spec = "seconds" if moment.microsecond == 0 else "milliseconds"
    return f"{moment.isoformat(sep=' ', timespec=spec)[:-6]} {moment.tzname()}".rstrip()


def fmt_local(ts: float | None) -> str:
    """A moment in this machine's local time, with its zone's abbreviation."""
    return "-" if ts is None else _stamp(dt.datetime.fromtimestamp(ts).astimezone())


def fmt_utc(ts: float | None) -> str:
    """A moment in UTC."""
    return "-" if ts is None else _stamp(dt.datetime.fromtimestamp(ts, dt.UTC))


def fmt_both(ts: float | None) -> str:
    """A moment in local time and, when this machine's zone is not UTC, in UTC."""
    local, utc = fmt_local(ts), fmt_utc(ts)
    return local if local == utc else f"{local}  ({utc})"


def _timing(s: Schedule) -> str:
    if s.kind == "cron":
        return f"{s.spec} ({s.tz})"
    if s.kind == "every":
        return f"every {float(s.spec):g}s"
    return f"at {s.spec}"


def _target(s: Schedule) -> str:
    if s.target == "task":
        parts = [to_json(a) for a in s.args or []]
        parts += [f"{k}={to_json(v)}" for k, v in (s.kwargs or {}).items()]
        return f"{s.task}({', '.join(parts)})"
    if s.target == "command":
        return f"$ {s.command}"
    return to_json(s.payload)


def schedule_dict(s: Schedule) -> dict[str, Any]:
    """Everything about a schedule, for JSON output (times are epoch seconds)."""
    return {
        "name": s.name, "kind": s.kind, "spec": s.spec, "tz": s.tz,
        "description": s.description, "state": s.state, "target": s.target,
        "queue": s.queue, "task": s.task, "args": jsonable(s.args),
        "kwargs": jsonable(s.kwargs), "command": s.command, "payload": jsonable(s.payload),
        "misfire": s.misfire, "misfire_cap": s.misfire_cap, "next_run_at": s.next_run_at,
        "next_local": None if s.next_run_at is None else fmt_local(s.next_run_at),
        "next_utc": None if s.next_run_at is None else fmt_utc(s.next_run_at),
        "last_run_at": s.last_run_at, "last_job_id": s.last_job_id,
        "created_at": s.created_at, "updated_at": s.updated_at,
    }


def _existing(db: Database, name: str) -> Schedule:
    found = get_schedule(db, name)
    if found is None:
        raise CliError(f"no schedule named {name!r} (see 'liteq schedule list')")
    return found


# -- schedule ... ------------------------------------------------------------------------

@click.group("schedule")
def schedule_group() -> None:
    """Add, list, inspect, pause and fire schedules (cron, every, at).

    A schedule enqueues a task call, a payload, or a shell command at its times;
    'liteq scheduler' (or 'liteq worker --scheduler') fires them, each fire once
    however many run on the file.

    Example: liteq schedule add nightly --cron '0 3 * * *' --task app.report
    """


_PARAM = {"cron": "'--cron'", "tz": "'--tz'", "every": "'--every'", "at": "'--at'",
          "start": "'--start'", "misfire": "'--misfire'", "misfire_cap": "'--misfire-cap'"}


def _bad(exc: Exception) -> click.UsageError:
    word = str(exc).split(" ", 1)[0].rstrip(":")
    hint = _PARAM.get(word)
    return click.BadParameter(str(exc), param_hint=hint) if hint else \
        click.UsageError(str(exc))


@schedule_group.command("add")
@click.argument("name")
@click.option("--cron", metavar="EXPR",
              help="Cron expression: 5 fields, 6 with seconds first, or @daily etc.")
@click.option("--tz", metavar="TZ", help="Time zone of --cron/--at (IANA name; default UTC).")
@click.option("--every", type=POSITIVE_DURATION, metavar="SECONDS",
              help="Fire every this long, at least 1 s (1.5, 90s, 5m, 2h, 1d).")
@click.option("--at", "at_", metavar="ISO8601",
              help="Fire once at this time (without an offset: in --tz).")
@click.option("--allow-past", is_flag=True,
              help="Accept an --at more than a minute in the past (it fires at once).")
@click.option("--start", metavar="ISO8601",
              help="No fire before this time; the grid of --every starts here.")
@click.option("--task", "task_name", metavar="NAME",
              help="Enqueue a call of this task (with --app, or with --queue).")
@click.option("--app", "app_spec", metavar="MODULE[:DB]",
              help="Import this app, as 'liteq worker' does, to check --task and use its "
                   "queue (and the app's database).")
@click.option("--args", "args_json", metavar="JSON", help="The task's arguments: a JSON list.")
@click.option("--kwargs", "kwargs_json", metavar="JSON",
              help="The task's keyword arguments: a JSON object.")
@click.option("--queue", type=QUEUE,
              help="Queue to enqueue on (--payload: required; --task: the task's own "
                   "queue with --app, else required; --command: default 'shell').")
@click.option("--payload", "payload_json", metavar="JSON", help="Enqueue this JSON payload.")
@click.option("--command", metavar="CMD",
              help="Run this shell command (on a worker started with --allow-shell).")
@click.option("--misfire", type=click.Choice(MISFIRE_POLICIES), default="once",
              show_default=True, help="Fires missed while no scheduler ran: skip them, "
                                      "run once, or run all (up to --misfire-cap).")
@click.option("--misfire-cap", type=POSITIVE_INT, default=DEFAULT_MISFIRE_CAP,
              show_default=True, metavar="N", help="Most fires one catch-up of --misfire "
                                                    "all enqueues.")
@output_options
def schedule_add(name: str, cron: str | None, tz: str | None, every: float | None,
                 at_: str | None, allow_past: bool, start: str | None, task_name: str | None,
                 app_spec: str | None, args_json: str | None, kwargs_json: str | None,
                 queue: str | None,
                 payload_json: str | None, command: str | None, misfire: str,
                 misfire_cap: int, out: Output) -> None:
    """Create a schedule, or replace the one named NAME.

    Timing: exactly one of --cron (with --tz), --every, --at. Target: exactly one
    of --task (with --args, --kwargs), --payload (with --queue), --command.
    Replacing a schedule with the same timing keeps its next fire time; its
    history is kept either way.

    A --task schedule goes to the task's own queue, as one made in Python does:
    give --app (module or module:db, imported from the current directory as
    'liteq worker' does) so the CLI can find the task, or name the queue with
    --queue. Shell commands run with the rights of the worker that runs them.

    \b
    Examples:
      liteq schedule add nightly --cron '0 3 * * *' --tz Europe/Berlin --task app.report --args '[1]' --app app
      liteq schedule add nightly --cron @daily --task app.report --queue reports
      liteq schedule add ping --every 30s --queue pings --payload '{"ping": true}'
      liteq schedule add backup --cron @daily --command 'backup.sh --full' --misfire skip
    """
    try:
        validate_name(name, "schedule")
    except InvalidArgument as exc:
        raise click.BadParameter(str(exc), param_hint="'NAME'") from None
    timing = [o for o, v in (("--cron", cron), ("--every", every), ("--at", at_)) if v is not None]
    if len(timing) != 1:
        raise click.UsageError(f"give exactly one of --cron, --every, --at (got "
                               f"{', '.join(timing) or 'none'})")
    targets = [o for o, v in (("--task", task_name), ("--payload", payload_json),
                              ("--command", command)) if v is not None]
    if len(targets) != 1:
        raise click.UsageError(f"give exactly one of --task, --payload (with --queue), "
                               f"--command (got {', '.join(targets) or 'none'})")
    if (args_json or kwargs_json) and task_name is None:
        raise click.UsageError("--args and --kwargs go with --task")
    if app_spec is not None and task_name is None:
        raise click.UsageError("--app goes with --task (it finds the task's queue)")
    if payload_json is not None and queue is None:
        raise click.UsageError("--payload needs --queue")
    try:
        validate(cron=cron, every=every, at=at_, tz=tz, start=start, misfire=misfire,
                 misfire_cap=misfire_cap, allow_past=allow_past)
    except ScheduleError as exc:
        raise _bad(exc) from None
    args = parse_json(args_json, "--args") if args_json is not None else None
    if args is not None and not isinstance(args, list):
        raise click.BadParameter("must be a JSON list, e.g. '[1, \"a\"]'", param_hint="'--args'")
    kwargs = parse_json(kwargs_json, "--kwargs") if kwargs_json is not None else None
    if kwargs is not None and not isinstance(kwargs, dict):
        raise click.BadParameter("must be a JSON object, e.g. '{\"n\": 1}'",
                                 param_hint="'--kwargs'")
    if task_name is not None:
        check_task_name(task_name)
        if app_spec is None and queue is None:
            raise click.UsageError(
                f"--task {task_name} needs --app MODULE[:DB] (to enqueue on the task's own "
                f"queue, as a schedule made in Python does) or --queue QUEUE")
    target: dict[str, Any] = {}
    if task_name is not None:
        target = {"task": task_name, "args": args, "kwargs": kwargs}
    elif command is not None:
        target = {"command": command}
    else:
        assert payload_json is not None
        target = {"payload": parse_json(payload_json, "--payload")}
    if app_spec is not None:
        assert task_name is not None
        db = _app_db(app_spec)
        queue = queue or _app_task(db, app_spec, task_name).queue
    else:
        db = open_db(create=True)
    try:
        s = save_schedule(db, name, cron=cron, every=every, at=at_, tz=tz, start=start,
                          queue=queue, misfire=misfire, misfire_cap=misfire_cap,
                          allow_past=allow_past, **target)
    except (ScheduleError, InvalidArgument) as exc:
        raise _bad(exc) from None
    nxt = s.next(3)
    out.result({**schedule_dict(s), "next": [d.timestamp() for d in nxt]},
               f"schedule {s.name!r} saved: {s.description} -> {_target(s)} on queue "
               f"{s.queue!r}, misfire {s.misfire}\n"
               + "\n".join(f"  next: {fmt_both(d.timestamp())}" for d in nxt))


def check_task_name(name: str) -> None:
    """Refuse a --task that cannot be a task's name: task names are 1 to 200
    characters; on the command line also without spaces, control characters or
    ':' (``module:function`` is not how liteq names tasks: ``module.function`` is)."""
    if not name or len(name) > 200 or any(c.isspace() or not c.isprintable() for c in name):
        raise click.BadParameter(f"{name!r} is not a task name: give the name the task is "
                                 f"registered under (1 to 200 characters, no spaces), e.g. "
                                 f"myapp.send_report", param_hint="'--task'")
    if ":" in name:
        raise click.BadParameter(f"{name!r} is not a task name: tasks are named "
                                 f"module.function (e.g. {name.replace(':', '.')}), or by "
                                 f"@db.task(name=...)", param_hint="'--task'")


def _app_db(spec: str) -> Database:
    """The app's Database (like ``liteq worker APP``); --db, if chosen, must agree."""
    db = load_app(spec)
    state = click.get_current_context().find_object(CliState)
    if state is not None and state.chosen and describe(state.path) != db.path:
        raise CliError(f"--app's database is {db.path}, but --db (or $LITEQ_DB) names "
                       f"{describe(state.path)}")
    return db


def _app_task(db: Database, spec: str, name: str) -> Task[Any, Any]:
    tasks = registry(db)
    if name not in tasks:
        known = ", ".join(sorted(tasks)[:10]) or "none"
        raise click.BadParameter(f"{spec} has no task named {name!r} (its tasks: {known})",
                                 param_hint="'--task'")
    return tasks[name]


@schedule_group.command("list")
@output_options(rows=True)
def schedule_list(out: Output) -> None:
    """List the schedules, with their next fire in local time and in UTC.

    Also: the timing and its description, state, last fire, misfire policy,
    queue and target.

    Example: liteq schedule list --json
    """
    db = open_db()
    now = db.clock()
    found = schedules(db)
    if out.json:
        out.rows([schedule_dict(s) for s in found], [])
        return
    rows = [{"name": s.name, "state": s.state, "timing": _timing(s),
             "description": s.description.rsplit(" (", 1)[0] if s.kind == "cron"
             else s.description, "target": _target(s), "queue": s.queue,
             "misfire": s.misfire if s.misfire != "all" else f"all<={s.misfire_cap}",
             "next": fmt_local(s.next_run_at), "next_utc": fmt_utc(s.next_run_at),
             "last": fmt_when(s.last_run_at, now) if s.last_run_at is not None else "-"}
            for s in found]
    columns = [Column("name"), Column("state"), Column("timing"),
               Column("description"), Column("next", "NEXT (LOCAL)"),
               Column("next_utc", "NEXT (UTC)"), Column("last", "LAST FIRE"),
               Column("misfire"), Column("queue"), Column("target", flex=True)]
    out.rows(rows, columns, empty="no schedules (add one with 'liteq schedule add')")


@schedule_group.command("next")
@click.argument("name")
@click.option("-n", "count", type=click.IntRange(1, 1000), default=5, show_default=True,
              metavar="N", help="How many fire times.")
@output_options(rows=True)
def schedule_next(name: str, count: int, out: Output) -> None:
    """Show the next N fire times of schedule NAME.

    In local time, in UTC and in the schedule's own time zone.

    Example: liteq schedule next nightly -n 10
    """
    db = open_db()
    s = _existing(db, name)
    now = db.clock()
    times = s.next(count)
    rows = [{"n": i + 1, "at": d.timestamp(), "local": fmt_local(d.timestamp()),
             "utc": fmt_utc(d.timestamp()), "zone": _stamp(d), "in": fmt_when(d.timestamp(), now)}
            for i, d in enumerate(times)]
    columns = [Column("n", "#", numeric=True), Column("local", "LOCAL"), Column("utc", "UTC")]
    if s.tz not in (None, "UTC"):
        columns.append(Column("zone", s.tz or ""))
    columns.append(Column("in"))
    out.rows(rows, columns, empty=f"schedule {name!r} has nothing left to fire ({s.state})")


@schedule_group.command("pause")
@click.argument("name")
@output_options
def schedule_pause(name: str, out: Output) -> None:
    """Stop firing schedule NAME until 'liteq schedule resume'.

    Example: liteq schedule pause nightly
    """
    s = _existing(open_db(), name).pause()
    out.result(schedule_dict(s), f"schedule {name!r} paused")


@schedule_group.command("resume")
@click.argument("name")
@output_options
def schedule_resume(name: str, out: Output) -> None:
    """Fire schedule NAME again, from its next time after now.

    Fires that fell while it was paused are not made up.

    Example: liteq schedule resume nightly
    """
    s = _existing(open_db(), name).resume()
    out.result(schedule_dict(s), f"schedule {name!r} resumed; next fire "
                                 f"{fmt_both(s.next_run_at)}")


@schedule_group.command("rm")
@click.argument("name")
@output_options
def schedule_rm(name: str, out: Output) -> None:
    """Delete schedule NAME and its history (what it enqueued stays queued).

    Example: liteq schedule rm nightly
    """
    db = open_db()
    _existing(db, name)
    unschedule(db, name)
    out.result({"name": name, "deleted": True}, f"schedule {name!r} deleted")


@schedule_group.command("run")
@click.argument("name")
@output_options
def schedule_run(name: str, out: Output) -> None:
    """Fire schedule NAME once now, whatever its timing (paused or not).

    Example: liteq schedule run nightly
    """
    s = _existing(open_db(), name)
    job = s.run_now()
    out.result({"name": name, "job_id": job.id, "queue": s.queue},
               f"schedule {name!r} fired: job {job.id} on queue {s.queue!r}")


def _job_state(db: Database, job_id: int | None) -> str:
    if job_id is None:
        return "-"
    from .task import Job, JobNotFound

    try:
        return Job(db, job_id).state
    except JobNotFound:
        return "gone"  # acked (a queue message) or pruned


@schedule_group.command("history")
@click.argument("name")
@click.option("--limit", "-n", type=POSITIVE_INT, default=20, show_default=True, metavar="N",
              help="Show at most this many fires.")
@output_options(rows=True)
def schedule_history(name: str, limit: int, out: Output) -> None:
    """Show the last fires of schedule NAME, newest first.

    For each: when it was due, how late it was enqueued, its job and that job's
    state ("gone" once a queue message was acked).

    Example: liteq schedule history nightly -n 50
    """
    db = open_db()
    runs = _existing(db, name).history(limit)
    rows = [{"fire_at": r.fire_at, "fired_at": r.fired_at, "job_id": r.job_id,
             "state": _job_state(db, r.job_id), "late": r.late} for r in runs]
    if out.json:
        out.rows(rows, [])
        return
    columns = [Column("fire_at", "DUE (LOCAL)", fmt=fmt_local),
               Column("fire_at", "DUE (UTC)", fmt=fmt_utc),
               Column("late", "LATE", fmt=lambda s: f"{s:.3f}s", numeric=True),
               Column("job_id", "JOB", numeric=True), Column("state")]
    out.rows(rows, columns, empty=f"schedule {name!r} has not fired yet")


# -- scheduler ---------------------------------------------------------------------------

@click.command()
@click.argument("app", metavar="[APP]", required=False)
@click.option("--interval", type=POSITIVE_DURATION, default=1.0, show_default=True,
              help="Longest sleep between looks at the schedules.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              default="info", show_default=True, help="info logs one line per fire.")
@click.option("--json-logs", is_flag=True, help="Log one JSON object per line.")
@click.pass_context
def scheduler(ctx: click.Context, app: str | None, interval: float, log_level: str,
              json_logs: bool) -> None:
    """Fire the schedules of a database until stopped.

    Run any number of them (and workers with --scheduler) on one file: each
    fire is enqueued exactly once. The scheduler only enqueues; workers run the
    jobs. APP (module or module:attr, as for 'liteq worker') is optional: give it
    to use its database and to run the schedules it declares on import;
    without it, --db names the file. SIGTERM or Ctrl-C stops it (exit 0).

    \b
    Examples:
      liteq --db app.db scheduler
      liteq scheduler myapp.tasks:db --interval 5s
    """
    setup_logging(log_level, json_logs)
    if app is not None:
        from .cli_worker import load_app

        db = load_app(app)
        state = ctx.find_object(CliState)
        if state is not None and state.chosen and describe(state.path) != db.path:
            raise CliError(f"APP's database is {db.path}, but --db names "
                           f"{describe(state.path)}")
    else:
        db = open_db()
    sched = Scheduler(db, interval=interval)
    old = {s: signal.signal(s, lambda *_: sched.stop()) for s in (signal.SIGTERM, signal.SIGINT)}
    log = logging.getLogger("liteq.scheduler")
    log.info("scheduler started on %s (%s)", db.path,
             plural(len(schedules(db)), "schedule"))
    try:
        sched.run()
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    log.info("scheduler stopped after %s", plural(sched.fired, "fire"))


# -- the demo step -----------------------------------------------------------------------

def schedule_demo(run: Any) -> None:
    """A step for ``liteq demo``: a schedule fires every second a few times, each
    fire enqueued once though two schedulers run. *run* is a ``DemoRun``."""
    db, fires = run.db, 3
    run.section(f"Schedules: an every-second schedule fires {fires} times; two schedulers run, "
                f"each fire is enqueued once")
    start = float(int(db.clock()) + 1)
    s = save_schedule(db, "demo.tick", every=1, start=start, queue="demo-schedule",
                      payload={"hello": "from a schedule"}, misfire="all")
    nightly = save_schedule(db, "demo.nightly", cron="0 3 * * *", tz="Europe/Berlin",
                            task="demo.report", args=[1], queue="demo-schedule")
    run.say(f"{s.name}: {s.description}; {nightly.name}: {nightly.description}, "
            f"next {fmt_utc(nightly.next_run_at)}")
    quiet = logging.getLogger("liteq.scheduler")
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    stop = threading.Event()
    threads = [threading.Thread(target=Scheduler(db).run, args=(stop,), daemon=True)
               for _ in range(2)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    try:
        while len(s.history(fires)) < fires and time.monotonic() < deadline:
            time.sleep(0.05)
        s.pause()
    finally:
        stop.set()
        for t in threads:
            t.join(5)
        quiet.setLevel(level)
    for r in reversed(s.history(fires)):
        run.say(f"fired for {fmt_utc(r.fire_at)}, {r.late * 1000:.1f} ms late: job {r.job_id}")
    run.say(f"queue demo-schedule holds {plural(len(db.queue('demo-schedule')), 'message')}; "
            f"demo.tick is paused now")
    run.say(f"see them: {run.command('schedule list')}")
    run.say(f"          {run.command('schedule history demo.tick')}")
