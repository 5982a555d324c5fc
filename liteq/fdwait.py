"""Waiting for file descriptors to be readable, with ``poll()``: ``select()`` refuses a
descriptor past 1023, which a process with many files or sockets open (a web server) has,
and raised ``ValueError`` in every wait liteq made there (a PostgreSQL listening thread
died of it: ``tests/test_postgres_hot.py`` found it)."""

from __future__ import annotations

import select
from collections.abc import Sequence

__all__ = ["wait_readable"]


def wait_readable(fds: Sequence[int], timeout: float | None) -> list[int]:
    """Those of *fds* ready to read (or at end of file, or in error) within *timeout*
    seconds (None: no limit; below 0: no wait), as ``select.select(fds, [], [],
    timeout)[0]`` would say."""
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    return [fd for fd, _ in poller.poll(None if timeout is None else max(0.0, timeout) * 1000)]
