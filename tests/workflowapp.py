"""The application of the workflow tests that run real ``liteq worker`` processes
(``test_workflow_properties.py``). Its database is ``$LITEQ_DB``.

``wf.step(*inputs, label, behaviour)`` records each start in ``starts`` (at least once)
and, when it succeeds, its label and inputs in ``finishes`` inside the transaction that
acks it (``atomic=True``): a row there is a run that succeeded, exactly once.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from dbsql import sql

import liteq
from liteq.workflow import Failed

db = liteq.connect()

sql(db, "CREATE TABLE IF NOT EXISTS starts (tag TEXT, pid INTEGER, at REAL)")
sql(db, "CREATE TABLE IF NOT EXISTS finishes (tag TEXT, pid INTEGER, at REAL)")


def shown(value: Any) -> Any:
    if isinstance(value, Failed):
        return ["F", value.outcome]
    if isinstance(value, list):
        return [shown(v) for v in value]
    return value


@db.task(name="wf.step", atomic=True, store_result=True, max_attempts=50)
def step(*args: Any) -> int:
    """Fails at once (``liteq.Fail``) when *behaviour* is "fail", else returns *label*."""
    *inputs, label, behaviour = args
    tag = json.dumps([label, shown(inputs)])
    time.sleep(0.05)  # long enough for a SIGKILL to land mid-run now and then
    if behaviour == "fail":
        raise liteq.Fail("it fails")
    sql(db, "INSERT INTO finishes (tag, pid, at) VALUES (?, ?, ?)", (tag, os.getpid(), time.time()))
    return int(label)
