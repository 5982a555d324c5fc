#!/usr/bin/env python3
"""Crash soak: many processes on one liteq file, killed with SIGKILL at random.

For ``--duration`` seconds this starts, as separate processes on one database file:

* **producers** that put messages (singly and in batches) on queue ``soak`` and, in
  the same transaction, record the ids ``put`` returned in the app table ``produced``;
* **consumers** that claim from ``soak`` and ack each message in one transaction with
  an insert into ``effects`` (the outbox pattern), now and then nacking, extending,
  or stalling past the lease (so that the ack meets a stale token);
* a **task producer** and **workers** (``liteq worker``, a thread pool and a process
  pool) running an ``atomic`` task whose side effect commits with its ack;
* a **publisher** on topic ``events`` (recording each publish in the same
  transaction) and **subscribers** acking each delivery with an effect row;
* **schedulers** (``liteq scheduler``, and the process-pool worker with
  ``--scheduler``) firing a schedule every second into queue ``soak-fires``
  (misfire policy ``all``), which the consumers also drain.

At random moments a random one of them is killed with SIGKILL (its whole process
group: a worker takes its pool with it) and restarted. At the end the producers
stop, the consumers drain every queue, and the history is checked from the file:

* every message whose put committed was consumed (``lost``), none appeared from
  nowhere, and each side effect exists exactly once (``double effects``);
* no two consumers held one message at the same time: from the consumers' logs of
  claims, extends and nacks, a message is claimed again only after the previous
  lease ended or was given back (``overlapping leases``);
* every publish reached exactly the subscriptions its key matches;
* the schedule fired once per one-second step of its grid, without a gap (fires
  missed while every scheduler was down come late, not never) and without a double;
* nothing is dead or left over, the depth counters are back to zero,
  and ``PRAGMA integrity_check`` is ok.

It prints one summary line and exits 0 if every check passed, 1 otherwise::

    python tools/soak.py --duration 600
    soak: 600 s seed 1: messages=... kills=... redeliveries=... lost=0 double effects=0 ...
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

# Run from a checkout without installing: the package is next to tools/.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import liteq  # noqa: E402
from liteq.topic import matches  # noqa: E402

QUEUE = "soak"
TASK_QUEUE = "soak-tasks"
FIRE_QUEUE = "soak-fires"
SCHEDULE = "soak-tick"
EVERY = 1.0  # the shortest interval a schedule accepts (scheduler.MIN_EVERY)
TOPIC = "events"
#: subscription -> routing pattern
SUBSCRIPTIONS = {"all": "#", "eu": "*.*.eu", "orders": "order.#"}
KEYS = ["order.created.eu", "order.paid.us", "user.signup.eu", "user.login"]
#: High enough that no message dies of kills alone: "dead" must stay 0.
MAX_ATTEMPTS = 100_000
DEPTH = 3_000

APP = '''\
"""The soak's task application (written by tools/soak.py)."""
import liteq
from liteq.task import current_job

db = liteq.connect()  # $LITEQ_DB


@db.task(name="soak.effect", queue="soak-tasks", atomic=True, max_attempts=100000)
def effect(n: int) -> None:
    """Its side effect commits with its ack: exactly once."""
    job = current_job()
    db.execute("INSERT INTO task_effects (n, job, attempts) VALUES (?, ?, ?)",
               (n, job.id, job.attempts))
