"""liteq.aio: the sync API awaited, on every engine: the same validation and verbs,
cancellation that leaves nothing leased by nobody, and transactions that commit or roll
back the application's rows and the messages together."""

from __future__ import annotations

import asyncio

import pytest

import liteq
import liteq.aio

pytestmark = [pytest.mark.every_engine, pytest.mark.asyncio]


async def test_a_message_put_is_got_acked_and_gone(db_target: str) -> None:
    async with liteq.aio.connect(db_target) as db:
        q = await db.queue("emails")
        mid = await q.put({"to": "a@b.c"}, headers={"h": 1})
        msg = await q.get()
        assert msg is not None and msg.id == mid and msg.payload == {"to": "a@b.c"}
        assert msg.headers == {"h": 1} and msg.attempts == 1
        await msg.ack()
        assert (await q.stats())["ready"] == 0
        assert await q.get() is None


async def test_connect_can_be_awaited_and_closed(db_target: str) -> None:
    db = await liteq.aio.connect(db_target)
    q = await db.queue("q")
    await q.put(1)
    assert (await q.stats())["ready"] == 1
    await db.close()
    await db.close()  # twice is harmless


async def test_async_with_a_message_acks_on_success_and_nacks_on_an_exception(db_target: str) -> None:
    async with liteq.aio.connect(db_target) as db:
        q = await db.queue("jobs", max_attempts=3)
        await q.put("ok")
        async with await q.get(wait=1) as msg:
            assert msg.payload == "ok"
        await q.put("bad")
        with pytest.raises(RuntimeError):
            async with await q.get(wait=1) as msg:
                raise RuntimeError("handler broke")
        stats = await q.stats()
        assert stats["ready"] + stats["delayed"] == 1 and stats["leased"] == 0
        (again,) = await q.peek(10, state=None)
        assert again.error and "handler broke" in again.error


async def test_a_handler_cancelled_inside_async_with_gives_its_message_back_at_once(
        db_target: str) -> None:
    async with liteq.aio.connect(db_target) as db:
        q = await db.queue("handled", lease=300)
        await q.put("a")
        await q.put("b")
        started = asyncio.Event()

        async def handle(ack_first: bool) -> None:
            async with await q.get() as msg:
                if ack_first:
                    await msg.ack()
                started.set()
                await asyncio.sleep(30)

        for ack_first in (False, True):
            started.clear()
            running = asyncio.create_task(handle(ack_first))
            await started.wait()
            running.cancel()
            with pytest.raises(asyncio.CancelledError):  # not LeaseLost for the acked one
                await running
        stats = await q.stats()
        assert stats["leased"] == 0 and stats["ready"] == 1
        (back,) = await q.peek()
        assert back.attempts == 1 and back.error == "cancelled while it was handled"


async def test_put_many_get_many_and_ack_many_are_one_transaction_each(db_target: str) -> None:
    async with liteq.aio.connect(db_target) as db:
        q = await db.queue("batch")
        ids = await q.put_many(range(10))
        assert len(ids) == 10
        msgs = await q.get_many(10)
        assert sorted(m.payload for m in msgs) == list(range(10))
        await q.ack_many(msgs)
        assert (await q.stats())["leased"] == 0


async def test_bad_input_is_refused_by_the_sync_validation_before_anything_is_written(
        db_target: str) -> None:
    async with liteq.aio.connect(db_target) as db:
        q = await db.queue("v", max_depth=1)
        with pytest.raises(liteq.InvalidArgument, match="delay"):
            await q.put(1, delay=-1)
        with pytest.raises(liteq.SerializationError):
            await q.put(object())
        with pytest.raises(liteq.InvalidArgument, match="wait"):
            await q.get(wait=-1)
        await q.put(1)
        with pytest.raises(liteq.QueueFull):
            await q.put(2)
        assert (await q.stats())["ready"] == 1
    with pytest.raises(liteq.InvalidArgument, match="threads"):
        liteq.aio.connect(db_target, threads=0)


async def test_a_blocked_put_waits_for_room_and_a_full_one_times_out(db_target: str) -> None:
    async with liteq.aio.connect(db_target) as db:
        q = await db.queue("bp", max_depth=1)
        await q.put(1)
        with pytest.raises(liteq.QueueFull):
            await q.put(2, block=True, timeout=0.05)
        waiting = asyncio.create_task(q.put(3, block=True, timeout=10))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        await (await q.get()).ack()
        assert await waiting > 0


