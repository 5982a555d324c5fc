"""The application of the workers-registry tests (issue 21), run by real ``liteq worker``
subprocesses on ``$LITEQ_DB``: a task that reports progress, then waits."""

from __future__ import annotations

import time

import liteq

db = liteq.connect()


@db.task(name="app.resize", queue="images")
def resize(seconds: float) -> None:
    """Reports 40 %, then takes *seconds*."""
    job = liteq.current_job()
    assert job is not None
    job.progress(0.4, "resized 40 of 100")
    time.sleep(seconds)


@db.task(name="app.report", queue="reports")
def report(seconds: float) -> None:
    """Takes *seconds*, reporting nothing."""
    time.sleep(seconds)
