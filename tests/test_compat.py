"""liteq.compat behaves like the standard library's queue module.

Each scenario runs against the standard library class and its liteq.compat twin and
the two records must be equal. The compat queues here use a private temporary file
(no path), so this is the "drop-in" promise; tests further down cover what only a
persistent queue can do (sharing a file, surviving the loss of a consumer).
"""

from __future__ import annotations

import datetime
import gc
import os
import pickle
import queue
import subprocess
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Callable
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule

import liteq
from liteq import compat

pytestmark = pytest.mark.every_engine

KINDS: dict[str, tuple[Any, Any]] = {
    "Queue": (queue.Queue, compat.Queue),
    "LifoQueue": (queue.LifoQueue, compat.LifoQueue),
    "PriorityQueue": (queue.PriorityQueue, compat.PriorityQueue),
    "SimpleQueue": (queue.SimpleQueue, compat.SimpleQueue),
}
BOUNDED = ["Queue", "LifoQueue", "PriorityQueue"]
PATIENCE = 30.0  # only bounds how long a broken build hangs


def outcome(fn: Callable[[], Any]) -> Any:
    """What a call did: its value, or the exception's type and text."""
    try:
        return ("returned", fn())
    except Exception as exc:
        return ("raised", type(exc).__name__, str(exc))


def same_as_stdlib(kind: str, scenario: Callable[[Any], Any]) -> Any:
    """Run *scenario* against the stdlib class and the compat class; they must agree."""
    stdlib_cls, compat_cls = KINDS[kind]
    expected = scenario(stdlib_cls)
    got = scenario(compat_cls)
    assert got == expected
    return got


def blocked(target: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    """Start *target* in a thread; the list receives its outcome when it returns."""
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(outcome(target)), daemon=True)
    thread.start()
    return thread, result


# --- ordering --------------------------------------------------------------------------

ITEMS = [(3, "c"), (1, "a"), (2.5, "b"), (-1, "z"), (1, "b"), (10**30, "big"),
         (0.0, "zero"), (-2.75, "neg"), (1, "")]


@pytest.mark.parametrize("kind", KINDS)
def test_items_come_out_in_the_standard_librarys_order(kind: str) -> None:
    def scenario(cls: Any) -> Any:
        q = cls()
        record = []
        for item in ITEMS[:5]:
            q.put(item)
        record.append([q.get(), q.get()])
        record.append(q.qsize())
        for item in ITEMS[5:]:
            q.put(item)
        out = []
        while not q.empty():
            out.append(q.get())
        record.append(out)
        return record

    same_as_stdlib(kind, scenario)


def test_priority_queue_orders_mixed_numbers_as_the_standard_library_does() -> None:
    numbers = [3, -0.5, Decimal("1.25"), Fraction(1, 3), 10**40, float("inf"), -(10**40),
               float("-inf"), 0.1, Fraction(1, 10) + 1, 5e-324, -7, Decimal("-7.5"), True]

    def scenario(cls: Any) -> Any:
        q = cls()
        for n in numbers:
            q.put(n)
        return [repr(q.get()) for _ in numbers]

    same_as_stdlib("PriorityQueue", scenario)


def test_priority_queue_orders_strings_and_nested_tuples_as_the_standard_library_does() -> None:
    items = ["b", "a", "", "ab", "a\x00", "é", "\U0001f600", "Z"]
    tuples = [(1, ("b", 2)), (1, ("a", 3)), (0,), (1,), (1, ("a",)), (-1, ("z", 0, 1)),
              (1, ("a", 2.5))]

    def scenario(cls: Any) -> Any:
        out = []
        for group in (items, tuples):
            q = cls()
            for item in group:
                q.put(item)
            out.append([q.get() for _ in group])
        return out

    same_as_stdlib("PriorityQueue", scenario)


