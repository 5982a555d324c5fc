"""An apsw VFS that makes file operations fail on demand: SQLite's own I/O-error
tests, at liteq's scale.

:class:`FaultVFS` wraps the default VFS (``unix``) and hands SQLite files whose
``xRead``, ``xWrite``, ``xSync`` and ``xTruncate`` consult a :class:`FaultPlan`
first. A rule says which operation fails (``read``, ``write``, ``grow`` -- a write
that makes the file longer, as a full disk refuses -- ``sync``, ``truncate``), on
which file (``db``, ``wal``, ``journal`` or ``any``), after how many matching calls
go through, how many times, and with which SQLite error code::

    with fault_vfs() as plan:              # registered as the default VFS
        db = liteq.connect(path)           # so liteq's connections use it
        plan.fail("write", file="wal", code=apsw.SQLITE_FULL)
        ...                                # the next WAL write says "disk full"
        plan.clear()                       # the fault stops

liteq has no ``vfs=`` option: ``apsw.Connection(path)`` opens through the default
VFS, so the fault VFS is made the default while the block runs and unregistered
after it. Only connections opened inside the block use it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import apsw

__all__ = ["FaultPlan", "FaultVFS", "Rule", "fault_vfs", "OPERATIONS", "FILES"]

OPERATIONS = ("read", "write", "grow", "sync", "truncate")
FILES = ("db", "wal", "journal", "any")


@dataclass
class Rule:
    """Fail *op* on *file* with *code*: let *after* matching calls through first,
    then fail *times* calls (None: every one until the plan is cleared)."""

    op: str
    file: str = "any"
    code: int = apsw.SQLITE_IOERR
    after: int = 0
    times: int | None = None
    seen: int = 0
    fired: int = 0

    def matches(self, op: str, kind: str) -> bool:
        if self.file != "any" and self.file != kind:
            return False
        return self.op == op or (self.op == "write" and op == "grow")


@dataclass
class FaultPlan:
    """The faults to inject, and a tally of what was called and what failed."""

    rules: list[Rule] = field(default_factory=list)
    calls: dict[tuple[str, str], int] = field(default_factory=dict)
    failures: list[tuple[str, str, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fail(self, op: str, file: str = "any", *, code: int = apsw.SQLITE_IOERR,
             after: int = 0, times: int | None = None) -> Rule:
        """Add a fault (see :class:`Rule`); returns it (``rule.fired`` counts failures)."""
        if op not in OPERATIONS:
            raise ValueError(f"op must be one of {OPERATIONS}, got {op!r}")
        if file not in FILES:
            raise ValueError(f"file must be one of {FILES}, got {file!r}")
        rule = Rule(op, file, code, after, times)
        with self.lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        """Stop every fault (the tallies are kept)."""
        with self.lock:
            self.rules = []

    def fired(self) -> int:
        """How many calls failed so far."""
        with self.lock:
            return len(self.failures)

    def check(self, op: str, kind: str) -> None:
        """Called by every faultable file operation: raise if a rule says so."""
        with self.lock:
            self.calls[(op, kind)] = self.calls.get((op, kind), 0) + 1
            for rule in self.rules:
                if not rule.matches(op, kind):
                    continue
                rule.seen += 1
                if rule.seen <= rule.after:
                    continue
                if rule.times is not None and rule.fired >= rule.times:
                    continue
                rule.fired += 1
                self.failures.append((op, kind, rule.code))
                break
            else:
                return
        exc = apsw.exception_for(rule.code)
        text = "database or disk is full" if rule.code & 0xFF == apsw.SQLITE_FULL else \
            "disk I/O error"
        exc.args = (f"{text} (injected: {op} of the {kind} file)",)
        raise exc


def _kind(flags: int) -> str:
    if flags & apsw.SQLITE_OPEN_MAIN_DB:
        return "db"
    if flags & apsw.SQLITE_OPEN_WAL:
        return "wal"
    if flags & (apsw.SQLITE_OPEN_MAIN_JOURNAL | apsw.SQLITE_OPEN_SUPER_JOURNAL):
        return "journal"
    return "other"


class FaultFile(apsw.VFSFile):
    """A file of the wrapped VFS whose reads, writes, syncs and truncates may fail."""

    def __init__(self, plan: FaultPlan, base: str, name: Any, flags: list[int]) -> None:
        super().__init__(base, name, flags)
        self.plan = plan
        self.kind = _kind(flags[0])

    def xRead(self, amount: int, offset: int) -> bytes:
        self.plan.check("read", self.kind)
        return super().xRead(amount, offset)

    def xWrite(self, data: bytes, offset: int) -> None:
        grows = offset + len(data) > super().xFileSize()
        self.plan.check("grow" if grows else "write", self.kind)
        super().xWrite(data, offset)

    def xSync(self, flags: int) -> None:
        self.plan.check("sync", self.kind)
        super().xSync(flags)

    def xTruncate(self, size: int) -> None:
        self.plan.check("truncate", self.kind)
        super().xTruncate(size)


class FaultVFS(apsw.VFS):
    """The default VFS, with a :class:`FaultPlan` between SQLite and every file."""

    def __init__(self, plan: FaultPlan, name: str = "liteq-fault", base: str = "",
                 makedefault: bool = True) -> None:
        self.plan = plan
        self.base_name = base or apsw.vfs_names()[0]
        super().__init__(name, self.base_name, makedefault=makedefault)

    def xOpen(self, name: Any, flags: list[int]) -> FaultFile:
        return FaultFile(self.plan, self.base_name, name, flags)


@contextmanager
def fault_vfs() -> Iterator[FaultPlan]:
    """Make a fault VFS the default while the block runs; yield its plan."""
    plan = FaultPlan()
    vfs = FaultVFS(plan)
    try:
        yield plan
    finally:
        plan.clear()
        vfs.unregister()
