"""Security: what a message, a name or a file can make liteq do (see SECURITY.md).

* No code runs from data: the package never imports pickle or marshal, never calls
  eval/exec, never starts a shell (the one exception would be a shell schedule
  target, opt-in and documented); a payload decodes to plain values only.
* A message runs only a task registered in the worker under that name: a dotted path
  such as ``os.system`` in a message goes dead as an unknown task, and nothing runs.
* Every SQL statement is parameterized: hostile text in payloads, keys, headers,
  errors, routing keys, patterns and task arguments never reaches the SQL text, and
  queue/topic names with quotes or semicolons are refused before any SQL runs.
"""

from __future__ import annotations

import ast
import io
import os
import subprocess
import tokenize
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apsw
import pytest
from click.testing import CliRunner
from helpers import file_digest
from workerapp_tools import worker_command

import liteq
import liteq.worker
from liteq.cli import cli

PACKAGE = Path(liteq.__file__).resolve().parent
ROOT = PACKAGE.parent
SOURCES = sorted(PACKAGE.glob("*.py"))

#: Modules that can never be used to read data: they build objects from it.
FORBIDDEN_MODULES = {"pickle", "cPickle", "_pickle", "marshal", "shelve", "dill", "cloudpickle",
                     "jsonpickle"}
FORBIDDEN_NAMES = {"eval", "exec", "compile", "__import__", "breakpoint"}
FORBIDDEN_OS = {"system", "popen", "execl", "execle", "execlp", "execlpe", "execv", "execve",
                "execvp", "execvpe", "spawnl", "spawnle", "spawnlp", "spawnlpe", "spawnv",
                "spawnve", "spawnvp", "spawnvpe", "posix_spawn", "posix_spawnp"}
#: The opt-in shell schedule target (``command=``, run only by a worker started with
#: ``--allow-shell``) may use a shell, in its own module; SECURITY.md says so.
#: Nothing else may.
SHELL_MODULES = {"shell.py"}
#: Who may register or call the shell task: its own module, and the worker command
#: when given --allow-shell.
SHELL_CALLERS = {"shell.py", "cli_worker.py", "worker.py"}
#: Importing a module by name is how ``liteq worker APP`` finds the application
#: named on its command line -- never from a message.
IMPORT_BY_NAME = {"cli_worker.py"}

HOSTILE = "x'); DROP TABLE messages; --\"]]*/"


# --- no code from data ------------------------------------------------------------------


def _opt_in(source: str) -> bool:
    return "allow_shell" in source or "--allow-shell" in source


