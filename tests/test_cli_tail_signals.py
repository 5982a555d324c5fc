"""``liteq tail`` ended by SIGTERM (or SIGHUP) behaves as Ctrl-C: it exits 0 and its
temporary subscription is gone at once. Real processes, real signals."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import PATIENCE
from test_cli import fresh, ok

import liteq


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_tail_ended_by_a_termination_signal_exits_0_and_removes_its_subscription(
        tmp_path: Path, sig: signal.Signals) -> None:
    path = fresh(tmp_path)
    ok(path, "subscribe", "logs", "keep")
    proc = subprocess.Popen([sys.executable, "-m", "liteq", "--db", path, "tail", "logs"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with liteq.connect(path) as db:
        t = db.topic("logs")
        deadline = time.monotonic() + PATIENCE
        while len(t.subscriptions()) < 2:
            assert time.monotonic() < deadline and proc.poll() is None, "tail did not start"
            time.sleep(0.05)
        t.publish("hello", key="a.b")
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=PATIENCE)
        assert proc.returncode == 0, err
        assert "Traceback" not in err
        assert [q.name for q in t.subscriptions()] == ["logs:keep"]
        t.publish("after", key="a.b")
        assert db.queue("logs:keep").stats()["ready"] == 2
