"""``liteq web`` as a real process (issue 21): it starts, serves the overview, and stops
cleanly on SIGTERM. On every engine."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import urllib.request

import pytest

import liteq

pytestmark = pytest.mark.every_engine


def test_liteq_web_starts_serves_the_overview_and_stops_on_sigterm(
        db: liteq.Database, db_target: str) -> None:
    db.queue("emails").put_many([1, 2, 3])
    env = dict(os.environ, LITEQ_DB=db_target, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "liteq", "web", "--port", "0"], env=env,
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()  # the process says where it listens once it does
        m = re.search(r"at (http://127\.0\.0\.1:\d+/) \(read-only", line)
        assert m, line
        with urllib.request.urlopen(m.group(1), timeout=30) as resp:
            page = resp.read().decode()
        assert resp.status == 200 and 'href="/queue/emails"' in page
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert "stopped" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
