"""The SQLite engine's wake-up channel: inotify on the database's ``-wal`` file.

Every commit appends frames to the database's ``-wal`` file, so on Linux a consumer
watches that file with inotify: the kernel wakes it within a fraction of a
millisecond of the producer's write, and the producer pays nothing. Hints can be
spurious (a write to another queue) or, in theory, missed, so the caller always
bounds each wait and polls again (``liteq.wake.Looks``); without inotify (not Linux,
or the watch could not be set) the waiter falls back to polling with a backoff from
1 ms to 50 ms. :class:`Waiter` implements ``liteq.backends.base.Waiter``.
"""

from __future__ import annotations

import os
import time

from ... import inotify
from ...fdwait import wait_readable

__all__ = ["Waiter", "can_watch"]

_POLL_MIN = 0.001
_POLL_MAX = 0.05


def can_watch() -> bool:
    """True if waiters of this process can be woken by inotify (Linux, and not
    turned off with ``$LITEQ_NO_INOTIFY``); else they poll."""
    return inotify.available()


class Waiter:
    """Sleeps until the watched file changes or a timeout passes.

    Call :meth:`arm` before checking for work and :meth:`wait` after finding none:
    a write that lands in between is already queued on the descriptor, so the
    wait returns at once instead of missing it.
    """

    #: A hint comes at the WAL write, before the commit is visible: re-look.
    early = True

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
        # -1 when the file does not exist yet: poll, and try again at the next arm()
        self.fd = inotify.watch(self.path, inotify.IN_MODIFY)

    def arm(self) -> bool:
        """Forget hints received so far; True if there were any. A hint is sent when
        a commit writes the WAL, which is before that commit is visible: a caller who
        looked before arming should look again (see ``Queue.get_many``)."""
        if self.fd >= 0:
            return inotify.drain(self.fd)
        if inotify.available():
            self._watch()
        return False

    def wait(self, timeout: float) -> bool:
        """Return when the file changed (maybe spuriously) or after *timeout* seconds:
        True if woken by a change (a hint: the change may not be visible yet), False
        after the timeout or a poll."""
        if timeout <= 0:
            return False
        if self.fd >= 0:
            readable = wait_readable([self.fd], timeout)
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
