"""Engine-parametrized fixtures: one behavioural suite, run on every engine.

Two levels:

* **Backend** (the storage interface's own suite): ``open_backend`` (a factory: each call
  opens another connection set to the same store, as a second process or host would) and
  ``backend`` (one opened store), always on both engines (``ENGINES``). This is the model
  of River's driver test suite: what one engine guarantees, the other must.
* **Database** (the behavioural suite: queues, tasks, workers, the CLI...): ``engine``,
  ``db_target`` (what ``liteq.connect`` and ``--db`` take: a file path under
  ``tmp_path`` on SQLite, ``postgresql://...?schema=...`` naming a fresh schema on
  PostgreSQL), and ``db`` / ``clocked_db`` opened on it. A module opts in with
  ``pytestmark = pytest.mark.every_engine``; its tests then run once per engine listed in
  ``$LITEQ_TEST_ENGINES`` (comma-separated, default both). A test there that is about
  SQLite itself carries ``@pytest.mark.sqlite_only("why")`` and runs on SQLite only; the
  collection check below refuses a test of such a module that builds a database file
  (requests ``db_path``, names ``tmp_path / "....db"``, or calls the CLI tests'
  ``fresh(tmp_path)``) without that marker. Modules that
  have not opted in run their ``db`` tests on SQLite only.

The default is both engines. ``LITEQ_TEST_ENGINES=sqlite`` runs the suite on SQLite alone
(no PostgreSQL server needed); ``-m postgres`` / ``-m "not postgres"`` select one engine's
runs (every PostgreSQL-parametrized test carries the ``postgres`` marker).

Registered from ``tests/conftest.py`` (``pytest_plugins``).
"""

from __future__ import annotations

import inspect
import os
import re
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import pytest
from helpers import FakeClock

import liteq
from liteq.backends.base import Backend

__all__ = [
    "ENGINES",
    "engines_under_test",
    "open_backend",
    "backend",
    "engine",
    "db_target",
    "db",
    "clocked_db",
]

#: Every engine there is.
ENGINES = ["sqlite", "postgres"]

#: A database file built by hand from ``tmp_path`` (the collection check's second test;
#: ``fresh`` is test_cli.py's helper naming one).
_FILE_DB = re.compile(r"tmp_path\s*/\s*[\"'][^\"']*\.db[\"']|\bfresh\(tmp_path\)")


def engines_under_test() -> list[str]:
    """The engines named by ``$LITEQ_TEST_ENGINES`` (default: every engine), in order."""
    raw = os.environ.get("LITEQ_TEST_ENGINES", "") or ",".join(ENGINES)
    names = [name.strip() for name in raw.split(",") if name.strip()]
    unknown = [name for name in names if name not in ENGINES]
    if unknown or not names:
        raise pytest.UsageError(
            f"LITEQ_TEST_ENGINES={raw!r}: expected a comma-separated list of {', '.join(ENGINES)}"
        )
    return list(dict.fromkeys(names))


def _every_engine(node: Any) -> bool:
    return node.get_closest_marker("every_engine") is not None


def _sqlite_only(node: Any) -> bool:
    return node.get_closest_marker("sqlite_only") is not None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "engine" not in metafunc.fixturenames:
        return
    node = metafunc.definition
    if _every_engine(node) and not _sqlite_only(node):
        engines = engines_under_test()
    else:
        engines = ["sqlite"]
    metafunc.parametrize("engine", engines, indirect=True)


def _builds_a_file(item: pytest.Item) -> bool:
    if "db_path" in getattr(item, "fixturenames", ()):
        return True
    try:
        source = inspect.getsource(item.obj)  # type: ignore[attr-defined]
    except (AttributeError, OSError, TypeError):
        return False
    return bool(_FILE_DB.search(source))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    unmarked = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("engine") == "postgres":
            item.add_marker(pytest.mark.postgres)
        marker = item.get_closest_marker("sqlite_only")
        if marker is not None and not (marker.args and str(marker.args[0]).strip()):
            unmarked.append(f"{item.nodeid}: sqlite_only needs a reason, sqlite_only(\"why\")")
        elif _every_engine(item) and marker is None and _builds_a_file(item):
            unmarked.append(
                f"{item.nodeid}: builds a SQLite file in an every_engine module; take "
                "db_target/db instead, or mark it @pytest.mark.sqlite_only(\"why\")"
            )
    if unmarked:
        raise pytest.UsageError("\n".join(unmarked))


# -- Backend level ------------------------------------------------------------------------


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


# -- Database level -----------------------------------------------------------------------


@pytest.fixture
def engine(request: pytest.FixtureRequest) -> str:
    """The engine this test runs on: ``sqlite`` or ``postgres`` (parametrized by
    ``pytest_generate_tests`` above, from ``$LITEQ_TEST_ENGINES``; default both)."""
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture
def db_target(request: pytest.FixtureRequest, engine: str, tmp_path: Any) -> str:
    """What ``liteq.connect()`` and ``liteq --db`` take for a brand-new, empty database:
    on SQLite the file ``tmp_path/test.db`` (not created yet; the same path as
    ``db_path``), on PostgreSQL ``postgresql://...?schema=NAME`` for a schema no other
    test uses (dropped after the test)."""
    if engine == "sqlite":
        return str(tmp_path / "test.db")
    from conftest_pg import require_psycopg

    require_psycopg()
    url = request.getfixturevalue("pg_url")
    schema = request.getfixturevalue("pg_schema")
    parts = urlsplit(url)
    query = "&".join(q for q in (parts.query, urlencode({"schema": schema})) if q)
    return urlunsplit(parts._replace(query=query))


@pytest.fixture
def db(db_target: str) -> Iterator[liteq.Database]:
    """A fresh liteq database on the engine under test, with the real clock."""
    database = liteq.connect(db_target)
    yield database
    database.close()


@pytest.fixture
def clock() -> FakeClock:
    """A clock the test advances by hand."""
    return FakeClock()


@pytest.fixture
def clocked_db(db_target: str, clock: FakeClock) -> Iterator[liteq.Database]:
    """A fresh liteq database on the engine under test whose time is ``clock``."""
    database = liteq.connect(db_target, clock=clock)
    yield database
    database.close()