async def test_nack_extend_and_fail_change_the_message_as_the_sync_verbs_do(db_target: str) -> None:
    async with liteq.aio.connect(db_target) as db:
        q = await db.queue("verbs")
        await q.put("a")
        msg = await q.get()
        await msg.extend(60)
        assert msg.lease_until is not None
        await msg.nack(delay=0, error="again")
        msg = await q.get()
        assert msg is not None and msg.attempts == 2
        await msg.fail("no good")
        (dead,) = await q.peek(state="dead")
        assert dead.error == "no good"
        with pytest.raises(liteq.LeaseLost):
            await msg.ack()


async def test_a_get_that_waits_is_woken_by_a_put_from_another_coroutine(db_target: str) -> None:
    async with liteq.aio.connect(db_target) as db:
        q = await db.queue("wake")
        getting = asyncio.create_task(q.get(wait=10))
        await asyncio.sleep(0.05)
        await q.put("hello")
        msg = await asyncio.wait_for(getting, 5)
        assert msg is not None and msg.payload == "hello"


async def test_a_get_that_waits_returns_none_after_its_wait(db_target: str) -> None:
    async with liteq.aio.connect(db_target) as db:
        q = await db.queue("idle")
        assert await q.get(wait=0.05) is None
        assert await q.get_many(5, wait=0.05) == []


async def test_a_get_cancelled_while_waiting_claimed_nothing(db_target: str) -> None:
    async with liteq.aio.connect(db_target) as db:
        q = await db.queue("c")
        getting = asyncio.create_task(q.get(wait=30))
        await asyncio.sleep(0.05)
        getting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await getting
        await q.put("still here")
        stats = await q.stats()
        assert stats["ready"] == 1 and stats["leased"] == 0


async def test_a_get_cancelled_after_its_claim_committed_leaves_the_message_ready_at_once(
        db_target: str) -> None:
    async with liteq.aio.connect(db_target) as db:
        q = await db.queue("c2", lease=300)
        for i in range(20):
            await q.put(i)
        # Cancel each get as soon as its claim is running on a thread: the claim
        # commits, and the cancelled get gives what it took back at once.
        for _ in range(20):
            getting = asyncio.create_task(q.get())
            await asyncio.sleep(0)  # the claim has been submitted to a thread
            getting.cancel()
            try:
                msg = await getting
            except asyncio.CancelledError:
                continue
            assert msg is not None
            await q.release([msg])
        stats = await q.stats()
        assert stats["leased"] == 0 and stats["ready"] == 20
        assert sorted(m.attempts for m in await q.peek(20)) == [0] * 20


async def test_asyncio_timeout_around_a_get_leaves_nothing_leased_by_nobody(db_target: str) -> None:
    async with liteq.aio.connect(db_target) as db:
        q = await db.queue("t", lease=300)
        await q.put_many(range(50))
        got = []
        for i in range(200):
            try:
                async with asyncio.timeout(0.0005 * (i % 7)):
                    msgs = await q.get_many(3, wait=0.01)
            except TimeoutError:
                continue
            got.extend(msgs)
        stats = await q.stats()
        assert stats["leased"] == len(got)
        if got:
            await q.ack_many(got)
        stats = await q.stats()
        assert stats["leased"] == 0 and stats["ready"] == 50 - len(got)


async def test_a_transaction_rolls_back_the_apps_row_and_the_message_together(
        db_target: str) -> None:
    async with liteq.aio.connect(db_target) as db:
        q = await db.queue("outbox")
        await db.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, note TEXT)")
        with pytest.raises(RuntimeError):
            async with db.transaction():
                await db.execute("INSERT INTO orders (id, note) VALUES (1, 'x')")
                await q.put({"order": 1})
                raise RuntimeError("payment refused")
        assert await db.execute("SELECT count(*) FROM orders") == [(0,)]
        assert (await q.stats())["ready"] == 0
        async with db.transaction():
            await db.execute("INSERT INTO orders (id, note) VALUES (2, 'y')")
            await q.put({"order": 2})
        assert await db.execute("SELECT count(*) FROM orders") == [(1,)]
        msg = await q.get()
        assert msg is not None and msg.payload == {"order": 2}


