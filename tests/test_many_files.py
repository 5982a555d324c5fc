"""A process with more than 1,024 files open (a web server's sockets): ``select()``
refuses a descriptor past 1023, so every wait liteq made there raised ``ValueError`` (a
waiting ``get``, the PostgreSQL listening thread, which died of it). Waits use ``poll()``
(``liteq/fdwait.py``). Both engines."""

from __future__ import annotations

import os
import resource
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

import liteq

pytestmark = [
    pytest.mark.every_engine,
    # A liteq thread that dies of it (the listening thread) fails the test.
    pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning"),
]

FILES = 1100


@contextmanager
def many_files() -> Iterator[None]:
    """FILES descriptors held open (the soft limit raised if it must be), so that the
    next ones a process opens are past 1023."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = FILES + 200
    if hard != resource.RLIM_INFINITY and hard < need:
        pytest.skip(f"this process may open at most {hard} files")
    raise_it = soft != resource.RLIM_INFINITY and soft < need
    if raise_it:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    fds: list[int] = []
    try:
        while len(fds) < FILES:
            fds.append(os.open(os.devnull, os.O_RDONLY))
        yield
    finally:
        for fd in fds:
            os.close(fd)
        if raise_it:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_waiting_get_is_woken_in_a_process_with_more_than_1024_files_open(
        db: liteq.Database, db_target: str) -> None:
    db.close()  # its descriptors taken below: what it opens next is past 1023
    with many_files():
        q = db.queue("jobs")

        def put_later() -> None:
            time.sleep(0.3)
            with liteq.connect(db_target) as other:
                other.queue("jobs").put("x")

        t = threading.Thread(target=put_later)
        t.start()
        try:
            msg = q.get(wait=20)
        finally:
            t.join()
        assert msg is not None and msg.payload == "x"
        msg.ack()
        q.put("y")  # and the process goes on: a put, a wait that finds it at once
        again = q.get(wait=5)
        assert again is not None and again.payload == "y"
        again.ack()
        db.close()


@pytest.mark.sqlite_only("a unit of liteq/fdwait.py, no database")
def test_wait_readable_answers_as_select_did() -> None:
    from liteq.fdwait import wait_readable

    r, w = os.pipe()
    try:
        assert wait_readable([r], 0) == []  # nothing yet: no wait
        assert wait_readable([r], -1) == []  # below 0: no wait either (select refused it)
        threading.Timer(0.1, os.write, (w, b"x")).start()
        assert wait_readable([r], None) == [r]  # no limit: until there is something
        os.read(r, 1)
        os.close(w)
        w = -1
        assert wait_readable([r], 5) == [r]  # end of file counts as readable
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
