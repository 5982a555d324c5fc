"""Linux's inotify through ctypes: a descriptor that becomes readable when a watched
file changes. Used by the SQLite engine's waiter (the ``-wal`` file) and by
``liteq.turns`` (the turn files); everything else polls.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

__all__ = ["IN_MODIFY", "available", "drain", "watch"]

IN_MODIFY = 0x00000002
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = getattr(os, "O_CLOEXEC", 0o2000000)


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        getattr(lib, "inotify_init1")  # noqa: B009 - probe that the symbols exist
        getattr(lib, "inotify_add_watch")  # noqa: B009
    except (OSError, AttributeError):
        return None
    return lib


_LIBC = _libc()


def available() -> bool:
    """True if this process can be woken by inotify (Linux, and not turned off with
    ``$LITEQ_NO_INOTIFY``)."""
    return _LIBC is not None and not os.environ.get("LITEQ_NO_INOTIFY")


def watch(path: str, mask: int) -> int:
    """A non-blocking descriptor readable when *path* changes as *mask* says; -1 if
    the watch could not be set (no inotify, or the file does not exist yet)."""
    if _LIBC is None:
        return -1
    fd = _LIBC.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
    if fd < 0:
        return -1
    if _LIBC.inotify_add_watch(fd, os.fsencode(path), mask) < 0:
        os.close(fd)
        return -1
    return fd


def drain(fd: int) -> bool:
    """Read every event queued on *fd*; True if there were any."""
    drained = False
    try:
        while os.read(fd, 4096):
            drained = True
    except BlockingIOError:
        pass
    return drained
