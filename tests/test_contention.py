"""Contention: eight processes mixing put, get, ack, nack, extend and stats on one
file with a half-second lease, for 15 seconds (``tools/contention.py``; run it for a
minute or more with ``python tools/contention.py --duration 60``).

No caller may see the write lock (``DatabaseBusy``, "database is locked"), no
message may be lost or acked twice, and the WAL must stay bounded.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from liteq.backends.sqlite import JOURNAL_SIZE_LIMIT

TOOL = Path(__file__).resolve().parent.parent / "tools" / "contention.py"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One 15-second run, shared by the tests below."""
    run_dir = tmp_path_factory.mktemp("contention")
    proc = subprocess.run(
        [sys.executable, str(TOOL), "--duration", "15", "--procs", "8", "--lease", "0.5",
         "--dir", str(run_dir), "--json"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.stdout.strip(), proc.stderr
    data: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    data["returncode"] = proc.returncode
    data["stderr"] = proc.stderr[-2000:]
    return data


def test_eight_processes_with_short_leases_never_see_the_lock_and_lose_or_double_nothing(
        report: dict[str, Any]) -> None:
    figures = {k: v for k, v in report.items() if k not in ("per_op", "error_samples")}
    assert report["busy"] == 0, report["error_samples"]
    assert report["errors"] == 0, report["error_samples"]
    assert report["exit_codes"] == [0] * 8, report["stderr"]
    assert report["acked_twice"] == 0 and report["lost"] == 0, figures
    assert report["integrity"] == "ok"
    assert report["returncode"] == 0 and report["ok"], figures

    # It was contention: every operation ran many times, and leases ran out under
    # their holders (stale acks were refused, not applied).
    assert all(op["n"] > 20 for op in report["per_op"].values()), report["per_op"]
    assert report["ops"] > 5_000 and report["lease_lost"] > 0, figures
    # Generous: the busy timeout is 30 s; this only catches a lock held for seconds.
    assert report["p99_ms"] < 2_000, figures


def test_the_wal_stays_within_twice_the_journal_size_limit_under_contention(
        report: dict[str, Any]) -> None:
    assert report["largest_wal_bytes"] <= 2 * JOURNAL_SIZE_LIMIT, (
        f"largest WAL {report['largest_wal_bytes'] / 2**20:.0f} MiB")