async def test_a_transaction_cancelled_midway_rolls_back(db_target: str) -> None:
    async with liteq.aio.connect(db_target) as db:
        q = await db.queue("outbox2")
        await db.execute("CREATE TABLE cancelled_rows (x INTEGER)")
        entered = asyncio.Event()

        async def block() -> None:
            async with db.transaction():
                await db.execute("INSERT INTO cancelled_rows VALUES (1)")
                await q.put("m")
                entered.set()
                await asyncio.sleep(30)

        running = asyncio.create_task(block())
        await entered.wait()
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
        assert await db.execute("SELECT count(*) FROM cancelled_rows") == [(0,)]
        assert (await q.stats())["ready"] == 0
        await q.put("after")  # the write lock (SQLite) was given back
        assert (await q.stats())["ready"] == 1


async def test_nested_transactions_are_savepoints_on_the_same_thread(db_target: str) -> None:
    async with liteq.aio.connect(db_target) as db:
        await db.execute("CREATE TABLE nested_rows (x INTEGER)")
        async with db.transaction():
            await db.execute("INSERT INTO nested_rows VALUES (1)")
            with pytest.raises(ValueError):
                async with db.transaction():
                    await db.execute("INSERT INTO nested_rows VALUES (2)")
                    raise ValueError
        assert await db.execute("SELECT x FROM nested_rows") == [(1,)]


async def test_consume_yields_every_message_and_gives_back_the_prefetched_rest(
        db_target: str) -> None:
    async with liteq.aio.connect(db_target) as db:
        q = await db.queue("stream", lease=300)
        await q.put_many(range(10))
        seen = []
        async with q.consume(prefetch=5) as stream:
            async for msg in stream:
                seen.append(msg.payload)
                await msg.ack()
                if len(seen) == 3:
                    break
        assert seen == [0, 1, 2]
        stats = await q.stats()
        assert stats["leased"] == 0 and stats["ready"] == 7


async def test_topics_publish_to_matching_subscriptions(db_target: str) -> None:
    async with liteq.aio.connect(db_target) as db:
        orders = db.topic("orders")
        eu = await orders.subscribe("eu", pattern="order.*.eu")
        await orders.subscribe("us", pattern="order.*.us")
        assert await orders.publish({"id": 7}, key="order.created.eu") == 1
        assert await orders.publish_many([("order.a.us", 1), ("order.b.us", 2)]) == 2
        msg = await eu.get(wait=1)
        assert msg is not None and msg.routing_key == "order.created.eu"
        assert sorted(s.name for s in await orders.subscriptions()) == ["orders:eu", "orders:us"]
        assert await db.topics() == ["orders"]


async def test_a_tail_follows_new_publishes_and_is_gone_when_closed(db_target: str) -> None:
    async with liteq.aio.connect(db_target) as db:
        orders = db.topic("feed")
        async with await orders.tail("order.#") as tail:
            assert await tail.get(wait=0.05) is None
            later = asyncio.create_task(tail.get(wait=10))
            await asyncio.sleep(0.05)
            assert await orders.publish({"n": 1}, key="order.new") == 1
            msg = await asyncio.wait_for(later, 5)
            assert msg is not None and msg.payload == {"n": 1}
            assert len(await orders.subscriptions()) == 1
        assert await orders.subscriptions() == []


async def test_tasks_enqueue_with_adelay_and_jobs_are_awaited(db_target: str) -> None:
    async with liteq.aio.connect(db_target) as db:

        @db.task(store_result=True, name="add")
        def add(a: int, b: int) -> int:
            return a + b

        job = await add.adelay(2, 3)
        assert (await job.refresh()).state == "queued" and job.state == "queued"
        with pytest.raises(liteq.ResultTimeout):
            await job.result(wait=0.05)
        # Run it as a worker would, in a thread of its own.
        await asyncio.to_thread(liteq.Worker(db.sync, queues=["default"], burst=True).run)
        assert await job.result(wait=5) == 5
        other = await add.aenqueue((1, 1), delay=60)
        assert await other.cancel() == "cancelled"
        with pytest.raises(liteq.JobCancelled):
            await other.result()
        with pytest.raises(liteq.InvalidArgument, match="cannot enqueue"):
            await add.adelay(1)


