"""Loading the benchmark scripts of bench/ in a test, and reading their terminal table
(tests/test_bench_compare.py and tests/test_bench_postgres.py: smoke tests, nothing timed)."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"

#: The in-process rows, as the terminal table starts them.
IN_PROCESS_ROWS = ("put, 1", "get+ack", "batch put", "batch get+ack")


def load_script(filename: str) -> ModuleType:
    """bench/*filename* as a module (skips the test when the bench extra is missing)."""
    sys.path.insert(0, str(BENCH))
    try:
        import peers  # noqa: F401 - the SQLite peers (huey, persist-queue, litequeue)
    except ImportError as exc:
        pytest.skip(f"the bench extra is not installed ({exc}); pip install -e '.[bench]'")
    spec = importlib.util.spec_from_file_location(Path(filename).stem, BENCH / filename)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def assert_in_process_rows_measured(out: str) -> None:
    """Every in-process row is in the table, measured for every system, with its ratios
    printed as percentages (the target column has a '%' of its own: '≥80% raw')."""
    rows = [line for line in out.splitlines() if line.startswith(IN_PROCESS_ROWS)]
    assert len(rows) == len(IN_PROCESS_ROWS), out
    for row in rows:
        assert "n/a" not in row and re.search(r"\s\d+%\s", row), row
