"""The suite's own engine plumbing (tests/engines.py, tests/dbsql.py): which engines run,
and how liteq's SQL is translated."""

from __future__ import annotations

import pytest
from dbsql import to_postgres
from engines import engines_under_test


def test_the_engines_under_test_default_to_both_and_follow_the_variable(monkeypatch) -> None:
    monkeypatch.delenv("LITEQ_TEST_ENGINES", raising=False)
    assert engines_under_test() == ["sqlite", "postgres"]
    monkeypatch.setenv("LITEQ_TEST_ENGINES", "sqlite")
    assert engines_under_test() == ["sqlite"]
    monkeypatch.setenv("LITEQ_TEST_ENGINES", " sqlite, postgres ,sqlite")
    assert engines_under_test() == ["sqlite", "postgres"]


def test_an_unknown_engine_name_is_a_usage_error_naming_the_choices(monkeypatch) -> None:
    monkeypatch.setenv("LITEQ_TEST_ENGINES", "sqlite,mysql")
    with pytest.raises(pytest.UsageError, match="sqlite, postgres"):
        engines_under_test()


def test_create_if_not_exists_names_an_application_table_in_the_schema() -> None:
    assert to_postgres("CREATE TABLE IF NOT EXISTS effects (n INTEGER)", "s1") == (
        'CREATE TABLE IF NOT EXISTS "s1".effects (n INTEGER)'
    )


def test_liteqs_tables_are_qualified_and_placeholders_translated_on_postgresql() -> None:
    text = "UPDATE messages SET payload = ? WHERE id IN (SELECT id FROM queues) AND e LIKE '5%'"
    assert to_postgres(text, "s1") == (
        'UPDATE "s1".messages SET payload = %s WHERE id IN (SELECT id FROM "s1".queues) '
        "AND e LIKE '5%%'"
    )
