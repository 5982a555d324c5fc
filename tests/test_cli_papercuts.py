"""Output papercuts from first contact (issue 15, item 16): only ready and delayed
messages are "due"; dead list shows the exception line of a traceback and cuts at a
token boundary; tables are not cut when stdout is not a terminal; the JSON quoting
hint for a single-quoted word is usable as written."""

from __future__ import annotations

import traceback

import pytest
from test_cli import error, make, ok, run

import liteq
from liteq.cli_output import cut, last_line

pytestmark = pytest.mark.every_engine


@pytest.fixture(autouse=True)
def no_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    """As in a pipe: stdout is not a terminal and $COLUMNS is not set."""
    monkeypatch.delenv("COLUMNS", raising=False)


def _one_of_each(path: str) -> tuple[int, int, int]:
    """A dead message (a traceback as its error), a leased one and a ready one."""
    with liteq.connect(path) as db:
        q = db.queue("jobs", max_attempts=1, lease=600)
        dead = q.put({"order": "poison", "note": "a rather long payload " * 4})
        msg = q.get()
        assert msg is not None
        try:
            raise ValueError("cannot parse order 'poison'")
        except ValueError:
            msg.nack(error=traceback.format_exc())
        leased = q.put({"x": 1})
        assert q.get() is not None
        ready = q.put({"y": 2})
    return dead, leased, ready


def _cells(output: str, mid: int) -> str:
    [line] = [line for line in output.splitlines() if line.split()[0] == str(mid)]
    return line


def test_peek_shows_when_a_lease_ends_instead_of_due_now(db_target: str) -> None:
    path = db_target
    _dead, leased, _ready = _one_of_each(path)
    out = ok(path, "peek", "jobs", "--state", "leased").stdout
    assert "LEASE ENDS" in out.splitlines()[0] and "DUE" not in out
    assert "in 9m" in _cells(out, leased) and " now" not in _cells(out, leased)


def test_peek_all_says_due_only_for_ready_messages(db_target: str) -> None:
    path = db_target
    dead, leased, ready = _one_of_each(path)
    out = ok(path, "peek", "jobs", "--state", "all").stdout
    assert _cells(out, dead).split()[5] == "-"
    assert "leased, ends in 9m" in _cells(out, leased)
    assert "  now  " in _cells(out, ready)
    assert "now" not in _cells(out, dead) and "now" not in _cells(out, leased)


def test_dead_list_shows_the_exception_line_of_a_traceback_and_show_has_it_all(
        db_target: str) -> None:
    path = db_target
    dead, _leased, _ready = _one_of_each(path)
    out = ok(path, "dead", "list", "jobs").stdout
    assert "ValueError: cannot parse order 'poison'" in _cells(out, dead)
    assert "Traceback" not in out
    shown = ok(path, "show", str(dead)).stdout
    assert "Traceback (most recent call last):" in shown


def test_tables_are_not_cut_when_stdout_is_not_a_terminal(db_target: str) -> None:
    path = db_target
    long_target = "x" * 300
    ok(path, "schedule", "add", "s", "--every", "60", "--queue", "q", "--payload",
       f'"{long_target}"')
    assert long_target in ok(path, "schedule", "list").stdout
    make(path, "jobs", [long_target])
    assert long_target in ok(path, "peek", "jobs").stdout


def test_a_cut_ends_at_a_token_boundary_and_the_dead_list_payload_too(
        db_target: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert cut('{"order": "poison", "note": "abc"}', 16) == '{"order":…'
    assert cut("x" * 50, 10) == "x" * 9 + "…"
    assert last_line("Traceback ...\n  File x\nKeyError: 'a'\n\n") == "KeyError: 'a'"
    path = db_target
    dead, _leased, _ready = _one_of_each(path)
    monkeypatch.setenv("COLUMNS", "100")
    line = _cells(ok(path, "dead", "list", "jobs").stdout, dead)
    payload = line[line.index("{"):]
    assert payload.endswith("…") and len(line) <= 100
    assert payload[-2] in ',: ' or payload[:-1].endswith('"'), payload


@pytest.mark.parametrize("payload, hint", [
    ("'single'", "JSON needs double quotes, not single, e.g. '\"single\"'"),
    ("{'a': 1}", "JSON needs double quotes, not single, e.g. '{\"a\": 1}'"),
    ("hello", "a string needs JSON quotes, e.g. '\"hello\"'"),
])
def test_the_json_quoting_hint_can_be_pasted_into_a_shell(db_target: str, payload: str,
                                                          hint: str) -> None:
    path = db_target
    assert error(run(path, "put", "jobs", payload), 2).endswith(hint)
