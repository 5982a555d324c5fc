"""One URL picks the engine (issue 17, step B6): ``liteq.connect("postgresql://...")``,
``$LITEQ_DB`` and ``liteq --db URL`` open PostgreSQL; a path opens SQLite; an option
only one engine knows is refused on the other; a password is never shown.

Against a real server (``tests/conftest_pg.py``); each test gets its own schema. The
tests that need no server (refusals, the missing-driver message) run everywhere.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from click.testing import CliRunner

import liteq
from liteq.cli import cli
from liteq.errors import InvalidArgument, LiteqError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECRET = "s3cr3t-pw"


def with_password(url: str, password: str = SECRET) -> str:
    """*url* (``postgresql://USER@HOST...``) with *password* in its user part (the test
    server trusts every connection, so any password works)."""
    scheme, rest = url.split("://", 1)
    user, host = rest.split("@", 1)
    return f"{scheme}://{user}:{password}@{host}"


@pytest.fixture
def url(pg_url: str, pg_schema: str) -> str:
    """A URL of this module's database, naming this test's schema, with a password."""
    pytest.importorskip("psycopg")
    return f"{with_password(pg_url)}?schema={pg_schema}"


@pytest.fixture
def pg_db(url: str) -> Iterator[liteq.Database]:
    database = liteq.connect(url)
    yield database
    database.close()


# -- opening by URL ------------------------------------------------------------------


def test_connect_by_url_opens_postgresql_and_runs_sql(pg_db: liteq.Database) -> None:
    assert pg_db.backend.capabilities.engine == "postgres"
    assert pg_db.execute("SELECT 1") == [(1,)]


def test_postgres_scheme_is_taken_as_well_as_postgresql(pg_url: str, pg_schema: str) -> None:
    pytest.importorskip("psycopg")
    short = "postgres://" + pg_url.split("://", 1)[1]
    with liteq.connect(short, schema=pg_schema) as db:
        assert db.backend.capabilities.engine == "postgres"
        assert db.execute("SELECT %s::int + 1", (1,)) == [(2,)]


def test_the_schema_in_the_url_is_the_schema_liteq_uses(pg_db: liteq.Database, pg_schema: str) -> None:
    found = pg_db.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = %s", (pg_schema,)
    )
    assert found[0][0] > 0


def test_a_transaction_commits_application_sql_with_percent_placeholders(
    pg_db: liteq.Database, pg_schema: str
) -> None:
    pg_db.execute(f"CREATE TABLE {pg_schema}.orders (id int PRIMARY KEY, what text)")
    with pg_db.transaction():
        pg_db.execute(f"INSERT INTO {pg_schema}.orders VALUES (%s, %s)", (1, "book"))
    assert pg_db.execute(f"SELECT id, what FROM {pg_schema}.orders") == [(1, "book")]


def test_a_transaction_that_raises_rolls_back_application_sql(
    pg_db: liteq.Database, pg_schema: str
) -> None:
    pg_db.execute(f"CREATE TABLE {pg_schema}.orders (id int PRIMARY KEY)")
    with pytest.raises(RuntimeError), pg_db.transaction():
        pg_db.execute(f"INSERT INTO {pg_schema}.orders VALUES (%s)", (1,))
        raise RuntimeError("the app changed its mind")
    assert pg_db.execute(f"SELECT count(*) FROM {pg_schema}.orders") == [(0,)]


def test_the_password_appears_in_neither_path_nor_repr(pg_db: liteq.Database, url: str) -> None:
    assert SECRET in url
    assert SECRET not in pg_db.path
    assert SECRET not in repr(pg_db)
    assert pg_db.path.startswith("postgresql://")
    assert pg_db.real_path is None


def test_the_password_does_not_appear_in_an_error_about_the_server(pg_url: str) -> None:
    pytest.importorskip("psycopg")
    # A port nothing listens on (1 is privileged and unused here).
    host = pg_url.split("@", 1)[1].split("/", 1)[0].rsplit(":", 1)[0]
    bad = f"postgresql://liteq:{SECRET}@{host}:1/nothing?connect_timeout=2"
    with pytest.raises(LiteqError) as caught:
        liteq.connect(bad)
    assert SECRET not in str(caught.value)
    assert "liteq@" in str(caught.value)


def test_create_false_refuses_a_schema_that_does_not_exist_yet(url: str, pg_url: str) -> None:
    with pytest.raises(LiteqError, match="no liteq schema"):
        liteq.connect(url, create=False)
    import psycopg

    with psycopg.connect(pg_url) as conn:  # nothing was created
        schema = url.rsplit("schema=", 1)[1]
        row = conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = %s", (schema,))
        assert row.fetchone() == (0,)


def test_create_false_opens_a_schema_that_exists(url: str) -> None:
    liteq.connect(url).close()
    with liteq.connect(url, create=False) as db:
        assert db.execute("SELECT 1") == [(1,)]


def test_liteq_db_may_be_a_url(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LITEQ_DB", url)
    with liteq.connect() as db:
        assert db.backend.capabilities.engine == "postgres"
        assert db.execute("SELECT 1") == [(1,)]


# -- refusals and the missing driver (no server needed) -------------------------------


def test_schema_is_refused_for_a_sqlite_file(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "app.db")
    with pytest.raises(InvalidArgument, match="schema= .* is a PostgreSQL option.*SQLite"):
        liteq.connect(path, schema="jobs")
    assert not os.path.exists(path)


def test_a_url_of_another_scheme_is_refused_without_its_password(tmp_path: os.PathLike[str]) -> None:
    with pytest.raises(InvalidArgument, match="URL scheme 'mysql'") as caught:
        liteq.connect(f"mysql://me:{SECRET}@host/db")
    assert SECRET not in str(caught.value)


def test_a_schema_named_twice_differently_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="name it once"):
        liteq.connect("postgresql://me@localhost/db?schema=a", schema="b")


def test_a_missing_psycopg_says_which_extra_to_install() -> None:
    code = (
        "import sys; sys.modules['psycopg'] = None\n"
        "import liteq\n"
        "try:\n"
        f"    liteq.connect('postgresql://me:{SECRET}@localhost/db')\n"
        "except liteq.LiteqError as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, check=True)
    assert "pip install 'liteq-queue[postgres]'" in out.stdout
    assert "postgresql://me@localhost/db" in out.stdout
    assert SECRET not in out.stdout + out.stderr


def test_the_cli_says_psycopg_is_missing_without_a_traceback() -> None:
    code = (
        "import sys; sys.modules['psycopg'] = None\n"
        "from liteq.cli import cli\n"
        f"cli(['--db', 'postgresql://me:{SECRET}@localhost/db', 'stats'])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 1
    assert "Error: " in out.stderr and "liteq-queue[postgres]" in out.stderr
    assert "Traceback" not in out.stderr
    assert SECRET not in out.stderr


# -- the command line ---------------------------------------------------------------


def test_liteq_db_url_runs_a_command_on_postgresql(url: str) -> None:
    liteq.connect(url).close()
    result = CliRunner().invoke(cli, ["--db", url, "vacuum"])
    assert result.exit_code == 0, result.output
    assert "postgresql://" in result.output
    assert SECRET not in result.output


def test_liteq_db_from_the_environment_may_be_a_url(url: str) -> None:
    liteq.connect(url).close()
    result = CliRunner().invoke(cli, ["vacuum", "--json"], env={"LITEQ_DB": url})
    assert result.exit_code == 0, result.output
    assert SECRET not in result.output


def test_a_command_on_a_url_without_the_liteq_schema_says_so(url: str) -> None:
    result = CliRunner().invoke(cli, ["--db", url, "stats"])
    assert result.exit_code == 1
    assert "Error: no liteq schema" in result.output
    assert SECRET not in result.output


def test_target_reopens_the_same_database_with_its_password(pg_db: liteq.Database, url: str) -> None:
    assert pg_db.target == url
    with liteq.connect(pg_db.target) as again:
        assert again.path == pg_db.path


def test_target_of_a_file_is_its_absolute_path(tmp_path: os.PathLike[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with liteq.connect("app.db") as db:
        assert db.target == db.path == os.path.join(os.path.realpath(tmp_path), "app.db")
        assert db.real_path == db.target
