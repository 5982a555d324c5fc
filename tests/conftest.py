"""Fixtures shared by the core queue tests: real database files under ``tmp_path``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from helpers import FakeClock

import liteq

# The PostgreSQL server and per-module databases (pg_server, pg_url, pg_schema).
pytest_plugins = ["conftest_pg", "engines"]


@pytest.fixture
def db_path(tmp_path) -> str:
    """A path for a brand-new database file (not created yet)."""
    return str(tmp_path / "test.db")


@pytest.fixture
def db(db_path: str) -> Iterator[liteq.Database]:
    """A fresh liteq database on a real file, with the real clock."""
    database = liteq.connect(db_path)
    yield database
    database.close()


@pytest.fixture
def clock() -> FakeClock:
    """A clock the test advances by hand."""
    return FakeClock()


@pytest.fixture
def clocked_db(db_path: str, clock: FakeClock) -> Iterator[liteq.Database]:
    """A fresh liteq database whose time is ``clock``."""
    database = liteq.connect(db_path, clock=clock)
    yield database
    database.close()
