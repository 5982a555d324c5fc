"""The PostgreSQL engine's waiter: a non-blocking pipe that the process's listening
thread (``notifier.Listener``) writes a byte to when a notification arrives, so that
``Waiter.fd`` is selectable like the SQLite engine's inotify descriptor. The module
docstring of notifier.py says how wake-up works; moved out of it as it grew."""

from __future__ import annotations

import os
import time
import weakref
from typing import Any

from ...fdwait import wait_readable

__all__ = ["PIPE_FLAGS", "Waiter"]

#: Flags of every pipe of the wake-up channel (a waiter's, the listener's poke pipe).
PIPE_FLAGS = os.O_NONBLOCK | os.O_CLOEXEC


class Waiter:
    """Woken (``fd`` readable) by any commit that notifies this schema; implements
    ``liteq.backends.base.Waiter``. Made by :meth:`Notifier.waiter`; the caller owns it."""

    #: Hints never precede their commit (see "Every hint follows its commit").
    early = False

    def __init__(self, owner: Any) -> None:  # a notifier.Notifier (not imported: no cycle)
        #: Readable when a hint arrived since the last :meth:`arm`; -1 once closed.
        self.fd = -1
        self._w = -1
        # Weak: a registered waiter must not keep a dropped backend (and its sessions) alive.
        self._owner: weakref.ref[Any] | None = weakref.ref(owner)
        self._listener: Any = None  # its notifier.Listener while attached
        self._pid = 0
        self._hinted = False  # a byte is in the pipe (guarded by the listener's lock)
        self._attach()

    def _attach(self) -> None:
        owner = self._owner() if self._owner is not None else None
        if owner is None:
            return  # closed, or its backend is gone: wait() sleeps, arm() says False
        listener = owner.listener()
        self.fd, self._w = os.pipe2(PIPE_FLAGS)
        self._pid = os.getpid()
        self._hinted = False
        self._listener = listener
        owner.track(self)
        listener.add(self)

    def _release(self) -> None:
        """Unregister and close the pipe (the listener or backend is going away, or the
        owner closes it). In a forked child, only the child's copies are closed."""
        listener, self._listener = self._listener, None
        if listener is not None and self._pid == os.getpid():
            with listener.lock:
                listener.discard(self)
                self._close_fds()
        else:
            self._close_fds()

    def _close_fds(self) -> None:
        for fd in (self.fd, self._w):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.fd = self._w = -1

    def signal(self) -> None:
        """Write the hint byte unless one is unread (called under the listener's lock)."""
        if not self._hinted and self._w >= 0:
            try:
                os.write(self._w, b"\x01")
                self._hinted = True
            except OSError:
                pass  # full (cannot be, one byte at most) or closed: nothing to wake

    def arm(self) -> bool:
        """Forget hints received so far; True if there were any (look again)."""
        listener = self._listener
        if listener is not None and self._pid == os.getpid():
            with listener.lock:
                if self._listener is listener and self.fd >= 0:
                    drained = False
                    try:
                        while os.read(self.fd, 64):
                            drained = True
                    except BlockingIOError:
                        pass
                    self._hinted = False
                    return drained
        if self._owner is None or self._owner() is None:
            return False  # closed by its owner, or its backend is gone
        # Detached by the backend's close(), or made in the parent before a fork: a new
        # pipe on this process's listener. Look again, as after a hint.
        self._release()
        self._attach()
        return True

    def wait(self, timeout: float) -> bool:
        """Block until a hint or *timeout* seconds: True if woken by a hint (a commit
        that notified; it may be another queue's), False after the timeout."""
        if timeout <= 0:
            return False
        if self.fd < 0 or self._pid != os.getpid():
            time.sleep(min(timeout, 0.05))  # closed, or the parent's: arm() attaches
            return False
        try:
            readable = wait_readable([self.fd], timeout)
        except (OSError, ValueError):
            return False  # closed meanwhile by the backend's close() in another thread
        return bool(readable)

    def found(self) -> None:
        """Nothing to do: this waiter never polls."""

    def close(self) -> None:
        """Unregister and close the pipe; the waiter is not used afterwards."""
        self._owner = None
        self._release()

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass
