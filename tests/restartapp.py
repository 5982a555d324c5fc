"""The application of the PostgreSQL restart tests (``tests/test_postgres_restart.py``),
run by real ``liteq worker`` and ``liteq scheduler`` subprocesses. Its database is
``$LITEQ_DB``, a ``postgresql://`` URL; the test creates the ``restart_done`` table.
"""

from __future__ import annotations

import os

import liteq

db = liteq.connect()  # $LITEQ_DB


@db.task(name="restart.record", queue="work", atomic=True)
def record(n: int) -> None:
    """Note that job (id) ran for *n*, in the transaction that acks it: a row per
    completed job, so two rows of one job id would be a job completed twice."""
    job = liteq.current_job()
    assert job is not None
    db.execute("INSERT INTO restart_done (n, job, pid) VALUES (%s, %s, %s)",
               (n, job.id, os.getpid()))
