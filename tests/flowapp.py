"""The app of the flow-control worker tests (tests/test_flow_limits.py): tasks under a
concurrency cap, a per-key cap and a rate limit. Each writes ``start``/``end`` lines
(with its pid and the wall time) to ``$FLOW_LOG``, opened O_APPEND: one ``write`` per
line, so lines from any number of processes never interleave."""

from __future__ import annotations

import os
import time

import liteq

db = liteq.connect(os.environ["LITEQ_DB"])
#: Seconds each capped or keyed job runs.
RUN = float(os.environ.get("FLOW_RUN", "0.05"))


def log(*parts: object) -> None:
    """One line to $FLOW_LOG."""
    fd = os.open(os.environ["FLOW_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (" ".join(str(p) for p in parts) + "\n").encode())
    finally:
        os.close(fd)


@db.task(name="capped", queue="capped", max_concurrency=2)
def capped(i: int) -> None:
    log("start", i, "-", os.getpid(), time.time())
    time.sleep(RUN)
    log("end", i, "-", os.getpid(), time.time())


@db.task(name="keyed", queue="keyed", max_concurrency=1,
         concurrency_key=lambda user, i: f"user:{user}")
def keyed(user: int, i: int) -> None:
    log("start", i, user, os.getpid(), time.time())
    time.sleep(RUN)
    log("end", i, user, os.getpid(), time.time())


@db.task(name="rated", queue="rated", rate_limit="50/s")
def rated(i: int) -> None:
    log("start", i, "-", os.getpid(), time.time())
