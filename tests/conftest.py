"""Fixtures shared by the core queue tests. ``db``, ``clocked_db``, ``clock`` and
``db_target`` (engine-parametrized) live in ``tests/engines.py``; ``db_path`` is the
SQLite file, for tests about SQLite itself."""

from __future__ import annotations

import os

import pytest

# The user's own settings must not reach the tests or the processes they start: with
# LITEQ_DB naming the user's database, a worker test's subprocess would open that file
# instead of the test's (the README's test command is run with LITEQ_DB set). Tests that
# need these variables set them themselves (monkeypatch or a child's env).
for _name in ("LITEQ_DB", "LITEQ_DURABILITY"):
    os.environ.pop(_name, None)

# The PostgreSQL server and per-module databases (pg_server, pg_url, pg_schema); the
# Django project of the Django backend's tests (django_project, django_target).
pytest_plugins = ["conftest_pg", "engines", "djangoproject"]


@pytest.fixture
def db_path(tmp_path) -> str:
    """A path for a brand-new database file (not created yet)."""
    return str(tmp_path / "test.db")