'''

SCHEMA = """
CREATE TABLE IF NOT EXISTS produced (mid INTEGER PRIMARY KEY, producer INTEGER, seq INTEGER);
CREATE TABLE IF NOT EXISTS effects (mid INTEGER NOT NULL, consumer TEXT, attempts INTEGER);
CREATE TABLE IF NOT EXISTS task_produced (n INTEGER PRIMARY KEY, job INTEGER);
CREATE TABLE IF NOT EXISTS task_effects (n INTEGER NOT NULL, job INTEGER, attempts INTEGER);
CREATE TABLE IF NOT EXISTS published (publisher INTEGER, seq INTEGER, key TEXT,
    deliveries INTEGER, PRIMARY KEY (publisher, seq));
CREATE TABLE IF NOT EXISTS sub_effects (sub TEXT, publisher INTEGER, seq INTEGER,
    attempts INTEGER);
CREATE TABLE IF NOT EXISTS fire_effects (key TEXT, mid INTEGER, attempts INTEGER);
"""


# --- the roles (each runs in its own process until killed) ----------------------------


class Log:
    """Append-only event log of one role slot: each line is one ``os.write`` to an
    O_APPEND file, so a kill loses at most the line being written, never garbles one."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, *fields: Any) -> None:
        os.write(self.fd, (" ".join(map(str, fields)) + "\n").encode())


def role_producer(db: liteq.Database, index: int, rng: random.Random, log: Log) -> None:
    q = db.queue(QUEUE)
    row = db.execute("SELECT max(seq) FROM produced WHERE producer = ?", (index,))
    seq = (row[0][0] or 0) + 1
    while True:
        k = rng.choice([1, 1, 1, 3, 10, 25])
        payloads = [{"p": index, "s": seq + i, "pad": "x" * rng.randint(0, 300)}
                    for i in range(k)]
        try:
            with db.transaction():
                ids = q.put_many(payloads) if k > 1 else [q.put(payloads[0])]
                for i, mid in enumerate(ids):
                    db.execute("INSERT INTO produced (mid, producer, seq) VALUES (?, ?, ?)",
                               (mid, index, seq + i))
        except liteq.QueueFull:
            time.sleep(0.05)
            continue
        seq += k
        time.sleep(rng.uniform(0, 0.01))


def role_consumer(db: liteq.Database, index: int, rng: random.Random, log: Log) -> None:
    q = db.queue(QUEUE)
    fires = db.queue(FIRE_QUEUE)
    lease = q.config.lease
    name = f"consumer-{index}"

    def effect(m: liteq.Message) -> None:
        db.execute("INSERT INTO effects (mid, consumer, attempts) VALUES (?, ?, ?)",
                   (m.id, name, m.attempts))

    def fire_effect(m: liteq.Message) -> None:
        db.execute("INSERT INTO fire_effects (key, mid, attempts) VALUES (?, ?, ?)",
                   (m.key, m.id, m.attempts))

    while True:
        msgs = q.get_many(rng.randint(1, 8), wait=0.5)
        _handle(db, msgs, lease, rng, log, effect)
        _handle(db, fires.get_many(4), lease, rng, log, fire_effect)


def role_subscriber(db: liteq.Database, index: int, rng: random.Random, log: Log) -> None:
    topic = db.topic(TOPIC)
    subs = [(name, topic.subscription(name)) for name in SUBSCRIPTIONS]
    while True:
        got = False
        for name, q in subs:
            msgs = q.get_many(rng.randint(1, 8))
            if not msgs:
                continue
            got = True

            def effect(m: liteq.Message, sub: str = name) -> None:
                db.execute(
                    "INSERT INTO sub_effects (sub, publisher, seq, attempts) VALUES (?, ?, ?, ?)",
                    (sub, m.payload["pub"], m.payload["s"], m.attempts))

            _handle(db, msgs, q.config.lease, rng, log, effect)
        if not got:
            db.wait_for_change(0.2)


def _handle(db: liteq.Database, msgs: list[liteq.Message], lease: float, rng: random.Random,
            log: Log, effect: Any) -> None:
    """Settle claimed messages the way a sloppy but honest consumer would."""
    for m in msgs:
        log.write("claim", m.id, m.token, repr((m.lease_until or 0) - lease),
                  repr(m.lease_until), m.attempts)
    for m in msgs:
        r = rng.random()
        try:
            if r < 0.03:
                log.write("nack", m.id, m.token, repr(time.time()))
                m.nack(delay=rng.choice([0, 0, 0.2]))
                continue
            if r < 0.032:
                # Stall past the lease: the ack meets a stale token (unless nobody
                # claimed the message meanwhile), and the effect must roll back.
                time.sleep(lease + rng.uniform(0.05, 0.3))
            elif r < 0.08:
                m.extend(lease)
                log.write("extend", m.id, m.token, repr(m.lease_until))
            with db.transaction():
                effect(m)
                m.ack()
            log.write("ack", m.id, m.token)
        except liteq.LeaseLost:
            log.write("stale", m.id, m.token)


def role_tasker(db: liteq.Database, index: int, rng: random.Random, log: Log) -> None:
    import soakapp  # the task application, in the run directory

    tdb = soakapp.db
    row = tdb.execute("SELECT max(n) FROM task_produced")
    n = (row[0][0] or 0) + 1
    while True:
        k = rng.choice([1, 1, 5])
        try:
            with tdb.transaction():
                for i in range(k):
                    job = soakapp.effect.delay(n + i)
                    tdb.execute("INSERT INTO task_produced (n, job) VALUES (?, ?)",
                                (n + i, job.id))
        except liteq.QueueFull:
            time.sleep(0.05)
            continue
        n += k
        time.sleep(rng.uniform(0, 0.01))


def role_publisher(db: liteq.Database, index: int, rng: random.Random, log: Log) -> None:
    topic = db.topic(TOPIC)
    row = db.execute("SELECT max(seq) FROM published WHERE publisher = ?", (index,))
    seq = (row[0][0] or 0) + 1
    while True:
        key = rng.choice(KEYS)
        try:
            with db.transaction():
                n = topic.publish({"pub": index, "s": seq}, key=key)
                db.execute("INSERT INTO published (publisher, seq, key, deliveries) "
                           "VALUES (?, ?, ?, ?)", (index, seq, key, n))
        except liteq.QueueFull:
            time.sleep(0.05)
            continue
        seq += 1
        time.sleep(rng.uniform(0, 0.01))


ROLES = {
    "producer": role_producer,
    "consumer": role_consumer,
    "subscriber": role_subscriber,
    "tasker": role_tasker,
    "publisher": role_publisher,
}


def run_role(args: argparse.Namespace) -> int:
    """A child process: run one role until killed; record an unexpected error."""
    run_dir = Path(args.dir)
    sys.path.insert(0, str(run_dir))
    rng = random.Random(f"{args.seed}-{args.role}-{args.index}-{os.getpid()}")
    log = Log(run_dir / "logs" / f"{args.role}-{args.index}.log")
    try:
        db = liteq.connect(run_dir / "soak.db")
        ROLES[args.role](db, args.index, rng, log)
    except BaseException:
        (run_dir / "errors" / f"{args.role}-{args.index}-{os.getpid()}.txt").write_text(
            traceback.format_exc())
        return 1
    return 0


# --- the conductor --------------------------------------------------------------------


class Slot:
    """One role instance: its process, restarted after every kill."""

    def __init__(self, role: str, index: int, argv: list[str], cwd: Path, env: dict[str, str],
                 log: Path) -> None:
        self.role, self.index, self.argv, self.cwd, self.env, self.log = \
            role, index, argv, cwd, env, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.restart_at: float | None = None
        self.starts = 0

    @property
    def name(self) -> str:
        return f"{self.role}-{self.index}"

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.argv, cwd=self.cwd, env=self.env, stdout=out,
                                         stderr=out, start_new_session=True)
        self.starts += 1
        self.restart_at = None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole process group (a worker's pool children too)."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()


def setup(path: Path, lease: float) -> None:
    db = liteq.connect(path)
    for stmt in SCHEMA.strip().split(";"):
        if stmt.strip():
            db.execute(stmt)
    db.queue(QUEUE, lease=lease, max_attempts=MAX_ATTEMPTS, max_depth=DEPTH,
             backoff=liteq.Backoff(base=0.05, max=0.5))
    db.queue(TASK_QUEUE, lease=lease, max_attempts=MAX_ATTEMPTS, max_depth=DEPTH,
             backoff=liteq.Backoff(base=0.05, max=0.5))
    topic = db.topic(TOPIC)
    for name, pattern in SUBSCRIPTIONS.items():
        topic.subscribe(name, pattern, lease=lease, max_attempts=MAX_ATTEMPTS, max_depth=DEPTH)
    db.queue(FIRE_QUEUE, lease=lease, max_attempts=MAX_ATTEMPTS,
             backoff=liteq.Backoff(base=0.05, max=0.5))
    db.schedule(SCHEDULE, every=EVERY, queue=FIRE_QUEUE, payload={"tick": True}, misfire="all",
                misfire_cap=1000)  # the most allowed: more fires than a run can miss
    db.close()


def worker_argv(db_path: Path, index: int) -> list[str]:
    """``liteq worker``: a thread pool, or a process pool that also runs the scheduler."""
    pool = ["--pool", "thread"] if index % 2 == 0 else ["--pool", "process", "--scheduler"]
    return [sys.executable, "-m", "liteq", "--db", str(db_path), "worker", "soakapp",
            "--queues", TASK_QUEUE, *pool, "-c", "2", "--summary-interval", "0",
            "--log-level", "warning", "--grace", "1"]


def scheduler_argv(db_path: Path) -> list[str]:
    return [sys.executable, "-m", "liteq", "--db", str(db_path), "scheduler", "--interval",
            "0.2", "--log-level", "warning"]


#: Roles stopped first at the end: they make new work.
SOURCES = ("producer", "tasker", "publisher", "scheduler")


def unfinished(db: liteq.Database) -> int:
    total = 0
    names = [QUEUE, TASK_QUEUE, FIRE_QUEUE] + [f"{TOPIC}:{s}" for s in SUBSCRIPTIONS]
    for name in names:
        s = db.queue(name).stats()
        total += s["ready"] + s["delayed"] + s["leased"]
    return total


def conduct(args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)
    run_dir = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="liteq-soak-"))
    run_dir.mkdir(parents=True, exist_ok=True)
    for sub in ("logs", "errors", "out"):
        (run_dir / sub).mkdir(exist_ok=True)
    db_path = run_dir / "soak.db"
    (run_dir / "soakapp.py").write_text(APP)
    setup(db_path, args.lease)
    env = dict(os.environ, LITEQ_DB=str(db_path),
               PYTHONPATH=os.pathsep.join([str(run_dir), str(ROOT),
                                           os.environ.get("PYTHONPATH", "")]))

    slots: list[Slot] = []

    def add(role: str, count: int) -> None:
        for i in range(count):
            if role == "worker":
                argv = worker_argv(db_path, i)
            elif role == "scheduler":
                argv = scheduler_argv(db_path)
            else:
                argv = [sys.executable, str(Path(__file__).resolve()), "--role", role,
                        "--index", str(i), "--dir", str(run_dir), "--seed", str(args.seed)]
            slots.append(Slot(role, i, argv, run_dir, env, run_dir / "out" / f"{role}-{i}.txt"))

    add("producer", args.producers)
    add("consumer", args.consumers)
    add("tasker", args.taskers)
    add("worker", args.workers)
    add("publisher", args.publishers)
    add("subscriber", args.subscribers)
    add("scheduler", args.schedulers)
    for slot in slots:
        slot.start()

    kills: Counter[str] = Counter()
    crashes: list[str] = []
    start = time.monotonic()
    end = start + args.duration
    next_kill = start + rng.expovariate(1 / args.kill_every)
    while time.monotonic() < end:
        now = time.monotonic()
        for slot in slots:
            if slot.restart_at is not None and now >= slot.restart_at:
                slot.start()
            elif slot.restart_at is None and not slot.alive():
                crashes.append(f"{slot.name} exited by itself with {slot.proc.returncode}")  # type: ignore[union-attr]
                slot.start()
        if now >= next_kill:
            victim = rng.choice([s for s in slots if s.alive()] or slots)
            if victim.alive():
                victim.kill()
                kills[victim.role] += 1
                victim.restart_at = time.monotonic() + rng.uniform(0, 0.5)
            next_kill = now + rng.expovariate(1 / args.kill_every)
        time.sleep(0.01)

    # The end: stop every producer (a kill: their history is transactional), bring
    # back anything still down, and let the consumers drain.
    for slot in slots:
        if slot.role in SOURCES:
            slot.kill()
        elif not slot.alive():
            slot.start()
    db = liteq.connect(db_path)
    db.schedule(SCHEDULE).pause()  # the workers' schedulers fire no more
    drain_start = time.monotonic()
    drain_deadline = drain_start + args.drain_timeout
    left = unfinished(db)
    while left and time.monotonic() < drain_deadline:
        time.sleep(0.5)
        for slot in slots:
            if slot.role not in SOURCES and not slot.alive():
                crashes.append(f"{slot.name} exited by itself while draining")
                slot.start()
        left = unfinished(db)
        if args.verbose:
            print(f"draining: {left} unfinished after {time.monotonic() - drain_start:.1f} s",
                  flush=True)
    drained = time.monotonic() - drain_start
    for slot in slots:
        slot.kill()

    report = check(db, run_dir, left)
    report["kills"] = sum(kills.values())
    report["kills_by_role"] = dict(kills)
    report["restarts"] = sum(s.starts - 1 for s in slots)
    report["crashes"] = crashes
    report["drain_seconds"] = round(drained, 1)
    report["errors"] += len(crashes)
    db.close()
    ok = all(report[k] == 0 for k in ("lost", "double_effects", "phantoms", "overlapping_leases",
                                      "dead", "left_over", "errors", "wrong_deliveries",
                                      "missed_fires")) \
        and report["integrity"] == "ok" and report["depth_drift"] == 0
    report["ok"] = ok
    report["duration"] = args.duration
    report["seed"] = args.seed
    report["dir"] = str(run_dir)
    (run_dir / "report.json").write_text(json.dumps(report, indent=2))
    print(summary(report), flush=True)
    if not ok:
        for problem in report["problems"][:20]:
            print("  problem:", problem)
        for crash in crashes[:10]:
            print("  crash:", crash)
        for path in sorted((run_dir / "errors").iterdir())[:5]:
            print(f"  error in {path.name}:\n{path.read_text()}")
    if ok and not args.keep and not args.dir:
        shutil.rmtree(run_dir, ignore_errors=True)
    return 0 if ok else 1


def summary(r: dict[str, Any]) -> str:
    kills = ", ".join(f"{k} {v}" for k, v in sorted(r["kills_by_role"].items()))
    return (
        f"soak: {r['duration']:g} s seed {r['seed']}: messages={r['messages']} "
        f"(queue {r['queue_messages']}, tasks {r['tasks']}, topic deliveries {r['deliveries']}, "
        f"schedule fires {r['fires']}), "
        f"kills={r['kills']} ({kills}), restarts={r['restarts']}, "
        f"redeliveries={r['redeliveries']}, nacks={r['nacks']}, stale acks refused={r['stale']}, "
        f"lost={r['lost']}, double effects={r['double_effects']}, phantoms={r['phantoms']}, "
        f"overlapping leases={r['overlapping_leases']}, wrong deliveries={r['wrong_deliveries']}, "
        f"missed fires={r['missed_fires']}, "
        f"dead={r['dead']}, left over={r['left_over']}, errors={r['errors']}, "
        f"integrity={r['integrity']} (drained in {r['drain_seconds']:g} s)"
    )


# --- the checks -----------------------------------------------------------------------


def check(db: liteq.Database, run_dir: Path, left: int) -> dict[str, Any]:
    problems: list[str] = []
    r: dict[str, Any] = {"problems": problems}

    # Queue: produced (committed with the put) vs effects (committed with the ack).
    produced = {mid for (mid,) in db.execute("SELECT mid FROM produced")}
    effects = Counter({mid: n for mid, n in db.execute(
        "SELECT mid, count(*) FROM effects GROUP BY mid")})
    lost = produced - set(effects)
    phantoms = set(effects) - produced
    doubles = {m: n for m, n in effects.items() if n > 1}
    redeliveries = db.execute("SELECT coalesce(sum(attempts - 1), 0) FROM effects")[0][0]

    # Tasks: task_produced (committed with the enqueue) vs task_effects (with the ack).
    tasks = {n for (n,) in db.execute("SELECT n FROM task_produced")}
    t_effects = Counter({n: c for n, c in db.execute(
        "SELECT n, count(*) FROM task_effects GROUP BY n")})
    lost |= {("task", n) for n in tasks - set(t_effects)}  # type: ignore[misc]
    phantoms |= {("task", n) for n in set(t_effects) - tasks}  # type: ignore[misc]
    doubles.update({("task", n): c for n, c in t_effects.items() if c > 1})  # type: ignore[dict-item]
    redeliveries += db.execute("SELECT coalesce(sum(attempts - 1), 0) FROM task_effects")[0][0]

    # Topic: each publish reaches exactly the subscriptions its key matches.
    wrong = 0
    published = db.execute("SELECT publisher, seq, key, deliveries FROM published")
    s_effects = Counter((s, p, q) for s, p, q in db.execute(
        "SELECT sub, publisher, seq FROM sub_effects"))
    deliveries = 0
    expected_keys: set[tuple[str, int, int]] = set()
    for pub, seq, key, n in published:
        subs = [s for s, pattern in SUBSCRIPTIONS.items() if matches(pattern, key)]
        deliveries += len(subs)
        if n != len(subs):
            wrong += 1
            problems.append(f"publish {pub}/{seq} key {key} made {n} deliveries, not {len(subs)}")
        for s in subs:
            expected_keys.add((s, pub, seq))
            if s_effects[(s, pub, seq)] == 0:
                lost.add(("topic", s, pub, seq))  # type: ignore[arg-type]
    for k, c in s_effects.items():
        if k not in expected_keys:
            phantoms.add(("topic", *k))  # type: ignore[arg-type]
        elif c > 1:
            doubles[("topic", *k)] = c  # type: ignore[index]
    redeliveries += db.execute("SELECT coalesce(sum(attempts - 1), 0) FROM sub_effects")[0][0]

    # Schedule: each fire of the grid enqueued once, consumed once.
    runs = db.execute("SELECT fire_at, job_id FROM schedule_runs WHERE schedule = ? "
                      "ORDER BY fire_at", (SCHEDULE,))
    f_effects: Counter[str] = Counter()
    f_mids: dict[str, int] = {}
    for key, mid in db.execute("SELECT key, mid FROM fire_effects"):
        f_effects[key] += 1
        f_mids[key] = mid
    missed = 0
    run_keys = set()
    for fire_at, job in runs:
        key = f"schedule:{SCHEDULE}:{fire_at!r}"
        run_keys.add(key)
        if f_effects[key] == 0:
            lost.add(("fire", fire_at))  # type: ignore[arg-type]
        elif f_effects[key] > 1:
            doubles[("fire", fire_at)] = f_effects[key]  # type: ignore[index]
        elif f_mids[key] != job:
            problems.append(f"fire {fire_at!r} consumed as message {f_mids[key]}, not {job}")
            wrong += 1
    for (a, _), (b, _) in zip(runs, runs[1:], strict=False):
        if abs(b - a - EVERY) > 1e-6:
            missed += 1
            problems.append(f"schedule fires {a!r} and {b!r} are not one step apart")
    phantoms |= {("fire", k) for k in set(f_effects) - run_keys}  # type: ignore[misc]
    redeliveries += db.execute("SELECT coalesce(sum(attempts - 1), 0) FROM fire_effects")[0][0]

    for what, items in (("lost", lost), ("phantom", phantoms), ("double", doubles)):
        for item in sorted(items, key=str)[:5]:
            problems.append(f"{what}: {item}")

    # What is left in the queues: nothing unfinished, nothing dead, counters at zero.
    dead = db.execute("SELECT count(*) FROM messages WHERE state = 4")[0][0]
    rest = db.execute("SELECT count(*) FROM messages WHERE qid <> 0")[0][0]  # no tombstone
    drift = db.execute("SELECT count(*) FROM queues WHERE depth != 0")[0][0]
    if dead:
        problems.append(f"{dead} dead messages: " + "; ".join(
            e or "" for (e,) in db.execute("SELECT error FROM messages WHERE state = 4 LIMIT 3")))

    overlaps, nacks, stale = check_leases(run_dir / "logs", problems)
    errors = len(list((run_dir / "errors").iterdir()))
    for path in sorted((run_dir / "out").iterdir()):
        text = path.read_text(errors="replace")
        if path.name.startswith("worker") and ("Traceback" in text or " ERROR " in text):
            errors += 1
            problems.append(f"{path.name}: " + text[text.find("Traceback"):][:500])

    integrity = db.integrity_check()
    r.update(
        messages=len(produced) + len(tasks) + deliveries + len(runs),
        fires=len(runs),
        missed_fires=missed,
        queue_messages=len(produced),
        tasks=len(tasks),
        deliveries=deliveries,
        redeliveries=redeliveries,
        nacks=nacks,
        stale=stale,
        lost=len(lost),
        phantoms=len(phantoms),
        double_effects=len(doubles),
        wrong_deliveries=wrong,
        overlapping_leases=overlaps,
        dead=dead,
        left_over=max(rest, left),
        depth_drift=drift,
        errors=errors,
        integrity="ok" if integrity == ["ok"] else "; ".join(integrity[:3]),
    )
    return r


def check_leases(logs: Path, problems: list[str]) -> tuple[int, int, int]:
    """No two holders at once: a message is claimed again only after the previous
    lease ran out (as extended) or was given back by a nack."""
    claims: dict[int, list[list[Any]]] = defaultdict(list)
    by_token: dict[tuple[int, int], list[Any]] = {}
    nacks = stale = 0
    for path in sorted(logs.iterdir()):
        with open(path) as f:
            for line in f:
                parts = line.split()
                if not line.endswith("\n") or len(parts) < 3:
                    continue  # the line being written when a kill came
                kind, mid, token = parts[0], int(parts[1]), int(parts[2])
                if kind == "claim":
                    # [claimed at, lease end, attempts, given back at]
                    c = [float(parts[3]), float(parts[4]), int(parts[5]), None]
                    claims[mid].append(c)
                    by_token[(mid, token)] = c
                elif kind == "extend":
                    c = by_token.get((mid, token))
                    if c is not None:
                        c[1] = max(c[1], float(parts[3]))
                elif kind == "nack":
                    nacks += 1
                    c = by_token.get((mid, token))
                    if c is not None:
                        c[3] = float(parts[3])
                elif kind == "stale":
                    stale += 1
    overlaps = 0
    for mid, cs in claims.items():
        cs.sort(key=lambda c: (c[0], c[2]))
        for prev, nxt in zip(cs, cs[1:], strict=False):
            held_until = prev[1] if prev[3] is None else min(prev[1], prev[3])
            if nxt[0] < held_until - 1e-6 or nxt[2] <= prev[2]:
                overlaps += 1
                if overlaps <= 5:
                    problems.append(f"message {mid} claimed at {nxt[0]!r} (attempt {nxt[2]}) "
                                    f"while held until {held_until!r} (attempt {prev[2]})")
    return overlaps, nacks, stale


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=60.0, help="seconds of chaos (default 60)")
    p.add_argument("--dir", help="run directory (default: a new temporary one, removed if ok)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--producers", type=int, default=2)
    p.add_argument("--consumers", type=int, default=3)
    p.add_argument("--taskers", type=int, default=1)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--publishers", type=int, default=1)
    p.add_argument("--subscribers", type=int, default=2)
    p.add_argument("--schedulers", type=int, default=2)
    p.add_argument("--kill-every", type=float, default=1.0,
                   help="mean seconds between kills (default 1)")
    p.add_argument("--lease", type=float, default=2.0, help="lease of every queue (default 2 s)")
    p.add_argument("--drain-timeout", type=float, default=180.0)
    p.add_argument("--keep", action="store_true", help="keep the run directory")
    p.add_argument("--verbose", "-v", action="store_true", help="report progress")
    p.add_argument("--role", choices=sorted(ROLES), help=argparse.SUPPRESS)
    p.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.role:
        return run_role(args)
    return conduct(args)


if __name__ == "__main__":
    sys.exit(main())
