"""``liteq web`` as a real process (issue 21): it starts, serves the overview, and stops
cleanly on SIGTERM. On every engine."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
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
        _, err = proc.communicate(timeout=60)  # drains stderr while it waits
        assert proc.returncode == 0, err
        assert "stopped" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_liteq_web_stops_on_sigterm_that_arrives_while_it_writes_a_page(
        db: liteq.Database, db_target: str) -> None:
    # A 1 MB payload of "<" is 4 MB of "&lt;" on its page: more than the socket buffers
    # hold while the client reads nothing, so the server is still writing when the
    # signal comes (wsgiref's handler swallowed an exception raised there).
    mid = db.queue("big").put("<" * 1_000_000)
    env = dict(os.environ, LITEQ_DB=db_target, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "liteq", "web", "--port", "0"], env=env,
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        assert proc.stderr is not None
        m = re.search(r"at http://127\.0\.0\.1:(\d+)/", proc.stderr.readline())
        assert m
        with socket.create_connection(("127.0.0.1", int(m.group(1))), timeout=30) as conn:
            conn.sendall(f"GET /message/{mid} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
            head = b""
            while b"\r\n\r\n" not in head:  # the server has started writing
                head += conn.recv(4096)
            assert head.startswith(b"HTTP/1.0 200")
            time.sleep(0.5)
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            received = len(head)
            while chunk := conn.recv(1 << 16):
                received += len(chunk)
        length = re.search(rb"Content-Length: (\d+)", head)
        assert length and received - head.index(b"\r\n\r\n") - 4 == int(length.group(1))
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
