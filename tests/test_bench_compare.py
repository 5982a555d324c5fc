"""bench/compare.py runs with a tiny N (a smoke test, nothing timed): liteq and the
minimal raw apsw queue side by side on temporary files, in-process rows only (the
multi-process rows spawn 3-5 interpreters each: too slow for the test run; the benchmark
itself counts their duplicates and losses). Its twin for PostgreSQL is
tests/test_bench_postgres.py: both run on bench/harness.py."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


def load_compare() -> object:
    sys.path.insert(0, str(BENCH))
    try:
        import peers  # noqa: F401 - the SQLite peers (huey, persist-queue, litequeue)
    except ImportError as exc:
        pytest.skip(f"the bench extra is not installed ({exc}); pip install -e '.[bench]'")
    spec = importlib.util.spec_from_file_location("bench_compare", BENCH / "compare.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_sqlite_comparison_runs_with_a_tiny_n_and_prints_every_row_with_its_ratios(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    compare = load_compare()
    compare.main([  # type: ignore[attr-defined]
        "--quick", "--n", "20", "--systems", "liteq,raw-minimal", "--tmp", str(tmp_path),
        "--workloads", "put,get_ack,put_batch,get_ack_batch",
    ])
    captured = capsys.readouterr()
    assert "ERROR" not in captured.err, captured.err
    rows = [line for line in captured.out.splitlines()
            if line.startswith(("put, 1", "get+ack", "batch put", "batch get+ack"))]
    assert len(rows) == 4, captured.out
    for row in rows:  # both systems measured, and liteq / raw-minimal printed
        assert "n/a" not in row and re.search(r"\s\d+%\s", row), row
    assert list(tmp_path.iterdir()) == [], "every workload's temporary files are removed"
