"""Taking turns to wait: of the idle consumers of a queue on one host, one is woken by
a commit.

Every commit wakes every waiter (inotify on SQLite's ``-wal`` file, NOTIFY on
PostgreSQL). With several idle consumers of one queue, each new message then had every
one of them look for it: one claimed it, the others took SQLite's write lock (or made
a round trip to PostgreSQL) for nothing, while the producer waited behind them.
Measured with 4 consumer processes and a producer paced at 3,000 puts/s (SQLite): 0.6-0.7
claims that found nothing per message, 222-237 us of consumer CPU per message; with
turns 0.29 and 140-142 us.

So the waiters of a queue (of a set of queues: a worker's consumer watches several)
take turns. The one holding the turn waits for commits; the others wait for the turn.
The turn is an exclusive ``flock`` on a small file named after the database
(``Backend.identity``) and the queues, in a private directory under the temporary
directory. The holder keeps it across empty looks and passes it on when its wait ends:
after a claim that found work (that claim has committed, so the next holder's first
look sees only what is left), at its deadline, or on a stop. Passing writes a byte to
the file, which wakes the others through inotify; the first to lock it holds the turn
and looks for work at once.

Correctness never rests on turns. Every wait stays bounded, and a waiter whose wait ran
out claims as before (``liteq.wake.Looks``); the kernel drops the lock of a process that
dies, and another waiter takes the turn at its next bounded look (at most a second).
Waiters that do not share the directory (another host, a private ``/tmp``) each wait
for commits, as every waiter did before. Where turns cannot be had (not Linux,
``$LITEQ_NO_INOTIFY``, a directory that is not ours) every waiter waits for commits.
``liteq.aio`` waits for commits without turns.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import stat
import tempfile
import time
import weakref
from collections.abc import Sequence

from . import inotify
from .fdwait import wait_readable

__all__ = ["Turn", "open_turn"]

# Every open Turn of this process, so that a forked child can close its copies of their
# descriptors: the lock belongs to the open file, which a copy shares, so a child's copy
# of a held turn's descriptor would keep the turn held after the parent died.
_OPEN: weakref.WeakSet[Turn] = weakref.WeakSet()


def _forked() -> None:
    for turn in list(_OPEN):
        turn.abandon()
    _OPEN.clear()


os.register_at_fork(after_in_child=_forked)


def _directory() -> str | None:
    """This user's turn directory (made 0700), or None if it cannot be trusted: it
    must be a real directory owned by this user that no one else can write to."""
    path = os.path.join(tempfile.gettempdir(), f"liteq-turns-{os.getuid()}")
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError:
        return None
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o022:
        return None
    return path


def open_turn(database: str, key: str) -> Turn | None:
    """This thread's place in the turns of the waiters on *key* (queue ids) of
    *database* (``Backend.identity``); None where turns cannot be had."""
    if not inotify.available():
        return None
    directory = _directory()
    if directory is None:
        return None
    name = hashlib.sha1(f"{database}\0{key}".encode()).hexdigest()[:24]
    try:
        turn = Turn(os.path.join(directory, name))
    except OSError:
        return None
    return turn if turn.fd >= 0 else None


class Turn:
    """One thread's place in one key's turns: :meth:`take` before waiting for commits,
    :meth:`wait` for the turn when another waiter holds it, :meth:`pass_on` when the
    wait for work ends."""

    __slots__ = ("path", "fd", "watch", "held", "__weakref__")

    def __init__(self, path: str) -> None:
        self.path = path
        self.held = False
        self.watch = -1
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        self.watch = inotify.watch(path, inotify.IN_MODIFY)
        if self.watch < 0:
            os.close(self.fd)
            self.fd = -1
        else:
            _OPEN.add(self)

    def take(self) -> bool:
        """True if this thread holds the turn (already, or from now on)."""
        if self.held:
            return True
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            return False
        self.held = True
        return True

    def wait(self, timeout: float, also: Sequence[int] = ()) -> bool:
        """Wait up to *timeout* seconds for the turn: True once this thread holds it
        (look for work now), False when the time ran out first or one of the
        descriptors *also* became readable (a stop: the caller looks why)."""
        deadline = time.monotonic() + timeout
        watched = [self.watch, *also]
        while True:
            inotify.drain(self.watch)  # before trying: a pass from now on wakes us
            if self.take():
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            readable = wait_readable(watched, left)
            if not readable:
                return self.take()
            if any(fd in readable for fd in also):
                return False

    def pass_on(self) -> None:
        """Let go of the turn, if this thread holds it, and wake the other waiters."""
        if not self.held:
            return
        self.held = False
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        try:
            os.pwrite(self.fd, b"\0", 0)
        except OSError:
            pass  # a full disk: the others find the turn free at their next look

    def close(self) -> None:
        """Let go and close. A file no one else has locked is removed (a waiter that
        opened it meanwhile takes turns on the removed file until it reopens: it then
        waits for commits, as without turns)."""
        if self.fd < 0:
            return
        self.pass_on()
        if self.take():
            try:
                os.unlink(self.path)
            except OSError:
                pass
            self.pass_on()
        self.abandon()

    def abandon(self) -> None:
        """Close the descriptors without letting go (a forked child's copies: the lock
        stays the parent's), and drop out of the turns."""
        for fd in (self.watch, self.fd):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.fd = self.watch = -1
        self.held = False

    def __del__(self) -> None:  # pragma: no cover - best effort (a thread that ended)
        try:
            self.pass_on()
        finally:
            self.abandon()