# --- Full and Empty --------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_getting_from_an_empty_queue_without_waiting_raises_empty(kind: str) -> None:
    def scenario(cls: Any) -> Any:
        q = cls()
        return [
            q.qsize(), q.empty(),
            outcome(q.get_nowait),
            outcome(lambda: q.get(False)),
            outcome(lambda: q.get(block=False, timeout=-1)),  # timeout ignored
            outcome(lambda: q.get(timeout=0)),
            outcome(lambda: q.get(timeout=-1)),               # ValueError
        ]

    record = same_as_stdlib(kind, scenario)
    assert record[2][1] == "Empty"


@pytest.mark.parametrize("kind", KINDS)
def test_a_negative_timeout_raises_value_error_even_when_an_item_is_there(kind: str) -> None:
    def scenario(cls: Any) -> Any:
        q = cls()
        q.put(1)
        return [outcome(lambda: q.get(timeout=-0.5)), q.qsize(), q.get()]

    record = same_as_stdlib(kind, scenario)
    assert record[0][1] == "ValueError"


@pytest.mark.parametrize("kind", BOUNDED)
def test_putting_into_a_full_queue_without_waiting_raises_full(kind: str) -> None:
    def scenario(cls: Any) -> Any:
        q = cls(maxsize=2)
        record = [q.maxsize, q.full()]
        q.put(1)
        q.put(2)
        record += [
            q.full(), q.qsize(),
            outcome(lambda: q.put_nowait(3)),
            outcome(lambda: q.put(3, False)),
            outcome(lambda: q.put(3, timeout=0)),
            outcome(lambda: q.put(3, timeout=-1)),        # ValueError: bounded, blocking
            outcome(lambda: q.put(3, block=False, timeout=-1)),
        ]
        record += [q.get(), q.full(), outcome(lambda: q.put_nowait(4)), q.full(), q.qsize()]
        return record

    record = same_as_stdlib(kind, scenario)
    assert record[6][1] == "Full"


@pytest.mark.parametrize("kind", KINDS)
def test_an_unbounded_queue_is_never_full_and_ignores_a_negative_put_timeout(kind: str) -> None:
    def scenario(cls: Any) -> Any:
        q = cls()
        record = [outcome(lambda i=i: q.put(i, timeout=-1)) for i in range(3)]
        record.append(q.qsize())
        if hasattr(q, "full"):
            record += [q.full(), q.maxsize]
        return record

    same_as_stdlib(kind, scenario)


# --- blocking --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_get_with_a_timeout_waits_that_long_then_raises_empty(kind: str) -> None:
    def scenario(cls: Any) -> Any:
        q = cls()
        start = time.monotonic()
        result = outcome(lambda: q.get(timeout=0.1))
        return [result, time.monotonic() - start >= 0.1]

    assert same_as_stdlib(kind, scenario)[0][1] == "Empty"


@pytest.mark.parametrize("kind", BOUNDED)
def test_put_with_a_timeout_waits_that_long_then_raises_full(kind: str) -> None:
    def scenario(cls: Any) -> Any:
        q = cls(1)
        q.put("a")
        start = time.monotonic()
        result = outcome(lambda: q.put("b", timeout=0.1))
        return [result, time.monotonic() - start >= 0.1, q.qsize()]

    assert same_as_stdlib(kind, scenario)[0][1] == "Full"


@pytest.mark.parametrize("kind", KINDS)
def test_get_without_a_timeout_waits_until_another_thread_puts(kind: str) -> None:
    def scenario(cls: Any) -> Any:
        q = cls()
        thread, result = blocked(q.get)
        time.sleep(0.1)
        still_waiting = thread.is_alive()
        q.put("x")
        thread.join(PATIENCE)
        return [still_waiting, result, q.qsize()]

    assert same_as_stdlib(kind, scenario)[0] is True


@pytest.mark.parametrize("kind", KINDS)
def test_get_with_a_timeout_returns_an_item_put_while_it_waits(kind: str) -> None:
    def scenario(cls: Any) -> Any:
        q = cls()
        thread, result = blocked(lambda: q.get(timeout=PATIENCE))
        time.sleep(0.05)
        q.put(("late", 1))
        thread.join(PATIENCE)
        return result

    same_as_stdlib(kind, scenario)


