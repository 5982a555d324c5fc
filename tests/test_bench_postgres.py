"""bench/bench_postgres.py runs with a tiny N (a smoke test, nothing timed): liteq and
the raw psycopg queue side by side on the tests' PostgreSQL server, in-process rows only
(the multi-process rows spawn 3-5 interpreters each: too slow for the test run; the
benchmark itself counts their duplicates and losses)."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest
from conftest_pg import require_psycopg

BENCH = Path(__file__).resolve().parent.parent / "bench"

require_psycopg()


def load_bench() -> object:
    sys.path.insert(0, str(BENCH))
    try:
        import peers  # noqa: F401 - the SQLite peers the package imports
    except ImportError as exc:
        pytest.skip(f"the bench extra is not installed ({exc}); pip install -e '.[bench]'")
    spec = importlib.util.spec_from_file_location("bench_postgres", BENCH / "bench_postgres.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_postgres_benchmark_runs_with_a_tiny_n_and_prints_every_row_with_its_ratio(
    pg_server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    bench = load_bench()
    bench.main([  # type: ignore[attr-defined]
        "--url", pg_server, "--quick", "--n", "20", "--systems", "liteq,raw",
        "--workloads", "put,get_ack,put_batch,get_ack_batch",
    ])
    captured = capsys.readouterr()
    assert "ERROR" not in captured.err, captured.err
    rows = [line for line in captured.out.splitlines()
            if line.startswith(("put, 1", "get+ack", "batch put", "batch get+ack"))]
    assert len(rows) == 4, captured.out
    for row in rows:  # both systems measured, and the ratio printed
        assert "n/a" not in row and re.search(r"\s\d+%\s", row), row
