"""Shared test helpers: an injectable clock, file fingerprints, and the bodies of the
child processes the concurrency and crash tests start.

Child-process entry points live here (not in the test modules) so that the "spawn"
start method can import them by name; each child opens its own ``liteq.connect``.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from dbsql import sql

import liteq

#: Generous bound for anything that waits on another process or thread. Waits end as
#: soon as the awaited thing happens; this only limits how long a broken build hangs.
PATIENCE = 120.0


def count_claims(db: liteq.Database) -> list[int]:
    """From now on, record the queue id of every claim *db* makes (each claim is a
    write transaction: what an idle consumer should not take on other commits).

    Patches the engine (``db.backend``), which every queue of *db* shares. A queue binds
    the engine's claim once, when it is made: call this before making any queue."""
    claims: list[int] = []
    claim = db.backend.claim

    def counting_claim(qid: int, n: int, lease: float) -> Any:
        claims.append(qid)
        return claim(qid, n, lease)

    db.backend.claim = counting_claim  # type: ignore[method-assign]
    return claims


class FakeClock:
    """A clock the test moves by hand: pass it as ``liteq.connect(path, clock=...)``.

    Whole-second steps from a whole-second start keep every sum exact in a float.
    """

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = float(start)
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> float:
        with self._lock:
            self.now += seconds
            return self.now


