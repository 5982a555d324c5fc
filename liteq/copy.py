"""Moving a database between engines: ``liteq copy SRC DST`` (issue 17).

:func:`copy_database` copies queues (with their options, totals and topic
subscriptions), messages (states, attempts, delays, leases and tokens, keys, headers),
job results, workflows (each job's count of unmet parents and every dependency edge
with the result it carries; a workflow half done on the source finishes on the
destination), schedules (with their next fire time) and their fire history from one
database to another, SQLite or PostgreSQL either way, keeping every id. It talks to
both through the :class:`~liteq.backends.base.Backend` copying verbs only.

What it guarantees (decisions written down here and in the README):

* **Consistent.** The source is read in one snapshot (``Backend.copy_snapshot``): the
  destination gets the source as it was at one instant, even while applications keep
  writing to it. The source is opened read-only and never written.
* **Leased messages.** A message leased by a consumer whose lease has not run out is
  being worked on: the copy refuses while there is one (:class:`CopyRefused`, naming
  the queues), unless ``force``. With ``force`` it is copied as it is, still leased
  with its token, deadline and attempts: it becomes claimable on the destination when
  its lease runs out, as if its consumer had died (never while the source's consumer
  may still be running it). A lease that already ran out is copied too and settled by
  the destination's first claim or expiry.
* **Resumable.** Each table goes over in chunks of :data:`CHUNK_ROWS` rows in id
  order; each chunk commits together with a progress mark in the destination, and a
  row whose id is there already is skipped. A copy that is killed and run again with
  the same SRC, DST and tables resumes after the last committed chunk, and every row
  lands exactly once. The second run reads a new snapshot: it goes on only if the
  source still has the same fingerprint (every table's row count and highest id, the
  counters, and every queue and schedule row, which move with every put, ack and fire
  flushed); otherwise it refuses, since the rows already copied belong to another
  moment. A resumed copy is therefore consistent when the source was not written in
  between (stop the applications first); changes that leave the fingerprint alone (a
  claim, a nack) may mix two moments.
* **Refused destinations.** A destination holding other liteq data, or the marks of a
  copy from another source (or of other tables), is refused. To start over, delete the
  destination file (and its ``-wal``/``-shm``), or ``DROP SCHEMA name CASCADE`` on
  PostgreSQL, and run the copy again.
* **Counters.** At the end the destination moves its id and token sequences past
  everything the source issued and rebuilds each queue's depth counter from the copied
  messages (``Backend.import_counters``): new puts get fresh ids and a bounded queue
  still refuses at ``max_depth``.

Only one copy into a destination may run at a time.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from .backends import open_backend
from .backends.base import Backend
from .backends.tables import COPY_TABLES
from .backends.targets import is_postgres, redact_url, split_schema
from .errors import InvalidArgument, LiteqError, SchemaError, StorageError

__all__ = ["CHUNK_ROWS", "CopyRefused", "TableCopy", "CopyReport", "copy_database",
           "choose_tables"]

#: Rows per chunk: each chunk is one transaction on the destination.
CHUNK_ROWS = 1000

#: What a chunk's progress callback gets: ``(table, rows read so far, rows in SRC)``.
Progress = Callable[[str, int, int], None]


class CopyRefused(LiteqError):
    """A copy that would lose or mix data was refused before writing anything."""


@dataclass
class TableCopy:
    """How one table went."""

    #: The table's name.
    table: str
    #: Rows the source's snapshot holds.
    rows: int
    #: Rows this run inserted into the destination.
    copied: int = 0
    #: Rows this run read that the destination already had (a chunk written twice).
    present: int = 0
    #: The id after which this run started (0: from the first row).
    resumed_after: int = 0


@dataclass
class CopyReport:
    """What :func:`copy_database` did (or, with ``dry_run``, would do)."""

    source: str
    destination: str
    #: ``"new"`` (an empty or missing destination), ``"resumed"`` (an interrupted copy
    #: of the same source went on) or ``"complete"`` (it had finished already).
    status: str
    dry_run: bool
    #: Messages under a live lease in the source (copied leased, with ``force``).
    leased: int
    tables: list[TableCopy] = field(default_factory=list)
    seconds: float = 0.0


def choose_tables(names: Iterable[str] | None) -> tuple[str, ...]:
    """The tables to copy, in copy order: all of them for None. InvalidArgument for an
    unknown name, or messages without their queues."""
    if names is None:
        return COPY_TABLES
    wanted = {n.strip() for n in names if n.strip()}
    unknown = sorted(wanted - set(COPY_TABLES))
    if unknown or not wanted:
        raise InvalidArgument(
            f"tables must be some of {', '.join(COPY_TABLES)}, got "
            f"{', '.join(unknown) if unknown else 'none'}"
        )
    if "messages" in wanted and "queues" not in wanted:
        raise InvalidArgument("messages need their queues: add queues to the tables")
    workflow = {"wf_jobs", "wf_edges"}
    if wanted & workflow and not workflow | {"messages"} <= wanted:
        raise InvalidArgument(
            "the workflow tables go together with their messages: copy wf_jobs, wf_edges "
            "and messages (and queues) together"
        )
    return tuple(t for t in COPY_TABLES if t in wanted)


def place(target: str) -> tuple[str, ...]:
    """Where *target* is, as a comparable tuple: a file's real path, or a PostgreSQL
    server's host, port, database and liteq schema (user and password left out)."""
    if not is_postgres(target):
        return ("sqlite", os.path.realpath(os.fspath(target)))
    url, schema = split_schema(target)
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    host = parts.hostname or query.get("host", "")
    port = str(parts.port or query.get("port", "5432"))
    dbname = parts.path.lstrip("/") or query.get("dbname", "")
    return ("postgres", host, port, dbname, schema or "liteq")


