"""Fuzzing with hypothesis: the payload codec, and the JSON the CLI reads.

* ``liteq.codec.decode`` of any bytes returns a value or raises SerializationError,
  nothing else (corrupt rows must become dead messages, not crashed workers);
* every CBOR-able value survives ``encode``/``decode``; anything else raises
  SerializationError (or PayloadTooLarge) naming the problem;
* ``liteq put QUEUE TEXT`` with any text exits 0 (and stores exactly the JSON
  value), or prints ``Error: ...`` and writes nothing: exit 2 for text that is not
  JSON, 1 for JSON that CBOR cannot carry; never a traceback.

300 examples per property by default; ``LITEQ_FUZZ_EXAMPLES=5000 pytest
tests/test_fuzz.py`` digs deeper.
"""

from __future__ import annotations

import collections
import datetime as dt
import decimal
import json
import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from typing import Any
from zoneinfo import ZoneInfo

import cbor2
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import liteq
from liteq import codec
from liteq.cli import cli

pytestmark = pytest.mark.every_engine

FUZZ = settings(max_examples=int(os.environ.get("LITEQ_FUZZ_EXAMPLES", "300")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# --- values -------------------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),  # bignums too: CBOR tags 2 and 3
    st.floats(allow_nan=False),
    st.text(),
    st.binary(),
    st.datetimes(timezones=st.timezones()).filter(lambda d: d.utcoffset() is not None),
    st.decimals(allow_nan=False, allow_infinity=False),
    st.uuids(),
)

cbor_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(st.text(max_size=10), children, max_size=5),
        st.dictionaries(st.integers(), children, max_size=5),
        st.frozensets(st.one_of(st.integers(), st.text(max_size=5)), max_size=5),
    ),
    max_leaves=25,
)


def _mutations(data: bytes) -> st.SearchStrategy[bytes]:
    """Valid CBOR with a byte flipped, cut short, or grown: the likely shapes of rot."""
    if not data:
        return st.just(data)
    return st.one_of(
        st.tuples(st.integers(0, len(data) - 1), st.integers(0, 255)).map(
            lambda iv: data[:iv[0]] + bytes([iv[1]]) + data[iv[0] + 1:]),
        st.integers(0, len(data) - 1).map(lambda i: data[:i]),
        st.binary(min_size=1, max_size=8).map(lambda extra: data + extra),
    )


corrupt_cbor = cbor_values.map(cbor2.dumps).flatmap(_mutations)


@FUZZ
@given(st.one_of(st.binary(max_size=200), corrupt_cbor))
@example(b"\xff")
@example(b"\x9f" * 1000)  # nested indefinite arrays, never closed
@example(b"\x81" * 5000 + b"\x00")  # nested deeper than the decoder allows
@example(b"\x5b\xff\xff\xff\xff\xff\xff\xff\xff")  # a byte string claiming 2**64 bytes
@example(b"\xc5\x82\x1b\x7f\xff\xff\xff\xff\xff\xff\xff\x01")  # bigfloat 2**(2**63)
@example(b"\xc1\x1b\x7f\xff\xff\xff\xff\xff\xff\xff")  # epoch datetime far past year 9999
@example(b"\xd8\x1b\x82\x69os.system\x81\x62ls")  # tag 27: "object" [typename, args]
def test_decoding_any_bytes_returns_a_value_or_raises_serialization_error(data: bytes) -> None:
    try:
        value = codec.decode(data)
    except liteq.SerializationError as exc:
        assert str(exc).startswith("undecodable payload: ")
        return
    # A tag liteq does not know stays an inert CBORTag: decoding never builds objects
    # from a type name, let alone calls anything.
    assert not callable(value) or isinstance(value, type(None))


