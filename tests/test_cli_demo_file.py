"""``liteq demo`` picks its own new file unless ``--db`` is on its command line (an
existing ``$LITEQ_DB`` neither stops it nor is touched), says which file it used,
and prints no progress-bar labels when its output is not a terminal."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from test_cli import digest, fresh, run

import liteq


def test_demo_runs_on_a_new_file_when_LITEQ_DB_names_an_existing_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    existing = fresh(tmp_path)
    with liteq.connect(existing) as db:
        db.queue("precious").put("keep me")
    before = digest(existing)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    result = run(None, "demo", "-n", "500", env={"LITEQ_DB": existing})
    assert result.exit_code == 0, result.output
    [made] = [p for p in os.listdir(tmp_path) if p.startswith("liteq-demo-")]
    used = str(tmp_path / made / "demo.db")
    assert f"liteq demo on a new database file: {used}" in result.stdout
    assert "$LITEQ_DB is left alone" in result.stdout
    assert f"The demo's database is {used}." in result.stdout
    assert f"liteq --db {used} stats" in result.stdout
    assert digest(existing) == before


def test_demo_output_to_a_pipe_has_no_progress_labels(tmp_path: Path) -> None:
    result = run(fresh(tmp_path), "demo", "-n", "500")
    assert result.exit_code == 0, result.output
    lines = [line.strip() for line in result.output.splitlines()]
    for label in ("filling", "consumed", "lease"):
        assert not [line for line in lines if line.startswith(label)], (label, result.output)
