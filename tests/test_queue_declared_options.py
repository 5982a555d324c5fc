"""Declaring a queue with options that differ from the stored ones: the declared
values win (for every process) and a warning on the ``liteq`` logger names each
option and both values. ``configure_queue`` (``liteq queue config``) changes them
on purpose, without the warning."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

import liteq

pytestmark = pytest.mark.every_engine


@pytest.fixture
def two(db_target: str) -> Iterator[tuple[liteq.Database, liteq.Database]]:
    first, second = liteq.connect(db_target), liteq.connect(db_target)
    yield first, second
    first.close()
    second.close()


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "liteq" and r.levelno == logging.WARNING]


def test_declaring_a_different_max_depth_warns_with_both_values_and_the_declared_one_wins(
        two: tuple[liteq.Database, liteq.Database], caplog: pytest.LogCaptureFixture) -> None:
    first, second = two
    caplog.set_level(logging.WARNING, logger="liteq")
    first.queue("jobs", max_depth=10)
    assert _warnings(caplog) == []
    q = second.queue("jobs", max_depth=100)
    [text] = _warnings(caplog)
    assert "queue 'jobs': max_depth=100 declared here differs from the stored max_depth=10" in text
    assert "liteq queue config" in text
    assert q.config.max_depth == 100
    assert first.queue("jobs").refresh().max_depth == 100


def test_declaring_the_stored_options_again_does_not_warn(
        two: tuple[liteq.Database, liteq.Database], caplog: pytest.LogCaptureFixture) -> None:
    first, second = two
    caplog.set_level(logging.WARNING, logger="liteq")
    first.queue("jobs", max_depth=10, lease=5, backoff=liteq.Backoff(base=2.0))
    second.queue("jobs", max_depth=10, lease=5.0, backoff=liteq.Backoff(base=2.0))
    second.queue("jobs")  # no options: nothing declared
    first.queue("fresh", lease=7)  # a new queue: nothing stored yet
    assert _warnings(caplog) == []


def test_each_differing_option_is_named_including_backoff_and_count_depth(
        two: tuple[liteq.Database, liteq.Database], caplog: pytest.LogCaptureFixture) -> None:
    first, second = two
    caplog.set_level(logging.WARNING, logger="liteq")
    first.queue("jobs", lease=30, dead_letter="graveyard", count_depth=False)
    second.queue("jobs", lease=60, dead_letter=None, count_depth=True,
                 backoff=liteq.Backoff(base=5.0))
    texts = _warnings(caplog)
    assert len(texts) == 4
    joined = "\n".join(texts)
    assert "lease=60.0 declared here differs from the stored lease=30.0" in joined
    assert "dead_letter=None declared here differs from the stored dead_letter='graveyard'" \
        in joined
    assert "count_depth=True declared here differs from the stored count_depth=False" in joined
    assert "backoff=Backoff(base=5.0" in joined


def test_configure_queue_changes_options_on_purpose_without_a_warning(
        two: tuple[liteq.Database, liteq.Database], caplog: pytest.LogCaptureFixture) -> None:
    first, second = two
    caplog.set_level(logging.WARNING, logger="liteq")
    first.queue("jobs", max_depth=10)
    q = second.configure_queue("jobs", max_depth=100)
    assert q.config.max_depth == 100 and _warnings(caplog) == []


def test_liteq_queue_config_changes_an_option_without_a_warning(
        db_target: str, caplog: pytest.LogCaptureFixture) -> None:
    from test_cli import ok

    caplog.set_level(logging.WARNING, logger="liteq")
    with liteq.connect(db_target) as db:
        db.queue("jobs", max_depth=10)
    result = ok(db_target, "queue", "config", "jobs", "--max-depth", "100")
    assert "differs from the stored" not in result.output and _warnings(caplog) == []
    with liteq.connect(db_target) as db:
        assert db.queue("jobs").config.max_depth == 100