def file_digest(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes (to show a refused file was left untouched)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def message_rows(db: liteq.Database) -> list[tuple[Any, ...]]:
    """Every message row, raw, ordered by id: the ground truth for "nothing changed".
    Not SQLite's tombstone (qid 0: the id of a deleted newest message, no message)."""
    return sql(
        db,
        "SELECT id, qid, state, priority, run_at, payload, headers, key, attempts, "
        "lease_until, token, error, finished_at, origin FROM messages WHERE qid <> 0 "
        "ORDER BY id",
    )


def queue_rows(db: liteq.Database) -> list[tuple[Any, ...]]:
    """Every queue row, raw (options and counters), ordered by id."""
    return sql(db, "SELECT * FROM queues ORDER BY id")


def counts(q: liteq.Queue) -> dict[str, Any]:
    """``q.stats()`` without the age of the oldest message (which moves with time)."""
    stats = q.stats()
    stats.pop("oldest_ready_age")
    return stats


def wait_until(predicate: Any, timeout: float = PATIENCE, what: str = "condition") -> None:
    """Poll *predicate* until it is true; fail the test after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.01)


def write_json(path: str, value: Any) -> None:
    """Write *value* as JSON atomically (a reader never sees half a file)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(value, f)
    os.replace(tmp, path)


# --- child processes ------------------------------------------------------------------


def drain_consumer(path: str, queue: str, barrier: Any, out_dir: str, proc: int) -> None:
    """Two threads that drain *queue*, one in get_many batches and one message at a
    time; each writes the ids it claimed and acked, and any exception, to its own file.
    """

    def consume(thread: int) -> None:
        claimed: list[int] = []
        acked: list[int] = []
        errors: list[str] = []
        rng = random.Random(proc * 10 + thread)
        try:
            db = liteq.connect(path)
            q = db.queue(queue)
            barrier.wait(timeout=PATIENCE)
            while True:
                if thread == 0:
                    msgs = q.get_many(rng.randint(1, 8))
                    if not msgs:
                        break
                    claimed.extend(m.id for m in msgs)
                    q.ack_many(msgs)
                    acked.extend(m.id for m in msgs)
                else:
                    msg = q.get()
                    if msg is None:
                        break
                    claimed.append(msg.id)
                    msg.ack()
                    acked.append(msg.id)
        except BaseException:
            errors.append(traceback.format_exc())
        write_json(
            os.path.join(out_dir, f"consumer-{proc}-{thread}.json"),
            {"claimed": claimed, "acked": acked, "errors": errors},
        )

    threads = [threading.Thread(target=consume, args=(t,)) for t in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def claim_then_hang(path: str, queue: str, n: int, conn: Any) -> None:
    """Claim *n* messages, send their receipts (and attempts) to the parent, then
    hang holding the leases until the parent kills this process."""
    db = liteq.connect(path)
    msgs = db.queue(queue).get_many(n)
    conn.send([(m.id, m.token, m.attempts, m.receipt) for m in msgs])
    time.sleep(PATIENCE * 5)


def put_batches_forever(path: str, queue: str, first_batch: int, batch_size: int, log: str) -> None:
    """put_many one batch after another; after each put_many returns (COMMIT done),
    append the batch number to *log*. Runs until killed."""
    db = liteq.connect(path)
    q = db.queue(queue)
    with open(log, "a") as f:
        batch = first_batch
        while True:
            q.put_many([{"batch": batch, "i": i, "pad": "x" * 64} for i in range(batch_size)])
            f.write(f"{batch}\n")
            f.flush()
            batch += 1


def open_new_file_at_once(path: str, barrier: Any, index: int, out_dir: str) -> None:
    """Wait at *barrier*, then open (creating) the database and put one message.
    Writes ``ok`` or the traceback to its own file, and exits 0 or 1."""
    result = "ok"
    try:
        barrier.wait(timeout=PATIENCE)
        db = liteq.connect(path)
        db.queue("opened").put(index)
        db.close()
    except BaseException:
        result = traceback.format_exc()
    write_json(os.path.join(out_dir, f"open-{index}.json"), result)
    os._exit(0 if result == "ok" else 1)


def put_when_told(path: str, queue: str, go: Any, payload: Any) -> None:
    """Wait for the parent's signal, then put one message."""
    db = liteq.connect(path)
    q = db.queue(queue)
    go.wait(PATIENCE)
    q.put(payload)


def produce_with_back_pressure(path: str, queue: str, proc: int, count: int, out_dir: str) -> None:
    """Put *count* messages (singly and in small batches) with block=True; record the
    ids that put returned, and any exception."""
    ids: list[int] = []
    errors: list[str] = []
    try:
        db = liteq.connect(path)
        q = db.queue(queue)
        n = 0
        while n < count:
            if n % 3 == 0:
                batch = [{"p": proc, "n": n + k} for k in range(min(5, count - n))]
                ids.extend(q.put_many(batch, block=True, timeout=PATIENCE))
                n += len(batch)
            else:
                ids.append(q.put({"p": proc, "n": n}, block=True, timeout=PATIENCE))
                n += 1
    except BaseException:
        errors.append(traceback.format_exc())
    write_json(os.path.join(out_dir, f"producer-{proc}.json"), {"ids": ids, "errors": errors})


def consume_until_stop(path: str, queue: str, proc: int, max_depth: int, out_dir: str) -> None:
    """Claim with get_many(wait=...) and ack until a "stop" message arrives; record the
    acked ids, any depth above *max_depth* seen, and any exception."""
    acked: list[int] = []
    over: list[int] = []
    errors: list[str] = []
    try:
        db = liteq.connect(path)
        q = db.queue(queue)
        stop = False
        while not stop:
            msgs = q.get_many(7, wait=PATIENCE)
            if not msgs:
                raise AssertionError("no message and no stop signal within PATIENCE")
            done = []
            for m in msgs:
                if m.payload != "stop":
                    acked.append(m.id)
                    done.append(m)
                elif not stop:
                    stop = True
                    done.append(m)
                else:
                    m.nack(delay=0)  # one stop per consumer: leave this one for another
            q.ack_many(done)
            depth = q.stats()["depth"]
            if depth > max_depth:
                over.append(depth)
    except BaseException:
        errors.append(traceback.format_exc())
    write_json(
        os.path.join(out_dir, f"consumer-{proc}.json"),
        {"acked": acked, "over": over, "errors": errors},
    )


def leading_columns(conn: Any, schema: str) -> dict[str, str]:
    """Index name -> its first column, for the indexes of *schema*'s messages."""
    return dict(conn.execute(
        "SELECT c.relname, a.attname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
        " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]"
        " WHERE i.indrelid = %s::regclass", (f"{schema}.messages",)).fetchall())


def whole_index_reads(plan: list[str], leading: dict[str, str]) -> list[str]:
    """The index scans of messages in *plan* whose condition leaves the index's first
    column free: a B-tree reads all of such an index (msg_ready found by ``id = $1``
    alone, its last column, costs a claim the whole ready index)."""
    found = []
    for line, cond in zip(plan, plan[1:] + [""], strict=True):
        m = re.search(r"Index (?:Only )?Scan(?: Backward)? using (\w+) on messages", line)
        if m and m.group(1) in leading:
            first = leading[m.group(1)]
            if "Index Cond" not in cond or not re.search(rf"\(({first}|\w+\.{first}) ", cond):
                found.append(f"{line.strip()} / {cond.strip()}")
    return found


def explained(db: liteq.Database) -> list[str]:
    """From now on, the plan of every statement of *db*'s PostgreSQL session in this
    thread, nested ones (PL/pgSQL's, triggers') included: auto_explain at LOG, sent to
    the client (``client_min_messages``), appended to the list returned."""
    plans: list[str] = []
    db.connection.add_notice_handler(lambda diag: plans.append(diag.message_primary or ""))
    db.execute("LOAD 'auto_explain'")
    for setting in ("auto_explain.log_min_duration = 0", "auto_explain.log_nested_statements = on",
                    "client_min_messages = log"):
        db.execute(f"SET {setting}")
    return plans
