"""The worker's counters and its logger, shared by the worker, its hooks and its process
pool. A module of their own so that ``hooks.py`` and ``pool.py`` need not import each
other or ``worker.py`` (imports run one way: worker -> hooks, pool -> counters)."""

from __future__ import annotations

import logging

__all__ = ["COUNTERS", "logger"]

#: The worker's logger (``liteq.worker``).
logger = logging.getLogger("liteq.worker")

#: The counters a StatsHook keeps (and ``on_summary`` receives).
COUNTERS = ("started", "done", "retried", "failed", "cancelled", "released", "lost")
