"""How the ``liteq`` command prints: JSON for any CBOR payload, safe table cells,
aligned tables, and the shared output options."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from decimal import Decimal

import cbor2
import click
import pytest
from click.testing import CliRunner

from liteq.cli_output import (
    Column,
    fmt_age,
    fmt_when,
    jsonable,
    output_options,
    render_record,
    render_table,
    safe,
    to_json,
)


def test_bytes_become_tagged_base64_never_raw() -> None:
    assert jsonable(b"\x00\xff") == {"$bytes": "AP8="}
    assert jsonable({"img": bytearray(b"ab")}) == {"img": {"$bytes": "YWI="}}


def test_every_cbor_type_becomes_json() -> None:
    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    value = {
        "when": when, "day": dt.date(2026, 1, 2), "price": Decimal("1.10"),
        "id": uuid.UUID(int=1), "tags": {"b", "a"}, "pair": (1, 2),
        "nan": float("nan"), "inf": float("-inf"), 1: "int key", b"k": "bytes key",
        "tag": cbor2.CBORTag(4000, [1]),
    }
    out = jsonable(value)
    json.dumps(out, allow_nan=False)  # strict JSON
    assert out["when"] == "2026-01-02T03:04:05+00:00" and out["day"] == "2026-01-02"
    assert out["price"] == "1.10" and out["id"] == str(uuid.UUID(int=1))
    assert out["tags"] == ["a", "b"] and out["pair"] == [1, 2]
    assert out["nan"] == {"$float": "nan"} and out["inf"] == {"$float": "-inf"}
    assert out["1"] == "int key" and out['{"$bytes": "aw=="}'] == "bytes key"
    assert out["tag"] == {"$tag": 4000, "value": [1]}


def test_json_text_escapes_every_control_character() -> None:
    text = to_json(["\x1b[2J", "\x07", "\x9b31m", "\u202egnp.exe", "ünïcødé ✓"])
    assert not any(ch in text for ch in "\x1b\x07\x9b\u202e")
    assert json.loads(text) == ["\x1b[2J", "\x07", "\x9b31m", "\u202egnp.exe", "ünïcødé ✓"]


def test_table_cells_escape_control_characters_and_keep_the_rest() -> None:
    assert safe("a\nb\tc\x1b[0m\x7f\x9b") == "a\\nb\\tc\\x1b[0m\\x7f\\x9b"
    assert safe("ünïcødé ✓ 日本") == "ünïcødé ✓ 日本"
    assert safe("\u202e") == "\\u202e"


def test_tables_align_numbers_right_and_text_left() -> None:
    rows = [{"name": "a", "n": 5}, {"name": "long name", "n": 12345}]
    lines = render_table(rows, [Column("name"), Column("n", numeric=True)])
    assert lines == ["NAME           N", "a              5", "long name  12345"]


def test_the_flex_column_is_cut_to_the_width() -> None:
    rows = [{"id": 1, "payload": "x" * 100}]
    lines = render_table(rows, [Column("id", numeric=True), Column("payload", flex=True)], 40)
    assert len(lines[1]) == 40 and lines[1].endswith("x…")


def test_records_keep_multi_line_values_aligned() -> None:
    assert render_record([("id", "1"), ("payload", "{\n  1\n}")]) == [
        "id       1", "payload  {", "           1", "         }"]


@pytest.mark.parametrize("seconds,text", [
    (None, "-"), (0.25, "0.2s"), (12, "12s"), (185, "3m05s"), (7800, "2h10m"),
    (3 * 86400 + 4 * 3600, "3d4h"),
])
def test_ages_read_like_people_say_them(seconds: float | None, text: str) -> None:
    assert fmt_age(seconds) == text


def test_moments_are_relative_to_now() -> None:
    assert fmt_when(105, 100) == "in 5.0s" and fmt_when(40, 100) == "1m00s ago"
    assert fmt_when(100, 100) == "now" and fmt_when(None, 100) == "-"


def test_output_options_give_json_and_nl_and_refuse_both() -> None:
    @click.command()
    @output_options(rows=True)
    def listing(out) -> None:  # type: ignore[no-untyped-def]
        out.rows([{"a": 1}, {"a": 2}], [Column("a", numeric=True)])

    runner = CliRunner()
    assert runner.invoke(listing, []).stdout == "A\n1\n2\n"
    assert json.loads(runner.invoke(listing, ["--json"]).stdout) == [{"a": 1}, {"a": 2}]
    assert runner.invoke(listing, ["--nl"]).stdout == '{"a": 1}\n{"a": 2}\n'
    both = runner.invoke(listing, ["--json", "--nl"])
    assert both.exit_code == 2 and "use --json or --nl, not both" in both.stderr


def test_single_object_commands_have_json_but_not_nl() -> None:
    @click.command()
    @output_options
    def single(out) -> None:  # type: ignore[no-untyped-def]
        out.result({"id": 1}, "done 1")

    runner = CliRunner()
    assert runner.invoke(single, []).stdout == "done 1\n"
    assert json.loads(runner.invoke(single, ["--json"]).stdout) == {"id": 1}
    assert runner.invoke(single, ["--nl"]).exit_code == 2
