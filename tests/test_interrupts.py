"""An exception raised asynchronously (a signal handler's KeyboardInterrupt) just as a
verb opens its transaction must not leave that transaction open on the thread's
connection: every later write would join it as a savepoint and none would ever be
committed. Seen with ``liteq tail`` ended by SIGHUP, whose subscription then outlived
it. Both engines."""

from __future__ import annotations

import sys
from typing import Any

import pytest

import liteq

pytestmark = pytest.mark.every_engine


def _interrupt_once_after_begin() -> list[str]:
    """A profile hook that raises KeyboardInterrupt as the first statement a transaction
    opener runs returns (SQLite's ``_Write.__enter__``, PostgreSQL's ``Tx.__enter__``):
    where a signal handler's exception lands when a signal arrives during that call."""
    fired: list[str] = []

    def hook(frame: Any, event: str, arg: Any) -> None:
        if fired:
            return
        if event == "c_return" and getattr(arg, "__name__", "") == "execute":
            opener = frame  # apsw: a C call made from the opener's frame
        elif event == "return" and frame.f_code.co_name == "execute" and frame.f_back:
            opener = frame.f_back  # psycopg: a Python call, the opener is its caller
        else:
            return
        owner = type(opener.f_locals.get("self")).__name__
        if opener.f_code.co_name == "__enter__" and owner in ("_Write", "Tx"):
            fired.append(owner)
            raise KeyboardInterrupt

    sys.setprofile(hook)
    return fired


def test_an_interrupt_as_a_verb_opens_its_transaction_leaves_none_open(
        db: liteq.Database, db_target: str) -> None:
    q = db.queue("jobs")
    topic = db.topic("events")
    fired = _interrupt_once_after_begin()
    try:
        with pytest.raises(KeyboardInterrupt):
            topic.subscribe("audit")  # a verb with a transaction of its own
    finally:
        sys.setprofile(None)
    assert fired, "the hook never fired: the opener's name or its statement changed"
    assert topic.subscriptions() == []  # the interrupted verb wrote nothing
    q.put("after")  # its own transaction, committed: another connection sees it
    with liteq.connect(db_target) as other:
        msg = other.queue("jobs").get()
        assert msg is not None and msg.payload == "after"
        msg.ack()


def test_an_interrupt_inside_the_applications_transaction_rolls_back_only_the_verb(
        db: liteq.Database, db_target: str) -> None:
    """Nested: only the verb's savepoint is undone (not the application's earlier
    writes: a ROLLBACK there would lose "before"), and the application's block goes on
    and commits what it wrote."""
    q = db.queue("jobs")
    topic = db.topic("events")
    with db.transaction():
        q.put("before")
        fired = _interrupt_once_after_begin()
        try:
            with pytest.raises(KeyboardInterrupt):
                topic.subscribe("audit")
        finally:
            sys.setprofile(None)
        assert fired
        q.put("after")
    with liteq.connect(db_target) as other:
        got = other.queue("jobs").get_many(10)
        assert sorted(m.payload for m in got) == ["after", "before"]
        assert other.topic("events").subscriptions() == []
