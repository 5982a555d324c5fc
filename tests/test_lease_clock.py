"""Leases run on the wall clock (issue 16 item 8).

A lease deadline further ahead than the queue's lease plus MAX_EXTEND cannot have
been set by a claim or an extend: it was set before the clock stepped back, and
the next claim treats it as expired. A forward step ends leases early, and fencing
still refuses the late ack.
"""

from __future__ import annotations

import time

import pytest
from dbsql import sql

import liteq
from liteq.validate import MAX_EXTEND

pytestmark = pytest.mark.every_engine


def test_after_the_clock_steps_back_two_hours_a_dead_consumers_message_is_claimed_again(
        clocked_db, clock) -> None:
    q = clocked_db.queue("q", lease=30)
    q.put("work")
    dead = q.get()  # its consumer dies holding it
    assert dead is not None
    clock.advance(-7200)
    again = q.get()
    assert again is not None and again.id == dead.id and again.attempts == 2
    with pytest.raises(liteq.LeaseLost):
        dead.ack()
    again.ack()


def test_a_lease_extended_by_the_longest_extend_is_still_held(clocked_db, clock) -> None:
    q = clocked_db.queue("q", lease=30)
    q.put("work")
    held = q.get()
    held.extend(MAX_EXTEND)
    clock.advance(MAX_EXTEND - 1)
    assert q.get() is None
    assert q.stats()["expired_leases"] == 0
    held.ack()


def test_extend_past_the_longest_extend_is_refused_and_the_lease_is_unchanged(
        clocked_db, clock) -> None:
    q = clocked_db.queue("q", lease=30)
    q.put("work")
    held = q.get()
    until = held.lease_until
    with pytest.raises(liteq.InvalidArgument, match="extend takes at most 3600"):
        held.extend(MAX_EXTEND + 1)
    assert clocked_db.message(held.id).lease_until == until


def test_a_queue_with_a_lease_longer_than_the_longest_extend_extends_by_its_lease(
        clocked_db, clock) -> None:
    q = clocked_db.queue("long", lease=3 * 3600)
    q.put("work")
    held = q.get()
    held.extend(3 * 3600)
    clock.advance(3 * 3600 - 1)
    assert q.get() is None
    held.ack()


def test_a_far_future_lease_written_to_the_file_counts_as_expired_at_the_next_claim(db) -> None:
    q = db.queue("q", lease=30)
    q.put("work")
    held = q.get()
    sql(db, "UPDATE messages SET lease_until = ? WHERE id = ?", (time.time() + 10**6, held.id))
    assert q.stats()["expired_leases"] == 1
    again = q.get()
    assert again is not None and again.id == held.id
    again.ack()


def test_a_forward_clock_step_ends_leases_early_and_fencing_refuses_the_late_ack(
        clocked_db, clock) -> None:
    q = clocked_db.queue("q", lease=30)
    q.put("work")
    slow = q.get()
    clock.advance(3600)  # the clock jumps; the holder is still working
    other = q.get()
    assert other is not None and other.id == slow.id
    with pytest.raises(liteq.LeaseLost):
        slow.ack()
    other.ack()