@pytest.mark.parametrize("kind", BOUNDED)
def test_put_without_a_timeout_waits_until_another_thread_gets(kind: str) -> None:
    def scenario(cls: Any) -> Any:
        q = cls(maxsize=1)
        q.put(1)
        thread, result = blocked(lambda: q.put(2))
        time.sleep(0.1)
        still_waiting = thread.is_alive()
        first = q.get()
        thread.join(PATIENCE)
        return [still_waiting, first, result, q.get(), q.qsize()]

    assert same_as_stdlib(kind, scenario)[0] is True


# --- task_done and join ----------------------------------------------------------------


@pytest.mark.parametrize("kind", BOUNDED)
def test_join_returns_once_worker_threads_called_task_done_for_every_item(kind: str) -> None:
    def scenario(cls: Any) -> Any:
        q = cls(maxsize=5)
        done: list[int] = []
        lock = threading.Lock()

        def worker() -> None:
            while True:
                item = q.get()
                if item < 0:  # stop (an int, so that a PriorityQueue can compare it)
                    q.task_done()
                    return
                with lock:
                    done.append(item * 2)
                q.task_done()

        threads = [threading.Thread(target=worker, daemon=True) for _ in range(3)]
        for t in threads:
            t.start()
        for i in range(30):
            q.put(i)  # blocks now and then: maxsize 5
        q.join()
        after_join = sorted(done)
        for _ in threads:
            q.put(-1)
        q.join()
        for t in threads:
            t.join(PATIENCE)
        return [after_join, q.qsize(), outcome(q.task_done)]

    record = same_as_stdlib(kind, scenario)
    assert record[0] == [2 * i for i in range(30)]
    assert record[2] == ("raised", "ValueError", "task_done() called too many times")


@pytest.mark.parametrize("kind", BOUNDED)
def test_join_waits_for_the_last_task_done(kind: str) -> None:
    def scenario(cls: Any) -> Any:
        q = cls()
        q.put("job")
        q.get()
        thread, result = blocked(q.join)
        time.sleep(0.1)
        still_waiting = thread.is_alive()
        q.task_done()
        thread.join(PATIENCE)
        return [still_waiting, result, thread.is_alive()]

    assert same_as_stdlib(kind, scenario)[0] is True


@pytest.mark.parametrize("kind", BOUNDED)
def test_task_done_called_too_often_raises_value_error(kind: str) -> None:
    def scenario(cls: Any) -> Any:
        q = cls()
        q.put(1)
        q.put(2)
        q.get()
        q.get()
        return [outcome(q.task_done), outcome(q.task_done), outcome(q.task_done)]

    same_as_stdlib(kind, scenario)


# --- maxsize ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", BOUNDED)
def test_a_shrunk_maxsize_holds_back_later_puts_until_items_are_got(kind: str) -> None:
    def scenario(cls: Any) -> Any:
        q = cls(maxsize=3)
        for i in range(3):
            q.put(i)
        q.maxsize = 1
        record = [q.maxsize, q.full(), outcome(lambda: q.put_nowait(9))]
        record += [q.get(), q.full(), outcome(lambda: q.put_nowait(9))]
        record += [q.get(), q.full(), outcome(lambda: q.put_nowait(9))]
        record += [q.get(), q.full(), outcome(lambda: q.put_nowait(8)), q.full()]
        q.maxsize = 0
        record += [q.maxsize, q.full(), [outcome(lambda: q.put_nowait(7)) for _ in range(5)]]
        q.maxsize = -2
        record += [q.maxsize, q.full(), q.qsize()]
        return record

    record = same_as_stdlib(kind, scenario)
    assert record[2][1] == "Full"


