"""The crash soak, short: producers, consumers, workers, a publisher, subscribers and
schedulers in separate processes on one file, killed with SIGKILL at random and restarted;
then the history is checked (see ``tools/soak.py``; run it for 10 minutes with
``python tools/soak.py --duration 600`` before a release)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

SOAK = Path(__file__).resolve().parent.parent / "tools" / "soak.py"

pytestmark = pytest.mark.slow


def test_a_45_second_soak_with_random_kills_loses_nothing_and_applies_every_effect_once(
        tmp_path: Path) -> None:
    run_dir = tmp_path / "soak"
    proc = subprocess.run(
        [sys.executable, str(SOAK), "--duration", "45", "--dir", str(run_dir), "--seed", "7",
         "--kill-every", "0.8"],
        capture_output=True, text=True, timeout=600,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    report = json.loads((run_dir / "report.json").read_text())
    summary = output.strip().splitlines()[-1]
    assert re.search(r"lost=0, double effects=0, phantoms=0, overlapping leases=0, "
                     r"wrong deliveries=0, missed fires=0", summary), summary

    # The run did what a soak is for: many messages of every kind, many kills of
    # every role, redeliveries and refused stale acks.
    assert report["queue_messages"] > 1000 and report["tasks"] > 500, summary
    assert report["deliveries"] > 500, summary
    assert report["fires"] >= 40, summary  # one a second, none missed
    assert report["kills"] >= 20, summary
    assert set(report["kills_by_role"]) >= {"producer", "consumer", "worker", "subscriber",
                                            "scheduler"}, summary
    assert report["redeliveries"] > 0 and report["nacks"] > 0, summary
    assert report["integrity"] == "ok" and report["errors"] == 0 and report["dead"] == 0, summary
