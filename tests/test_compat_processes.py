"""liteq.compat across processes: a producer and a consumer share a named queue on a
file; the consumer is killed with SIGKILL half-way and restarted; nothing is lost, and
the producer's join() returns only when every item was finished by some consumer."""

from __future__ import annotations

import queue
import signal
import subprocess
import sys
import time

import pytest

from liteq import compat

pytestmark = pytest.mark.every_engine

PATIENCE = 60.0  # only bounds how long a broken build hangs
LEASE = 0.5  # how long an item held by the killed consumer stays invisible

PRODUCER = """
import sys
from liteq import compat
path, n = sys.argv[1], int(sys.argv[2])
q = compat.Queue(maxsize=20, path=path, name="jobs")
for i in range(n):
    q.put({"n": i, "tag": ("item", i)})  # waits whenever 20 are queued
q.join()  # every item got and task_done'd, by whichever consumer process
print("joined", flush=True)
"""

CONSUMER = """
import sys, time
from liteq import compat
path = sys.argv[1]
q = compat.Queue(path=path, name="jobs")
done = compat.SimpleQueue(path=path, name="done")
print("ready", flush=True)
while True:
    item = q.get()
    if item == "stop":
        q.task_done()
        break
    assert item["tag"] == ("item", item["n"])
    done.put(item["n"])  # record first, then finish: a kill in between repeats it
    time.sleep(0.002)
    q.task_done()
"""


def start(script: str, *args: object) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", script, *map(str, args)],
                            stdout=subprocess.PIPE, text=True)


def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + PATIENCE
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.005)


def test_a_consumer_killed_half_way_and_restarted_loses_nothing(db_target) -> None:
    path = db_target
    n = 300
    # Options first (they are stored in the file): liteq processes re-read a queue's
    # options at most once a second, so set them before the workers start.
    jobs: compat.Queue[str] = compat.Queue(path=path, name="jobs", lease=LEASE)
    done: compat.SimpleQueue[int] = compat.SimpleQueue(path=path, name="done")

    first = start(CONSUMER, path)
    assert first.stdout is not None and first.stdout.readline().strip() == "ready"
    producer = start(PRODUCER, path, n)
    wait_until(lambda: done.qsize() >= n // 3, "a third of the items are done")
    first.send_signal(signal.SIGKILL)
    first.wait(PATIENCE)
    at_kill = done.qsize()
    assert at_kill < n, "the consumer finished before it could be killed"
    assert producer.poll() is None  # its join() is still waiting

    second = start(CONSUMER, path)
    out, _ = producer.communicate(timeout=PATIENCE)
    assert (producer.returncode, out.strip()) == (0, "joined")

    jobs.put("stop")
    second.communicate(timeout=PATIENCE)
    assert second.returncode == 0
    jobs.join()

    finished = []
    while True:
        try:
            finished.append(done.get_nowait())
        except queue.Empty:
            break
    assert sorted(set(finished)) == list(range(n))  # nothing lost
    # At most the one item the killed consumer held is done twice (at least once).
    assert len(finished) - n <= 1
    assert jobs.qsize() == 0 and jobs.unfinished_tasks == 0
