"""Topic commands: ``topics``, ``publish``, ``subscribe``, ``unsubscribe``, ``tail``."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import click

from .cli_base import DURATION, open_db, parse_json
from .cli_demo import DemoRun, demo_step
from .cli_output import (
    Column,
    Output,
    fmt_payload,
    message_dict,
    output_options,
    safe,
    to_json,
)
from .errors import InvalidArgument, QueueFull
from .topic import Topic, validate_topic_name

__all__ = ["topics", "publish", "subscribe", "unsubscribe", "tail"]


class TopicName(click.ParamType):
    name = "TOPIC"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        try:
            return validate_topic_name(value)
        except InvalidArgument as exc:
            self.fail(str(exc), param, ctx)


class SubscriptionName(TopicName):
    name = "NAME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        try:
            return validate_topic_name(value, "subscription")
        except InvalidArgument as exc:
            self.fail(str(exc), param, ctx)


TOPIC = TopicName()
SUBSCRIPTION = SubscriptionName()


def _sub_row(topic: str, q: Any) -> dict[str, Any]:
    st = q.stats()
    return {
        "topic": topic,
        "subscription": q.name.split(":", 1)[1],
        "queue": q.name,
        "pattern": q.config.pattern,
        "ready": st["ready"],
        "leased": st["leased"],
        "dead": st["dead"],
        "depth": st["depth"],
        "max_depth": st["max_depth"],
    }


@click.command("topics")
@output_options(rows=True)
def topics(out: Output) -> None:
    """List topics, each subscription with its pattern and depth.

    A topic appears once it has a subscription.

    Example: liteq topics --json
    """
    db = open_db()
    rows = [_sub_row(name, q) for name in db.topics() for q in db.topic(name).subscriptions()]
    columns = [Column("topic"), Column("subscription"), Column("pattern"),
               Column("ready", numeric=True), Column("leased", numeric=True),
               Column("dead", numeric=True), Column("max_depth", "MAX_DEPTH", numeric=True)]
    out.rows(rows, columns, empty="no topics (subscribe to one with 'liteq subscribe')")


@click.command("publish")
@click.argument("topic", type=TOPIC)
@click.argument("key")
@click.argument("payload", metavar="PAYLOAD_JSON")
@click.option("--delay", type=DURATION, default=0.0, help="Deliver after this long.")
@click.option("--priority", type=int, default=0, show_default=True, help="Higher runs first.")
@output_options
def publish(topic: str, key: str, payload: str, delay: float, priority: int, out: Output) -> None:
    """Publish PAYLOAD_JSON on TOPIC with routing KEY; print the number of deliveries.

    Every subscription whose pattern matches KEY gets one copy, in one
    transaction. If a matching subscription is full, nothing is delivered
    anywhere and the exit code is 75. A key that matches nothing is not an
    error: 0 deliveries.

    Example: liteq publish orders order.created.eu '{"id": 7}'
    """
    value = parse_json(payload, "PAYLOAD_JSON")
    db = open_db(create=True)
    n = db.topic(topic).publish(value, key=key, delay=delay, priority=priority)
    out.result({"topic": topic, "key": key, "deliveries": n},
               f"{n} {'delivery' if n == 1 else 'deliveries'}")


@click.command("subscribe")
@click.argument("topic", type=TOPIC)
@click.argument("name", type=SUBSCRIPTION)
@click.option("--pattern", default="#", show_default=True,
              help="Routing pattern: words separated by dots, * one word, # zero or more.")
@click.option("--max-depth", type=click.IntRange(min=1), default=None,
              help="Back pressure: publishes meeting a full subscription fail whole.")
@output_options
def subscribe(topic: str, name: str, pattern: str, max_depth: int | None, out: Output) -> None:
    """Create (or change the pattern of) the durable subscription NAME on TOPIC.

    The subscription is a queue named TOPIC:NAME; read it with 'liteq get'.

    Example: liteq subscribe orders billing --pattern 'order.*.eu'
    """
    db = open_db(create=True)
    options = {} if max_depth is None else {"max_depth": max_depth}
    q = db.topic(topic).subscribe(name, pattern=pattern, **options)
    out.result(_sub_row(topic, q), f"subscription {name!r} on {topic!r} (queue {q.name!r}) "
                                   f"matches {pattern!r}")


@click.command("unsubscribe")
@click.argument("topic", type=TOPIC)
@click.argument("name", type=SUBSCRIPTION)
@output_options
def unsubscribe(topic: str, name: str, out: Output) -> None:
    """Delete the subscription NAME of TOPIC and the messages waiting in it.

    Example: liteq unsubscribe orders billing
    """
    db = open_db()
    db.topic(topic).unsubscribe(name)
    out.result({"topic": topic, "subscription": name, "deleted": True},
               f"deleted subscription {name!r} of topic {topic!r}")


@click.command("tail")
@click.argument("topic", type=TOPIC)
@click.option("--pattern", default="#", show_default=True, help="Routing pattern to follow.")
@click.option("--count", "-n", type=click.IntRange(min=1), default=None,
              help="Stop after this many messages.")
@click.option("--timeout", type=DURATION, default=None,
              help="Stop after this long without a message.")
@output_options(rows=True)
def tail(topic: str, pattern: str, count: int | None, timeout: float | None, out: Output) -> None:
    """Print messages published on TOPIC from now on, until Ctrl-C (or SIGTERM).

    Reads through a temporary subscription that is removed on exit, also on
    SIGTERM or SIGHUP (and, if this process is killed with SIGKILL, by the next
    publisher once its own 30 s lease runs out).

    Example: liteq tail orders --pattern 'order.#'
    """
    db = open_db(create=True)
    t: Topic = db.topic(topic)
    with _stop_on_signals() as stopped, t.tail(pattern) as follow:
        if not out.json:
            click.echo(f"following {topic!r} {pattern!r} (Ctrl-C to stop)", err=True)
        try:
            _follow(follow, count, timeout, out, stopped)
        except KeyboardInterrupt:
            pass  # a second Ctrl-C: exit 0 all the same, the subscription is removed


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[Callable[[], bool]]:
    """Within the block, Ctrl-C (SIGINT), SIGTERM and SIGHUP ask a tail to stop: a flag
    that its loop reads between two reads (so within its 0.5 s wait), and the temporary
    subscription is removed at once instead of collecting copies until its lease runs
    out. Not an exception raised wherever the process is: one that landed inside the
    storage layer's bookkeeping (say an ack's transaction being opened) left that
    transaction open, and the subscription's removal joined it and was never committed
    (the tail exited 0, its subscription stayed: 4 runs in 15 of
    tests/test_cli_tail_signals.py). A second signal while stopping raises
    KeyboardInterrupt, for a tail that does not stop. Signal handlers can only be set
    in the main thread (elsewhere: nothing asks, the caller's Ctrl-C is its own)."""
    asked = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield asked.is_set
        return

    def ask(signum: int, frame: Any) -> None:
        if asked.is_set():
            raise KeyboardInterrupt
        asked.set()

    wanted = [signal.SIGINT, signal.SIGTERM] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])
    old = {sig: signal.signal(sig, ask) for sig in wanted}
    try:
        yield asked.is_set
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def _follow(follow: Any, count: int | None, timeout: float | None, out: Output,
            stopped: Callable[[], bool]) -> None:
    seen = 0
    last = time.monotonic()
    while (count is None or seen < count) and not stopped():
            msg = follow.get(wait=0.5)
            if msg is None:
                if timeout is not None and time.monotonic() - last >= timeout:
                    break
                continue
            last = time.monotonic()
            seen += 1
            if out.json:
                row = message_dict(msg)
                row["routing_key"] = msg.routing_key
                click.echo(to_json(row))
            else:
                click.echo(safe(f"{msg.routing_key}  {fmt_payload(msg.payload)}"))


