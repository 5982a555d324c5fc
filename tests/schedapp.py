"""The application the scheduler process tests run in real ``liteq scheduler``
subprocesses. Its database is ``$LITEQ_DB``; like an application at start-up it
declares its schedules on import (every process does, at the same time), the first
fire of each at ``$SCHEDAPP_START``."""

from __future__ import annotations

import os

import liteq
from liteq.scheduler import schedule

db = liteq.connect()  # $LITEQ_DB

_START = float(os.environ["SCHEDAPP_START"])

# misfire="all": a tick that comes late (a loaded test machine) still enqueues every
# fire time, so "none missing" is a property of the scheduler, not of the timing.
schedule(db, "every-second", every=1, start=_START, queue="fires", payload="every",
         misfire="all")
schedule(db, "cron-second", cron="* * * * * *", start=_START, queue="fires", payload="cron",
         misfire="all")
