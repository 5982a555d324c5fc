"""bench/compare.py runs with a tiny N (a smoke test, nothing timed): liteq and the
minimal raw apsw queue side by side on temporary files, in-process rows only (the
multi-process rows spawn 3-5 interpreters each: too slow for the test run; the benchmark
itself counts their duplicates and losses). Its twin for PostgreSQL is
tests/test_bench_postgres.py: both scripts run on bench/harness.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from benchscripts import assert_in_process_rows_measured, load_script


def test_the_sqlite_comparison_runs_with_a_tiny_n_and_prints_every_row_with_its_ratios(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    compare = load_script("compare.py")
    compare.main([
        "--quick", "--n", "20", "--systems", "liteq,raw-minimal", "--tmp", str(tmp_path),
        "--workloads", "put,get_ack,put_batch,get_ack_batch",
    ])
    captured = capsys.readouterr()
    assert "ERROR" not in captured.err, captured.err
    assert_in_process_rows_measured(captured.out)
    assert list(tmp_path.iterdir()) == [], "every workload's temporary files are removed"