@demo_step(50)
def fan_out(run: DemoRun) -> None:
    """Demo: one publish, a copy for every matching subscription, all or nothing."""
    run.section("Pub/sub: topic 'events', three subscriptions with overlapping patterns")
    t = run.db.topic("events")
    patterns = {"eu_orders": "order.*.eu", "orders": "order.#", "audit": "#"}
    subs = {name: t.subscribe(name, pattern=p) for name, p in patterns.items()}
    for name, p in patterns.items():
        run.say(f"subscription {name!r:12} pattern {p!r}")
    keys = ["order.created.eu", "order.created.us", "order.paid.eu", "invoice.sent.eu"]
    n = 0
    for i in range(400):
        n += t.publish({"event": i}, key=keys[i % len(keys)])
    run.say(f"400 publishes made {n} deliveries:")
    for name, q in subs.items():
        run.say(f"  {name:10} {q.stats()['ready']:4} messages")
    small = t.subscribe("tiny", pattern="alert.#", max_depth=1)
    t.publish("first alert", key="alert.disk")
    try:
        t.publish("second alert", key="alert.disk")
    except QueueFull as exc:
        run.say(f"a publish meeting a full subscription delivers nowhere: {exc}")
    run.say(f"audit still has {subs['audit'].stats()['ready']} messages (not "
            f"{subs['audit'].stats()['ready'] + 1}); look: {run.command('topics')}")
    small.purge()
