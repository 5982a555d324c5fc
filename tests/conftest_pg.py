"""PostgreSQL for the tests: one server per session, one fresh database per test module.

The server is ``$LITEQ_TEST_PG_URL`` when set (a ``postgresql://`` URL of a role that may
``CREATE DATABASE``), else a throwaway cluster started here (``tests/pgcluster.py``) when
the PostgreSQL binaries and psycopg are installed. Without either the PostgreSQL tests
skip, saying why, unless ``$LITEQ_REQUIRE_PG=1`` (set by ``.ci/run``): then they fail, so
CI can never pass by skipping them.

Registered from ``tests/conftest.py`` (``pytest_plugins``). Tests using these fixtures
get the ``postgres`` marker, so ``pytest -m postgres`` runs just them and
``-m "not postgres"`` leaves them out.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterator
from types import ModuleType
from typing import Any, NoReturn

import pytest
from pgcluster import Cluster, find_bindir, with_dbname

__all__ = ["require_psycopg", "pg_server", "pg_url", "pg_schema", "pg_admin", "unavailable"]

_counter = itertools.count(1)


def _required() -> bool:
    return os.environ.get("LITEQ_REQUIRE_PG", "") not in ("", "0")


def _unavailable(why: str) -> NoReturn:
    if _required():
        pytest.fail(f"LITEQ_REQUIRE_PG is set but no PostgreSQL server: {why}", pytrace=False)
    pytest.skip(f"no PostgreSQL server: {why}")


def unavailable(why: str) -> NoReturn:
    """Skip the calling test for want of PostgreSQL, saying *why* (fail it under
    ``LITEQ_REQUIRE_PG``): for tests that start their own cluster."""
    _unavailable(why)


def require_psycopg() -> ModuleType:
    """psycopg, or skip the calling test module (fail it under ``LITEQ_REQUIRE_PG``)."""
    try:
        import psycopg
    except ImportError as exc:
        if _required():
            raise
        pytest.skip(
            f"psycopg is not installed ({exc}); pip install -e '.[test]'",
            allow_module_level=True,
        )
    return psycopg


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if {"pg_server", "pg_url", "pg_schema"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.postgres)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """The URL of a PostgreSQL server's ``postgres`` database, as a superuser (or the
    role of ``$LITEQ_TEST_PG_URL``)."""
    try:
        import psycopg
    except ImportError as exc:
        _unavailable(f"psycopg is not installed ({exc}); pip install -e '.[test]'")
    url = os.environ.get("LITEQ_TEST_PG_URL")
    if url:
        try:
            psycopg.connect(url, connect_timeout=10).close()
        except psycopg.Error as exc:
            _unavailable(f"LITEQ_TEST_PG_URL={url!r} does not connect: {exc}")
        yield url
        return
    bindir = find_bindir()
    if bindir is None:
        _unavailable(
            "initdb is not installed (apt-get install postgresql, or set LITEQ_TEST_PG_URL)"
        )
    cluster = Cluster(bindir)
    try:
        cluster.start()
    except (RuntimeError, OSError, KeyError) as exc:
        cluster.stop()
        _unavailable(f"could not start a cluster with {bindir}: {exc}")
    try:
        yield cluster.url
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def pg_admin(pg_server: str) -> Iterator[Any]:
    """An autocommit connection to the server's ``postgres`` database, for the tests'
    own checks (``pg_stat_activity``, ``pg_terminate_backend``)."""
    import psycopg

    conn = psycopg.connect(pg_server, autocommit=True)
    yield conn
    conn.close()


@pytest.fixture(scope="module")
def pg_url(request: pytest.FixtureRequest, pg_server: str, pg_admin: Any) -> Iterator[str]:
    """A fresh, empty database for this test module (dropped after it)."""
    module = re.sub(r"[^a-z0-9_]", "_", request.module.__name__.rsplit(".", 1)[-1].lower())
    name = f"liteq_{module}_{os.getpid()}_{next(_counter)}"[:63]
    pg_admin.execute(f'CREATE DATABASE "{name}"')
    yield with_dbname(pg_server, name)
    pg_admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_schema(pg_url: str) -> Iterator[str]:
    """A schema name no other test uses, in this module's database (dropped after)."""
    import psycopg

    name = f"liteq_t{next(_counter)}"
    yield name
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