async def test_a_task_of_a_sync_database_enqueues_through_its_async_face(db_target: str) -> None:
    sync_db = liteq.connect(db_target)
    try:
        @sync_db.task(name="noop")
        def noop() -> None:
            pass

        with pytest.raises(liteq.InvalidArgument, match="liteq.aio.connect"):
            await noop.adelay()
        async with liteq.aio.connect(sync_db) as adb:
            assert adb.sync is sync_db
            job = await noop.adelay()
            assert isinstance(job, liteq.aio.Job)
            assert (await job.refresh()).task == "noop"
        assert sync_db.queue("default").stats()["ready"] == 1  # still open
    finally:
        sync_db.close()


async def test_schedules_and_messages_by_id(db_target: str) -> None:
    async with liteq.aio.connect(db_target) as db:
        q = await db.queue("q")
        mid = await q.put("x", delay=60)
        assert await db.cancel(mid) is True
        assert await db.retry(mid) is True
        found = await db.message(mid)
        assert found is not None and found.state == "ready"
        await db.schedule("every", every=60, queue="q", payload=1)
        assert [s.name for s in await db.schedules()] == ["every"]
        assert await db.unschedule("every") is True


async def test_concurrent_puts_share_a_transaction_and_each_keeps_its_own_outcome(
        db_target: str) -> None:
    async with liteq.aio.connect(db_target) as db:
        q = await db.queue("group", max_depth=30)
        payloads: list[object] = list(range(49)) + [object()]  # the last cannot be encoded
        outcomes = await asyncio.gather(*(q.put(p) for p in payloads), return_exceptions=True)
        ids = [o for o in outcomes if isinstance(o, int)]
        assert len(ids) == 30 and len(set(ids)) == 30
        assert isinstance(outcomes[-1], liteq.SerializationError)
        assert sum(isinstance(o, liteq.QueueFull) for o in outcomes) == 19
        assert (await q.stats())["ready"] == 30


async def test_concurrent_acks_share_a_transaction_and_only_a_stale_one_fails(
        db_target: str) -> None:
    async with liteq.aio.connect(db_target) as db:
        q = await db.queue("acks")
        await q.put_many(range(10))
        msgs = await q.get_many(10)
        stale = msgs[3]
        await stale.nack(delay=0)  # its token is no longer valid
        outcomes = await asyncio.gather(*(m.ack() for m in msgs), return_exceptions=True)
        assert isinstance(outcomes[3], liteq.LeaseLost)
        assert [o for i, o in enumerate(outcomes) if i != 3] == [None] * 9
        stats = await q.stats()
        assert stats["ready"] == 1 and stats["leased"] == 0


async def test_eight_coroutines_putting_at_once_ride_one_trip_per_round(db_target: str) -> None:
    async with liteq.aio.connect(db_target) as db:
        q = await db.queue("rounds")
        trips: list[int] = []
        q.put_batches.trips = trips

        async def putter(k: int) -> list[int]:
            return [await q.put((k, i)) for i in range(10)]

        ids = await asyncio.gather(*(putter(k) for k in range(8)))
        # Each round of 8 puts is one transaction: the answered callers put again
        # before the batcher looks for more (its sleep(0)), so none is left behind.
        assert trips == [8] * 10
        assert len({i for each in ids for i in each}) == 80
        assert (await q.stats())["ready"] == 80


async def test_fifty_concurrent_gets_share_claims_and_each_message_goes_to_exactly_one(
        db_target: str) -> None:
    async with liteq.aio.connect(db_target) as db:
        q = await db.queue("merged", lease=300)
        await q.put_many(range(40))
        trips: list[int] = []
        q.claim_batches.trips = trips
        got = await asyncio.gather(*(q.get() for _ in range(50)))
        msgs = [m for m in got if m is not None]
        assert len(msgs) == 40 and got.count(None) == 10
        assert sorted(m.payload for m in msgs) == list(range(40))
        assert len({m.id for m in msgs}) == 40
        assert sum(trips) == 50 and len(trips) < 50
        await asyncio.gather(*(m.ack() for m in msgs))
        stats = await q.stats()
        assert stats["leased"] == 0 and stats["ready"] == 0


