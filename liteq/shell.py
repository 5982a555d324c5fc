"""Shell commands as schedule targets, for people replacing crontab lines.

A command schedule enqueues ``{"task": "liteq.shell", "args": [COMMAND]}`` into the
``shell`` queue; only a worker started with ``--allow-shell`` registers the task
(:func:`register_shell_task`) and so runs it, with the worker's own rights.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import time
from typing import TYPE_CHECKING, Any

from .context import Context
from .fdwait import wait_readable

if TYPE_CHECKING:
    from .task import Task

__all__ = ["SHELL_TASK", "SHELL_QUEUE", "OUTPUT_TAIL", "CommandFailed", "run_shell",
           "register_shell_task"]

#: Name and default queue of the shell-command task (served by ``--allow-shell`` workers).
SHELL_TASK = "liteq.shell"
SHELL_QUEUE = "shell"
#: Characters of a command's output kept in its job's result or error.
OUTPUT_TAIL = 4000


class CommandFailed(Exception):
    """A scheduled shell command exited with a non-zero code (the job is retried)."""

    # Its public name is liteq.scheduler.CommandFailed: failed jobs record the
    # exception's dotted name, and that name was published before this module split.
    __module__ = "liteq.scheduler"

    def __init__(self, result: dict[str, Any]) -> None:
        how = "timed out" if result.get("timed_out") else f"exited with code {result['exit_code']}"
        tail = result.get("output_tail") or ""
        super().__init__(f"command {how}: {result['command']}"
                         + (f"\n--- output (tail) ---\n{tail}" if tail else ""))
        self.result = result
        self.exit_code = result["exit_code"]
        self.output_tail = tail


def run_shell(command: str, timeout: float | None = None, *,
              tail: int = OUTPUT_TAIL) -> dict[str, Any]:
    """Run *command* with ``/bin/sh -c``; return ``exit_code``, ``output_tail`` (the
    last *tail* characters of stdout and stderr together), ``duration``, ``timed_out``.

    The command runs in a session of its own with stdin closed; past *timeout*
    seconds (or when the calling thread is interrupted, e.g. by a task timeout) its
    whole process group is killed and ``exit_code`` is negative, as for a signal.
    """
    began = time.monotonic()
    deadline = None if timeout is None else began + timeout
    kept = bytearray()
    limit = tail * 4  # bytes: a UTF-8 character is at most four
    proc = subprocess.Popen(command, shell=True, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    timed_out = eof = False
    try:
        while True:
            left = math.inf if deadline is None else deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            # Short waits: a task timeout is raised in this thread between them.
            wait = min(0.5, left)
            if eof:  # the output is closed; wait for the exit
                try:
                    proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
            ready = wait_readable([fd], wait)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    eof = True
                    continue
                kept += chunk
                del kept[:-limit]
            elif proc.poll() is not None:
                break  # exited; a background child may keep the pipe open
    finally:
        if proc.poll() is None:
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)
        proc.stdout.close()
        code = proc.wait()
    text = kept.decode("utf-8", errors="replace")[-tail:]
    return {"command": command, "exit_code": code, "output_tail": text,
            "duration": round(time.monotonic() - began, 6), "timed_out": timed_out}


def register_shell_task(db: Context, *, queue: str = SHELL_QUEUE, timeout: float | None = None,
                        max_attempts: int = 5, backoff: Any = None) -> Task[Any, Any]:
    """Register the task ``liteq.shell`` on *db*: it runs its one argument with
    :func:`run_shell`, returns (and stores) the result, and raises
    :class:`CommandFailed` on a non-zero exit, so the job is retried like any task.

    Only a worker started with ``--allow-shell`` calls this. The commands run with
    that worker's user and rights: anyone who can write to the database file can
    make such a worker run any command.
    """
    limit = None if timeout is None else float(timeout)

    def shell(command: str) -> dict[str, Any]:
        result = run_shell(command, timeout=limit)
        if result["exit_code"] != 0:
            raise CommandFailed(result)
        return result

    # The task's own timeout is a backstop a little after run_shell's, which kills
    # the command's whole process group itself.
    task: Task[Any, Any] = db.task(
        name=SHELL_TASK, queue=queue, store_result=True, max_attempts=max_attempts,
        backoff=backoff, timeout=None if limit is None else limit + 10)(shell)
    return task
