"""``liteq demo``: it runs end to end on a new file, and never on an existing one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from test_cli import digest, error, fresh, ok, run

import liteq
from liteq import cli_demo


def test_demo_shows_back_pressure_a_dead_message_and_an_expired_lease(tmp_path: Path) -> None:
    path = fresh(tmp_path)
    out = ok(path, "demo", "-n", "800").stdout
    assert f"liteq demo on a new database file: {path}" in out
    assert "QueueFull: queue 'orders' is full: depth 500 of max_depth 500" in out
    assert "800 messages put and acked in" in out
    assert "delivery 3: ValueError: cannot parse order 'poison' -> dead" in out
    assert "is back: delivery 2, new receipt" in out
    assert "refused (LeaseLost)" in out
    assert f"liteq --db {path} dead list orders" in out
    with liteq.connect(path) as db:
        orders = db.queue("orders").stats()
        assert orders["dead"] == 1 and orders["depth"] == 0
        assert orders["acked_total"] == 800 and orders["max_depth"] == 500
        assert db.queue("reports").stats()["acked_total"] == 1
    stats_table = out.split("The file now")[1]
    assert "orders" in stats_table and "reports" in stats_table


def test_demo_refuses_an_existing_file_and_leaves_it_alone(tmp_path: Path) -> None:
    path = fresh(tmp_path)
    with liteq.connect(path) as db:
        db.queue("precious").put("keep me")
    before = digest(path)
    text = error(run(path, "demo"))
    assert text.startswith(f"{path} exists; the demo needs a new file")
    assert digest(path) == before


def test_demo_without_db_uses_a_new_temporary_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.delenv("LITEQ_DB", raising=False)
    out = ok(None, "demo", "-n", "500").stdout
    [made] = [p for p in os.listdir(tmp_path) if p.startswith("liteq-demo-")]
    assert f"{tmp_path / made / 'demo.db'}" in out
    assert not (tmp_path / "liteq.db").exists()


def test_a_registered_demo_step_runs_in_order(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    monkeypatch.setattr(cli_demo, "_STEPS", [])

    @cli_demo.demo_step(20)
    def second(run: cli_demo.DemoRun) -> None:
        run.section("second")
        seen.append("second")

    @cli_demo.demo_step(10)
    def first(run: cli_demo.DemoRun) -> None:
        run.section("first")
        run.say("hello \x1b[31m")
        seen.append("first")

    out = ok(fresh(tmp_path), "demo").stdout
    assert seen == ["first", "second"]
    assert "1. first\n   hello \\x1b[31m\n\n2. second" in out
    assert "3. The file now" in out
