"""One engine-parametrized fixture for the storage interface's shared test suite.

Tests written against ``liteq.backends.base.Backend`` take ``open_backend`` (a factory:
each call opens another connection set to the same store, as a second process or host
would) or ``backend`` (one opened store), and run once per engine: ``sqlite`` on a file
under ``tmp_path``, ``postgres`` on a fresh schema of a real server (conftest_pg.py). This
is the model of River's driver test suite: what one engine guarantees, the other must.
Registered from ``tests/conftest.py`` (``pytest_plugins``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from liteq.backends.base import Backend

__all__ = ["ENGINES", "open_backend", "backend"]

#: Every engine the shared suite runs on.
ENGINES = ["sqlite", "postgres"]


@pytest.fixture(params=ENGINES)
def open_backend(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Callable[..., Backend]]:
    """``open_backend(**options)``: a new Backend on this test's store (same engine, same
    data each call); every one opened is closed after the test."""
    opened: list[Backend] = []
    if request.param == "sqlite":
        from liteq.backends.sqlite import SQLiteBackend

        path = str(tmp_path / "engine.db")

        def opener(**options: Any) -> Backend:
            opened.append(SQLiteBackend(path, **options))
            return opened[-1]
    else:
        from conftest_pg import require_psycopg

        require_psycopg()
        url = request.getfixturevalue("pg_url")
        schema = request.getfixturevalue("pg_schema")
        from liteq.backends.postgres import PostgresBackend

        def opener(**options: Any) -> Backend:
            opened.append(PostgresBackend(url, schema=schema, **options))
            return opened[-1]

    yield opener
    for b in reversed(opened):
        b.close()


@pytest.fixture
def backend(open_backend: Callable[..., Backend]) -> Backend:
    """One opened Backend of the engine under test."""
    return open_backend()
