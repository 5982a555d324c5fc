"""The hot statements (a put, a claim of one, an ack of one) sent through libpq's
prepared-statement calls (``psycopg.pq``, psycopg's documented libpq wrapper) instead of
psycopg's cursor (issue 17).

A statement through ``Cursor.execute`` costs the client ~74k instructions (callgrind:
query conversion, the prepared-statement manager, dumpers, the generator-based wait,
the result set and its loaders), more than the whole of a raw psycopg put's loop with
its encoding. The verbs that run once per message send a handful of known statements
with a few ints, floats, texts and one ``bytea``, and read back rows of the same few
types, so they can skip all of that: each statement is prepared once per connection
under a name made from a hash of its text (``PQprepare``; PostgreSQL plans it as it
plans psycopg's prepared statements: custom plans first, then the generic one when it is
not worse), sent with
``PQsendQueryPrepared``, waited for in ``poll()`` (a signal still interrupts the
wait, as it does psycopg's) and its rows decoded from the binary format by their type
oids. Measured on the scratch cluster (``bench/README.md``, session 14): client CPU per
put 52 -> 40 us, per get+ack 108 -> 83 us; raw psycopg's are 40 and 88.

Only what this module can do exactly takes the path: a statement whose result columns
are all of a type below (checked once, when it is first prepared, with
``PQdescribePrepared``), and a call whose parameters have the Python types they had
when it was prepared (the parameter types are fixed then). Everything else, and every
statement inside a transaction, goes through the cursor as before
(``Connections.statement``).

This module holds the statements' compiling, encoding and decoding, and the libpq calls
(:func:`prepare`, :func:`run`); ``Connections.hot`` decides when a call takes this path
and turns failures into liteq's errors, as for every statement.
"""

from __future__ import annotations

import hashlib
import re
import select
import struct
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from psycopg import errors as pgerrors
from psycopg import pq

__all__ = ["HotStatement", "compiled", "decode_rows", "encode", "gone", "prepare",
           "result_error", "run"]

_OK = pq.ConnStatus.OK
_COMMAND_OK = pq.ExecStatus.COMMAND_OK
_TUPLES_OK = pq.ExecStatus.TUPLES_OK
_SQLSTATE = pq.DiagnosticField.SQLSTATE

_INT8 = struct.Struct("!q").unpack
_INT4 = struct.Struct("!i").unpack
_INT2 = struct.Struct("!h").unpack
_FLOAT8 = struct.Struct("!d").unpack
_FLOAT4 = struct.Struct("!f").unpack

#: type oid -> decoder of its binary value (None is NULL and never reaches one).
DECODERS: dict[int, Callable[[bytes], Any]] = {
    20: lambda b: _INT8(b)[0],  # bigint
    23: lambda b: _INT4(b)[0],  # integer
    21: lambda b: _INT2(b)[0],  # smallint
    701: lambda b: _FLOAT8(b)[0],  # double precision
    700: lambda b: _FLOAT4(b)[0],  # real
    16: lambda b: b != b"\x00",  # boolean
    25: lambda b: b.decode(),  # text
    1043: lambda b: b.decode(),  # varchar
    17: bytes,  # bytea
    2278: lambda b: None,  # void (pg_notify's column; the callers read only the id)
}

#: Python type -> (type oid of the parameter, format: 0 text, 1 binary).
_PARAM_TYPES: dict[type, tuple[int, int]] = {
    bool: (16, 0),
    int: (20, 0),
    float: (701, 0),
    str: (25, 0),
    bytes: (17, 1),
}

#: psycopg's placeholders, and its escaped percent sign.
_PLACEHOLDER = re.compile(r"%%|%\((\w+)\)[sb]")


class HotStatement:
    """One SQL text of liteq's, with its ``%(name)s`` placeholders numbered for libpq."""

    __slots__ = ("name", "text", "order", "params", "decoders", "unfit")

    def __init__(self, name: bytes, sql: str) -> None:
        order: list[str] = []

        def number(m: re.Match[str]) -> str:
            if m.group(1) is None:
                return "%"
            if m.group(1) not in order:
                order.append(m.group(1))
            return f"${order.index(m.group(1)) + 1}"

        self.name = name
        self.text = _PLACEHOLDER.sub(number, sql).encode()
        self.order = tuple(order)
        #: Set by the first call (one tuple, so a thread sees all of it or none):
        #: the parameters' Python types, type oids and formats, fixed from then on.
        self.params: tuple[tuple[type, ...], list[int], list[int]] | None = None
        #: Set when first prepared (the same on every connection of this liteq): the
        #: result's decoders.
        self.decoders: tuple[Callable[[bytes], Any], ...] | None = None
        #: True once its result was found to have a column type this module cannot
        #: decode: the statement takes the cursor for good.
        self.unfit = False

    def fix_types(self, values: Sequence[Any]) -> bool:
        """Fix the parameter types from the first call's *values*; False if one has a
        type this module does not send (None included: its type is not known)."""
        types = tuple(type(v) for v in values)
        if any(t not in _PARAM_TYPES for t in types):
            return False
        self.params = (types, [_PARAM_TYPES[t][0] for t in types],
                       [_PARAM_TYPES[t][1] for t in types])
        return True

    def fix_decoders(self, described: pq.abc.PGresult) -> bool:
        """The result's decoders from a successful ``PQdescribePrepared``; False (and
        :attr:`unfit`) if a column's type is not in :data:`DECODERS`."""
        found = [DECODERS.get(described.ftype(i)) for i in range(described.nfields)]
        if any(d is None for d in found):
            self.unfit = True
            return False
        self.decoders = tuple(d for d in found if d is not None)
        return True


