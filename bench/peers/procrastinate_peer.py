"""procrastinate (PostgreSQL task queue), measured in its own terms.

procrastinate has no public "get one message, ack it" call: a job is fetched, run and
finished by its worker (``procrastinate_fetch_job_v2``, then
``procrastinate_finish_job_v1``, stored procedures). So:

* put = ``task.defer(**payload)`` (the sync connector: one pool checkout, an
  ``INSERT`` through its ``procrastinate_defer_jobs_v1`` function, whose trigger sends a
  ``NOTIFY`` per job, COMMIT); batch put = ``task.batch_defer(*100 payloads)``;
* get+ack = its worker draining the queue: ``Worker(concurrency=1, wait=False,
  listen_notify=False, delete_jobs="always")`` with an ``async def`` no-op task (the
  fastest kind: no thread hop), so each job is fetched, run and deleted, as liteq's ack
  deletes; batch get+ack: n/a (the worker fetches one job per query);
* 1 producer + k consumers: k processes each running that worker with ``wait=True``
  and ``listen_notify=True`` (woken by its NOTIFY), stopped once the producer is done
  and no job is left;
* latency: an idle worker in another process (LISTEN/NOTIFY), the task reads the clock.

``synchronous_commit``: procrastinate never sets it, so a session has the server's
default (``on``); the harness passes libpq ``options`` to both of its pools
(``kwargs={"options": "-c synchronous_commit=..."}``, psycopg_pool's public argument).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import traceback
from collections.abc import Sequence
from typing import Any

import procrastinate
from procrastinate.worker import Worker

from .pg_base import PgPeer, session_options

QUEUE = "bench"
#: Receipts of the no-op task in this process: (n, time it ran).
RECEIVED: list[tuple[int, float]] = []
#: Called with each receipt when set (the latency consumer).
ON_JOB: list[Any] = []


def make_app(url: str, sync: str) -> procrastinate.App:
    """A sync app (deferring) with the no-op task registered."""
    app = procrastinate.App(connector=procrastinate.SyncPsycopgConnector(
        conninfo=url, kwargs={"options": session_options(sync)}, min_size=1, max_size=2))

    @app.task(name="noop", queue=QUEUE)
    async def noop(**payload: Any) -> None:
        now = time.time()
        RECEIVED.append((payload["n"], now))
        for callback in ON_JOB:
            callback(payload, now)

    return app


def async_app(app: procrastinate.App, url: str, sync: str) -> procrastinate.App:
    """*app*'s tasks on the async connector its worker needs."""
    return app.with_connector(procrastinate.PsycopgConnector(
        conninfo=url, kwargs={"options": session_options(sync)}, min_size=1, max_size=4))


def worker(app: procrastinate.App, wait: bool) -> Worker:
    return Worker(app, queues=[QUEUE], concurrency=1, wait=wait, listen_notify=wait,
                  delete_jobs="always", install_signal_handlers=False)


class ProcrastinatePeer(PgPeer):
    name = "procrastinate"
    dist = "procrastinate"
    semantics = ("defer = INSERT through its SQL function (+ NOTIFY trigger); "
                 "get+ack = its worker fetching, running a no-op async task, deleting the job")
    default_sync = "the server's default (on): procrastinate does not set it"
    how_set = "psycopg_pool kwargs: options='-c synchronous_commit=...'"
    codec = "JSON (jsonb task kwargs)"
    batch_put = True
    batch_get = False
    wakes = True  # LISTEN/NOTIFY in its worker
    worker_only = True

    def __init__(self, url: str, sync: str) -> None:
        super().__init__(url, sync)
        self.app = make_app(url, sync)
        self.app.open()
        with self.app.connector.pool.connection() as conn:  # type: ignore[attr-defined]
            found = conn.execute("SELECT to_regclass('procrastinate_jobs')").fetchone()
        if found is None or found[0] is None:
            self.app.schema_manager.apply_schema()
        self.task = self.app.tasks["noop"]

    def put(self, payload: dict[str, Any]) -> None:
        self.task.defer(**payload)

    def put_many(self, payloads: Sequence[dict[str, Any]]) -> None:
        self.task.batch_defer(*payloads)

    def drain(self) -> int:
        """Run a worker until the queue is empty; how many jobs it ran."""
        before = len(RECEIVED)
        aapp = async_app(self.app, self.url, self.sync)

        async def run() -> None:
            async with aapp.open_async():
                await worker(aapp, wait=False).run()

        asyncio.run(run())
        return len(RECEIVED) - before

    def show(self, name: str) -> str:
        with self.app.connector.pool.connection() as conn:  # type: ignore[attr-defined]
            return str(conn.execute(f"SHOW {name}").fetchone()[0])  # type: ignore[index]

    def close(self) -> None:
        self.app.close()


async def _run_until(aapp: procrastinate.App, stop_when: Any) -> None:
    """Run a waiting worker until ``await stop_when(aapp)`` returns."""
    async with aapp.open_async():
        w = worker(aapp, wait=True)
        running = asyncio.ensure_future(w.run())
        try:
            await stop_when(aapp)
        finally:
            w.stop()
            await running


def consumer(url: str, sync: str, start: Any, producer_done: Any, results: Any,
             index: int) -> None:
    """A consumer process of the multi-process rows (``harness.child``'s twin)."""
    try:
        app = make_app(url, sync)
        aapp = async_app(app, url, sync)

        async def drained(aapp: procrastinate.App) -> None:
            while True:
                await asyncio.sleep(0.05)
                if not producer_done.is_set():
                    continue
                async with aapp.connector.pool.connection() as conn:  # type: ignore[attr-defined]
                    cur = await conn.execute(
                        "SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')")
                    row = await cur.fetchone()
                if row[0] == 0:
                    return

        start.wait()
        t0 = time.time()
        asyncio.run(_run_until(aapp, drained))
        got = [n for n, _ in RECEIVED]
        last = max((t for _, t in RECEIVED), default=t0)
        results.put(("consumer", index, {"start": t0, "end": last, "got": got}))
    except BaseException:
        results.put(("consumer", index, {"error": traceback.format_exc()}))


def latency_consumer(url: str, sync: str, samples: int, idle: float, conn: Any) -> None:
    """The idle consumer of the latency row (``harness.latency_child``'s twin)."""
    try:
        app = make_app(url, sync)
        aapp = async_app(app, url, sync)
        lat: list[float] = []
        idle_from: list[float] = []

        def on_job(payload: dict[str, Any], now: float) -> None:
            lat.append(now - payload["t"])
            conn.send("got")
            if len(lat) == samples:
                idle_from.extend([time.process_time(), time.monotonic()])

        ON_JOB.append(on_job)

        async def done(aapp: procrastinate.App) -> None:
            await asyncio.sleep(1.0)  # the worker is listening by then
            conn.send("ready")
            while not idle_from:
                await asyncio.sleep(0.01)
            await asyncio.sleep(idle)

        asyncio.run(_run_until(aapp, done))
        conn.send({"lat": lat, "cpu": time.process_time() - idle_from[0],
                   "wall": time.monotonic() - idle_from[1]})
    except BaseException:
        with contextlib.suppress(Exception):
            conn.send({"error": traceback.format_exc()})