@pytest.mark.parametrize("kind", BOUNDED)
def test_a_put_waiting_for_room_honours_a_shrunk_maxsize(kind: str) -> None:
    def scenario(cls: Any) -> Any:
        q = cls(maxsize=2)
        q.put("a")
        q.put("b")
        thread, result = blocked(lambda: q.put("c"))
        q.maxsize = 1
        q.get()
        time.sleep(0.1)
        still_waiting = thread.is_alive()  # one item left, maxsize 1: still no room
        q.get()
        thread.join(PATIENCE)
        return [still_waiting, result, q.get(), q.qsize()]

    assert same_as_stdlib(kind, scenario)[0] is True


# --- items and API ---------------------------------------------------------------------

CBOR_ITEMS = [
    None, True, False, 0, -7, 2**70, 1.5, float("inf"), "text", "", b"\x00\xffbytes",
    [1, [2, 3]], (1, (2, "x")), (), {"a": (1, 2), "b": [None, {"c": ()}]},
    {(1, 2): "tuple key"}, {1, 2}, {frozenset({"x"}): (1,)},
    datetime.datetime(2024, 5, 17, 8, 30, tzinfo=datetime.UTC),
    Decimal("1.10"), uuid.UUID(int=7), [("nested", (1,))],
]


@pytest.mark.parametrize("kind", KINDS)
def test_any_cbor_encodable_item_comes_back_equal_and_of_the_same_type(kind: str) -> None:
    def scenario(cls: Any) -> Any:
        q = cls()
        out = []
        for item in CBOR_ITEMS:
            q.put(item)
            got = q.get()
            out.append((type(got).__name__, repr(got)))
        return out

    same_as_stdlib(kind, scenario)


def test_an_item_cbor_cannot_encode_raises_type_error_and_adds_nothing() -> None:
    q: compat.Queue[Any] = compat.Queue()
    with pytest.raises(TypeError):
        q.put(object())
    assert q.qsize() == 0


@pytest.mark.parametrize("kind", KINDS)
def test_the_same_methods_exist(kind: str) -> None:
    methods = ["put", "get", "put_nowait", "get_nowait", "qsize", "empty", "full",
               "task_done", "join", "maxsize"]

    def scenario(cls: Any) -> Any:
        q = cls()
        return [name for name in methods if hasattr(q, name)]

    same_as_stdlib(kind, scenario)


def test_a_simple_queue_put_never_blocks_and_ignores_block_and_timeout() -> None:
    def scenario(cls: Any) -> Any:
        q = cls()
        record = [outcome(lambda: q.put(1, block=False, timeout=-1)),
                  outcome(lambda: q.put(2, True, 0)), outcome(lambda: q.put_nowait(3))]
        return record + [q.qsize(), [q.get() for _ in range(3)]]

    same_as_stdlib("SimpleQueue", scenario)


def test_full_and_empty_are_the_standard_librarys_exceptions() -> None:
    assert compat.Full is queue.Full
    assert compat.Empty is queue.Empty
    assert issubclass(liteq.QueueFull, compat.Full)
    assert sorted(compat.__all__) == sorted(
        ["Queue", "LifoQueue", "PriorityQueue", "SimpleQueue", "Full", "Empty", "sort_key"])


# --- differential state machine ----------------------------------------------------------


