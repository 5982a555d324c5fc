"""``liteq demo``: liteq end to end, on a fresh database file, in a few seconds.

The demo is a list of steps run in order. Each step is a function taking the
:class:`DemoRun` and registered with :func:`demo_step`; the core queue's steps
are 10-40, and later features (topics, workers, schedules) add theirs after::

    @demo_step(50)
    def topics(run: DemoRun) -> None:
        run.section("Pub/sub: one publish, every matching subscription gets a copy")
        ...
"""

from __future__ import annotations

import os
import shlex
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import click
from click.core import ParameterSource

from .cli_base import CliError, CliState
from .cli_output import render_table, safe, terminal_width
from .cli_stats import STATS_COLUMNS, sample
from .database import Database, connect
from .errors import LeaseLost, QueueFull

__all__ = ["demo", "demo_step", "DemoRun"]

#: How long the demo may take before it gives up (it should need a few seconds).
DEADLINE = 120.0


@dataclass
class DemoRun:
    """One run of the demo: the database, and helpers to print steps alike."""

    db: Database
    path: str
    messages: int
    step: int = 0
    notes: dict[str, Any] = field(default_factory=dict)

    def section(self, title: str) -> None:
        """Start the next numbered step."""
        self.step += 1
        click.echo("")
        click.secho(f"{self.step}. {title}", bold=True)

    def say(self, text: str) -> None:
        """One indented line of the current step."""
        click.echo(f"   {safe(text)}")

    def progress(self, length: int, label: str, **options: Any) -> Any:
        """A progress bar on a terminal; nothing at all when output goes to a pipe or
        a file (click would print the bare label there)."""
        if _is_terminal():
            return click.progressbar(length=length, label=f"   {label}", **options)
        return _NoBar()

    def command(self, args: str) -> str:
        """The ``liteq`` command line that looks at this demo's database."""
        return f"liteq --db {shlex.quote(self.path)} {args}"


def _is_terminal() -> bool:
    return sys.stdout.isatty()


class _NoBar:
    """What a progress bar is when there is no terminal to draw it on."""

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, n: int) -> None:
        pass


DemoStep = Callable[[DemoRun], None]
_STEPS: list[tuple[int, DemoStep]] = []


def demo_step(order: int) -> Callable[[DemoStep], DemoStep]:
    """Register a step of ``liteq demo``; steps run by ascending *order*."""

    def register(step: DemoStep) -> DemoStep:
        _STEPS.append((order, step))
        _STEPS.sort(key=lambda item: item[0])
        return step

    return register