_COMPILED: dict[str, HotStatement] = {}


def compiled(sql: str) -> HotStatement:
    """The :class:`HotStatement` of *sql*, named after a hash of its text (the same
    name for the same text in every thread and process, never for two texts)."""
    found = _COMPILED.get(sql)
    if found is None:
        digest = hashlib.blake2b(sql.encode(), digest_size=12).hexdigest()
        found = _COMPILED.setdefault(sql, HotStatement(f"liteq_hot_{digest}".encode(), sql))
    return found


def encode(stmt: HotStatement, params: dict[str, Any]) -> list[bytes | None] | None:
    """*params* in the statement's order and formats; None if a value's type differs
    from the one the statement was prepared with (that call takes the cursor)."""
    values = [params[k] for k in stmt.order]
    fixed = stmt.params
    if fixed is None or tuple(map(type, values)) != fixed[0]:
        return None
    out: list[bytes | None] = []
    for v in values:
        if isinstance(v, bytes):
            out.append(v)
        elif isinstance(v, bool):
            out.append(b"t" if v else b"f")
        elif isinstance(v, float):
            out.append(repr(v).encode())  # the shortest text that reads back the same
        else:
            out.append(str(v).encode())
    return out


def decode_rows(stmt: HotStatement, res: pq.abc.PGresult) -> list[tuple[Any, ...]]:
    """The rows of *res* (binary format), as psycopg's tuple rows would read."""
    decoders = stmt.decoders
    assert decoders is not None
    rows = []
    get = res.get_value
    for r in range(res.ntuples):
        rows.append(tuple(
            None if (v := get(r, c)) is None else d(v) for c, d in enumerate(decoders)
        ))
    return rows


# --- libpq: prepare, send and wait, errors ------------------------------------------


def prepare(pg: Any, stmt: HotStatement) -> bool:
    """Prepare *stmt* on *pg* (a connection's ``pgconn``); False if its result has a
    column type this module cannot decode (deallocated again: the statement takes the
    cursor from then on). A psycopg error here means nothing ran."""
    params = stmt.params
    assert params is not None
    res = pg.prepare(stmt.name, stmt.text, params[1])
    # Already there (42P05): prepared by a call an interrupt ended before it was noted;
    # the name is a hash of the text, so it is this statement.
    if res.status != _COMMAND_OK and res.error_field(_SQLSTATE) != b"42P05":
        raise result_error(pg, res)
    if stmt.decoders is None:
        described = pg.describe_prepared(stmt.name)
        if described.status != _COMMAND_OK:
            raise result_error(pg, described)
        if not stmt.fix_decoders(described):
            pg.exec_(b"DEALLOCATE " + stmt.name)
            return False
    return True


def run(pg: Any, stmt: HotStatement, values: list[bytes | None]) -> Any:
    """Send *stmt* with *values* and wait for its result without blocking in libpq, so
    that a signal can interrupt the wait (psycopg's connections are nonblocking)."""
    params = stmt.params
    assert params is not None
    pg.send_query_prepared(stmt.name, values, params[2], 1)
    fd = pg.socket
    while pg.flush():  # libpq's advice: wait to read or write; read what came
        if _wait(fd, select.POLLIN | select.POLLOUT) & select.POLLIN:
            pg.consume_input()
    result = None
    while True:
        while pg.is_busy():
            _wait(fd, select.POLLIN)
            pg.consume_input()
        res = pg.get_result()
        if res is None:
            break
        if result is None:
            result = res
    if result is None:
        raise psycopg.OperationalError("the server sent no result")
    return result


def gone(res: Any) -> bool:
    """True if *res* says the prepared statement is not in the session (26000: the
    application's ``DEALLOCATE ALL``, a pooler that moved the session): nothing ran."""
    return bool(res.status != _TUPLES_OK and res.error_field(_SQLSTATE) == b"26000")


def result_error(pg: Any, res: Any) -> psycopg.Error:
    """The exception psycopg raises for the failed result *res* of *pg* (its class and
    diagnostics from the result; an OperationalError when the connection is gone)."""
    if res.error_field(_SQLSTATE) is None or pg.status != _OK:
        text = (res.error_message or pg.error_message or b"").decode(errors="replace").strip()
        return psycopg.OperationalError(text or "the connection to the server was lost")
    return pgerrors.error_from_result(res, encoding="utf-8")  # liteq's sessions are UTF8


def _wait(fd: int, events: int) -> int:
    """Wait, with no limit, until *fd* is ready for *events* (``select.POLL*``); the
    events it is ready for. ``poll``, as ``liteq/fdwait.py`` says why."""
    poller = select.poll()
    poller.register(fd, events)
    return poller.poll()[0][1]