class SameAsStdlib(RuleBasedStateMachine):
    """Random sequences of non-blocking calls give the same results on both queues."""

    kind = "Queue"
    item = st.tuples(st.integers(-3, 3), st.sampled_from(["", "a", "b"]))

    def __init__(self) -> None:
        super().__init__()
        stdlib_cls, compat_cls = KINDS[self.kind]
        self.queues = [stdlib_cls(), compat_cls()]
        self.got = 0  # items got and not yet task_done

    def may_task_done(self) -> bool:
        # The stdlib also allows a task_done() after a put() with no get(); compat
        # raises ValueError there (it finishes an item this object got).
        return self.kind != "SimpleQueue" and (
            self.got > 0 or self.queues[0].unfinished_tasks == 0)

    def same(self, call: Callable[[Any], Any]) -> Any:
        expected, got = (outcome(lambda q=q: call(q)) for q in self.queues)
        assert got == expected
        return got

    @rule(item=item)
    def put_nowait(self, item: Any) -> None:
        self.same(lambda q: q.put_nowait(item))

    @rule()
    def get_nowait(self) -> None:
        if self.same(lambda q: q.get_nowait())[0] == "returned":
            self.got += 1

    @rule()
    def sizes(self) -> None:
        self.same(lambda q: (q.qsize(), q.empty(), q.full() if hasattr(q, "full") else None))

    @precondition(may_task_done)
    @rule()
    def task_done(self) -> None:
        self.same(lambda q: q.task_done())
        self.got = max(0, self.got - 1)

    @precondition(lambda self: self.kind != "SimpleQueue")
    @rule(size=st.integers(-1, 4))
    def set_maxsize(self, size: int) -> None:
        for q in self.queues:
            q.maxsize = size
        self.same(lambda q: q.maxsize)


for _kind in KINDS:
    _machine = type(f"SameAsStdlib{_kind}", (SameAsStdlib,), {"kind": _kind})
    _case = _machine.TestCase
    _case.settings = settings(max_examples=25, stateful_step_count=25, deadline=None)
    globals()[f"TestRandomCallsGiveTheSameResultsAs{_kind}"] = _case
del _kind, _machine, _case


# --- what only a persistent queue does ---------------------------------------------------


def test_a_named_queue_on_a_path_keeps_its_items_across_reopening(db_target) -> None:
    path = db_target
    q: compat.Queue[Any] = compat.Queue(path=path, name="jobs")
    for i in range(3):
        q.put({"n": i})
    del q
    gc.collect()
    again: compat.Queue[Any] = compat.Queue(path=path, name="jobs")
    assert again.qsize() == 3
    assert [again.get_nowait()["n"] for _ in range(3)] == [0, 1, 2]


def test_queue_objects_on_one_file_and_name_share_items_and_maxsize(db_target) -> None:
    path = db_target
    producer: compat.Queue[Any] = compat.Queue(2, path=path, name="jobs")
    consumer: compat.Queue[Any] = compat.Queue(path=path, name="jobs")  # keeps maxsize
    assert consumer.maxsize == 2
    producer.put("a")
    producer.put("b")
    assert consumer.full()
    with pytest.raises(queue.Full):
        consumer.put_nowait("c")
    consumer.maxsize = 0
    assert producer.maxsize == 0
    producer.put_nowait("c")
    assert [consumer.get(), consumer.get(), consumer.get()] == ["a", "b", "c"]
    assert producer.unfinished_tasks == 3
    for _ in range(3):
        consumer.task_done()
    producer.join()
    with pytest.raises(ValueError, match="too many times"):
        producer.task_done()  # task_done belongs to the object that got the item


def test_lifo_order_holds_across_queue_objects(db_target) -> None:
    path = db_target
    a: compat.LifoQueue[str] = compat.LifoQueue(path=path, name="stack")
    b: compat.LifoQueue[str] = compat.LifoQueue(path=path, name="stack")
    for i in range(5):
        (a if i % 2 else b).put(str(i))
    assert [a.get() for _ in range(5)] == ["4", "3", "2", "1", "0"]


def test_a_queue_passed_to_another_process_by_pickle_is_the_same_queue(db_target) -> None:
    q: compat.Queue[Any] = compat.Queue(path=db_target, name="jobs")
    q.put("hello")
    copy = pickle.loads(pickle.dumps(q))
    assert type(copy) is compat.Queue and copy.path == q.path and copy.name == "jobs"
    assert copy.get_nowait() == "hello"


