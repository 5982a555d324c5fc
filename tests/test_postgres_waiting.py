"""A waiting consumer on PostgreSQL, where a hint (NOTIFY) never precedes its commit: after
a look that found nothing, it looks again only when a hint came (or its wait ran out),
and a commit right after that look still wakes it at once (issue 17, session 11)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest_pg import require_psycopg

import liteq

require_psycopg()


@pytest.fixture
def db(pg_url: str, pg_schema: str) -> Iterator[liteq.Database]:
    d = liteq.connect(f"{pg_url}?schema={pg_schema}")
    yield d
    d.close()


def _count(monkeypatch: pytest.MonkeyPatch, backend: Any, name: str) -> list[int]:
    calls = [0]
    real = getattr(backend, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(backend, name, counted)
    return calls


def test_an_idle_consumer_with_no_hint_does_not_look_again_after_its_empty_claim(
    db: liteq.Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    q = db.queue("idle")
    db.waiter().wait(0.3)  # the listener's first wake-up (after LISTEN) is behind us
    db.waiter().arm()
    probes = _count(monkeypatch, db.backend, "probe")
    claims = _count(monkeypatch, q, "_claim_rows")
    assert q.get(wait=0.3) is None
    assert probes[0] == 0  # was 1: a look right after the empty claim
    assert claims[0] == 2  # the first, and the one after the wait ran out


def test_a_put_committed_right_after_the_empty_claim_wakes_the_consumer_at_once(
    db: liteq.Database, pg_url: str, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No look follows the empty claim, so the put's NOTIFY must: found well before the
    periodic re-check (1 s)."""
    q = db.queue("race")
    db.waiter().wait(0.3)
    other = liteq.connect(f"{pg_url}?schema={pg_schema}")
    real = q._claim
    first = [True]

    def claim_then_put(n: int) -> Any:
        got = real(n)
        if first[0]:
            first[0] = False
            other.queue("race").put("x")  # commits between the empty claim and arm()
        return got

    monkeypatch.setattr(q, "_claim", claim_then_put)
    t0 = time.monotonic()
    m = q.get(wait=5.0)
    took = time.monotonic() - t0
    other.close()
    assert m is not None and m.payload == "x"
    assert took < 0.5, took
