"""Payloads in and out: CBOR through cbor2.

CBOR is compact, binary-safe and typed (bytes, datetime, Decimal, sets survive a
round trip), and decoding it never executes code: unknown tags come back as
``cbor2.CBORTag`` values. No serializer that can run code on load is used anywhere
in liteq.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import cbor2

from .errors import PayloadTooLarge, SerializationError

__all__ = ["encode", "encode_many", "decode", "loads", "DEFAULT_MAX_PAYLOAD", "MAX_NESTING"]

#: Deepest nesting of containers a payload may have. cbor2's decoder refuses more than
#: 400 levels, and its C encoder recurses without a limit (a few thousand levels crash
#: the process), so encode() checks first: a payload it accepts can always be read.
MAX_NESTING = 200

_CONTAINERS = (list, tuple, dict, set, frozenset)

#: Default limit on one encoded payload (1 MiB). SQLite can hold far more, but a
#: queue row that large slows every page it shares; put big blobs in a file or table
#: and enqueue a reference.
DEFAULT_MAX_PAYLOAD = 1024 * 1024


def encode(value: Any, max_size: int = DEFAULT_MAX_PAYLOAD) -> bytes:
    """Encode *value* as CBOR; raise :class:`SerializationError` naming the bad type."""
    kind = type(value)
    if kind is dict:
        # The common payload, walked here rather than in _nested: a call less per put.
        scalars = _SCALARS
        for key, child in value.items():
            if type(child) not in scalars or type(key) not in scalars:
                _check_nesting(value)
                break
    elif kind not in _SCALARS and isinstance(value, _CONTAINERS) and _nested(value):
        _check_nesting(value)
    try:
        data: bytes = cbor2.dumps(value)
    except cbor2.CBOREncodeError as exc:
        raise SerializationError(_encode_message(value, exc)) from exc
    except (TypeError, ValueError, OverflowError) as exc:
        raise SerializationError(f"cannot encode payload as CBOR: {exc}") from exc
    if len(data) > max_size:
        raise PayloadTooLarge(len(data), max_size)
    return data


def encode_many(values: Iterable[Any], max_size: int = DEFAULT_MAX_PAYLOAD) -> list[bytes]:
    """:func:`encode` of each value, in order (a batch's payloads): the common flat
    dict inline, without a call per value (~500 instructions a payload)."""
    scalars = _SCALARS
    dumps = cbor2.dumps
    out: list[bytes] = []
    for value in values:
        if type(value) is dict:
            for key, child in value.items():
                if type(child) not in scalars or type(key) not in scalars:
                    break
            else:
                try:
                    data: bytes = dumps(value)
                except Exception:  # noqa: BLE001 - encode() says what went wrong
                    data = encode(value, max_size)
                if len(data) > max_size:
                    raise PayloadTooLarge(len(data), max_size)
                out.append(data)
                continue
        out.append(encode(value, max_size))
    return out


#: Types that hold nothing: a container of only these needs no walk.
_SCALARS = frozenset({str, int, float, bool, bytes, type(None)})


def _nested(value: Any) -> bool:
    """True if *value* may hold a container (the common flat payload skips the walk).

    Exact types looked up in a set, not isinstance against five container types:
    ~2.5k fewer instructions per put (of ~63k, measured with bench/instructions.py).
    Any other type (a subclass, a datetime) counts as possibly nested: the walk decides.
    """
    scalars = _SCALARS
    if isinstance(value, dict):
        for key, child in value.items():
            if type(child) not in scalars or type(key) not in scalars:
                return True
        return False
    for child in value:
        if type(child) not in scalars:
            return True
    return False


def _check_nesting(value: Any) -> None:
    # Iterative, so that checking a deep value cannot itself hit the recursion limit.
    stack: list[tuple[Any, int]] = [(value, 1)]
    seen: set[int] = set()
    while stack:
        item, depth = stack.pop()
        if depth > MAX_NESTING:
            raise SerializationError(
                f"cannot encode payload: containers nested more than {MAX_NESTING} deep "
                f"(a reader could not decode it)"
            )
        if id(item) in seen:
            continue  # shared or self-referencing containers: cbor2 reports cycles
        seen.add(id(item))
        children = item.values() if isinstance(item, dict) else item
        for child in children:
            if isinstance(child, _CONTAINERS):
                stack.append((child, depth + 1))
        if isinstance(item, dict):
            for key in item:
                if isinstance(key, _CONTAINERS):
                    stack.append((key, depth + 1))


#: cbor2's decoder itself, for the claim's hot path (a Python call less per message):
#: on any exception, call :func:`decode` on the same bytes for the SerializationError.
loads = cbor2.loads


def decode(data: bytes) -> Any:
    """Decode stored CBOR bytes; raise :class:`SerializationError` if they are not CBOR."""
    try:
        return cbor2.loads(data)
    except Exception as exc:  # cbor2 raises several types for corrupt input
        raise SerializationError(f"undecodable payload: {type(exc).__name__}: {exc}") from exc


def _encode_message(value: Any, exc: Exception) -> str:
    text = str(exc)
    # cbor2 says "cannot serialize type X"; keep its wording but say what to do.
    return (
        f"cannot encode payload as CBOR: {text}. Payloads may hold None, bool, int, "
        f"float, str, bytes, list, tuple, dict, set, datetime (with tzinfo), Decimal, "
        f"UUID and nestings of these"
    )
