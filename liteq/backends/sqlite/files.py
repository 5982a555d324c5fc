"""The database file on disk: what a path is before anything touches it, the files
SQLite and liteq keep beside it, and why an open failed, in words.

Everything here runs once per connection opened, never on a queue operation.

SQLite facts this module is built on (checked with SQLite 3.54):

* SQLite keeps ``-wal`` and ``-shm`` beside the *real* file (it resolves symlinks), so
  every name derived from the path (the schema lock, the wake-up watch) is derived from
  ``os.path.realpath`` too: two processes opening one new file through a symlink and
  through its real path must agree on one lock.
* Opening a character device, a FIFO or a socket makes SQLite fail with "disk I/O
  error" *after* it created ``PATH-journal`` beside it (and the schema lock would add
  ``PATH.lock``): such paths are refused before either is touched.
* A reader of a WAL database needs the ``-shm`` file. A ``mode=ro`` connection uses an
  existing one even when it may not write it, and creates a missing one when the
  directory allows; it fails with SQLITE_READONLY_DIRECTORY when it can do neither,
  and with SQLITE_IOERR_SHMSIZE on a full disk. With no ``-wal`` content every
  committed transaction is in the main file, which ``immutable=1`` then reads without
  any side file (see :func:`read_only_uri`).
"""

from __future__ import annotations

import errno
import os
import stat
import urllib.parse

from ...errors import LiteqError

__all__ = [
    "resolve", "wal_is_empty", "read_only_uri", "os_cause", "disk_is_full",
    "dir_cause", "file_cause",
]

#: What a path that is not a regular file is, for the error message.
_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
)

#: errno values whose own words say more than SQLite's "disk I/O error".
_ERRNO_WORDS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}


def resolve(path: str, *, read_only: bool) -> str:
    """The real path of the database file *path* (an absolute path as given), after
    checking that it is a regular file, or a new one in an existing directory.

    Raises LiteqError naming *path* and what it is otherwise; nothing is created.
    """
    real = os.path.realpath(path)
    shown = path if real == path else f"{path} (which resolves to {real})"
    try:
        st = os.stat(real)
    except FileNotFoundError:
        parent = os.path.dirname(real)
        if not os.path.isdir(parent):
            raise LiteqError(f"cannot open {shown}: directory {parent} does not exist") from None
        if read_only:
            raise LiteqError(
                f"cannot open {shown}: no such file (a read-only open never creates one)"
            ) from None
        return real
    except OSError as exc:  # EACCES on a directory on the way, ELOOP, ENOTDIR ...
        raise LiteqError(f"cannot open {shown}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        what = next((name for test, name in _KINDS if test(st.st_mode)), "not a regular file")
        raise LiteqError(f"cannot open {shown}: it is {what}, not a database file")
    return real


def wal_is_empty(real: str) -> bool:
    """True when the file's ``-wal`` is missing or empty: every committed
    transaction is then in the main file."""
    try:
        return os.path.getsize(real + "-wal") == 0
    except FileNotFoundError:
        return True
    except OSError:
        return False


def read_only_uri(real: str, *, immutable: bool = False) -> str:
    """The SQLite URI that opens *real* read-only (``mode=ro``).

    ``immutable=1`` reads the main file with no locks and no ``-shm``: only used when
    ``mode=ro`` cannot open the file and the ``-wal`` is empty (see
    :func:`wal_is_empty`). Its view is the file as it is now: a writer that opens the
    file later is not seen by this connection.
    """
    query = "mode=ro&immutable=1" if immutable else "mode=ro"
    return f"file:{urllib.parse.quote(real)}?{query}"


def os_cause(code: int, real: str) -> str | None:
    """Words for the operating system's error *code* (``errno``) met while opening
    *real*, or None when SQLite's own words are as good."""
    if code == errno.ENOSPC:
        return f"no space left on device (the file system holding {os.path.dirname(real)} is full)"
    return _ERRNO_WORDS.get(code)


def disk_is_full(real: str) -> bool:
    """True when the file system holding *real* has no free block left for this user."""
    try:
        return os.statvfs(os.path.dirname(real)).f_bavail == 0
    except OSError:
        return False


def dir_cause(real: str) -> str | None:
    """Why a read-write open of *real* cannot work, when the reason is its directory:
    SQLite creates ``-wal`` and ``-shm`` there, and liteq its schema lock."""
    parent = os.path.dirname(real)
    if os.access(parent, os.W_OK | os.X_OK):
        return None
    name = os.path.basename(real)
    if not os.path.exists(real):
        return (
            f"the directory {parent} is not writable by this user, so the database file "
            f"cannot be created there (SQLite also creates {name}-wal and {name}-shm "
            f"beside it, and liteq {name}.lock): choose a writable directory"
        )
    return (
        f"the directory {parent} is not writable by this user, and SQLite creates "
        f"{name}-wal and {name}-shm beside the database file (liteq also {name}.lock): "
        f"make the directory writable, or open the file read-only (read_only=True; "
        f"the liteq commands that only look do)"
    )


def file_cause(real: str) -> str | None:
    """Why a read-write open of the existing file *real* cannot work, when the file
    itself is not writable (None when it is)."""
    if os.access(real, os.W_OK):
        return None
    return (
        "the file is not writable by this user: open it read-only (read_only=True; the "
        "liteq commands that only look do), or change its permissions"
    )
