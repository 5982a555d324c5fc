"""``liteq`` commands on messages: peek, show, put, get, ack, retry, cancel."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterator
from typing import IO, Any

import click

from . import codec
from .cli_base import (
    DURATION,
    POSITIVE_INT,
    QUEUE,
    RECEIPT,
    STATE_CHOICES,
    CliError,
    TryLater,
    existing_queue,
    open_db,
    parse_json,
)
from .cli_output import (
    Output,
    fmt_time,
    message_dict,
    message_rows,
    output_options,
    plural,
    to_json,
)
from .database import Database, parse_receipt
from .errors import LiteqError, QueueFull
from .queue import Message

__all__ = ["peek", "show", "put", "get", "ack", "retry", "cancel", "STDIN_BATCH",
           "PROGRESS_MIN"]

#: Payloads read from stdin go in per transaction (one ``put_many``).
STDIN_BATCH = 1000
#: Show a progress bar (on stderr) when stdin holds at least this many payloads.
PROGRESS_MIN = 5000


# -- looking ---------------------------------------------------------------------------

@click.command()
@click.argument("queue", type=QUEUE)
@click.option("--state", "-s", type=click.Choice(STATE_CHOICES), default="ready",
              show_default=True, help="Which messages to show.")
@click.option("--limit", "-n", type=POSITIVE_INT, default=10, show_default=True, metavar="N",
              help="Show at most this many.")
@output_options(rows=True)
def peek(queue: str, state: str, limit: int, out: Output) -> None:
    """Show the next messages of QUEUE without claiming them.

    Ready messages come in delivery order (priority, then due time, then id);
    --state all lists every state in id order.

    \b
    Examples:
      liteq peek emails
      liteq peek emails --state delayed -n 50 --nl
    """
    db = open_db()
    q = existing_queue(db, queue)
    msgs = q.peek(limit, state=None if state == "all" else state)
    rows, columns = message_rows(msgs, db.clock(), error=state == "dead")
    what = "messages" if state == "all" else f"{state} messages"
    out.rows(rows, columns, empty=f"no {what} in queue {queue!r}")


def _message_fields(db: Database, msg: Message) -> list[tuple[str, str]]:
    now = db.clock()
    max_attempts = db.queue(msg.queue).config.max_attempts
    return [
        ("id", str(msg.id)),
        ("queue", msg.queue),
        ("state", msg.state),
        ("priority", str(msg.priority)),
        ("attempts", f"{msg.attempts} of {max_attempts}"),
        ("key", msg.key or "-"),
        ("enqueued", fmt_time(msg.enqueued_at, now)),
        ("due", fmt_time(msg.run_at, now)),
        ("lease until", fmt_time(msg.lease_until, now)),
        ("finished", fmt_time(msg.finished_at, now)),
        ("origin", msg.origin or "-"),
        ("error", msg.error or "-"),
        ("headers", to_json(msg.headers) if msg.headers else "-"),
        ("payload", to_json(msg.payload, indent=2)),
    ]


@click.command()
@click.argument("message_id", metavar="ID", type=POSITIVE_INT)
@output_options
def show(message_id: int, out: Output) -> None:
    """Show everything about one message.

    The message may be in any state: shows its decoded payload, headers,
    attempts, times and last error.

    Example: liteq show 42 --json
    """
    db = open_db()
    msg = _message(db, message_id)
    out.record(message_dict(msg), _message_fields(db, msg))


# -- putting and getting ---------------------------------------------------------------

@click.command()
@click.argument("queue", type=QUEUE)
@click.argument("payload", metavar="PAYLOAD_JSON")
@click.option("--delay", type=DURATION, default=0.0,
              help="Deliver no sooner than this long from now.")
@click.option("--priority", type=int, default=0, metavar="N",
              help="Higher is delivered first (default 0).")
@click.option("--key", help="Dedup key: while an unfinished message of QUEUE has this key, "
                            "print its id and add nothing.")
@click.option("--wait", type=DURATION, default=0.0,
              help="If QUEUE is full, wait up to this long for room (default: exit 75 at once).")
@output_options
def put(queue: str, payload: str, delay: float, priority: int, key: str | None, wait: float,
        out: Output) -> None:
    """Put a message on QUEUE and print its id.

    PAYLOAD_JSON is the payload, as JSON.

    With - as PAYLOAD_JSON, read payloads from stdin, one JSON document per line
    (blank lines are skipped), and put them in transactions of 1000. Every line is
    checked before anything is written: a malformed line puts nothing. A progress
    bar on stderr follows large inputs.

    Makes the database file and the queue (with default options) if they do not
    exist yet. When QUEUE is at its max_depth, exits with 75 and writes nothing;
    with -, the transactions already committed stay, and the error says how many
    messages went in.

    \b
    Examples:
      liteq put emails '{"to": "a@b.c"}' --delay 5m
      seq 100000 | liteq put numbers -
    """
    if payload == "-":
        if key is not None:
            raise click.UsageError("--key needs a single PAYLOAD_JSON, not - (stdin)")
        _put_stdin(queue, delay, priority, wait, out)
        return
    value = parse_json(payload, "PAYLOAD_JSON")
    db = open_db(create=True)
    mid = db.queue(queue).put(value, delay=delay, priority=priority, key=key,
                              block=wait > 0, timeout=wait)
    out.result({"queue": queue, "id": mid}, str(mid))


def _put_stdin(queue: str, delay: float, priority: int, wait: float, out: Output) -> None:
    # Check every line before writing any: spool the input (it may be larger than
    # memory should hold) while parsing it, then put it in batches.
    with tempfile.SpooledTemporaryFile(max_size=16 << 20, mode="w+", encoding="utf-8") as spool:
        total = _check_lines(sys.stdin, spool)
        spool.seek(0)
        q = open_db(create=True).queue(queue)
        done = 0
        bar = click.progressbar(length=total, label=f"put on {queue}", file=sys.stderr,
                                show_pos=True, hidden=total < PROGRESS_MIN)
        with bar:
            try:
                for batch in _batches(spool, STDIN_BATCH):
                    q.put_many(batch, delay=delay, priority=priority, block=wait > 0,
                               timeout=wait)
                    done += len(batch)
                    bar.update(len(batch))
            except LiteqError as exc:
                error = TryLater if isinstance(exc, QueueFull) else CliError
                raise error(f"{exc}; {done} of {total} messages were put before this, "
                            f"the other {total - done} were not") from exc
    out.result({"queue": queue, "count": done},
               f"put {plural(done, 'message')} on queue {queue!r}")


def _check_lines(stream: IO[str], spool: IO[str]) -> int:
    count = 0
    for number, line in enumerate(stream, 1):
        if not line.strip():
            continue
        value = parse_json(line, f"line {number} of stdin")
        try:
            codec.encode(value)  # the size limit, before anything is written
        except LiteqError as exc:
            raise CliError(f"line {number} of stdin: {exc}; nothing was put") from exc
        spool.write(line if line.endswith("\n") else line + "\n")
        count += 1
    return count


def _batches(spool: IO[str], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for line in spool:
        if line.strip():
            batch.append(parse_json(line, "a spooled line"))
            if len(batch) == size:
                yield batch
                batch = []
    if batch:
        yield batch


@click.command()
@click.argument("queue", type=QUEUE)
@click.option("--wait", type=DURATION, default=0.0,
              help="Wait up to this long for a message (default: answer at once).")
@click.option("--ack", is_flag=True, help="Ack it at once: the message is finished for good.")
@output_options
def get(queue: str, wait: float, ack: bool, out: Output) -> None:
    """Claim the next message of QUEUE and print it with its receipt.

    The message is leased for the queue's lease time: finish it with
    'liteq ack RECEIPT' before then, or it is delivered again. --ack finishes it
    at once. When no message is ready (within --wait), prints nothing (JSON:
    null) and exits 0.

    \b
    Examples:
      liteq get emails --wait 10s
      liteq get emails --ack --json
    """
    db = open_db()
    q = existing_queue(db, queue)
    msg = q.get(wait=wait)
    if msg is None:
        if out.json:
            click.echo("null")
        else:
            click.echo(f"no message ready in queue {queue!r}", err=True)
        return
    if ack:
        msg.ack()
    data = message_dict(msg, receipt=True)
    if ack:
        data.update(state="done", lease_until=None)
    data["acked"] = ack
    out.record(data, _claim_fields(db, msg, acked=ack))


def _claim_fields(db: Database, msg: Message, *, acked: bool) -> list[tuple[str, str]]:
    now = db.clock()
    max_attempts = db.queue(msg.queue).config.max_attempts
    fields = [
        ("receipt", "(acked)" if acked else msg.receipt),
        ("id", str(msg.id)),
        ("queue", msg.queue),
        ("attempts", f"{msg.attempts} of {max_attempts}"),
        ("priority", str(msg.priority)),
        ("enqueued", fmt_time(msg.enqueued_at, now)),
        ("lease until", "(acked)" if acked else fmt_time(msg.lease_until, now)),
    ]
    if msg.key:
        fields.append(("key", msg.key))
    if msg.error:
        fields.append(("last error", msg.error))
    if msg.headers:
        fields.append(("headers", to_json(msg.headers)))
    fields.append(("payload", to_json(msg.payload, indent=2)))
    return fields


@click.command()
@click.argument("receipt", type=RECEIPT)
@output_options
def ack(receipt: str, out: Output) -> None:
    """Finish a claimed message by its receipt.

    RECEIPT is the ID:TOKEN that 'liteq get' printed. Fails, changing nothing,
    when the receipt is stale: the lease ran out and the message was claimed
    again, or it was already finished.

    Example: liteq ack 42:-8735209182734
    """
    open_db().ack(receipt)
    mid = parse_receipt(receipt)[0]
    out.result({"id": mid, "acked": True}, f"acked message {mid}")


@click.command()
@click.argument("message_id", metavar="ID", type=POSITIVE_INT)
@output_options
def retry(message_id: int, out: Output) -> None:
    """Make a dead or cancelled message ready again.

    Its attempts start over from 0.

    Example: liteq retry 42
    """
    db = open_db()
    msg = _message(db, message_id)
    if not db.retry(message_id):
        raise CliError(f"message {message_id} is {msg.state}: only dead or cancelled "
                       f"messages can be retried")
    out.result({"id": message_id, "queue": msg.queue, "state": "ready"},
               f"message {message_id} is ready again in queue {msg.queue!r}")


@click.command()
@click.argument("message_id", metavar="ID", type=POSITIVE_INT)
@output_options
def cancel(message_id: int, out: Output) -> None:
    """Cancel a ready or delayed message so that it is never delivered.

    A leased (running) message is not stopped by force: cancellation is
    requested, the request survives restarts, a task sees it at its next
    checkpoint, and the message is not delivered again.

    Example: liteq cancel 42
    """
    db = open_db()
    msg = _message(db, message_id)
    outcome = db.request_cancel(message_id)
    if outcome == "finished":
        raise CliError(f"message {message_id} is {msg.state}: only ready, delayed or "
                       f"leased messages can be cancelled")
    if outcome == "requested":
        out.result({"id": message_id, "queue": msg.queue, "state": "leased",
                    "cancel_requested": True},
                   f"message {message_id} of queue {msg.queue!r} is running: cancellation "
                   f"requested (it will not be delivered again)")
        return
    out.result({"id": message_id, "queue": msg.queue, "state": "cancelled"},
               f"cancelled message {message_id} of queue {msg.queue!r}")


def _message(db: Database, message_id: int) -> Message:
    msg = db.message(message_id)
    if msg is None:
        raise CliError(f"no message with id {message_id} (it was acked, purged or "
                       f"never existed)")
    return msg
