"""A throwaway PostgreSQL cluster for the tests: ``initdb`` into a temporary directory,
``pg_ctl start`` on a free port of 127.0.0.1, ``pg_ctl stop -m immediate`` at the end.

Started once per test session by ``tests/conftest_pg.py``. About 2 s on this machine;
``fsync=off`` and ``--no-sync`` because the data is thrown away (durability is what
the SQLite crash tests and ``synchronous_commit`` settings are about, not this disk).
``bench/bench_postgres.py`` starts one with ``Cluster(bindir, fsync=True)``: a benchmark
measures what a user's server does, and no user runs with ``fsync=off``.

As root (CI, this machine's image) the cluster runs as the ``postgres`` user, which the
server insists on; as anyone else it runs as that user.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from urllib.parse import urlsplit, urlunsplit

__all__ = ["Cluster", "find_bindir", "with_dbname"]


def find_bindir() -> str | None:
    """The directory of ``initdb`` and ``pg_ctl`` (the newest Debian install, else the
    ``PATH``), or None when PostgreSQL is not installed."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(p.split("/")[-3]) if p.split("/")[-3].isdigit() else 0,
    )
    if found:
        return os.path.dirname(found[-1])
    initdb = shutil.which("initdb")
    return os.path.dirname(initdb) if initdb else None


def with_dbname(url: str, dbname: str) -> str:
    """*url* (``postgresql://...``) naming database *dbname* instead."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + dbname))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """One running throwaway cluster; :attr:`url` reaches its ``postgres`` database as
    the superuser ``postgres`` (trust authentication, TCP on 127.0.0.1 only)."""

    def __init__(self, bindir: str, fsync: bool = False) -> None:
        self.bindir = bindir
        #: The server's ``fsync`` setting (off for the tests: nothing is kept).
        self.fsync = fsync
        # Short: the socket path (DIR/.s.PGSQL.PORT) must fit in 107 bytes.
        self.dir = tempfile.mkdtemp(prefix="liteq-pg-")
        self.data = os.path.join(self.dir, "data")
        self.log = os.path.join(self.dir, "server.log")
        self.port = 0
        self.url = ""
        self._as: list[str] = []
        self._options = ""
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self._as, *args], capture_output=True, text=True, timeout=120, check=False
        )

    def start(self) -> Cluster:
        """``initdb`` and start; raises RuntimeError with the server's own words."""
        done = self._run(
            os.path.join(self.bindir, "initdb"), "-D", self.data, "-U", "postgres",
            "-A", "trust", "--no-sync", "-E", "UTF8",
        )
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed: {done.stderr.strip() or done.stdout.strip()}")
        for _attempt in range(3):  # another process may take the free port first
            self.port = _free_port()
            options = (
                f"-k {self.data} -c listen_addresses=127.0.0.1 -p {self.port} "
                f"-c fsync={'on' if self.fsync else 'off'} -c max_connections=200"
            )
            done = self._run(
                os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-w", "-t", "60",
                "-o", options, "-l", self.log, "start",
            )
            if done.returncode == 0:
                self._options = options
                self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
                return self
        raise RuntimeError(f"pg_ctl start failed: {self._log_tail()}")

    def restart(self) -> None:
        """``pg_ctl restart -m fast``: every session is ended, the server stops and
        starts again on the same port (about 0.2 s here)."""
        done = self._run(
            os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-w", "-t", "60", "-m", "fast",
            "-o", self._options, "-l", self.log, "restart",
        )
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl restart failed: {self._log_tail()}")

    def _log_tail(self) -> str:
        try:
            with open(self.log) as f:
                return f.read()[-2000:].strip()
        except OSError as exc:
            return str(exc)

    def stop(self) -> None:
        """Stop at once (``-m immediate``: nothing to keep) and delete the directory."""
        if os.path.exists(os.path.join(self.data, "postmaster.pid")):
            self._run(os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-m", "immediate", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)