def test_an_item_got_but_never_finished_is_delivered_again_after_its_lease(db_target) -> None:
    path = db_target
    # The lease must outlast the steps up to the second get (a loaded machine can take
    # a few hundred ms), or "precious" comes back before "next" does.
    first: compat.Queue[Any] = compat.Queue(path=path, name="jobs", lease=2.0)
    first.put("precious")
    first.put("next")
    assert first.get() == "precious"
    del first  # gone without task_done, as if its process died: nobody renews the lease
    gc.collect()
    second: compat.Queue[Any] = compat.Queue(path=path, name="jobs")
    assert second.get(timeout=PATIENCE) == "next"
    assert second.get(timeout=PATIENCE) == "precious"  # after the lease ran out
    second.task_done()
    second.task_done()
    second.join()


def test_a_held_item_stays_held_past_its_lease_while_the_holder_lives(db_target) -> None:
    path = db_target
    holder: compat.Queue[Any] = compat.Queue(path=path, name="jobs", lease=0.2)
    other: compat.Queue[Any] = compat.Queue(path=path, name="jobs")
    holder.put("mine")
    assert holder.get() == "mine"
    time.sleep(0.8)  # four leases: renewed in the background all along
    with pytest.raises(queue.Empty):
        other.get_nowait()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        holder.task_done()
    assert other.unfinished_tasks == 0


def test_task_done_finishes_the_item_the_calling_thread_got(db_target) -> None:
    path = db_target
    q: compat.Queue[str] = compat.Queue(path=path, name="jobs")
    q.put("first")
    q.put("second")
    got_first = threading.Event()
    finish_first = threading.Event()

    def slow_worker() -> None:
        assert q.get() == "first"
        got_first.set()
        finish_first.wait(PATIENCE)
        q.task_done()

    worker = threading.Thread(target=slow_worker)
    worker.start()
    got_first.wait(PATIENCE)
    assert q.get() == "second"
    q.task_done()  # this thread's item, not the older one the worker still holds
    held = liteq.connect(path).queue("jobs" + compat.HELD_SUFFIX)
    assert [m.payload for m in held.peek(10, state="leased")] == ["first"]
    finish_first.set()
    worker.join(PATIENCE)
    q.join()


def test_threads_sharing_a_queue_get_each_item_exactly_once() -> None:
    q: compat.Queue[int] = compat.Queue()
    n, workers = 200, 4
    for i in range(n):
        q.put(i)
    start = threading.Barrier(workers)
    taken: list[list[int]] = [[] for _ in range(workers)]

    def worker(mine: list[int]) -> None:
        start.wait()
        while True:
            try:
                mine.append(q.get_nowait())
            except queue.Empty:
                return
            q.task_done()

    threads = [threading.Thread(target=worker, args=(taken[i],)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(PATIENCE)
    everything = [x for mine in taken for x in mine]
    assert sorted(everything) == list(range(n))
    q.join()


def test_a_private_queue_file_is_removed_when_the_queue_is_collected() -> None:
    q: compat.Queue[int] = compat.Queue()
    q.put(1)
    directory = os.path.dirname(q.path)
    assert os.path.exists(q.path)
    del q
    gc.collect()
    assert not os.path.exists(directory)


def test_a_private_queue_file_is_removed_at_interpreter_exit() -> None:
    script = (
        "from liteq import compat\n"
        "q = compat.PriorityQueue()\n"
        "q.put((1, 'x')); q.get()\n"
        "keep = q\n"  # still referenced at exit: removed by the exit hook
        "print(q.path)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=PATIENCE, check=True)
    path = done.stdout.strip()
    assert path.endswith("queue.db")
    assert not os.path.exists(os.path.dirname(path))


def test_bad_names_and_leases_are_refused_with_value_error(db_target) -> None:
    path = db_target
    with pytest.raises(ValueError):
        compat.Queue(path=path, name="no spaces")
    with pytest.raises(ValueError):
        compat.Queue(path=path, name="x" * 200)
    with pytest.raises(ValueError):
        compat.Queue(path=path, name="jobs", lease=-1)
    with pytest.raises(TypeError):
        compat.Queue(1.5)  # type: ignore[arg-type]