def _plain(value: Any) -> Any:
    """*value* as CBOR gives it back, in a form that compares by content: tuples become
    lists; an aware datetime keeps its wall time and UTC offset (not the zone's name),
    and is compared as such: together they are its instant, with no arithmetic that
    could leave the calendar (year 1 at a positive offset is before year 1 in UTC:
    astimezone() raised OverflowError), and Python never calls a time in a DST fold
    equal to one in another zone (PEP 495)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, dt.datetime) and value.utcoffset() is not None:
        return ("datetime", value.replace(tzinfo=None), value.utcoffset())
    return value


@FUZZ
@given(cbor_values)
@example([1, (2, 3), {"a": (4,)}])
@example({"when": dt.datetime(1850, 1, 1, tzinfo=dt.timezone(dt.timedelta(seconds=21208)))})
@example(dt.datetime(1987, 9, 26, 23, 0, tzinfo=ZoneInfo("America/Tegucigalpa")))  # in a fold
@example(dt.datetime(1, 1, 1, tzinfo=ZoneInfo("Africa/Addis_Ababa")))  # before year 1 in UTC
@example(decimal.Decimal("1E+1000"))
@example(uuid.UUID(int=0))
@example(2**200)
@example(-(2**200))
def test_every_cbor_value_survives_encode_and_decode(value: Any) -> None:
    assert _plain(codec.decode(codec.encode(value))) == _plain(value)


class _Opaque:
    pass


unencodable = st.one_of(
    st.builds(_Opaque),
    st.just(lambda: None),
    st.just(complex(1, 2)),
    st.just(object()),
    st.datetimes(),  # naive: no time zone
    st.text(alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1),
)


@FUZZ
@given(st.recursive(st.one_of(cbor_values, unencodable),
                    lambda c: st.one_of(st.lists(c, max_size=4),
                                        st.dictionaries(st.text(max_size=5), c, max_size=4)),
                    max_leaves=10))
def test_encoding_anything_returns_cbor_or_raises_serialization_error(value: Any) -> None:
    try:
        data = codec.encode(value, max_size=10_000)
    except (liteq.SerializationError, liteq.PayloadTooLarge) as exc:
        assert "payload" in str(exc)
        return
    assert isinstance(data, bytes)


def _nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


def test_a_payload_nested_deeper_than_the_decoder_reads_is_refused_at_put(db) -> None:
    q = db.queue("q")
    with pytest.raises(liteq.SerializationError):
        q.put(_nested(500))
    assert len(q) == 0


@pytest.mark.parametrize("wrap", [
    lambda deep: {"body": "x", "deep": deep},
    lambda deep: collections.OrderedDict(body="x", deep=deep),
    lambda deep: {"body": "x", "deep": collections.namedtuple("Pair", "a b")(1, deep)},
    lambda deep: ["x", 1, deep],
], ids=["dict", "dict-subclass", "namedtuple-in-dict", "list"])
def test_a_too_deep_value_behind_flat_looking_items_is_still_refused(db, wrap) -> None:
    q = db.queue("q")
    with pytest.raises(liteq.SerializationError):
        q.put(wrap(_nested(500)))
    assert len(q) == 0


def test_a_payload_nested_far_too_deep_raises_instead_of_crashing_the_process() -> None:
    code = (
        "import liteq.codec, liteq\n"
        "value = []\n"
        "for _ in range(100_000):\n"
        "    value = [value]\n"
        "try:\n"
        "    liteq.codec.encode(value)\n"
        "except liteq.SerializationError:\n"
        "    print('refused')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "refused", (proc.returncode,
                                                                       proc.stderr[-500:])


# --- the CLI's JSON ----------------------------------------------------------------------

json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text()),
    lambda c: st.one_of(st.lists(c, max_size=4), st.dictionaries(st.text(max_size=8), c,
                                                                 max_size=4)),
    max_leaves=15,
)


def _damage(text: str) -> st.SearchStrategy[str]:
    if not text:
        return st.just(text)
    return st.one_of(
        st.integers(0, len(text) - 1).map(lambda i: text[:i] + text[i + 1:]),
        st.tuples(st.integers(0, len(text)), st.sampled_from(list('{}[]",:\\ntx0-'))).map(
            lambda ic: text[:ic[0]] + ic[1] + text[ic[0]:]),
    )


cli_text = st.one_of(
    st.text(max_size=50),
    json_values.map(json.dumps),
    json_values.map(json.dumps).flatmap(_damage),
    st.sampled_from(["NaN", "-Infinity", "1e999", '"\\ud800"', "{}", "[]", '""', "null",
                     '{"a": 1} x', "'single'", "\ufeff{}", "{'a': 1}"]),
).filter(lambda t: t != "-")  # "-" means: read payloads from stdin


@pytest.fixture(scope="module")
def cli_db() -> Iterator[str]:
    """One database file for every example (hypothesis runs many per test)."""
    folder = tempfile.mkdtemp(prefix="liteq-fuzz-")
    path = os.path.join(folder, "fuzz.db")
    db = liteq.connect(path)
    db.queue("q")
    db.close()
    yield path
    for name in os.listdir(folder):
        os.remove(os.path.join(folder, name))
    os.rmdir(folder)


def _rows(path: str) -> list[tuple[int, bytes]]:
    db = liteq.connect(path)
    try:
        return db.execute("SELECT id, payload FROM messages ORDER BY id")
    finally:
        db.close()


def _expected_exit(text: str) -> tuple[int, bytes | None]:
    """What ``liteq put q TEXT`` must do: (exit code, stored payload if any)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return 2, None
    try:
        return 0, codec.encode(value)
    except liteq.SerializationError:
        return 1, None  # valid JSON that CBOR cannot carry (a lone surrogate)


