"""The topic commands: topics, publish, subscribe, unsubscribe, tail."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_cli import as_json, as_nl, error, fresh, ok, run, snapshot

import liteq

pytestmark = pytest.mark.every_engine


def test_subscribe_then_publish_delivers_to_matching_subscriptions(db_target: str) -> None:
    path = db_target
    assert "matches 'order.*.eu'" in ok(path, "subscribe", "orders", "billing",
                                         "--pattern", "order.*.eu").stdout
    ok(path, "subscribe", "orders", "all")
    assert ok(path, "publish", "orders", "order.created.eu", '{"id": 7}').stdout == "2 deliveries\n"
    assert as_json(path, "publish", "orders", "order.paid.us", "1") == {
        "topic": "orders", "key": "order.paid.us", "deliveries": 1}
    got = as_json(path, "get", "orders:billing")
    assert got["payload"] == {"id": 7}


def test_topics_lists_each_subscription_with_pattern_and_depth(db_target: str) -> None:
    path = db_target
    ok(path, "subscribe", "orders", "billing", "--pattern", "order.*.eu", "--max-depth", "10")
    ok(path, "subscribe", "logs", "errors", "--pattern", "*.error")
    ok(path, "publish", "orders", "order.x.eu", "1")
    table = ok(path, "topics").stdout.splitlines()
    assert table[0].split() == ["TOPIC", "SUBSCRIPTION", "PATTERN", "READY", "LEASED", "DEAD",
                                "MAX_DEPTH"]
    assert table[1].split() == ["logs", "errors", "*.error", "0", "0", "0", "-"]
    assert table[2].split() == ["orders", "billing", "order.*.eu", "1", "0", "0", "10"]
    rows = as_nl(path, "topics")
    assert [(r["topic"], r["subscription"], r["ready"], r["max_depth"]) for r in rows] == [
        ("logs", "errors", 0, None), ("orders", "billing", 1, 10)]


def test_publish_meeting_a_full_subscription_exits_75_and_delivers_nothing(db_target: str) -> None:
    path = db_target
    ok(path, "subscribe", "t", "tight", "--max-depth", "1")
    ok(path, "subscribe", "t", "roomy")
    ok(path, "publish", "t", "k", "1")
    before = snapshot(path)
    assert "is full" in error(run(path, "publish", "t", "k", "2"), code=75)
    assert snapshot(path) == before


def test_publish_with_malformed_json_exits_2_and_writes_nothing(db_target: str) -> None:
    path = db_target
    ok(path, "subscribe", "t", "s")
    before = snapshot(path)
    result = run(path, "publish", "t", "k", "{oops")
    assert result.exit_code == 2 and "not valid JSON" in result.stderr
    assert snapshot(path) == before


def test_bad_topic_and_subscription_names_are_usage_errors(db_target: str) -> None:
    path = db_target
    assert run(path, "subscribe", "a:b", "x").exit_code == 2
    assert run(path, "subscribe", "ok", "x y").exit_code == 2
    assert run(path, "publish", "bad topic", "k", "1").exit_code == 2
    assert not os.path.exists(path)


def test_unsubscribe_removes_the_subscription_and_unknown_ones_are_errors(db_target: str) -> None:
    path = db_target
    ok(path, "subscribe", "t", "a")
    ok(path, "subscribe", "t", "b")
    ok(path, "unsubscribe", "t", "a")
    assert [r["subscription"] for r in as_json(path, "topics")] == ["b"]
    assert error(run(path, "unsubscribe", "t", "a")) == "topic 't' has no subscription 'a'"


@pytest.mark.sqlite_only("checks that no file is created")
def test_topics_on_a_missing_file_is_an_error_and_makes_no_file(tmp_path: Path) -> None:
    path = fresh(tmp_path)
    assert "no liteq database" in error(run(path, "topics"))
    assert not os.path.exists(path)


def test_tail_prints_matching_messages_and_leaves_no_subscription(db_target: str) -> None:
    path = db_target
    ok(path, "subscribe", "logs", "keep")
    proc = subprocess.Popen(
        [sys.executable, "-m", "liteq", "--db", path, "tail", "logs", "--pattern", "app.*",
         "-n", "2", "--nl", "--timeout", "60"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    db = liteq.connect(path)
    t = db.topic("logs")
    deadline = time.monotonic() + 30
    while len(t.subscriptions()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    t.publish("skip me", key="other")
    t.publish({"n": 1}, key="app.one")
    t.publish({"n": 2}, key="app.two")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(r["routing_key"], r["payload"]) for r in lines] == [("app.one", {"n": 1}),
                                                                 ("app.two", {"n": 2})]
    assert [q.name for q in t.subscriptions()] == ["logs:keep"]


def test_tail_ended_by_ctrl_c_exits_0_and_removes_its_subscription(db_target: str) -> None:
    path = db_target
    ok(path, "subscribe", "logs", "keep")
    proc = subprocess.Popen([sys.executable, "-m", "liteq", "--db", path, "tail", "logs"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t = liteq.connect(path).topic("logs")
    deadline = time.monotonic() + 30
    while len(t.subscriptions()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    t.publish("hello", key="a.b")
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert "a.b" in out and "hello" in out
    assert [q.name for q in t.subscriptions()] == ["logs:keep"]