def _fingerprint(value: object) -> int:
    """A stable 63-bit hash of *value*'s repr (it is stored in a bigint mark)."""
    digest = hashlib.blake2b(repr(value).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def _all_rows(backend: Backend, table: str, chunk: int) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    after = 0
    while True:
        page = backend.export_rows(table, after, chunk)
        if not page:
            return out
        out += page
        after = page[-1].id  # type: ignore[attr-defined]


def copy_database(
    src: str,
    dst: str,
    *,
    tables: Iterable[str] | None = None,
    dry_run: bool = False,
    force: bool = False,
    chunk_rows: int = CHUNK_ROWS,
    durability: str = "normal",
    on_progress: Progress | None = None,
) -> CopyReport:
    """Copy the database *src* into *dst* (each a SQLite path or a ``postgresql://``
    URL); see the module docstring for what is guaranteed. *tables* limits the copy
    (:func:`choose_tables`); *dry_run* reads both and writes nothing; *force* copies
    messages under a live lease; *on_progress* is called after each chunk.

    Raises CopyRefused (leased messages, a destination with other data, a source that
    changed since an interrupted copy), InvalidArgument (same SRC and DST, bad
    tables), or the errors of opening either database, with nothing written.
    """
    chosen = choose_tables(tables)
    if not isinstance(chunk_rows, int) or isinstance(chunk_rows, bool) or chunk_rows < 1:
        raise InvalidArgument(f"chunk_rows must be a positive integer, got {chunk_rows!r}")
    if place(src) == place(dst):
        raise InvalidArgument(
            f"SRC and DST are the same database ({_name(src)}): copy into another file "
            f"or schema"
        )
    started = time.monotonic()
    source = open_backend(src, read_only=True, create=False)
    dest: Backend | None = None
    try:
        with source.copy_snapshot():
            extents = {t: source.export_extent(t) for t in COPY_TABLES}
            counters = source.export_counters()
            queues = _all_rows(source, "queues", chunk_rows)
            schedules = _all_rows(source, "schedules", chunk_rows)
            identity = _fingerprint((place(src), chosen))
            snapshot = _fingerprint((identity, extents, counters, queues, schedules))
            leased = _live_leases(source, queues) if "messages" in chosen else {}
            if leased and not force and not dry_run:
                raise CopyRefused(_leased_text(src, leased))
            report = CopyReport(
                source=_name(src), destination=_name(dst), status="new", dry_run=dry_run,
                leased=sum(leased.values()),
                tables=[TableCopy(t, extents[t][0]) for t in chosen],
            )
            if dry_run:
                report.status = _probe(dst, identity, snapshot)
            else:
                dest = open_backend(dst, durability=durability)
                marks = _claim(dest, identity, snapshot, dst)
                report.status = _status(marks)
                if report.status != "complete":
                    for item in report.tables:
                        _copy_table(source, dest, item, marks.get(item.table, 0),
                                    chunk_rows, on_progress)
                    with dest.transaction():
                        dest.import_counters(counters)
                        dest.set_copy_mark("done", 1)
    finally:
        source.close()
        if dest is not None:
            dest.close()
    report.seconds = time.monotonic() - started
    return report


def _name(target: str) -> str:
    return redact_url(target) if is_postgres(target) else os.path.abspath(target)


def _live_leases(source: Backend, queues: list[Any]) -> dict[str, int]:
    """Messages per queue whose lease has not run out (read in the snapshot)."""
    found = {}
    for q in queues:
        stats = source.stats(q.id)
        live = stats.leased - stats.expired_leases
        if live > 0:
            found[q.name] = live
    return found


def _leased_text(src: str, leased: dict[str, int]) -> str:
    names = ", ".join(f"{name} ({n})" for name, n in sorted(leased.items()))
    return (
        f"{sum(leased.values())} messages in {_name(src)} are leased by consumers that may "
        f"still be running them (queues {names}): stop the workers and let their leases "
        f"end, or pass --force to copy them leased (claimable on DST when their lease runs "
        f"out); nothing was written"
    )


def _status(marks: dict[str, int]) -> str:
    if marks.get("done"):
        return "complete"
    return "resumed" if any(t in marks for t in COPY_TABLES) else "new"


def _check_marks(marks: dict[str, int], identity: int, snapshot: int, dst: str) -> None:
    start_over = (
        "to start over, delete the destination file (with its -wal and -shm) or drop its "
        "PostgreSQL schema (DROP SCHEMA name CASCADE), then copy again"
    )
    if marks.get("source") != identity:
        raise CopyRefused(
            f"{_name(dst)} holds a copy of another database (or of other tables); "
            f"nothing was written; {start_over}"
        )
    if marks.get("snapshot") != snapshot and not marks.get("done"):
        raise CopyRefused(
            f"the source changed since the interrupted copy into {_name(dst)} began, so "
            f"the rows copied then and now would not be one snapshot; nothing was "
            f"written; {start_over}"
        )


def _holds_data(dest: Backend) -> str | None:
    for table in COPY_TABLES:
        if dest.export_rows(table, 0, 1):
            return table
    return None


def _claim(dest: Backend, identity: int, snapshot: int, dst: str) -> dict[str, int]:
    """The destination's copy marks, after checking it may receive this copy; a new
    copy's source and snapshot marks are written (one transaction with the check)."""
    with dest.transaction():
        marks = dest.copy_marks()
        if marks:
            _check_marks(marks, identity, snapshot, dst)
            return marks
        table = _holds_data(dest)
        if table is not None:
            raise CopyRefused(
                f"{_name(dst)} already holds liteq data (its {table} table is not empty) "
                f"that is not an earlier run of this copy; nothing was written; copy into "
                f"a new file or an empty PostgreSQL schema"
            )
        dest.set_copy_mark("source", identity)
        dest.set_copy_mark("snapshot", snapshot)
        return {"source": identity, "snapshot": snapshot}


def _probe(dst: str, identity: int, snapshot: int) -> str:
    """What a real copy would find at *dst*, opened read-only (nothing is created)."""
    if not is_postgres(dst) and not os.path.exists(dst):
        return "new"
    try:
        dest = open_backend(dst, read_only=True, create=False)
    except (SchemaError, StorageError):
        raise
    except LiteqError:
        if is_postgres(dst):
            return "new"  # no liteq schema there yet: a real copy creates it
        raise  # a file that is not a liteq database
    try:
        marks = dest.copy_marks()
        if marks:
            _check_marks(marks, identity, snapshot, dst)
            return _status(marks)
        table = _holds_data(dest)
        if table is not None:
            raise CopyRefused(
                f"{_name(dst)} already holds liteq data (its {table} table is not empty); "
                f"copy into a new file or an empty PostgreSQL schema"
            )
        return "new"
    finally:
        dest.close()


def _copy_table(
    source: Backend,
    dest: Backend,
    item: TableCopy,
    after: int,
    chunk_rows: int,
    on_progress: Progress | None,
) -> None:
    item.resumed_after = after
    read = 0
    while True:
        chunk = source.export_rows(item.table, after, chunk_rows)
        if not chunk:
            return
        last = chunk[-1].id  # type: ignore[attr-defined]
        with dest.transaction():
            added = dest.import_rows(item.table, chunk)
            dest.set_copy_mark(item.table, last)
        after = last
        read += len(chunk)
        item.copied += added
        item.present += len(chunk) - added
        if on_progress is not None:
            on_progress(item.table, read, item.rows)
