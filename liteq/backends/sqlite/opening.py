"""Opening one connection to the database file: checking what the file holds, creating
or migrating the schema under the schema lock, the pragmas, read-only opens, and saying
why an open failed.

:class:`Opening` is a part of :class:`~liteq.backends.sqlite.base.StoreBase`; it runs once per
connection (per thread and process), never on a queue operation.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import apsw
import filelock

from ...errors import DatabaseBusy, LiteqError, SchemaError
from . import schema
from .files import dir_cause, disk_is_full, file_cause, os_cause, read_only_uri, wal_is_empty

__all__ = ["Opening", "DURABILITY", "PAGE_SIZE", "JOURNAL_SIZE_LIMIT"]

#: durability name -> PRAGMA synchronous value. The apsw wheel's SQLite defaults to
#: FULL, so the setting is always made explicitly.
DURABILITY = {"normal": "NORMAL", "full": "FULL"}

#: Page size of a new file, in bytes (SQLite's default is 4,096). At synchronous=NORMAL
#: the cost of a commit follows the bytes it appends to the WAL, and a queue operation
#: changes a few small rows on 3-5 pages: 2,048-byte pages made per-message put +27%
#: and get+ack +15% faster, with no loss up to 16 KB payloads (1,024: 16 KB payloads
#: at half speed). Measured and decided in DESIGN-NOTES.md ("Page size").
PAGE_SIZE = 2048

#: Truncate the WAL back to this size after a checkpoint (64 MiB).
JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024


class Opening:
    """How :class:`~liteq.backends.sqlite.base.StoreBase` opens and checks a connection."""

    if TYPE_CHECKING:
        path: str
        file: str
        read_only: bool
        create: bool
        durability: str
        busy_timeout: float

        def _busy_handler(self) -> Callable[[int], bool]: ...

        def _wal_hook(self, conn: Any, dbname: str, pages: int) -> int: ...

    def _open_read_write(self) -> apsw.Connection:
        real = self.file
        if os.path.exists(real):
            # SQLite would quietly open a file it may not write read-only and fail
            # later, having perhaps created side files: refuse before it starts.
            cause = file_cause(real)
            if cause is not None:
                raise LiteqError(f"cannot open {self.path}: {cause}")
        try:
            # Without create, a file deleted since the check is not made anew.
            flags = apsw.SQLITE_OPEN_READWRITE | (apsw.SQLITE_OPEN_CREATE if self.create else 0)
            conn = apsw.Connection(real, flags=flags)
        except apsw.Error as exc:
            raise LiteqError(f"cannot open {self.path}: {self._cause(exc)}") from exc
        conn.set_busy_handler(self._busy_handler())
        conn.set_wal_hook(self._wal_hook)
        try:
            self._check_and_migrate(conn)
            self._pragmas(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _open_read_only(self) -> apsw.Connection:
        if wal_is_empty(self.file):
            # Every commit is in the main file: judge it from that alone (immutable=1
            # creates nothing), so that a file liteq refuses gets no -wal and -shm
            # from the mode=ro open below.
            self._check_read_only(*self._look_read_only(immutable=True, close=True)[1])
        # mode=ro follows other connections' commits. When it can neither use nor
        # create the -shm (the directory is not writable and no writer has the file
        # open, or the disk is full) and the -wal holds nothing, read the main file as
        # it is (immutable=1), touching no side file.
        try:
            conn, header = self._look_read_only(immutable=False)
        except _NoShm as no_shm:
            if not wal_is_empty(self.file):
                name = os.path.basename(self.file)
                raise LiteqError(
                    f"cannot open {self.path} read-only: SQLite needs {name}-shm beside it "
                    f"to read the commits in {name}-wal, and could not use it: {no_shm}"
                ) from no_shm.__cause__
            conn, header = self._look_read_only(immutable=True)
        try:
            self._check_read_only(*header)
            conn.set_busy_handler(self._busy_handler())
            conn.execute("PRAGMA temp_store = MEMORY")
        except BaseException:
            conn.close()
            raise
        return conn

    def _look_read_only(
        self, *, immutable: bool, close: bool = False
    ) -> tuple[Any, tuple[int, int, list[str]]]:
        """A read-only connection and the file's header; _NoShm when mode=ro could
        not use the -shm; LiteqError for anything else."""
        try:
            conn = apsw.Connection(read_only_uri(self.file, immutable=immutable),
                                   flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI)
        except apsw.Error as exc:
            raise LiteqError(f"cannot open {self.path}: {self._cause(exc)}") from exc
        try:
            header = self._header(conn)
        except (apsw.ReadOnlyError, apsw.CantOpenError, apsw.IOError, apsw.FullError) as exc:
            error: Exception = self._open_error(exc, conn) if immutable else \
                _NoShm(self._cause(exc, conn, looking=True))
            conn.close()
            raise error from exc
        except apsw.Error as exc:
            error = self._open_error(exc, conn)
            conn.close()
            raise error from exc
        if close:
            conn.close()
        return conn, header

    def _check_read_only(self, app_id: int, version: int, names: list[str]) -> None:
        if app_id == schema.APPLICATION_ID and version == schema.SCHEMA_VERSION:
            return
        self._refuse_foreign(app_id, version, names)
        if version == 0 and not names:
            raise LiteqError(f"cannot open {self.path} read-only: it is empty, not a liteq "
                             f"database yet")
        raise LiteqError(
            f"cannot open {self.path} read-only: it has liteq schema version {version}, "
            f"older than this liteq's {schema.SCHEMA_VERSION}; open it read-write once to "
            f"upgrade it"
        )

    def _cause(self, exc: BaseException, conn: Any = None, *, looking: bool = False) -> str:
        """Why an open failed, in words: the OS's reason where SQLite only says "disk
        I/O error" or "unable to open", the directory where it is the directory."""
        code = getattr(exc, "errno", None) or (conn.system_errno if conn is not None else 0)
        denied = code in (errno.EACCES, errno.EPERM) or isinstance(
            exc, apsw.ReadOnlyError | apsw.CantOpenError)
        if denied and not looking:
            cause = dir_cause(self.file)
            if cause is None and os.path.exists(self.file):
                cause = file_cause(self.file)
            if cause is not None:
                return cause
        words = os_cause(code, self.file) if code else None
        if words is None and isinstance(exc, apsw.IOError | apsw.FullError | OSError) \
                and disk_is_full(self.file):
            words = os_cause(errno.ENOSPC, self.file)
        if words is not None:
            return words
        if isinstance(exc, apsw.Error):
            return _reason(exc)
        return str(getattr(exc, "strerror", None) or exc)

    def _open_error(self, exc: apsw.Error, conn: Any) -> LiteqError:
        if isinstance(exc, apsw.NotADBError):
            return LiteqError(
                f"cannot open {self.path}: not a SQLite database (file is not a database)")
        return LiteqError(f"cannot open {self.path}: {self._cause(exc, conn)}")

    def _header(self, conn: Any) -> tuple[int, int, list[str]]:
        # One read transaction: three autocommit reads could straddle another
        # process's schema creation and see tables without the liteq marks.
        conn.execute("BEGIN")
        try:
            app_id = conn.execute("PRAGMA application_id").fetchall()[0][0]
            version = conn.execute("PRAGMA user_version").fetchall()[0][0]
            names = [
                r[0]
                for r in conn.execute(
                    "SELECT name FROM sqlite_schema WHERE name NOT LIKE 'sqlite_%'"
                ).fetchall()
            ]
        finally:
            if conn.in_transaction:
                conn.execute("COMMIT")
        return app_id, version, names

    def _read_header(self, conn: Any) -> tuple[int, int, list[str]]:
        try:
            return self._header(conn)
        except apsw.Error as exc:
            raise self._open_error(exc, conn) from exc

    def _check_and_migrate(self, conn: apsw.Connection) -> None:
        app_id, version, names = self._read_header(conn)
        if app_id == schema.APPLICATION_ID and version == schema.SCHEMA_VERSION:
            return
        self._refuse_foreign(app_id, version, names)
        # New file or an older schema: create/migrate under a file lock so that many
        # processes opening a brand-new file at the same moment all succeed.
        try:
            lock = filelock.FileLock(self.file + ".lock", timeout=max(self.busy_timeout, 1))
            with lock:
                app_id, version, names = self._read_header(conn)
                self._refuse_foreign(app_id, version, names)
                if version < schema.SCHEMA_VERSION:
                    self._migrate(conn, version)
        except filelock.Timeout as exc:
            raise DatabaseBusy(
                f"cannot open {self.path}: timed out waiting for the schema lock {exc.lock_file}"
            ) from exc
        except OSError as exc:
            raise LiteqError(f"cannot open {self.path}: {self._cause(exc)}") from exc

    def _refuse_foreign(self, app_id: int, version: int, names: list[str]) -> None:
        if app_id == schema.APPLICATION_ID:
            if version > schema.SCHEMA_VERSION:
                raise SchemaError(
                    f"{self.path} has liteq schema version {version}, but this liteq "
                    f"understands up to version {schema.SCHEMA_VERSION}: upgrade liteq"
                )
            return
        if app_id != 0 or names or version != 0:
            shown = ", ".join(sorted(names)[:5]) or "none"
            raise LiteqError(
                f"cannot open {self.path}: it is a SQLite database of another application "
                f"(application_id {app_id}, user_version {version}, tables: {shown}); "
                f"liteq leaves it untouched"
            )

    def _migrate(self, conn: apsw.Connection, version: int) -> None:
        try:
            # The page size only takes on a file with no pages yet; then WAL (which
            # cannot change inside a transaction) before the schema.
            if version == 0:
                conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchall()[0][0]
            if str(mode).lower() != "wal":
                raise LiteqError(f"cannot open {self.path}: WAL mode refused (got {mode})")
            conn.execute("BEGIN IMMEDIATE")
            try:
                for step in schema.MIGRATIONS[version:]:
                    conn.execute(step)
                conn.execute(f"PRAGMA application_id = {schema.APPLICATION_ID}")
                conn.execute(f"PRAGMA user_version = {schema.SCHEMA_VERSION}")
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except apsw.Error as exc:
            raise LiteqError(f"cannot open {self.path}: {self._cause(exc, conn)}") from exc

    def _pragmas(self, conn: apsw.Connection) -> None:
        try:
            mode = conn.execute("PRAGMA journal_mode").fetchall()[0][0]
            if str(mode).lower() != "wal":
                conn.execute("PRAGMA journal_mode=WAL").fetchall()
            conn.execute(f"PRAGMA synchronous = {DURABILITY[self.durability]}")
            conn.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}").fetchall()
            conn.execute("PRAGMA temp_store = MEMORY")
            # Workflows: a dependent cancelled by a trigger cancels its own dependents
            # through the same triggers (off by default, SQLite does not recurse).
            conn.execute("PRAGMA recursive_triggers = ON")
            # Touch the file so the -wal exists (the wake-up watches it).
            conn.execute("SELECT count(*) FROM queues").fetchall()
        except apsw.Error as exc:
            raise LiteqError(f"cannot open {self.path}: {self._cause(exc, conn)}") from exc


class _NoShm(Exception):
    """A mode=ro connection could neither use nor create the -shm (its text: why)."""


def _reason(exc: apsw.Error) -> str:
    if isinstance(exc, apsw.CantOpenError):
        return "unable to open the file (missing directory or no permission)"
    if isinstance(exc, apsw.ReadOnlyError):
        return "the file is not writable"
    if isinstance(exc, apsw.NotADBError):
        return "not a SQLite database"
    if isinstance(exc, apsw.CorruptError):
        return "the database file is corrupt"
    text = str(exc)
    return text.split(": ", 1)[1] if ": " in text else text
