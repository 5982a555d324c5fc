"""A queue's :meth:`~liteq.Queue.stats`: the engine's counts, as the dict the API, the
CLI and the dashboard show."""

from __future__ import annotations

from typing import Any

from .backends.records import QueueStats
from .options import QueueConfig

__all__ = ["stats_dict"]


def stats_dict(name: str, st: QueueStats, config: QueueConfig, now: float) -> dict[str, Any]:
    """Queue *name*'s counts *st* and options *config* at time *now* (the database's
    clock), under the keys :meth:`~liteq.Queue.stats` documents."""
    oldest = st.oldest_ready_at
    return {
        "queue": name,
        "ready": st.ready,
        "delayed": st.delayed,
        "leased": st.leased,
        "expired_leases": st.expired_leases,
        "done": st.done,
        "dead": st.dead,
        "cancelled": st.cancelled,
        "depth": st.depth,
        "max_depth": st.max_depth,
        "oldest_ready_age": max(0.0, now - oldest) if oldest is not None else None,
        "enqueued_total": st.enqueued,
        "acked_total": st.finished,
        "paused": config.paused,
        "rate_limit": None if config.rate_limit is None else str(config.rate_limit),
        "limited_running": st.limited_running,
        "held": st.held,
    }
