"""Waking a waiting consumer soon after another process commits.

Every commit appends frames to the database's ``-wal`` file, so on Linux a consumer
watches that file with inotify: the kernel wakes it within a fraction of a
millisecond of the producer's write, and the producer pays nothing. Hints can be
spurious (a write to another queue) or, in theory, missed, so the caller always
bounds each wait and polls again; without inotify (not Linux, or the watch could not
be set) the waiter falls back to polling with a backoff from 1 ms to 50 ms.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import select
import sys
import time
from collections.abc import Callable

__all__ = ["Waiter"]

_IN_MODIFY = 0x00000002
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = getattr(os, "O_CLOEXEC", 0o2000000)

_POLL_MIN = 0.001
_POLL_MAX = 0.05


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


#: After a wake-up whose look without the lock found nothing, look again after these
#: waits (s), then sleep until the next wake-up. A commit becomes visible microseconds
#: after its WAL write at synchronous=NORMAL, ~1-3 ms after it at FULL (the fsync).
RECHECK_AFTER = (0.0002, 0.0008, 0.002, 0.004)


class Looks:
    """How a waiting consumer sleeps after an empty look; shared by
    ``Queue.get_many(wait=...)`` and the worker's idle consumers.

    A hint comes when a commit writes the WAL, before the commit is visible, so a look
    after a wake-up (without the write lock) may miss it: it is repeated after each of
    ``RECHECK_AFTER``, from the start again when another commit wakes the consumer
    meanwhile (a commit landing late in one schedule could otherwise outlast it and wait
    for the periodic re-check). After a wait that timed out the next look claims
    (:attr:`claim`): only a claim promotes due delayed messages and expired leases.
    """

    __slots__ = ("claim", "_rechecks")

    def __init__(self, claim: bool, hinted: bool) -> None:
        #: The next look claims (takes the write lock) instead of probing.
        self.claim = claim
        self._rechecks = 0 if hinted else len(RECHECK_AFTER)

    def sleep(self, wait: Callable[[float], bool], timeout: float, relook: bool = True) -> None:
        """After an empty look: ``wait(seconds)`` (True when woken by a hint) briefly
        while re-looks are left and *relook* (the look found nothing ready), else up
        to *timeout*."""
        if not self.claim and relook and self._rechecks < len(RECHECK_AFTER):
            woken = wait(min(timeout, RECHECK_AFTER[self._rechecks]))
            self._rechecks = 0 if woken else self._rechecks + 1
        else:
            self.claim = not wait(timeout)
            self._rechecks = 0


class Waiter:
    """Sleeps until the watched file changes or a timeout passes.

    Call :meth:`arm` before checking for work and :meth:`wait` after finding none:
    a write that lands in between is already queued on the descriptor, so the
    wait returns at once instead of missing it.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = -1
        self._poll = _POLL_MIN
        if os.environ.get("LITEQ_NO_INOTIFY"):
            return
        self._watch()

    @property
    def uses_inotify(self) -> bool:
        """True when waits are woken by the kernel rather than by polling."""
        return self.fd >= 0

    def _watch(self) -> None:
        if _LIBC is None:
            return
        fd = _LIBC.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        if fd < 0:
            return
        if _LIBC.inotify_add_watch(fd, os.fsencode(self.path), _IN_MODIFY) < 0:
            os.close(fd)  # the file may not exist yet; poll and try again later
            return
        self.fd = fd

    def arm(self) -> bool:
        """Forget hints received so far; True if there were any. A hint is sent when
        a commit writes the WAL, which is before that commit is visible: a caller who
        looked before arming should look again (see ``Queue.get_many``)."""
        drained = False
        if self.fd >= 0:
            try:
                while os.read(self.fd, 4096):
                    drained = True
            except BlockingIOError:
                pass
        elif _LIBC is not None and not os.environ.get("LITEQ_NO_INOTIFY"):
            self._watch()
        return drained

    def wait(self, timeout: float) -> bool:
        """Return when the file changed (maybe spuriously) or after *timeout* seconds:
        True if woken by a change (a hint: the change may not be visible yet), False
        after the timeout or a poll."""
        if timeout <= 0:
            return False
        if self.fd >= 0:
            readable, _, _ = select.select([self.fd], [], [], timeout)
            return bool(readable)
        time.sleep(min(timeout, self._poll))
        self._poll = min(self._poll * 2, _POLL_MAX)
        return False

    def found(self) -> None:
        """Work was found: the next poll starts fast again."""
        self._poll = _POLL_MIN

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass
