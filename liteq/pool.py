"""The worker's process pool (``Worker(pool="process")``): a supervisor forks one
child per consumer, watches them, and settles what a dead child leaves behind.

* **Children.** Each child runs one consumer (:meth:`Worker._consume`). It is forked,
  so it inherits the registered tasks; it opens its own connections (the store
  notices the new pid). On Linux the kernel kills it when the supervisor dies
  (``PR_SET_PDEATHSIG``); elsewhere it notices on its next idle wait.
* **Shared memory, not pipes.** A child publishes what it runs (id, token, queue,
  deadline), the leases it holds and its counters into its slot of one anonymous
  shared mapping; the supervisor reads the slots every tick. A seqlock keeps it
  from reading half a record.
* **Recycling.** With ``max_tasks_per_child`` or ``max_memory_per_child``, a child
  past either limit finishes its job, releases the jobs it claimed but did not
  start, says why in its slot and exits; a new child takes the slot at once.
* **Deaths.** A child that dies (a crash, or SIGKILL after its task's timeout)
  is reaped: the job it was running is settled as a failed attempt, the jobs it held
  without running are released, and a new child takes its slot (after a second if
  the dead one lived less than a second, so a child that dies at start does not spin).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import mmap
import os
import signal
import struct
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from .counters import COUNTERS, logger
from .errors import InvalidArgument

if TYPE_CHECKING:
    from .hooks import StatsHook

_HEAD = struct.Struct("<qqqqqd" + "q" * len(COUNTERS) + "qq")
_HELD = struct.Struct("<qqq")
_SEQ = struct.Struct("<q")

#: What a child holds: ``(id, token, queue id)`` per message.
Held = list[tuple[int, int, int]]


class Slot:
    """One child's record in an anonymous shared mapping: what it runs (with the
    deadline), what it holds, and its counters. A seqlock (odd while writing) keeps
    the supervisor from reading half a record; plain integers, no pipes per job."""

    def __init__(self, buf: mmap.mmap, index: int, capacity: int) -> None:
        self.buf = buf
        self.capacity = capacity
        self.size = _HEAD.size + _HELD.size * capacity
        self.off = index * self.size
        self.running: tuple[int, int, int, float] = (0, 0, 0, 0.0)
        self.counts = [0] * len(COUNTERS)
        self.held: Held = []
        self.pid = 0
        self.recycled = 0  # set by a child that ends to be replaced (RECYCLE_*)

    def _write(self, held: bool) -> None:
        off = self.off
        seq = _SEQ.unpack_from(self.buf, off)[0] + 1
        _SEQ.pack_into(self.buf, off, seq)
        _HEAD.pack_into(self.buf, off, seq, self.pid, *self.running, *self.counts,
                        self.recycled, len(self.held))
        if held:
            for k, item in enumerate(self.held):
                _HELD.pack_into(self.buf, off + _HEAD.size + k * _HELD.size, *item)
        _SEQ.pack_into(self.buf, off, seq + 1)

    def publish(self, *, running: tuple[int, int, int, float] | None = None,
                held: Held | None = None, counts: dict[str, int] | None = None,
                recycled: int | None = None) -> None:
        if recycled is not None:
            self.recycled = recycled
        if running is not None:
            self.running = running
        if held is not None:
            self.held = held[: self.capacity]
        if counts is not None:
            self.counts = [counts[k] for k in COUNTERS]
        self._write(held is not None)

    def read(self) -> tuple[int, tuple[int, int, int, float], dict[str, int], Held]:
        """``(pid, (id, token, qid, deadline), counts, held)`` as last published."""
        for _ in range(1000):
            seq = _SEQ.unpack_from(self.buf, self.off)[0]
            head = _HEAD.unpack_from(self.buf, self.off)
            held = [_HELD.unpack_from(self.buf, self.off + _HEAD.size + k * _HELD.size)
                    for k in range(min(head[-1], self.capacity))]
            if seq % 2 == 0 and _SEQ.unpack_from(self.buf, self.off)[0] == seq:
                break
            time.sleep(0.0001)  # a writer is mid-record (or died there: take it anyway)
        counts = dict(zip(COUNTERS, head[6:6 + len(COUNTERS)], strict=True))
        return head[1], (head[2], head[3], head[4], head[5]), counts, held

    def recycled_by(self) -> int:
        """Why the child ended to be replaced (a ``RECYCLE_*`` code), or 0."""
        return int(_HEAD.unpack_from(self.buf, self.off)[-2])

    def reset(self) -> None:
        self.running, self.held, self.counts, self.pid = (0, 0, 0, 0.0), [], [0] * len(COUNTERS), 0
        self.recycled = 0
        self._write(True)


#: Why a child ended to be replaced: it ran ``max_tasks_per_child`` jobs, or its
#: resident memory passed ``max_memory_per_child``.
RECYCLE_TASKS = 1
RECYCLE_MEMORY = 2


def resident_mb() -> float:
    """This process's resident memory now, in MB (Linux; elsewhere its peak)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KB; bytes on macOS
        return peak / (2**20 if sys.platform == "darwin" else 2**10)


class ProcessPool:
    """The supervisor's side of ``pool="process"``, mixed into :class:`~liteq.Worker`,
    which provides the jobs' side: :meth:`_consume` (run one consumer in a child) and
    :meth:`_orphaned` (settle what a dead child ran and held)."""

    # Provided by the Worker.
    concurrency: int
    prefetch: int
    burst: bool
    _stats: StatsHook
    _stopping: bool
    _stop_now: bool
    _stop_deadline: float
    _parent: int
    _counts: Callable[[], dict[str, int]]
    _periodic: Callable[[dict[str, float]], None]
    _timers: Callable[[], dict[str, float]]
    _supervise_wait: Callable[[], None]  # one supervisor tick
    _open_pipes: Callable[[], None]
    _close_pipes: Callable[[], None]
    _announce_stop: Callable[[], None]
    _running_jobs: Callable[[], int]
    stop: Callable[..., None]

    max_tasks_per_child: int | None = None
    max_memory_per_child: float | None = None

    def _consume(self, slot: Slot) -> None:
        raise NotImplementedError

    def _set_child_limits(self, pool: str, max_tasks: object, max_mb: object) -> None:
        """Check and keep ``max_tasks_per_child`` and ``max_memory_per_child``."""
        if max_tasks is not None and (isinstance(max_tasks, bool) or not isinstance(
                max_tasks, int) or max_tasks < 1):
            raise InvalidArgument(f"max_tasks_per_child must be a positive integer or None, "
                                  f"got {max_tasks!r}")
        if max_mb is not None and (isinstance(max_mb, bool) or not isinstance(
                max_mb, (int, float)) or not 0 < max_mb < float("inf")):
            raise InvalidArgument(f"max_memory_per_child must be a number of MB > 0 or None, "
                                  f"got {max_mb!r}")
        if pool != "process" and (max_tasks is not None or max_mb is not None):
            raise InvalidArgument("max_tasks_per_child and max_memory_per_child replace "
                                  "child processes: they need pool='process' (a thread "
                                  "cannot be replaced to give its memory back)")
        self.max_tasks_per_child = max_tasks
        self.max_memory_per_child = None if max_mb is None else float(max_mb)

    def _child_spent(self, handled: int) -> int:
        """In a child that has handled *handled* jobs: why it should now stop and be
        replaced (``RECYCLE_*``, logged), or 0."""
        if self.max_tasks_per_child and handled >= self.max_tasks_per_child:
            logger.info("worker process %d ran %d jobs (max_tasks_per_child): replacing it",
                        os.getpid(), handled)
            return RECYCLE_TASKS
        limit = self.max_memory_per_child
        if limit and (mb := resident_mb()) > limit:
            logger.info("worker process %d uses %.0f MB after %d jobs (max_memory_per_child "
                        "%g MB): replacing it", os.getpid(), mb, handled, limit)
            return RECYCLE_MEMORY
        return 0

    def _orphaned(self, pid: int, running: tuple[int, int, int], reason: str | None,
                  code: int, held: Held) -> int:
        raise NotImplementedError

    def _run_processes(self) -> None:
        n = self.concurrency
        size = _HEAD.size + _HELD.size * self.prefetch
        buf = mmap.mmap(-1, size * n)
        slots = [Slot(buf, i, self.prefetch) for i in range(n)]
        children: dict[int, int] = {}  # pid -> slot
        born: dict[int, float] = {}
        killed: dict[int, str] = {}  # pid -> "timeout" | "stop"
        respawn: dict[int, float] = {}  # slot -> when
        retired = dict.fromkeys(COUNTERS, 0)

        def counts() -> dict[str, int]:
            total = dict(retired)
            for k, v in self._stats.snapshot().items():  # jobs settled here (timeouts)
                total[k] += v
            for i in children.values():
                for k, v in slots[i].read()[2].items():
                    total[k] += v
            return total

        self._counts = counts
        self._running_jobs = lambda: sum(1 for i in children.values() if slots[i].read()[1][0])
        self._running_ids = lambda: [slots[i].read()[1][0] for i in list(children.values())]
        for i in range(n):
            self._spawn(slots[i], children, born)
        timers = self._timers()
        termed = graced = False
        try:
            while children or (respawn and not self._stopping):
                self._announce_stop()
                now = time.monotonic()
                for pid in list(children):
                    self._reap(pid, slots, children, born, killed, respawn, retired)
                for i, when in list(respawn.items()):
                    if self._stopping:
                        respawn.clear()
                    elif now >= when:
                        del respawn[i]
                        self._spawn(slots[i], children, born)
                if self._stopping and not termed:
                    termed = True
                    for pid in children:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGTERM)
                if self._stop_now or (self._stopping and now > self._stop_deadline):
                    if not self._stop_now and not graced:
                        graced = True
                        logger.warning("the grace period is over: stopping %d worker "
                                       "process(es); their jobs are released", len(children))
                    for pid in children:
                        if pid not in killed:
                            killed[pid] = "stop"
                            with contextlib.suppress(ProcessLookupError):
                                os.kill(pid, signal.SIGKILL)
                for pid, i in children.items():
                    _, (mid, _token, _qid, deadline), _, _ = slots[i].read()
                    if mid and deadline and now > deadline and pid not in killed:
                        logger.warning("job %d ran past its timeout: killing worker process %d "
                                       "and starting another", mid, pid)
                        killed[pid] = "timeout"
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
                self._periodic(timers)
                self._supervise_wait()
        finally:
            for pid in children:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            for pid in list(children):
                killed[pid] = "stop"
                os.waitpid(pid, 0)
                self._after_child(pid, 0, slots[children.pop(pid)], killed, retired)
            final = counts()
            self._counts = lambda: final
            buf.close()

    def _spawn(self, slot: Slot, children: dict[int, int], born: dict[int, float]) -> None:
        slot.reset()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child
            code = 1
            try:
                code = self._child(slot)
            except BaseException:
                logger.exception("worker process failed")
            finally:
                for h in logging.getLogger().handlers + logger.handlers:
                    with contextlib.suppress(Exception):
                        h.flush()
                os._exit(code)
        children[pid] = slot.off // slot.size
        born[pid] = time.monotonic()

    def _reap(self, pid: int, slots: list[Slot], children: dict[int, int],
              born: dict[int, float], killed: dict[int, str], respawn: dict[int, float],
              retired: dict[str, int]) -> None:
        try:
            got, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            got, status = pid, 0
        if got == 0:
            return
        i = children.pop(pid)
        code = os.waitstatus_to_exitcode(status)
        recycled = code == 0 and slots[i].recycled_by() != 0
        expected = self._stopping or (self.burst and code == 0 and not recycled)
        self._after_child(pid, code, slots[i], killed, retired)
        if not expected:
            # A child replaced on purpose is replaced at once; one that died young
            # waits a second, so that a child dying at start does not spin.
            quick = time.monotonic() - born.pop(pid, 0.0) < 1.0 and not recycled
            respawn[i] = time.monotonic() + (1.0 if quick else 0.0)
        born.pop(pid, None)

    def _after_child(self, pid: int, code: int, slot: Slot, killed: dict[int, str],
                     retired: dict[str, int]) -> None:
        """A child ended: keep its counters, settle the job it was running, release
        what it held."""
        reason = killed.pop(pid, None)
        _, (mid, token, qid, _deadline), counts, held = slot.read()
        for k, v in counts.items():
            retired[k] += v
        if code != 0 and reason is None:
            what = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
            logger.error("worker process %d died (%s)%s", pid, what,
                         f" while running job {mid}" if mid else "")
        retired["released"] += self._orphaned(pid, (mid, token, qid), reason, code, held)
        slot.reset()

    def _child(self, slot: Slot) -> int:
        _die_with_parent()
        if os.getppid() != self._parent:
            return 0
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, lambda *_: self.stop())
        self._close_pipes()
        self._open_pipes()
        slot.pid = os.getpid()
        self._consume(slot)
        return 0


def _die_with_parent() -> None:
    """Linux: have the kernel SIGKILL this child when its parent dies (so a worker
    killed with SIGKILL takes its children with it)."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