@FUZZ
@given(cli_text)
def test_liteq_put_with_any_text_stores_its_json_or_says_error_and_writes_nothing(
        cli_db: str, text: str) -> None:
    code, blob = _expected_exit(text)
    before = _rows(cli_db)

    result = CliRunner().invoke(cli, ["--db", cli_db, "put", "q", "--", text])

    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"traceback for {text!r}: {result.exception!r}")
    assert result.exit_code == code, (text, result.output)
    after = _rows(cli_db)
    if code == 0:
        assert after[:-1] == before and after[-1][1] == blob
        assert result.output.strip() == str(after[-1][0])
    else:
        assert "Error: " in result.output
        assert after == before, "a refused put wrote something"


@FUZZ
@given(st.lists(cli_text.filter(lambda t: "\n" not in t and "\r" not in t), max_size=6))
def test_liteq_put_from_stdin_puts_every_line_or_none(cli_db: str, lines: list[str]) -> None:
    outcomes = [_expected_exit(line) for line in lines if line.strip()]
    before = _rows(cli_db)

    result = CliRunner().invoke(cli, ["--db", cli_db, "put", "q", "-"],
                                input="\n".join(lines) + "\n")

    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"traceback for {lines!r}: {result.exception!r}")
    after = _rows(cli_db)
    if all(code == 0 for code, _ in outcomes):
        assert result.exit_code == 0, (lines, result.output)
        assert after[:len(before)] == before
        assert [blob for _, blob in after[len(before):]] == [blob for _, blob in outcomes]
    else:
        assert result.exit_code in (1, 2), (lines, result.output)
        assert "Error: " in result.output
        assert after == before, "a refused batch wrote something"


@pytest.mark.parametrize("text", ["[" * 100_000, "[" * 5000 + "]" * 5000,
                                  '{"a":' * 3000 + "1" + "}" * 3000])
def test_liteq_put_with_deeply_nested_json_says_error_and_exits_2(cli_db: str,
                                                                    text: str) -> None:
    before = _rows(cli_db)
    result = CliRunner().invoke(cli, ["--db", cli_db, "put", "q", text])
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        repr(result.exception)
    assert result.exit_code == 2 and "Error: " in result.output
    assert _rows(cli_db) == before


def test_liteq_put_with_a_json_number_python_cannot_read_is_a_usage_error(cli_db: str) -> None:
    before = _rows(cli_db)
    result = CliRunner().invoke(cli, ["--db", cli_db, "put", "q", "1" * 5000])
    assert result.exit_code == 2 and "Error: " in result.output, result.output
    assert "set_int_max_str_digits" not in result.output
    assert _rows(cli_db) == before


@FUZZ
@given(st.text(max_size=40).filter(lambda t: not t.startswith("-")))
def test_liteq_ack_with_any_receipt_text_never_shows_a_traceback(cli_db: str, text: str) -> None:
    before = _rows(cli_db)
    result = CliRunner().invoke(cli, ["--db", cli_db, "ack", text])
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        repr(result.exception)
    assert result.exit_code in (1, 2) and "Error: " in result.output
    assert _rows(cli_db) == before
