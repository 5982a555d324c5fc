"""Ranks for liteq.compat: bytes that order messages of equal priority as Python orders
values (``PriorityQueue``), and ranks that order them newest first (``LifoQueue``).

Pure functions with no database: compat stores their bytes as a message's ``rank``.
"""

from __future__ import annotations

import math
import threading
import time
from decimal import Decimal
from fractions import Fraction

__all__ = ["sort_key", "lifo_rank"]


# --- the priority order as bytes ------------------------------------------------------
#
# liteq orders messages of equal priority by ``rank``, compared as SQLite compares
# blobs (memcmp, then shorter first). sort_key(v) is such a blob, ordered as Python
# orders v. Every encoding is prefix-free (no key is a proper prefix of another key of
# the same kind), so keys can be concatenated inside tuples.

_END = 0x00  # ends a tuple/list: sorts before any element, so (1,) < (1, x)
_OPAQUE = 0x01  # a value Python cannot order (dict, None, complex ...)
_NEG_INF, _NEG, _ZERO, _POS, _POS_INF, _NAN = 0x10, 0x11, 0x12, 0x13, 0x14, 0x15
_STR, _BYTES, _TUPLE, _LIST = 0x20, 0x30, 0x40, 0x50
_INVERT = bytes(range(255, -1, -1))  # bytes.translate table: b -> 255 - b
_MAX_DECIMAL_EXPONENT = 10_000


def sort_key(value: object) -> bytes:
    """Bytes that sort (byte by byte, shorter first) as Python orders *value*.

    Exact for numbers (int, bool, float, Decimal, Fraction compare by value across
    types; ``-0.0 == 0``; infinities at the ends; NaN after +inf), str (by code point),
    bytes, and tuples and lists of these, nested. Values of different kinds sort by
    kind; a value Python cannot order at all (dict, None, set ...) gets one fixed key,
    so later tuple elements still decide. ``PriorityQueue`` stores it as the rank.
    """
    out = bytearray()
    _key(value, out)
    return bytes(out)


def _key(value: object, out: bytearray) -> None:
    if isinstance(value, str):
        out.append(_STR)
        _escaped(value.encode("utf-8", "surrogatepass"), out)
    elif isinstance(value, (bytes, bytearray)):
        out.append(_BYTES)
        _escaped(bytes(value), out)
    elif isinstance(value, (tuple, list)):
        out.append(_TUPLE if isinstance(value, tuple) else _LIST)
        for item in value:
            _key(item, out)
        out.append(_END)
    elif isinstance(value, (int, float, Fraction, Decimal)):
        _number(value, out)
    else:
        out.append(_OPAQUE)


def _escaped(data: bytes, out: bytearray) -> None:
    # 0x00 -> 00 FF and a 00 00 terminator keep byte order and make it prefix-free.
    out += data.replace(b"\x00", b"\x00\xff")
    out += b"\x00\x00"


def _number(value: int | float | Fraction | Decimal, out: bytearray) -> None:
    if isinstance(value, (int, Fraction)):
        p, q = value.numerator, value.denominator
    elif isinstance(value, Decimal):
        if value.is_nan():
            out.append(_NAN)
            return
        if value.is_infinite():
            out.append(_NEG_INF if value.is_signed() else _POS_INF)
            return
        exponent = value.as_tuple().exponent
        assert isinstance(exponent, int)
        if abs(exponent) > _MAX_DECIMAL_EXPONENT:
            # as_integer_ratio() would build a number with that many digits.
            raise ValueError(
                f"PriorityQueue orders Decimal values with an exponent within "
                f"±{_MAX_DECIMAL_EXPONENT}, got {value!r}"
            )
        p, q = value.as_integer_ratio()
    else:
        if math.isnan(value):
            out.append(_NAN)
            return
        if math.isinf(value):
            out.append(_POS_INF if value > 0 else _NEG_INF)
            return
        p, q = value.as_integer_ratio()
    if p == 0:
        out.append(_ZERO)
    elif p > 0:
        out.append(_POS)
        out += _continued_fraction(p, q)
    else:
        out.append(_NEG)
        out += _continued_fraction(-p, q).translate(_INVERT)


def _continued_fraction(p: int, q: int) -> bytes:
    """An order-preserving, prefix-free encoding of the positive rational p/q.

    p/q = [a0; a1, a2, ...] (Euclid; the last term is >= 2 when there are several).
    A larger term at an even position means a larger number, at an odd position a
    smaller one, and a missing term acts as +infinity. So even terms are written as
    is, odd ones inverted, and the end is 0xFF at an even position and 0x00 at an odd
    one (every term's first byte is between 0x01 and 0xFE).
    """
    out = bytearray()
    i = 0
    while True:
        a, r = divmod(p, q)
        term = _uint(a)
        out += term if i % 2 == 0 else term.translate(_INVERT)
        if r == 0:
            break
        p, q = q, r
        i += 1
    out.append(0xFF if (i + 1) % 2 == 0 else 0x00)
    return bytes(out)


def _uint(n: int) -> bytes:
    """A non-negative integer as length + big-endian bytes; first byte 0x01-0xFE."""
    size = (n.bit_length() + 7) // 8
    if size <= 0xFC:
        return bytes([size + 1]) + n.to_bytes(size, "big")
    return b"\xfe" + size.to_bytes(4, "big") + n.to_bytes(size, "big")


# --- LIFO ranks -----------------------------------------------------------------------

_lifo_lock = threading.Lock()
_lifo_last = 0


def lifo_rank() -> bytes:
    """A rank smaller than every rank handed out before (newest first)."""
    global _lifo_last
    with _lifo_lock:
        _lifo_last = max(time.time_ns(), _lifo_last + 1)
        stamp = _lifo_last
    return (2**64 - 1 - stamp).to_bytes(8, "big")