class _Threads:
    """Threads that report their first exception to the main thread."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self._threads: list[threading.Thread] = []

    def start(self, target: Callable[[], None], n: int) -> None:
        def run() -> None:
            try:
                target()
            except BaseException as exc:  # handed to the main thread by check()
                self.error = self.error or exc
                self.stop.set()

        for _ in range(n):
            t = threading.Thread(target=run, daemon=True)
            t.start()
            self._threads.append(t)

    def check(self, deadline: float) -> None:
        if self.error is not None:
            raise self.error
        if time.monotonic() > deadline:
            self.stop.set()
            raise CliError("the demo stalled: no progress for too long")

    def join(self) -> None:
        self.stop.set()
        for t in self._threads:
            t.join()
        if self.error is not None:
            raise self.error


ORDERS = "orders"
MAX_DEPTH = 500
BATCH = 50


@demo_step(10)
def back_pressure(run: DemoRun) -> None:
    """Producers fill a bounded queue until it answers QueueFull."""
    q = run.db.queue(ORDERS, max_depth=MAX_DEPTH, max_attempts=3)
    run.section(f"Back pressure: 2 producers fill queue {ORDERS!r} (max_depth {MAX_DEPTH}), "
                f"nobody consumes")
    full: list[QueueFull] = []
    threads = _Threads()

    def produce() -> None:
        while not threads.stop.is_set():
            try:
                q.put_many([{"order": i} for i in range(BATCH)])
            except QueueFull as exc:
                full.append(exc)
                return

    threads.start(produce, 2)
    deadline = time.monotonic() + DEADLINE
    with run.progress(MAX_DEPTH, "filling", show_pos=True, show_eta=False) as bar:
        shown = 0
        while len(full) < 2:
            threads.check(deadline)
            depth = len(q)
            bar.update(depth - shown)
            shown = depth
            time.sleep(0.01)
        bar.update(len(q) - shown)
    threads.join()
    run.notes["put"] = len(q)
    run.say(f"QueueFull: {full[0]}")
    run.say("Nothing of that batch was written. 'liteq put' exits with 75 here, so a shell")
    run.say("script can tell \"busy, retry later\" from a real error.")


@demo_step(20)
def drain(run: DemoRun) -> None:
    """Consumers drain the queue while producers keep putting, retrying on QueueFull."""
    q = run.db.queue(ORDERS)
    total = max(run.messages, run.notes.get("put", 0))
    run.section(f"Consumers drain {ORDERS!r} while the producers put the rest of "
                f"{total} messages")
    lock = threading.Lock()
    counts = {"put": run.notes.get("put", 0), "got": 0, "full": 0, "peak": 0}
    threads = _Threads()

    def produce() -> None:
        while not threads.stop.is_set():
            with lock:
                n = min(BATCH, total - counts["put"])
                counts["put"] += n
            if n <= 0:
                return
            while not threads.stop.is_set():
                try:
                    q.put_many([{"order": i} for i in range(n)])
                    break
                except QueueFull:  # back pressure: wait a moment, try again
                    with lock:
                        counts["full"] += 1
                    time.sleep(0.002)

    def consume() -> None:
        while not threads.stop.is_set():
            with lock:
                if counts["got"] >= total:
                    return
            msgs = q.get_many(BATCH, wait=0.2)
            q.ack_many(msgs)
            with lock:
                counts["got"] += len(msgs)

    start = time.monotonic()
    threads.start(consume, 2)
    threads.start(produce, 2)
    deadline = start + DEADLINE
    with run.progress(total, "consumed", show_pos=True) as bar:
        shown = 0
        while True:
            threads.check(deadline)
            counts["peak"] = max(counts["peak"], len(q))
            with lock:
                got = counts["got"]
            bar.update(got - shown)
            shown = got
            if got >= total:
                break
            time.sleep(0.02)
    threads.join()
    took = time.monotonic() - start
    run.say(f"{total} messages put and acked in {took:.2f}s ({total / took:,.0f} messages/s, "
            f"2 producer and 2 consumer threads)")
    run.say(f"the producers met QueueFull {counts['full']} times and retried; the depth "
            f"peaked at {counts['peak']} of {MAX_DEPTH}")


@demo_step(30)
def poison(run: DemoRun) -> None:
    """A message that fails every time ends dead after max_attempts."""
    q = run.db.queue(ORDERS)
    attempts = q.config.max_attempts
    run.section(f"A poison message: its consumer fails every time (max_attempts {attempts})")
    q.put({"order": "poison"})
    dead_id = None
    for _ in range(attempts):
        msg = q.get(wait=2)
        if msg is None:
            raise CliError("the poison message did not come back")
        error = f"ValueError: cannot parse order {msg.payload['order']!r}"
        last = msg.attempts >= attempts
        run.say(f"delivery {msg.attempts}: {error} -> {'dead' if last else 'nack, retry'}")
        msg.nack(delay=0, error=error)
        dead_id = msg.id
    assert dead_id is not None
    dead = run.db.message(dead_id)
    assert dead is not None
    run.say(f"message {dead.id} is {dead.state} in queue {dead.queue!r}: {dead.error}")
    run.say(f"see it:   {run.command(f'dead list {ORDERS}')}")
    run.say(f"retry it: {run.command(f'dead redrive {ORDERS}')}")
    run.notes["dead"] = dead.id


@demo_step(40)
def lease_expiry(run: DemoRun) -> None:
    """A claimed message that is never acked comes back when its lease runs out."""
    lease = 1.0
    q = run.db.queue("reports", lease=lease)
    run.section(f"A lease runs out: a consumer claims a message and crashes "
                f"(queue 'reports', lease {lease:g}s)")
    q.put({"report": "daily"})
    first = q.get()
    if first is None:
        raise CliError("the report message was not delivered")
    run.say(f"claimed message {first.id} (delivery {first.attempts}), receipt {first.receipt};"
            f" the consumer dies")
    steps = 20
    with run.progress(steps, "lease", show_eta=False, show_percent=False) as bar:
        for _ in range(steps):
            time.sleep(lease / steps)
            bar.update(1)
    again = q.get(wait=5)
    if again is None:
        raise CliError("the message did not come back after its lease")
    run.say(f"message {again.id} is back: delivery {again.attempts}, new receipt "
            f"{again.receipt}")
    try:
        first.ack()
    except LeaseLost:
        run.say("the dead consumer's receipt is refused (LeaseLost): it cannot ack a message "
                "someone else holds")
    again.ack()
    run.say("the new holder acks it")


@click.command()
@click.option("--messages", "-n", type=click.IntRange(min=MAX_DEPTH), default=5000,
              show_default=True, help="Messages to move through the bounded queue.")
@click.pass_context
def demo(ctx: click.Context, messages: int) -> None:
    """Show liteq working end to end on a new database file.

    Producers fill a bounded queue until back pressure answers QueueFull,
    consumers drain it, a poison message ends dead, and a claimed message whose
    lease runs out comes back. Ends with the stats table and the commands to look
    inside the file.

    The file is a new one in a temporary directory (also when $LITEQ_DB is set),
    or --db PATH given on this command line, which must not exist yet (the demo
    never touches an existing database). It says which file it used.

    \b
    Examples:
      liteq demo
      liteq --db /tmp/try.db demo -n 20000
    """
    state = ctx.find_object(CliState)
    assert state is not None
    root = ctx.find_root()
    # Only --db on the command line chooses the demo's file: $LITEQ_DB names the
    # user's real database, which the demo must neither refuse to run beside nor touch.
    given = "db_path" in root.params and \
        root.get_parameter_source("db_path") == ParameterSource.COMMANDLINE
    if given:
        path = state.path
        if os.path.exists(path):
            raise CliError(f"{path} exists; the demo needs a new file (give another --db, "
                           f"or none for a temporary one)")
    else:
        path = os.path.join(tempfile.mkdtemp(prefix="liteq-demo-"), "demo.db")
    db = connect(path)
    ctx.call_on_close(db.close)
    run = DemoRun(db=db, path=db.path, messages=messages)
    click.secho(f"liteq demo on a new database file: {run.path}", bold=True)
    if not given and os.environ.get("LITEQ_DB"):
        click.echo("($LITEQ_DB is left alone: the demo uses its own file unless "
                   "'liteq --db PATH demo' names one)")
    for _, step in list(_STEPS):
        step(run)
    click.echo("")
    click.secho(f"{run.step + 1}. The file now ({run.command('stats')})", bold=True)
    rows = [{k: v for k, v in r.items() if not k.startswith("_")} for r in sample(db)]
    for line in render_table(rows, STATS_COLUMNS, terminal_width() - 3):
        click.echo(f"   {line}")
    click.echo("")
    click.echo(f"The demo's database is {run.path}. Look inside it yourself:")
    for args in ("stats --watch", f"dead list {ORDERS}", f"show {run.notes.get('dead', 1)}",
                 f"put {ORDERS} '{{\"order\": 1}}'", f"get {ORDERS}"):
        click.echo(f"   {run.command(args)}")