async def test_gets_cancelled_after_their_merged_claim_left_give_the_messages_back_at_once(
        db_target: str) -> None:
    async with liteq.aio.connect(db_target) as db:
        q = await db.queue("merged_cancel", lease=300)
        await q.put_many(range(10))
        trips: list[int] = []
        q.claim_batches.trips = trips
        getting = [asyncio.create_task(q.get()) for _ in range(10)]
        while not trips:
            await asyncio.sleep(0)  # until the merged claim is on a thread
        for task in getting:
            task.cancel()
        outcomes = await asyncio.gather(*getting, return_exceptions=True)
        assert trips == [10]
        kept = [o for o in outcomes if isinstance(o, liteq.aio.Message)]
        assert all(isinstance(o, asyncio.CancelledError) for o in outcomes if o not in kept)
        # What the claim took for a cancelled get is ready again now, not after the
        # 300 s lease, and the attempt was not counted.
        stats = await q.stats()
        assert stats["leased"] == len(kept) and stats["ready"] == 10 - len(kept)
        assert sorted(m.attempts for m in await q.peek(10)) == [0] * (10 - len(kept))
        await q.release(kept)


async def test_a_get_cancelled_before_its_merged_claim_left_claims_nothing(db_target: str) -> None:
    async with liteq.aio.connect(db_target) as db:
        q = await db.queue("merged_early", lease=300)
        await q.put_many(range(3))
        trips: list[int] = []
        q.claim_batches.trips = trips
        first = asyncio.create_task(q.get())
        second = asyncio.create_task(q.get())
        await asyncio.sleep(0)  # both gathered, no trip yet
        second.cancel()
        msg = await first
        with pytest.raises(asyncio.CancelledError):
            await second
        assert trips == [1] and msg is not None
        stats = await q.stats()
        assert stats["leased"] == 1 and stats["ready"] == 2


async def test_gets_that_may_wait_share_one_claim_when_messages_are_ready(db_target: str) -> None:
    async with liteq.aio.connect(db_target) as db:
        q = await db.queue("merged_wait", lease=300)
        await q.put_many(range(40))
        trips: list[int] = []
        q.claim_batches.trips = trips
        got = await asyncio.gather(*(q.get(wait=0.2) for _ in range(50)))
        # All 50 rode the first claim (40 messages for 40 of them); the 10 left over
        # waited their 0.2 s in line, looking without claiming while nothing came.
        assert trips[0] == 50
        msgs = [m for m in got if m is not None]
        assert sorted(m.payload for m in msgs) == list(range(40)) and got.count(None) == 10


async def test_a_burst_after_a_quiet_spell_reaches_every_waiting_get_in_one_claim(
        db_target: str) -> None:
    async with liteq.aio.connect(db_target) as db:
        q = await db.queue("burst", lease=300)
        waiting = [asyncio.create_task(q.get(wait=10)) for _ in range(8)]
        await asyncio.sleep(0.2)  # all in line: one head looks, seven sleep
        await q.put_many(range(8))
        msgs = await asyncio.gather(*waiting)
        assert all(m is not None for m in msgs)
        assert sorted(m.payload for m in msgs if m is not None) == list(range(8))
        # One claim took them all for the line (one claim, one lease token).
        assert len({m.token for m in msgs if m is not None}) == 1
        stats = await q.stats()
        assert stats["leased"] == 8 and stats["ready"] == 0


async def test_waiting_gets_timed_out_or_cancelled_around_bursts_leave_nothing_leased_by_nobody(
        db_target: str) -> None:
    async with liteq.aio.connect(db_target) as db:
        q = await db.queue("burst_cancel", lease=300)
        got: list[liteq.aio.Message] = []

        async def consumer(i: int) -> None:
            for round_ in range(12):
                try:
                    async with asyncio.timeout(0.001 * ((i + round_) % 9)):
                        msg = await q.get(wait=0.05)
                except TimeoutError:
                    continue
                if msg is not None:
                    got.append(msg)

        async def producer() -> None:
            for _ in range(10):
                await q.put_many(range(5))
                await asyncio.sleep(0.004)

        await asyncio.gather(producer(), *(consumer(i) for i in range(20)))
        stats = await q.stats()
        assert len({m.id for m in got}) == len(got)
        assert stats["leased"] == len(got) and stats["ready"] == 50 - len(got)
