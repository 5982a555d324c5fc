"""The suite's own engine plumbing (tests/engines.py, tests/dbsql.py): which engines run,
what counts as a verb not yet on PostgreSQL, and how liteq's SQL is translated."""

from __future__ import annotations

import pytest
from dbsql import to_postgres
from engines import engines_under_test, not_yet_verb


def test_the_engines_under_test_default_to_sqlite_and_follow_the_variable(monkeypatch) -> None:
    monkeypatch.delenv("LITEQ_TEST_ENGINES", raising=False)
    assert engines_under_test() == ["sqlite"]
    monkeypatch.setenv("LITEQ_TEST_ENGINES", " sqlite, postgres ,sqlite")
    assert engines_under_test() == ["sqlite", "postgres"]


def test_an_unknown_engine_name_is_a_usage_error_naming_the_choices(monkeypatch) -> None:
    monkeypatch.setenv("LITEQ_TEST_ENGINES", "sqlite,mysql")
    with pytest.raises(pytest.UsageError, match="sqlite, postgres"):
        engines_under_test()


def test_a_missing_verb_is_found_raised_chained_or_quoted_and_nothing_else_is() -> None:
    def raised(exc: BaseException) -> pytest.ExceptionInfo[BaseException]:
        try:
            raise exc
        except BaseException:
            return pytest.ExceptionInfo.from_current()

    missing = NotImplementedError("claim() is not yet on PostgreSQL (issue 17, steps B1-B5)")
    assert not_yet_verb(raised(missing), "") == "claim"
    chained = RuntimeError("wrapped")
    chained.__cause__ = missing
    assert not_yet_verb(raised(chained), "") == "claim"
    quoted = "Error: subscribe() is not yet on PostgreSQL (issue 17, steps B1-B5); this ..."
    assert not_yet_verb(None, quoted) == "subscribe"
    assert not_yet_verb(raised(AssertionError("1 != 2")), "assert 1 == 2") is None


def test_liteqs_tables_are_qualified_and_placeholders_translated_on_postgresql() -> None:
    text = "UPDATE messages SET payload = ? WHERE id IN (SELECT id FROM queues) AND e LIKE '5%'"
    assert to_postgres(text, "s1") == (
        'UPDATE "s1".messages SET payload = %s WHERE id IN (SELECT id FROM "s1".queues) '
        "AND e LIKE '5%%'"
    )
