"""Fixtures shared by the core queue tests. ``db``, ``clocked_db``, ``clock`` and
``db_target`` (engine-parametrized) live in ``tests/engines.py``; ``db_path`` is the
SQLite file, for tests about SQLite itself."""

from __future__ import annotations

import pytest

# The PostgreSQL server and per-module databases (pg_server, pg_url, pg_schema).
pytest_plugins = ["conftest_pg", "engines"]


@pytest.fixture
def db_path(tmp_path) -> str:
    """A path for a brand-new database file (not created yet)."""
    return str(tmp_path / "test.db")
