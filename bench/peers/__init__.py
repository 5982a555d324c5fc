"""Adapters that give liteq, raw apsw and the peer queues one small interface.

``SYSTEMS`` maps a system's name to its adapter class; ``open_system(name, dir,
sync)`` opens one on a fresh directory. Each adapter states how it sets SQLite's
``synchronous`` (and whether its API lets you), which is read back from the live
connection and reported with the results.
"""

from __future__ import annotations

from .base import Peer
from .huey_storage import HueyStorage
from .liteq_queue import LiteqQueue
from .litequeue_peer import LiteQueuePeer
from .persist_queue import PersistQueue
from .raw_apsw import RawApsw
from .raw_minimal import RawMinimal

__all__ = ["Peer", "SYSTEMS", "PEERS", "open_system"]

#: Every system compared, in table order: liteq, the two raw references (the minimal
#: queue the targets are measured against, and the feature-parity one), then the peers.
SYSTEMS: dict[str, type[Peer]] = {
    "liteq": LiteqQueue,
    "raw-minimal": RawMinimal,
    "raw": RawApsw,
    "huey": HueyStorage,
    "persist-queue": PersistQueue,
    "litequeue": LiteQueuePeer,
}

#: The peers (what "best peer" is taken over).
PEERS = ["huey", "persist-queue", "litequeue"]


def open_system(name: str, directory: str, sync: str) -> Peer:
    """Open system *name* on its own file in *directory* at ``synchronous=sync``."""
    return SYSTEMS[name](directory, sync)
