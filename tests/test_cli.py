"""The ``liteq`` command: the database option, errors at the edge, and the commands
that look (stats, peek, show). The helpers at the top are shared by the other
``test_cli_*.py`` files.

Every test drives the real command through click's CliRunner against a real database of
each engine under test (``db_target``; tests about files are ``sqlite_only``), and checks
it through the library afterwards.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import dbsql
import pytest
from click.testing import CliRunner, Result

import liteq
from liteq.cli import cli
from liteq.cli_stats import _frame, sample

pytestmark = pytest.mark.every_engine

# -- helpers (imported by the other test_cli_*.py files) -------------------------------


def fresh(tmp_path: Path) -> str:
    """A path for a database file that does not exist yet."""
    return str(tmp_path / "q.db")


def run(path: str | None, *args: str, input: str | None = None,
        env: dict[str, str | None] | None = None) -> Result:
    """``liteq [--db PATH] ARGS`` through click's CliRunner; exceptions propagate, so
    a traceback fails the test instead of hiding in the result."""
    argv = (["--db", path] if path is not None else []) + list(args)
    return CliRunner().invoke(cli, argv, input=input, env=env, prog_name="liteq",
                              catch_exceptions=False)


def ok(path: str | None, *args: str, input: str | None = None) -> Result:
    """Like :func:`run`, and assert exit code 0."""
    result = run(path, *args, input=input)
    assert result.exit_code == 0, (result.exit_code, result.stdout, result.stderr)
    return result


def as_json(path: str, *args: str, input: str | None = None) -> Any:
    """Run with ``--json``; stdout parsed."""
    return json.loads(ok(path, *args, "--json", input=input).stdout)


def as_nl(path: str, *args: str) -> list[Any]:
    """Run with ``--nl``; each line of stdout parsed."""
    return [json.loads(line) for line in ok(path, *args, "--nl").stdout.splitlines()]


def error(result: Result, code: int = 1) -> str:
    """Assert exit *code*, nothing on stdout, no traceback, and ``Error: ...`` as the
    last line of stderr; return the text after ``Error: ``."""
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: "), result.stderr
    return last[len("Error: "):]


def snapshot(path: str) -> list[tuple[Any, ...]]:
    """Every queue and message row: equal before and after means nothing changed."""
    with liteq.connect(path) as db:
        return dbsql.rows(db, "queues") + dbsql.rows(db, "messages")


def digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def make(path: str, queue: str = "jobs", payloads: list[Any] | None = None,
         **options: Any) -> list[int]:
    """Create *queue* with *options* and put *payloads* in it; return their ids."""
    with liteq.connect(path) as db:
        q = db.queue(queue, **options)
        return q.put_many(payloads) if payloads else []


# -- the root command ------------------------------------------------------------------

def test_help_documents_the_database_option_and_every_exit_code() -> None:
    out = ok(None, "--help").stdout
    assert "--db PATH" in out and "$LITEQ_DB" in out
    for code in ("0   ok", "1   error", "2   usage", "75  a put met a full queue"):
        assert code in out


def test_version_option_prints_the_version() -> None:
    assert ok(None, "--version").stdout.strip() == f"liteq, version {liteq.__version__}"


def test_the_database_comes_from_LITEQ_DB_when_no_db_option_is_given(db_target: str) -> None:
    path = db_target
    make(path, payloads=[1])
    result = run(None, "stats", "--json", env={"LITEQ_DB": path})
    assert result.exit_code == 0
    assert [r["queue"] for r in json.loads(result.stdout)] == ["jobs"]


@pytest.mark.sqlite_only("the default is the file liteq.db")
def test_the_default_database_is_liteq_db_in_the_current_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    ok(None, "put", "jobs", "1", "--json")
    assert (tmp_path / "liteq.db").exists()


def test_an_unknown_command_is_a_usage_error() -> None:
    result = run(None, "frobnicate")
    assert result.exit_code == 2
    assert "Error: No such command 'frobnicate'" in result.stderr


LOOK_AND_ACT = [
    ["stats"], ["stats", "jobs"], ["peek", "jobs"], ["show", "1"], ["get", "jobs"],
    ["ack", "1:2"], ["retry", "1"], ["cancel", "1"], ["dead", "list", "jobs"],
    ["dead", "redrive", "jobs"], ["dead", "purge", "jobs", "--yes"],
    ["purge", "jobs", "--yes"], ["queue", "config", "jobs"],
    ["queue", "delete", "jobs", "--yes"], ["prune"], ["vacuum"],
]


@pytest.mark.parametrize("args", LOOK_AND_ACT, ids=" ".join)
@pytest.mark.sqlite_only("checks that no file is created")
def test_a_missing_database_file_is_an_error_and_no_file_is_created(
        tmp_path: Path, args: list[str]) -> None:
    path = fresh(tmp_path)
    text = error(run(path, *args))
    assert text.startswith(f"no liteq database at {path} ")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("args", LOOK_AND_ACT, ids=" ".join)
@pytest.mark.sqlite_only("a SQLite file that is not liteq's")
def test_a_foreign_sqlite_file_is_refused_and_left_untouched(
        tmp_path: Path, args: list[str]) -> None:
    path = str(tmp_path / "other.db")
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY)")
    con.close()
    before = digest(path)
    text = error(run(path, *args))
    assert "another application" in text and "customers" in text
    assert digest(path) == before


@pytest.mark.sqlite_only("a file that is not SQLite")
def test_a_file_that_is_not_sqlite_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello, I am not a database\n" * 100)
    before = digest(str(path))
    assert "not a SQLite database" in error(run(str(path), "stats"))
    assert "not a SQLite database" in error(run(str(path), "put", "jobs", "1"))
    assert digest(str(path)) == before


@pytest.mark.sqlite_only("an empty file")
def test_an_empty_file_is_not_taken_for_a_database(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    path.touch()
    assert error(run(str(path), "stats")) == f"{path} is an empty file, not a liteq database"
    assert path.stat().st_size == 0


@pytest.mark.sqlite_only("a directory where the file should be")
def test_a_directory_as_database_is_an_error(tmp_path: Path) -> None:
    assert "is a directory" in error(run(str(tmp_path), "stats"))


UNKNOWN_QUEUE = [
    ["stats", "nope"], ["peek", "nope"], ["get", "nope"], ["dead", "list", "nope"],
    ["dead", "redrive", "nope"], ["dead", "purge", "nope", "--yes"],
    ["purge", "nope", "--yes"], ["queue", "config", "nope"],
    ["queue", "config", "nope", "--max-depth", "5"], ["queue", "delete", "nope", "--yes"],
    ["prune", "nope"],
]


@pytest.mark.parametrize("args", UNKNOWN_QUEUE, ids=" ".join)
def test_an_unknown_queue_is_an_error_and_is_not_created(db_target: str, args: list[str]) -> None:
    path = db_target
    make(path, payloads=[1])
    before = snapshot(path)
    assert error(run(path, *args)) == "no queue named 'nope'"
    assert snapshot(path) == before


@pytest.mark.parametrize("args", [["peek", "bad name"], ["put", "bad name", "1"],
                                  ["stats", "x y"], ["queue", "create", "-"]], ids=" ".join)
def test_an_invalid_queue_name_is_a_usage_error_that_says_what_is_allowed(
        db_target: str, args: list[str]) -> None:
    path = db_target
    result = run(path, *args)
    assert result.exit_code == 2
    assert "Error:" in result.stderr and "Traceback" not in result.stderr
    assert not os.path.exists(path)


def test_a_queue_name_error_quotes_the_allowed_characters(db_target: str) -> None:
    result = run(db_target, "peek", "bad name")
    assert "queue name must be 1-200 characters of letters, digits" in result.stderr


# -- stats -----------------------------------------------------------------------------

def test_stats_shows_a_table_with_a_row_per_queue(db_target: str) -> None:
    path = db_target
    make(path, "emails", [1, 2, 3], max_depth=100)
    make(path, "reports", [])
    with liteq.connect(path) as db:
        q = db.queue("emails")
        q.put(4, delay=3600)
        q.get()
    lines = ok(path, "stats").stdout.splitlines()
    assert lines[0].split() == ["QUEUE", "READY", "DELAYED", "LEASED", "DEAD", "DONE",
                                "MAX_DEPTH", "OLDEST"]
    assert lines[1].split()[:7] == ["emails", "2", "1", "1", "0", "0", "100"]
    assert lines[2].split() == ["reports", "0", "0", "0", "0", "0", "-", "-"]
    # columns line up: every value ends where its right-aligned header ends
    assert lines[1].index("100") + 3 == lines[0].index("MAX_DEPTH") + len("MAX_DEPTH")


def test_stats_json_has_every_counter_and_no_rates_from_one_sample(db_target: str) -> None:
    path = db_target
    make(path, "emails", [1, 2], max_depth=10)
    [row] = as_json(path, "stats")
    assert row["queue"] == "emails" and row["ready"] == 2 and row["max_depth"] == 10
    assert row["depth"] == 2 and row["enqueued_total"] == 2 and row["acked_total"] == 0
    assert row["oldest_ready_age"] >= 0
    assert row["put_rate"] is None and row["ack_rate"] is None
    assert not any(key.startswith("_") for key in row)


def test_stats_nl_prints_one_object_per_queue(db_target: str) -> None:
    path = db_target
    make(path, "a", [1])
    make(path, "b", [1, 2])
    assert [(r["queue"], r["ready"]) for r in as_nl(path, "stats")] == [("a", 1), ("b", 2)]


def test_stats_of_named_queues_shows_only_those(db_target: str) -> None:
    path = db_target
    make(path, "a", [1])
    make(path, "b", [1])
    assert [r["queue"] for r in as_json(path, "stats", "b")] == ["b"]


def test_stats_with_an_interval_shows_rates(db_target: str) -> None:
    path = db_target
    make(path, "a", [1])
    result = ok(path, "stats", "--interval", "50ms")
    assert result.stdout.split("\n")[0].split()[-2:] == ["PUT/S", "ACK/S"]
    [row] = as_json(path, "stats", "--interval", "0.05")
    assert row["put_rate"] == 0 and row["ack_rate"] == 0


def test_rates_are_the_change_of_the_counters_over_the_time_between_samples(
        db_target: str) -> None:
    path = db_target
    make(path, "a", [])
    with liteq.connect(path) as db:
        before = {r["queue"]: r for r in sample(db)}
        q = db.queue("a")
        q.put_many(range(10))
        q.ack_many(q.get_many(4))
        time.sleep(0.01)
        [row] = sample(db, None, before)
    elapsed = row["_at"] - before["a"]["_at"]
    assert row["put_rate"] == pytest.approx(10 / elapsed)
    assert row["ack_rate"] == pytest.approx(4 / elapsed)


def test_stats_on_a_database_without_queues_says_so(db_target: str) -> None:
    path = db_target
    liteq.connect(path).close()
    result = ok(path, "stats")
    assert result.stdout == "" and result.stderr.startswith("no queues in ")
    assert as_json(path, "stats") == []


def test_stats_watch_refreshes_count_times_then_stops(db_target: str) -> None:
    path = db_target
    make(path, "a", [1, 2])
    out = ok(path, "stats", "--watch", "--interval", "10ms", "--count", "3").stdout
    assert out.count("liteq stats  ") == 3
    assert out.count("PUT/S") == 3
    assert "\x1b" not in out  # not a terminal: frames follow each other, no escapes


def test_stats_watch_nl_streams_rows_with_a_time(db_target: str) -> None:
    path = db_target
    make(path, "a", [1])
    rows = as_nl(path, "stats", "--watch", "-i", "10ms", "-c", "2")
    assert len(rows) == 2 and rows[0]["queue"] == "a" and rows[1]["time"] >= rows[0]["time"]
    assert rows[0]["ack_rate"] is None and rows[1]["ack_rate"] == 0


def test_watch_on_a_terminal_redraws_in_place_and_cuts_a_tall_frame(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LINES", "6")
    monkeypatch.setenv("COLUMNS", "80")
    _frame(["head", "", "T", "a", "b"], tty=True, first=True)
    _frame(["head", "", "T", "a", "b", "c", "d"], tty=True, first=False)
    first, second = capsys.readouterr().out.split("\x1b[J")[:2]
    assert first == "\x1b[2J\x1b[H" + "".join(f"{x}\x1b[K\n" for x in ["head", "", "T", "a", "b"])
    assert second == "\x1b[H" + "".join(
        f"{x}\x1b[K\n" for x in ["head", "", "T", "a", "... and 3 more (name the queues to show)"])


def test_a_queue_deleted_while_watching_drops_out_of_the_table(db_target: str) -> None:
    path = db_target
    make(path, "a", [1])
    make(path, "b", [1])
    with liteq.connect(path) as db:
        db.queue("a")  # cached, as in a running --watch
        with liteq.connect(path) as other:
            other.delete_queue("a")
        assert [r["queue"] for r in sample(db, ["a", "b"])] == ["b"]


@pytest.mark.parametrize("args,message", [
    (["--watch", "--json"], "use --nl"),
    (["--count", "2"], "--count needs --watch"),
    (["--json", "--nl"], "use --json or --nl, not both"),
    (["--interval", "-1"], "is not a duration"),
    (["--interval", "soon"], "is not a duration"),
])
def test_stats_option_mistakes_are_usage_errors(db_target: str, args: list[str],
                                                message: str) -> None:
    path = db_target
    make(path, "a", [1])
    assert message in error(run(path, "stats", *args), 2)


# -- peek ------------------------------------------------------------------------------

def test_peek_shows_ready_messages_in_delivery_order(db_target: str) -> None:
    path = db_target
    with liteq.connect(path) as db:
        q = db.queue("jobs")
        low = q.put({"n": "low"})
        high = q.put({"n": "high"}, priority=5)
    lines = ok(path, "peek", "jobs").stdout.splitlines()
    assert lines[0].split() == ["ID", "STATE", "PRIORITY", "ATTEMPTS", "AGE", "DUE", "PAYLOAD"]
    assert lines[1].split()[:2] == [str(high), "ready"]
    assert lines[1].endswith('{"n": "high"}')
    assert lines[2].split()[0] == str(low)


def test_peek_json_gives_whole_messages(db_target: str) -> None:
    path = db_target
    [mid] = make(path, "jobs", [{"to": "a@b.c", "n": [1, 2]}])
    [m] = as_json(path, "peek", "jobs")
    assert m["id"] == mid and m["queue"] == "jobs" and m["state"] == "ready"
    assert m["payload"] == {"to": "a@b.c", "n": [1, 2]}
    assert m["attempts"] == 0 and m["headers"] == {} and m["error"] is None
    assert "receipt" not in m


def test_peek_by_state_limit_and_all(db_target: str) -> None:
    path = db_target
    with liteq.connect(path) as db:
        q = db.queue("jobs")
        q.put_many(range(5))
        q.put("later", delay=600)
    assert [m["payload"] for m in as_nl(path, "peek", "jobs", "--state", "delayed")] == ["later"]
    assert len(as_json(path, "peek", "jobs", "-n", "2")) == 2
    assert len(as_json(path, "peek", "jobs", "--state", "all", "--limit", "100")) == 6
    assert "in 9m" in ok(path, "peek", "jobs", "-s", "delayed").stdout


def test_peek_of_an_empty_state_says_so_on_stderr(db_target: str) -> None:
    path = db_target
    make(path, "jobs", [1])
    result = ok(path, "peek", "jobs", "--state", "dead")
    assert result.stdout == "" and result.stderr == "no dead messages in queue 'jobs'\n"
    assert as_json(path, "peek", "jobs", "--state", "dead") == []


def test_peek_shows_bytes_and_control_characters_safely(db_target: str) -> None:
    path = db_target
    make(path, "jobs", [b"\x00\x1b[2J\xff", "bell\x07 and \x1b[31mred\x9b"])
    table = ok(path, "peek", "jobs").stdout
    assert "\x1b" not in table and "\x07" not in table and "\x9b" not in table
    assert '{"$bytes": "ABtbMkr/"}' in table
    assert "\\u001b[31mred\\u009b" in table
    payloads = [m["payload"] for m in as_json(path, "peek", "jobs")]
    assert payloads == [{"$bytes": "ABtbMkr/"}, "bell\x07 and \x1b[31mred\x9b"]


def test_peek_cuts_long_payloads_to_the_terminal_width(db_target: str) -> None:
    path = db_target
    make(path, "jobs", ["x" * 500])
    result = CliRunner().invoke(cli, ["--db", path, "peek", "jobs"], env={"COLUMNS": "80"})
    lines = result.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines) and lines[1].endswith("…")
    assert as_json(path, "peek", "jobs")[0]["payload"] == "x" * 500


# -- show ------------------------------------------------------------------------------

def test_show_lists_everything_about_a_dead_message(db_target: str) -> None:
    path = db_target
    with liteq.connect(path) as db:
        q = db.queue("jobs", max_attempts=1)
        mid = q.put({"a": 1}, headers={"trace": "t-1"}, key="k1")
        msg = q.get()
        assert msg is not None
        msg.nack(error="ValueError: boom")
    out = ok(path, "show", str(mid)).stdout
    fields = dict(line.split(None, 1) for line in out.splitlines()[:8])
    assert fields["state"] == "dead" and fields["attempts"] == "1 of 1"
    assert fields["key"] == "k1" and fields["queue"] == "jobs"
    assert "error        ValueError: boom" in out
    assert 'headers      {"trace": "t-1"}' in out
    assert 'payload      {\n               "a": 1\n             }' in out


def test_show_json_is_the_whole_message(db_target: str) -> None:
    path = db_target
    [mid] = make(path, "jobs", [{"a": b"\x01"}])
    m = as_json(path, "show", str(mid))
    assert m["id"] == mid and m["payload"] == {"a": {"$bytes": "AQ=="}}
    assert m["state"] == "ready" and m["run_at"] == pytest.approx(m["enqueued_at"])


def test_show_an_undecodable_payload_says_so_instead_of_failing(db_target: str) -> None:
    path = db_target
    [mid] = make(path, "jobs", [1])
    with liteq.connect(path) as db:
        dbsql.corrupt_payload(db, mid, b"\xff")
    assert "undecodable payload" in as_json(path, "show", str(mid))["payload"]


def test_show_of_a_missing_message_is_an_error(db_target: str) -> None:
    path = db_target
    make(path, "jobs", [1])
    assert error(run(path, "show", "99")).startswith("no message with id 99")
    assert "Invalid value for 'ID'" in error(run(path, "show", "x"), 2)
