"""The workers registry (issue 21): real ``liteq worker`` subprocesses record themselves,
``liteq workers`` (through click's CliRunner) shows them with their running jobs, a
SIGKILLed one shows as gone once its heartbeat is stale, and a clean stop removes the
row. On every engine."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from click.testing import CliRunner
from workerapp_tools import HERE, PATIENCE, children_of, stop, wait_until, worker_command

import liteq
from liteq.cli import cli

pytestmark = [
    pytest.mark.skipif(not hasattr(os, "fork"), reason="the process pool needs fork()"),
    pytest.mark.every_engine,
]


@pytest.fixture
def app(db_target: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    monkeypatch.setenv("LITEQ_DB", db_target)
    import importlib

    import registryapp

    module = importlib.reload(registryapp)
    yield module
    module.db.close()


def _start(target: str, *args: str, log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, LITEQ_DB=target,
               PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    out = open(log, "ab")  # noqa: SIM115 - the child keeps it
    cmd = [*worker_command(), "--db", target, "worker", "registryapp", "--summary-interval",
           "0", "--heartbeat", "0.2", "--grace", "0.5", *args]
    return subprocess.Popen(cmd, env=env, cwd=str(HERE), stdout=out, stderr=out)


def _liteq(target: str, *args: str) -> Any:
    result = CliRunner().invoke(cli, ["--db", target, *args], prog_name="liteq",
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def _workers(target: str, *args: str) -> list[dict[str, Any]]:
    return list(json.loads(_liteq(target, "workers", "--json", *args).stdout))


def _by_pool(target: str, *args: str) -> dict[str, dict[str, Any]]:
    return {w["pool"]: w for w in _workers(target, *args)}


def test_two_live_workers_of_different_pools_show_with_their_running_jobs_and_a_killed_one_goes(
        app: ModuleType, db_target: str, tmp_path: Path) -> None:
    log = tmp_path / "workers.log"
    threads = _start(db_target, "--pool", "thread", "-c", "2", "-Q", "images", log=log)
    procs = _start(db_target, "--pool", "process", "-c", "1", "-Q", "reports", log=log)
    try:
        resizing = app.resize.delay(120.0)
        reporting = app.report.delay(120.0)

        def both_running() -> bool:
            found = _by_pool(db_target)
            return (set(found) == {"thread", "process"}
                    and all(w["jobs"] for w in found.values()))

        wait_until(both_running, what="both workers to show their running job", every=0.1)
        found = _by_pool(db_target)
        thread, process = found["thread"], found["process"]
        assert (thread["pid"], thread["queues"], thread["concurrency"]) == \
            (threads.pid, ["images"], 2)
        assert (process["pid"], process["queues"], process["concurrency"]) == \
            (procs.pid, ["reports"], 1)
        assert {thread["state"], process["state"]} == {"alive"}
        assert thread["version"] == liteq.__version__
        assert [j["id"] for j in process["jobs"]] == [reporting.id]
        wait_until(lambda: _by_pool(db_target)["thread"]["jobs"][0]["progress"] == 0.4,
                   what="the resize job's progress", every=0.1)
        job = _by_pool(db_target)["thread"]["jobs"][0]
        assert (job["id"], job["note"]) == (resizing.id, "resized 40 of 100")
        table = _liteq(db_target, "workers").stdout
        assert "alive" in table and f"{resizing.id} (" in table and "40% resized" in table

        kids = children_of(procs.pid)
        procs.kill()  # SIGKILL: the row stays behind ...
        for kid in kids:
            os.kill(kid, signal.SIGKILL)
        procs.wait(PATIENCE)
        wait_until(lambda: _by_pool(db_target, "--stale", "1")["process"]["state"] == "gone",
                   what="the killed worker to show as gone", every=0.2)
        # ... while the live one keeps beating.
        assert _by_pool(db_target, "--stale", "1")["thread"]["state"] == "alive"
    finally:
        for p in (threads, procs):
            if p.poll() is None:  # the running job is released after the 0.5 s grace
                p.send_signal(signal.SIGINT)  # (a second signal sent at once may merge
                p.wait(PATIENCE)              # with the first: that waited 20 s)
    assert threads.returncode == 0
    assert set(_by_pool(db_target)) == {"process"}, "a clean stop removes the row"


def test_an_asyncio_worker_shows_the_jobs_it_is_running(
        app: ModuleType, db_target: str, tmp_path: Path) -> None:
    worker = _start(db_target, "--pool", "asyncio", "-c", "4", "-Q", "reports",
                    log=tmp_path / "w.log")
    try:
        job = app.report.delay(3.0)

        def shown() -> list[int]:
            found = _by_pool(db_target).get("asyncio")
            return [j["id"] for j in found["jobs"]] if found else []

        wait_until(lambda: shown() == [job.id], what="the asyncio worker to show its job",
                   every=0.1)
    finally:
        stop(worker)


def test_liteq_job_shows_the_progress_a_running_task_reported(
        app: ModuleType, db_target: str, tmp_path: Path) -> None:
    worker = _start(db_target, "--pool", "thread", "-c", "1", "-Q", "images",
                    log=tmp_path / "w.log")
    try:
        job = app.resize.delay(0.5)
        wait_until(lambda: job.state == "done", what="the job to finish", every=0.1)
    finally:
        stop(worker)
    shown = json.loads(_liteq(db_target, "job", str(job.id), "--json").stdout)
    assert shown["progress"]["fraction"] == 0.4
    assert shown["progress"]["note"] == "resized 40 of 100"
    assert "40% resized 40 of 100" in _liteq(db_target, "job", str(job.id)).stdout