def _violations(path: Path) -> list[str]:
    source = path.read_text()
    tree = ast.parse(source)
    found = []
    for node in ast.walk(tree):
        where = f"{path.name}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import):
            found += [f"{where} imports {a.name}" for a in node.names
                      if a.name.split(".")[0] in FORBIDDEN_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.module \
                and node.module.split(".")[0] in FORBIDDEN_MODULES:
            found.append(f"{where} imports from {node.module}")
        elif isinstance(node, ast.Call):
            fn = node.func
            if isinstance(fn, ast.Name) and fn.id in FORBIDDEN_NAMES:
                found.append(f"{where} calls {fn.id}()")
            if isinstance(fn, ast.Attribute) and isinstance(fn.value, ast.Name):
                if fn.value.id == "os" and fn.attr in FORBIDDEN_OS:
                    found.append(f"{where} calls os.{fn.attr}()")
                if fn.value.id == "importlib" and fn.attr == "import_module" \
                        and path.name not in IMPORT_BY_NAME:
                    found.append(f"{where} imports a module by name")
            for kw in node.keywords:
                if kw.arg == "shell" and not (isinstance(kw.value, ast.Constant)
                                              and kw.value.value is False):
                    if path.name not in SHELL_MODULES or not _opt_in(source):
                        found.append(f"{where} starts a shell (shell=...)")
            called = fn.attr if isinstance(fn, ast.Attribute) else \
                fn.id if isinstance(fn, ast.Name) else ""
            if called in ("run_shell", "register_shell_task") and path.name not in SHELL_CALLERS:
                found.append(f"{where} calls {called}()")
    # The words themselves, outside comments and strings (aliases, getattr tricks).
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.NAME and tok.string in FORBIDDEN_MODULES | {"eval", "exec"}:
            found.append(f"{path.name}:{tok.start[0]} uses the name {tok.string!r}")
    return sorted(set(found))


def test_the_package_never_uses_pickle_marshal_eval_exec_or_a_shell() -> None:
    assert len(SOURCES) > 10, f"no sources found under {PACKAGE}"
    problems = [v for path in SOURCES for v in _violations(path)]
    assert problems == []


def test_the_scan_would_catch_each_forbidden_construct(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import pickle\nfrom marshal import loads\nimport subprocess, os, importlib\n"
        "eval('1')\nexec('x = 1')\nos.system('true')\n"
        "subprocess.run('true', shell=True)\nimportlib.import_module('os')\n")
    found = "\n".join(_violations(bad))
    for what in ("imports pickle", "imports from marshal", "calls eval()", "calls exec()",
                 "calls os.system()", "starts a shell", "imports a module by name"):
        assert what in found, what


def test_the_shell_schedule_target_is_opt_in_and_documented() -> None:
    shell_users = [p.name for p in SOURCES if "shell=True" in p.read_text()]
    security = (ROOT / "SECURITY.md").read_text()
    assert "--allow-shell" in security and "pickle" in security
    for name in shell_users:
        assert name in SHELL_MODULES, f"{name} uses a shell"
        assert _opt_in((PACKAGE / name).read_text()), f"{name}: the shell is not opt-in"


# --- a message runs only a registered task ------------------------------------------------------


DOTTED_PATHS = [
    ("os.system", ["touch {sentinel}"], {}),
    ("subprocess.call", [["touch", "{sentinel}"]], {"shell": False}),
    ("builtins.exec", ["open({sentinel!r}, 'w').close()"], {}),
    ("builtins.eval", ["__import__('os').system('touch {sentinel}')"], {}),
    ("posix.system", ["touch {sentinel}"], {}),
    ("liteq.worker.release", [], {}),
    ("liteq.shell", ["touch {sentinel}"], {}),  # the shell target: only with --allow-shell
    ("test_security.record", ["by its module path"], {}),  # real function, not by that name
]


@pytest.fixture
def app(db_path: str) -> Iterator[tuple[liteq.Database, Any]]:
    db = liteq.connect(db_path)
    db.execute("CREATE TABLE ran (what TEXT)")

    @db.task(name="safe.record")
    def record(what: str) -> None:
        db.execute("INSERT INTO ran (what) VALUES (?)", (what,))

    yield db, record
    db.close()


def _run_worker(db: liteq.Database) -> None:
    liteq.worker.Worker(db, ["default"], concurrency=1, burst=True, install_signals=False,
                        summary_interval=0).run()


def test_a_message_naming_an_unregistered_dotted_path_goes_dead_as_an_unknown_task(
        app, tmp_path: Path) -> None:
    db, record = app
    sentinel = str(tmp_path / "pwned")
    q = db.queue("default", max_attempts=2, backoff=liteq.Backoff(base=0, jitter=0))
    ids = {}
    for name, args, kwargs in DOTTED_PATHS:
        args = [a.format(sentinel=sentinel) if isinstance(a, str) else
                [x.format(sentinel=sentinel) for x in a] if isinstance(a, list) else a
                for a in args]
        ids[name] = q.put({"task": name, "args": args, "kwargs": kwargs})
    job = record.delay("registered")

    _run_worker(db)

    assert not os.path.exists(sentinel), "a message ran code that is not a registered task"
    assert db.execute("SELECT what FROM ran") == [("registered",)]
    assert job.state == "done"
    for name, mid in ids.items():
        msg = db.message(mid)
        assert msg is not None and msg.state == "dead", name
        assert f"unknown task {name!r}" in (msg.error or ""), msg.error
        assert msg.attempts == 2  # the queue's max_attempts: another worker might know it


SECAPP = """
import liteq
db = liteq.connect()  # $LITEQ_DB

@db.task(name="sec.fine")
def fine() -> None:
    db.execute("INSERT INTO ran (what) VALUES ('fine')")
"""


def test_a_worker_started_without_allow_shell_sends_shell_jobs_dead_and_runs_nothing(
        tmp_path: Path) -> None:
    path = str(tmp_path / "shell.db")
    sentinel = tmp_path / "pwned"
    (tmp_path / "secapp.py").write_text(SECAPP)
    db = liteq.connect(path)
    db.execute("CREATE TABLE ran (what TEXT)")
    shell = db.queue("default", max_attempts=1).put(
        {"task": "liteq.shell", "args": [f"touch {sentinel}"], "kwargs": {}})
    db.queue("default").put({"task": "sec.fine", "args": [], "kwargs": {}})
    db.close()
    env = dict(os.environ, LITEQ_DB=path,
               PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))

    proc = subprocess.run(
        [*worker_command(), "--db", path, "worker", "secapp", "--queues", "default", "--burst",
         "--summary-interval", "0"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)

    assert proc.returncode == 0, proc.stderr
    assert not sentinel.exists(), "a worker without --allow-shell ran a shell command"
    db = liteq.connect(path)
    try:
        assert db.execute("SELECT what FROM ran") == [("fine",)]
        msg = db.message(shell)
        assert msg is not None and msg.state == "dead"
        assert "unknown task 'liteq.shell'" in (msg.error or "")
    finally:
        db.close()


def test_a_payload_with_an_object_tag_decodes_to_inert_data_and_runs_nothing(
        app, tmp_path: Path) -> None:
    """CBOR tag 27 ("serialised object": [typename, args]) is how some CBOR libraries
    rebuild arbitrary objects. liteq's decode leaves it an inert tag; the worker
    calls it not a task message."""
    db, _ = app
    sentinel = str(tmp_path / "pwned")
    q = db.queue("default", max_attempts=1)
    mid = q.put("placeholder")
    blob = liteq.codec.encode(["os.system", [f"touch {sentinel}"]])
    db.execute("UPDATE messages SET payload = ? WHERE id = ?", (b"\xd8\x1b" + blob, mid))
    peeked = q.peek(1)[0]
    assert type(peeked.payload).__name__ == "CBORTag" and peeked.payload.tag == 27

    _run_worker(db)

    assert not os.path.exists(sentinel)
    msg = db.message(mid)
    assert msg is not None and msg.state == "dead" and "not a task message" in (msg.error or "")


# --- names and SQL ------------------------------------------------------------------------------


HOSTILE_NAMES = [
    "q'; DROP TABLE messages; --",
    'q"; DELETE FROM queues; --',
    "q; VACUUM",
    "q') OR ('1'='1",
    "q\x00tail",
    "q\nq",
    "../q",
    "q/*",
    "",
    " q",
]


@pytest.mark.parametrize("name", HOSTILE_NAMES, ids=repr)
def test_a_queue_or_topic_name_with_quotes_or_semicolons_is_refused_before_any_sql(
        db, name: str) -> None:
    before = db.execute("SELECT * FROM queues ORDER BY id")
    topic = db.topic("fine")
    for attempt in (
        lambda: db.queue(name),
        lambda: db.queue("fine", dead_letter=name),
        lambda: db.topic(name),
        lambda: topic.subscribe(name, "#"),
        lambda: db.delete_queue(name),
    ):
        with pytest.raises(liteq.InvalidArgument) as info:
            attempt()
        assert "name must be" in str(info.value)
    assert db.execute("SELECT * FROM queues ORDER BY id") == before


def test_a_queue_name_with_a_trailing_newline_is_refused(db) -> None:
    before = db.execute("SELECT * FROM queues ORDER BY id")
    with pytest.raises(liteq.InvalidArgument):
        db.queue("jobs\n")
    assert db.execute("SELECT * FROM queues ORDER BY id") == before


@pytest.mark.parametrize("name", HOSTILE_NAMES[:4], ids=repr)
def test_the_cli_refuses_a_hostile_queue_name_and_writes_nothing(tmp_path: Path, name: str) -> None:
    path = str(tmp_path / "cli.db")
    db = liteq.connect(path)
    db.queue("q").put(1)
    db.close()
    digest = file_digest(path)
    for args in (["put", name, "1"], ["peek", name], ["get", name], ["purge", name, "--yes"],
                 ["dead", "list", name]):
        result = CliRunner().invoke(cli, ["--db", path, *args])
        assert result.exit_code == 2 and "Error" in result.output, (args, result.output)
    assert file_digest(path) == digest


class SqlTrace:
    """Every SQL statement run by any liteq connection opened while it is installed
    (``apsw.connection_hooks`` puts an exec tracer on each new connection)."""

    def __init__(self) -> None:
        self.statements: list[str] = []
        self.bound: list[Any] = []

    def tracer(self, cursor: Any, sql: str, bindings: Any) -> bool:
        self.statements.append(sql)
        if bindings is not None:
            self.bound.append(bindings)
        return True  # run it

    def hook(self, conn: apsw.Connection) -> None:
        conn.exec_trace = self.tracer


@pytest.fixture
def sql_trace() -> Iterator[SqlTrace]:
    trace = SqlTrace()
    apsw.connection_hooks.append(trace.hook)
    try:
        yield trace
    finally:
        apsw.connection_hooks.remove(trace.hook)


def _holds(bindings: Any, text: str) -> bool:
    values = bindings.values() if isinstance(bindings, dict) else bindings
    return any((isinstance(v, str) and text in v)
               or (isinstance(v, bytes) and text.encode() in v) for v in values)


def test_hostile_text_in_every_value_reaches_sqlite_only_as_a_bound_parameter(
        db_path: str, sql_trace: SqlTrace) -> None:
    name = "qx-7.hostile:name"  # a valid name: bound too, never spliced into the SQL
    db = liteq.connect(db_path)
    try:
        @db.task(name="sec.echo", queue=name, store_result=True)
        def echo(text: str, *, also: str = "") -> str:
            return text + also

        @db.task(name="sec.boom", queue=name, max_attempts=1)
        def boom(text: str) -> None:
            raise RuntimeError(text)

        q = db.queue(name, dead_letter=name + ".dead", max_attempts=1)
        q.put({HOSTILE: HOSTILE}, key=HOSTILE, headers={HOSTILE: HOSTILE})
        q.put_many([HOSTILE, [HOSTILE]])
        msgs = q.get_many(3)
        msgs[0].nack(delay=0, error=HOSTILE)  # the last attempt: dead, with this error
        msgs[1].fail(HOSTILE)
        msgs[2].extend(30)
        msgs[2].ack()
        topic = db.topic("sec-topic")
        topic.subscribe("sub", pattern=HOSTILE + ".#")
        topic.publish({"p": HOSTILE}, key=HOSTILE + ".x", headers={"h": HOSTILE})
        job = echo.delay(HOSTILE, also=HOSTILE)
        bad = boom.delay(HOSTILE)
        db.queue(name).put({"task": HOSTILE, "args": [HOSTILE], "kwargs": {HOSTILE: 1}})
        liteq.worker.Worker(db, [name], concurrency=2, burst=True, install_signals=False,
                            summary_interval=0).run()
        assert job.result(wait=5) == HOSTILE + HOSTILE
        assert bad.state == "failed"
        assert db.integrity_check() == ["ok"]
        assert {r[0] for r in db.execute("SELECT name FROM queues")} >= {name, name + ".dead"}
    finally:
        db.close()

    assert sql_trace.statements, "the tracer saw nothing"
    assert any(_holds(b, HOSTILE) for b in sql_trace.bound), "the hostile text was never bound"
    # liteq's own migrations drop and re-create triggers; nothing else may say DROP.
    from liteq.backends.sqlite.schema import MIGRATIONS

    ours = "\n".join(MIGRATIONS)
    spliced = [s for s in sql_trace.statements
               if HOSTILE in s or name in s or ("DROP" in s and s.strip() not in ours)]
    assert spliced == []
