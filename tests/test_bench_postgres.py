"""bench/bench_postgres.py runs with a tiny N (a smoke test, nothing timed): liteq and
the raw psycopg queue side by side on the tests' PostgreSQL server, in-process rows only
(the multi-process rows spawn 3-5 interpreters each: too slow for the test run; the
benchmark itself counts their duplicates and losses)."""

from __future__ import annotations

import pytest
from benchscripts import assert_in_process_rows_measured, load_script
from conftest_pg import require_psycopg

require_psycopg()


def test_the_postgres_benchmark_runs_with_a_tiny_n_and_prints_every_row_with_its_ratio(
    pg_server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    bench = load_script("bench_postgres.py")
    bench.main([
        "--url", pg_server, "--quick", "--n", "20", "--systems", "liteq,raw",
        "--workloads", "put,get_ack,put_batch,get_ack_batch",
    ])
    captured = capsys.readouterr()
    assert "ERROR" not in captured.err, captured.err
    assert_in_process_rows_measured(captured.out)
