"""Smoke tests of the instruction-counting paths of bench/bench_chord.py and
bench/instructions_tasks.py (nothing timed): they import the stepping clock of
bench/instructions.py, and a rename there once broke both unseen."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _run(*args: str, tmp_path: Path) -> str:
    env = {**os.environ, "LITEQ_BENCH_CALLGRIND": "1"}  # the stepping clock, no valgrind
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_bench_chord_runs_with_the_stepping_clock(tmp_path: Path) -> None:
    out = _run(str(BENCH / "bench_chord.py"), "--n", "30", "--rounds", "1", "--style",
               "one,worker,worker-one", "--db", str(tmp_path / "chord.db"), tmp_path=tmp_path)
    assert "### one:" in out and "### worker:" in out and "### worker-one:" in out, out


def test_instructions_tasks_child_runs_without_valgrind(tmp_path: Path) -> None:
    _run(str(BENCH / "instructions_tasks.py"), "--child", "--n", "20", tmp_path=tmp_path)
