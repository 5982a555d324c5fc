"""How the ``liteq`` commands open the database: the commands that only look open it
read-only and say so in their help; the commands that write take ``--durability``
(``$LITEQ_DURABILITY``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import apsw
import pytest
from click.testing import CliRunner

import liteq
from liteq.cli import LOOKS, WRITES, cli


@pytest.fixture
def synchronous_settings() -> Iterator[list[str]]:
    """Every ``PRAGMA synchronous = ...`` that a connection opened from now on runs
    (apsw's connection hook and statement tracer only watch; SQLite runs them)."""
    seen: list[str] = []

    def tracer(cursor: apsw.Cursor, sql: str, bindings: object) -> bool:
        if sql.upper().startswith("PRAGMA SYNCHRONOUS ="):
            seen.append(sql.split("=")[1].strip().upper())
        return True

    def hook(conn: apsw.Connection) -> None:
        conn.exec_trace = tracer

    apsw.connection_hooks.append(hook)
    try:
        yield seen
    finally:
        apsw.connection_hooks.remove(hook)


def _db(tmp_path: Path) -> str:
    path = str(tmp_path / "app.db")
    liteq.connect(path).queue("q").put(1)
    return path


@pytest.mark.parametrize("args,env,expected", [
    (["put", "q", "2"], {}, "NORMAL"),
    (["put", "q", "2", "--durability", "full"], {}, "FULL"),
    (["put", "q", "2"], {"LITEQ_DURABILITY": "full"}, "FULL"),
    (["put", "q", "2", "--durability", "normal"], {"LITEQ_DURABILITY": "full"}, "NORMAL"),
    (["queue", "create", "r", "--durability", "full"], {}, "FULL"),
    (["get", "q", "--ack", "--durability", "full"], {}, "FULL"),
], ids=["default", "option", "environment", "option-over-environment", "queue-create", "get"])
def test_a_command_that_writes_opens_with_the_durability_asked_for(
    tmp_path, synchronous_settings, args: list[str], env: dict[str, str], expected: str
) -> None:
    path = _db(tmp_path)
    synchronous_settings.clear()  # the setup's own connection

    result = CliRunner().invoke(cli, ["--db", path, *args], env=env)

    assert result.exit_code == 0, result.output
    assert synchronous_settings and set(synchronous_settings) == {expected}


def test_an_unknown_durability_is_a_usage_error_that_lists_the_choices(tmp_path) -> None:
    path = _db(tmp_path)
    result = CliRunner().invoke(cli, ["--db", path, "put", "q", "2", "--durability", "fsync"])
    assert result.exit_code == 2
    assert "'fsync' is not one of 'full', 'normal'" in result.output
    assert liteq.connect(path).queue("q").stats()["ready"] == 1


@pytest.mark.parametrize("words", LOOKS)
def test_every_command_that_only_looks_says_in_its_help_that_it_opens_read_only(words) -> None:
    result = CliRunner().invoke(cli, [*words.split(), "--help"])
    assert result.exit_code == 0
    assert "Read-only: opens the file with SQLite mode=ro" in result.output
    assert "--durability" not in result.output


@pytest.mark.parametrize("words", WRITES)
def test_every_command_that_writes_offers_durability(words) -> None:
    result = CliRunner().invoke(cli, [*words.split(), "--help"])
    assert result.exit_code == 0
    assert "--durability [full|normal]" in result.output and "LITEQ_DURABILITY" in result.output
    assert "Read-only" not in result.output


def test_a_look_command_has_no_durability_option(tmp_path) -> None:
    path = _db(tmp_path)
    result = CliRunner().invoke(cli, ["--db", path, "peek", "q", "--json"])
    assert result.exit_code == 0 and '"payload": 1' in result.output
    result = CliRunner().invoke(cli, ["--db", path, "stats", "--durability", "full"])
    assert result.exit_code == 2 and "No such option '--durability'" in result.output
