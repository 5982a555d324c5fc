"""The ``liteq`` commands that act: put, get, ack, retry, cancel, dead, purge,
queue, prune and vacuum. Each error path checks its message, its exit code, and
that the file did not change."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from test_cli import as_json, as_nl, error, fresh, make, ok, run, snapshot

import liteq
from liteq.cli_messages import PROGRESS_MIN, STDIN_BATCH

pytestmark = pytest.mark.every_engine


def state_of(path: str, mid: int) -> str:
    with liteq.connect(path) as db:
        msg = db.message(mid)
        return "gone" if msg is None else msg.state


def dead_message(path: str, queue: str = "jobs", payload: object = "poison") -> int:
    """Put a message in *queue* and let it die after one attempt."""
    with liteq.connect(path) as db:
        q = db.queue(queue, max_attempts=1)
        mid = q.put(payload)
        msg = q.get()
        assert msg is not None and msg.id == mid
        msg.nack(error="ValueError: no good")
        return mid


# -- put -------------------------------------------------------------------------------

def test_put_prints_the_id_and_makes_the_file_and_the_queue(db_target: str) -> None:
    path = db_target
    result = ok(path, "put", "emails", '{"to": "a@b.c"}')
    mid = int(result.stdout)
    with liteq.connect(path) as db:
        msg = db.message(mid)
        assert msg is not None and msg.payload == {"to": "a@b.c"} and msg.queue == "emails"
        assert db.queue("emails").config.max_depth is None


def test_put_json_names_queue_and_id(db_target: str) -> None:
    path = db_target
    assert as_json(path, "put", "emails", "[1, 2]") == {"queue": "emails", "id": 1}


def test_put_with_delay_priority_and_a_dedup_key(db_target: str) -> None:
    path = db_target
    later = int(ok(path, "put", "jobs", '"later"', "--delay", "1h").stdout)
    first = int(ok(path, "put", "jobs", '"urgent"', "--priority", "7", "--key", "k").stdout)
    again = int(ok(path, "put", "jobs", '"urgent again"', "--key", "k").stdout)
    assert again == first
    with liteq.connect(path) as db:
        assert db.queue("jobs").stats()["depth"] == 2
        late, urgent = db.message(later), db.message(first)
        assert late is not None and late.state == "delayed"
        assert late.run_at - late.enqueued_at == pytest.approx(3600)
        assert urgent is not None and urgent.priority == 7 and urgent.key == "k"


@pytest.mark.parametrize("payload", ["{bad", "hello", "", "[1, 2", "{'a': 1}"])
@pytest.mark.sqlite_only("checks that a refused command creates no file")
def test_a_malformed_json_payload_is_a_usage_error_and_makes_no_file(
        tmp_path: Path, payload: str) -> None:
    path = fresh(tmp_path)
    assert "PAYLOAD_JSON is not valid JSON" in error(run(path, "put", "jobs", payload), 2)
    assert os.listdir(tmp_path) == []


def test_a_malformed_json_payload_writes_nothing_to_an_existing_file(db_target: str) -> None:
    path = db_target
    make(path, "jobs", [1])
    before = snapshot(path)
    text = error(run(path, "put", "jobs", "hello"), 2)
    assert text == ("PAYLOAD_JSON is not valid JSON: Expecting value at column 1; a string "
                    "needs JSON quotes, e.g. '\"hello\"'")
    assert snapshot(path) == before


def test_put_on_a_full_queue_exits_75_and_writes_nothing(db_target: str) -> None:
    path = db_target
    make(path, "jobs", [1], max_depth=1)
    before = snapshot(path)
    text = error(run(path, "put", "jobs", "2"), 75)
    assert text == ("queue 'jobs' is full: depth 1 of max_depth 1, no room for 1 more "
                    "message (try again later)")
    assert snapshot(path) == before


def test_put_wait_waits_for_room_then_exits_75(db_target: str) -> None:
    path = db_target
    make(path, "jobs", [1], max_depth=1)
    start = time.monotonic()
    error(run(path, "put", "jobs", "2", "--wait", "150ms"), 75)
    assert time.monotonic() - start >= 0.15


def test_a_payload_over_the_size_limit_is_an_error_and_writes_nothing(db_target: str) -> None:
    path = db_target
    make(path, "jobs", [1])
    before = snapshot(path)
    text = error(run(path, "put", "jobs", json.dumps("x" * (1 << 20))))
    assert text.startswith("payload is 1048581 bytes encoded; the limit is 1048576 bytes")
    assert snapshot(path) == before


def test_put_dash_reads_one_payload_per_line(db_target: str) -> None:
    path = db_target
    n = STDIN_BATCH * 2 + 500
    lines = "\n".join(json.dumps({"n": i}) + ("\n" if i % 100 == 0 else "") for i in range(n))
    result = ok(path, "put", "nums", "-", "--priority", "3", input=lines)
    assert result.stdout == f"put {n} messages on queue 'nums'\n"
    assert result.stderr == ""  # no progress bar for a small input
    with liteq.connect(path) as db:
        q = db.queue("nums")
        assert q.stats()["ready"] == n
        assert [m.payload["n"] for m in q.peek(3)] == [0, 1, 2]
        assert {m.priority for m in q.peek(10)} == {3}


def test_put_dash_json_says_how_many(db_target: str) -> None:
    path = db_target
    assert as_json(path, "put", "nums", "-", input="1\n2\n") == {"queue": "nums", "count": 2}


def test_put_dash_shows_a_progress_bar_on_stderr_for_large_inputs(db_target: str) -> None:
    path = db_target
    result = ok(path, "put", "nums", "-", input="1\n" * PROGRESS_MIN)
    assert "put on nums" in result.stderr
    assert result.stdout == f"put {PROGRESS_MIN} messages on queue 'nums'\n"


@pytest.mark.sqlite_only("checks that a refused command creates no file")
def test_put_dash_with_a_malformed_line_writes_nothing(tmp_path: Path) -> None:
    path = fresh(tmp_path)
    lines = "1\n" * (STDIN_BATCH + 10) + "{oops}\n" + "2\n"
    text = error(run(path, "put", "nums", "-", input=lines), 2)
    assert text.startswith(f"line {STDIN_BATCH + 11} of stdin is not valid JSON: ")
    assert os.listdir(tmp_path) == []


def test_put_dash_with_an_oversized_line_writes_nothing(db_target: str) -> None:
    path = db_target
    make(path, "nums", [])
    before = snapshot(path)
    lines = "1\n" * 10 + json.dumps("x" * (1 << 20)) + "\n"
    assert error(run(path, "put", "nums", "-", input=lines)).startswith(
        "line 11 of stdin: payload is 1048581 bytes encoded")
    assert snapshot(path) == before


def test_put_dash_that_meets_a_full_queue_exits_75_and_says_how_many_went_in(
        db_target: str) -> None:
    path = db_target
    make(path, "nums", [], max_depth=STDIN_BATCH + 1)
    n = STDIN_BATCH * 2
    text = error(run(path, "put", "nums", "-", input="1\n" * n), 75)
    assert text.endswith(f"{STDIN_BATCH} of {n} messages were put before this, "
                         f"the other {n - STDIN_BATCH} were not")
    assert "queue 'nums' is full" in text
    with liteq.connect(path) as db:
        assert db.queue("nums").stats()["ready"] == STDIN_BATCH


@pytest.mark.sqlite_only("checks that a refused command creates no file")
def test_put_dash_with_a_key_is_a_usage_error(tmp_path: Path) -> None:
    path = fresh(tmp_path)
    assert "--key needs a single PAYLOAD_JSON" in error(
        run(path, "put", "nums", "-", "--key", "k", input="1\n"), 2)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("args", [["--delay", "-5"], ["--priority", "high"], ["--wait", "x"]])
@pytest.mark.sqlite_only("checks that a refused command creates no file")
def test_put_option_mistakes_are_usage_errors_and_write_nothing(
        tmp_path: Path, args: list[str]) -> None:
    path = fresh(tmp_path)
    error(run(path, "put", "jobs", "1", *args), 2)
    assert os.listdir(tmp_path) == []


# -- get and ack -----------------------------------------------------------------------

def test_get_claims_a_message_and_prints_its_receipt(db_target: str) -> None:
    path = db_target
    [mid] = make(path, "jobs", [{"a": 1}])
    lines = ok(path, "get", "jobs").stdout.splitlines()
    label, receipt = lines[0].split()
    assert label == "receipt" and receipt.startswith(f"{mid}:")
    assert lines[1].split() == ["id", str(mid)]
    assert "attempts     1 of 5" in lines
    assert state_of(path, mid) == "leased"
    assert ok(path, "ack", receipt).stdout == f"acked message {mid}\n"
    assert state_of(path, mid) == "gone"


def test_get_json_has_the_receipt_and_the_payload(db_target: str) -> None:
    path = db_target
    [mid] = make(path, "jobs", [[1, b"\xff"]])
    m = as_json(path, "get", "jobs")
    assert m["id"] == mid and m["state"] == "leased" and m["attempts"] == 1
    assert m["receipt"].startswith(f"{mid}:") and m["acked"] is False
    assert m["payload"] == [1, {"$bytes": "/w=="}] and m["lease_until"] > m["enqueued_at"]
    assert as_json(path, "ack", m["receipt"]) == {"id": mid, "acked": True}


def test_get_ack_finishes_the_message_at_once(db_target: str) -> None:
    path = db_target
    [mid] = make(path, "jobs", [1])
    out = ok(path, "get", "jobs", "--ack").stdout
    assert "receipt      (acked)" in out
    assert state_of(path, mid) == "gone"
    [mid2] = make(path, "jobs", [2])
    acked = as_json(path, "get", "jobs", "--ack")
    assert acked["acked"] is True and acked["state"] == "done" and acked["lease_until"] is None
    assert state_of(path, mid2) == "gone"


def test_get_on_an_empty_queue_prints_nothing_and_exits_0(db_target: str) -> None:
    path = db_target
    make(path, "jobs", [])
    result = ok(path, "get", "jobs")
    assert result.stdout == "" and result.stderr == "no message ready in queue 'jobs'\n"
    assert ok(path, "get", "jobs", "--json").stdout == "null\n"


def test_get_wait_waits_that_long_for_a_message(db_target: str) -> None:
    path = db_target
    make(path, "jobs", [])
    start = time.monotonic()
    assert ok(path, "get", "jobs", "--wait", "0.2", "--json").stdout == "null\n"
    assert time.monotonic() - start >= 0.2


def test_a_stale_receipt_is_an_error_and_changes_nothing(db_target: str) -> None:
    path = db_target
    make(path, "jobs", [1], lease=0.05)
    old = as_json(path, "get", "jobs")["receipt"]
    time.sleep(0.1)
    new = as_json(path, "get", "jobs")["receipt"]
    assert new != old
    before = snapshot(path)
    text = error(run(path, "ack", old))
    assert text.startswith(f"receipt {old} is stale: the lease ran out")
    assert snapshot(path) == before
    ok(path, "ack", new)


def test_ack_of_a_finished_message_is_an_error(db_target: str) -> None:
    path = db_target
    make(path, "jobs", [1])
    receipt = as_json(path, "get", "jobs", "--ack")["receipt"]
    assert error(run(path, "ack", receipt)).startswith("message 1 does not exist")


@pytest.mark.parametrize("receipt", ["12", "a:b", "1:2:3", ""])
def test_a_malformed_receipt_is_a_usage_error(db_target: str, receipt: str) -> None:
    path = db_target
    make(path, "jobs", [1])
    assert "a receipt is ID:TOKEN" in error(run(path, "ack", receipt), 2)


# -- retry and cancel ------------------------------------------------------------------

def test_retry_makes_a_dead_message_ready_again(db_target: str) -> None:
    path = db_target
    mid, mid2 = dead_message(path), dead_message(path)
    assert ok(path, "retry", str(mid)).stdout == f"message {mid} is ready again in queue 'jobs'\n"
    assert state_of(path, mid) == "ready"
    assert as_json(path, "retry", str(mid2)) == {"id": mid2, "queue": "jobs", "state": "ready"}


def test_retry_of_a_message_that_is_not_dead_is_an_error(db_target: str) -> None:
    path = db_target
    [mid] = make(path, "jobs", [1])
    before = snapshot(path)
    assert error(run(path, "retry", str(mid))) == (
        f"message {mid} is ready: only dead or cancelled messages can be retried")
    assert error(run(path, "retry", "99")).startswith("no message with id 99")
    assert snapshot(path) == before


def test_cancel_takes_a_ready_message_out_of_delivery(db_target: str) -> None:
    path = db_target
    a, b = make(path, "jobs", [1, 2])
    assert ok(path, "cancel", str(a)).stdout == f"cancelled message {a} of queue 'jobs'\n"
    assert as_json(path, "cancel", str(b)) == {"id": b, "queue": "jobs", "state": "cancelled"}
    assert state_of(path, a) == state_of(path, b) == "cancelled"
    assert as_json(path, "get", "jobs") is None


def test_cancel_of_a_leased_message_requests_cancellation_and_it_is_not_redelivered(
        db_target: str) -> None:
    path = db_target
    [mid] = make(path, "jobs", [1])
    got = as_json(path, "get", "jobs")
    assert "cancellation requested" in ok(path, "cancel", str(mid)).stdout
    with liteq.connect(path) as db:
        q = db.queue("jobs")
        msg = db.message(mid)
        assert msg is not None and msg.state == "leased" and msg.cancel_requested
        q.nack(msg_with_token(db, mid, got["receipt"]), delay=0)
        assert db.message(mid).state == "cancelled"  # type: ignore[union-attr]
        assert q.get() is None


def msg_with_token(db: liteq.Database, mid: int, receipt: str) -> liteq.Message:
    msg = db.message(mid)
    assert msg is not None
    msg.token = int(receipt.split(":")[1])
    return msg


def test_cancel_of_a_finished_or_missing_message_is_an_error(db_target: str) -> None:
    path = db_target
    [mid] = make(path, "jobs", [1])
    ok(path, "cancel", str(mid))
    before = snapshot(path)
    assert error(run(path, "cancel", str(mid))) == (
        f"message {mid} is cancelled: only ready, delayed or leased messages can be cancelled")
    assert error(run(path, "cancel", "99")).startswith("no message with id 99")
    assert snapshot(path) == before


# -- dead ------------------------------------------------------------------------------

def test_dead_list_shows_each_message_with_why_it_died(db_target: str) -> None:
    path = db_target
    mid = dead_message(path)
    lines = ok(path, "dead", "list", "jobs").stdout.splitlines()
    assert lines[0].split() == ["ID", "STATE", "PRIORITY", "ATTEMPTS", "AGE", "FINISHED",
                                "ERROR", "PAYLOAD"]
    assert lines[1].split()[:2] == [str(mid), "dead"]
    assert lines[1].endswith('  ValueError: no good  "poison"')
    [row] = as_nl(path, "dead", "list", "jobs")
    assert row["id"] == mid and row["error"] == "ValueError: no good"
    assert as_json(path, "dead", "list", "jobs") == [row]


def test_dead_list_of_a_queue_with_a_dead_letter_queue_points_there(db_target: str) -> None:
    path = db_target
    make(path, "jobs", [], dead_letter="jobs.dead")
    result = ok(path, "dead", "list", "jobs")
    assert result.stderr == ("no dead messages in queue 'jobs' "
                             "(it moves them to queue 'jobs.dead')\n")


def test_dead_redrive_makes_dead_messages_ready(db_target: str) -> None:
    path = db_target
    a, b = dead_message(path), dead_message(path)
    assert as_json(path, "dead", "redrive", "jobs", "--limit", "1") == {
        "queue": "jobs", "redriven": 1}
    assert ok(path, "dead", "redrive", "jobs").stdout == (
        "1 dead message of queue 'jobs' ready again\n")
    assert state_of(path, a) == state_of(path, b) == "ready"


def test_dead_purge_asks_first_and_deletes_only_dead_messages(db_target: str) -> None:
    path = db_target
    mid = dead_message(path)
    [live] = make(path, "jobs", [1])
    result = ok(path, "dead", "purge", "jobs", input="y\n")
    assert "Delete 1 dead message of queue 'jobs'" in result.stderr
    assert result.stdout == "deleted 1 dead message of queue 'jobs'\n"
    assert state_of(path, mid) == "gone" and state_of(path, live) == "ready"
    dead_message(path, "other")
    assert as_json(path, "dead", "purge", "other", "--yes") == {
        "queue": "other", "state": "dead", "purged": 1}


def test_a_purge_answered_no_changes_nothing(db_target: str) -> None:
    path = db_target
    dead_message(path)
    before = snapshot(path)
    for answer in ("n\n", None):
        text = error(run(path, "dead", "purge", "jobs", input=answer))
        assert text == "cancelled: nothing was changed (pass --yes to skip this question)"
    assert snapshot(path) == before


# -- purge -----------------------------------------------------------------------------

def test_purge_deletes_every_message_after_confirmation(db_target: str) -> None:
    path = db_target
    make(path, "jobs", [1, 2, 3], max_depth=3)
    result = ok(path, "purge", "jobs", input="y\n")
    assert "Delete 3 messages of queue 'jobs'" in result.stderr
    assert result.stdout == "deleted 3 messages of queue 'jobs'\n"
    with liteq.connect(path) as db:
        s = db.queue("jobs").stats()
        assert s["ready"] == 0 and s["depth"] == 0 and s["max_depth"] == 3
    ok(path, "put", "jobs", "4")  # room again


def test_purge_by_state_with_yes_and_json(db_target: str) -> None:
    path = db_target
    with liteq.connect(path) as db:
        q = db.queue("jobs")
        q.put_many([1, 2])
        later = q.put(3, delay=600)
    assert as_json(path, "purge", "jobs", "--state", "ready", "--yes") == {
        "queue": "jobs", "state": "ready", "purged": 2}
    assert state_of(path, later) == "delayed"
    assert ok(path, "purge", "jobs", "-s", "dead", "-y").stdout == (
        "no dead messages in queue 'jobs'\n")


def test_purge_answered_no_changes_nothing(db_target: str) -> None:
    path = db_target
    make(path, "jobs", [1, 2])
    before = snapshot(path)
    assert error(run(path, "purge", "jobs", input="n\n")).startswith("cancelled")
    assert snapshot(path) == before


# -- queue -----------------------------------------------------------------------------

def test_queue_create_stores_the_options_and_shows_them(db_target: str) -> None:
    path = db_target
    out = ok(path, "queue", "create", "emails", "--max-depth", "100", "--lease", "1m",
             "--max-attempts", "3", "--dead-letter", "emails.dead", "--retention", "1d").stdout
    assert "max_depth     100" in out and "lease         1m00s" in out
    assert "dead_letter   emails.dead" in out and "retention     1d0h" in out
    with liteq.connect(path) as db:
        cfg = db.queue("emails").config
        assert (cfg.max_depth, cfg.lease, cfg.max_attempts, cfg.dead_letter, cfg.retention) == (
            100, 60.0, 3, "emails.dead", 86400.0)


def test_queue_create_json_is_the_config_with_defaults(db_target: str) -> None:
    path = db_target
    cfg = as_json(path, "queue", "create", "emails")
    assert cfg["name"] == "emails" and cfg["max_depth"] is None and cfg["lease"] == 30
    assert cfg["max_attempts"] == 5 and cfg["backoff"]["factor"] == 2


def test_queue_create_of_an_existing_queue_is_an_error_unless_ignore(db_target: str) -> None:
    path = db_target
    make(path, "emails", [1], max_depth=5)
    before = snapshot(path)
    assert error(run(path, "queue", "create", "emails", "--max-depth", "9")) == (
        "queue 'emails' already exists (change its options with "
        "'liteq queue config emails', or pass --ignore)")
    assert as_json(path, "queue", "create", "emails", "--max-depth", "9",
                   "--ignore")["max_depth"] == 5
    assert snapshot(path) == before


@pytest.mark.parametrize("args", [
    ["--max-depth", "0"], ["--max-depth", "lots"], ["--lease", "0"], ["--lease", "-1"],
    ["--max-attempts", "0"], ["--dead-letter", "bad name"], ["--retention", "forever"],
])
@pytest.mark.sqlite_only("checks that a refused command creates no file")
def test_queue_create_option_mistakes_are_usage_errors_and_make_no_file(
        tmp_path: Path, args: list[str]) -> None:
    path = fresh(tmp_path)
    error(run(path, "queue", "create", "emails", *args), 2)
    assert os.listdir(tmp_path) == []


def test_queue_config_shows_and_changes_only_the_options_given(db_target: str) -> None:
    path = db_target
    make(path, "emails", [], max_depth=10, lease=5, dead_letter="dlq")
    assert as_json(path, "queue", "config", "emails")["max_depth"] == 10
    out = ok(path, "queue", "config", "emails", "--max-depth", "none", "--dead-letter",
             "none", "--max-attempts", "9").stdout
    assert "max_depth     none (unbounded)" in out
    with liteq.connect(path) as db:
        cfg = db.queue("emails").config
        assert (cfg.max_depth, cfg.lease, cfg.max_attempts, cfg.dead_letter) == (
            None, 5.0, 9, None)


def test_queue_delete_removes_the_queue_and_its_messages(db_target: str) -> None:
    path = db_target
    make(path, "scratch", [1, 2])
    before = snapshot(path)
    assert error(run(path, "queue", "delete", "scratch", input="n\n")).startswith("cancelled")
    assert snapshot(path) == before
    assert as_json(path, "queue", "delete", "scratch", "--yes") == {
        "queue": "scratch", "deleted": True, "messages": 2}
    make(path, "scratch2", [1])
    assert ok(path, "queue", "delete", "scratch2", input="y\n").stdout == (
        "deleted queue 'scratch2' and its 1 message\n")
    with liteq.connect(path) as db:
        assert not db.has_queue("scratch")


# -- prune and vacuum ------------------------------------------------------------------

def test_prune_drops_retained_finished_messages_older_than_asked(db_target: str) -> None:
    path = db_target
    with liteq.connect(path) as db:
        q = db.queue("kept", retention=3600)
        q.put_many([1, 2, 3])
        q.ack_many(q.get_many(3))
        db.queue("other").put(1)
    assert as_json(path, "prune") == [{"queue": "kept", "pruned": 0},
                                      {"queue": "other", "pruned": 0}]
    time.sleep(0.01)
    lines = ok(path, "prune", "kept", "--older-than", "0").stdout.splitlines()
    assert lines == ["QUEUE  PRUNED", "kept        3"]
    assert liteq.connect(path).queue("kept").stats()["done"] == 0


@pytest.mark.sqlite_only("vacuum reports the file size")
def test_vacuum_reports_the_file_size_before_and_after(tmp_path: Path) -> None:
    path = fresh(tmp_path)
    make(path, "jobs", ["x" * 1000] * 500)
    ok(path, "purge", "jobs", "--yes")
    result = as_json(path, "vacuum")
    assert result["path"] == path and result["bytes_after"] < result["bytes_before"]
    assert ok(path, "vacuum").stdout.startswith(f"{path}: ")
    with liteq.connect(path) as db:
        assert db.integrity_check() == ["ok"]
