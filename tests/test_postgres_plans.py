"""The PostgreSQL statements that lock rows ``SKIP LOCKED`` and then write them: the
locking part runs once per execution, whatever plan the planner picks.

A locking subquery joined in ``FROM`` (``UPDATE ... FROM (SELECT ... LIMIT 1 FOR UPDATE
SKIP LOCKED) p``) is re-run for every outer row when the planner puts it on the inner
side of a nested loop; each re-run skips the rows the statement already updated and
locks new ones, so one put counted itself on several depth stripes, and the put whose
``INSERT ... SELECT FROM r`` followed inserted one message per stripe (the queue model
caught it under load, after the planner's statistics for a young table changed). Which
plan the planner picks depends on statistics, so this checks the shape instead: every
``LockRows`` node sits in an InitPlan (an uncorrelated scalar subquery) or a
``MATERIALIZED`` CTE, never as a member of a join.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import re
from collections.abc import Iterator
from typing import Any

import pytest

import liteq.backends.postgres as engine
from liteq.backends.postgres.schema import qualify

pytestmark = pytest.mark.postgres

#: The engine's modules, every one (a new module is read without a list to update).
MODULES = [importlib.import_module(f"{engine.__name__}.{info.name}")
           for info in pkgutil.iter_modules(engine.__path__)]

#: Every statement of the engine that locks rows SKIP LOCKED and writes in the same
#: statement, found by reading the modules (a new one is checked without a list to update).
STATEMENTS = [
    (module, name)
    for module in MODULES
    for name, text in sorted(vars(module).items())
    if name.startswith("SQL_") and isinstance(text, str) and "SKIP LOCKED" in text
    and re.search(r"(?<!FOR )\b(UPDATE|DELETE|INSERT)\b", text)
]


def test_the_statements_are_found() -> None:
    assert len(STATEMENTS) >= 8, STATEMENTS


PARAMS = {
    "qid": 1, "n": 1, "now": 1.0, "until": 2.0, "most": 10, "max_extend": 3600.0,
    "priority": 0, "payload": b"\xa0", "id": 1, "token": 1, "run_at": 1.0,
    "priorities": [0], "ranks": [None], "run_ats": [1.0], "payloads": [b"\xa0"],
    "headers": [None], "channel": "liteq_plans", "ids": [1], "tokens": [1],
}


@pytest.fixture
def conn(pg_url: str, pg_schema: str) -> Iterator[Any]:
    import psycopg

    from liteq.backends.postgres import PostgresBackend

    PostgresBackend(pg_url, schema=pg_schema).close()  # the schema, migrated
    with psycopg.connect(pg_url, autocommit=True, cursor_factory=psycopg.ClientCursor) as c:
        yield c


JOINS = ("Nested Loop", "Hash Join", "Merge Join")


def _lockrows_in_joins(node: dict[str, Any], in_join: bool = False) -> list[str]:
    """The LockRows nodes of *node*'s tree that are inside a join member (not behind
    an InitPlan: a scalar subquery or a CTE, each evaluated once)."""
    if node.get("Parent Relationship") == "InitPlan":
        in_join = False
    found = ["LockRows"] if node.get("Node Type") == "LockRows" and in_join else []
    below = in_join or node.get("Node Type") in JOINS
    for child in node.get("Plans", ()):
        found += _lockrows_in_joins(child, below)
    return found


@pytest.mark.parametrize(("module", "name"), STATEMENTS, ids=[n for _, n in STATEMENTS])
def test_a_skip_locked_pick_that_feeds_a_write_runs_once_whatever_the_plan(
    conn: Any, pg_schema: str, module: Any, name: str
) -> None:
    sql = qualify(getattr(module, name), pg_schema)
    (plan,) = conn.execute("EXPLAIN (FORMAT JSON) " + sql, PARAMS).fetchone()
    tree = (plan if isinstance(plan, list) else json.loads(plan))[0]["Plan"]
    text = json.dumps(tree)
    assert "LockRows" in text, f"{name} no longer locks: update STATEMENTS"
    assert _lockrows_in_joins(tree) == [], f"{name}: a locking subquery is a join member"
