"""Opening a database without write access, or on a full disk: read-only opens look
without writing anything, and a refused read-write open names its cause (the directory,
the full disk) instead of "disk I/O error" or "the file is not writable".

root ignores file permissions, so as in test_bad_input.py the attempts run in a forked
child that drops to the "nobody" user (skipped where that is not possible). A full disk
is a 2 MiB tmpfs mounted for the test (skipped where mounting is not allowed).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import apsw
import pytest
from click.testing import CliRunner
from helpers import file_digest

import liteq
from liteq.backends.sqlite.schema import SCHEMA_VERSION
from liteq.cli import cli

NOBODY = 65534


def as_nobody(fn: Callable[..., Any], *args: Any) -> Any:
    """Run fn(*args) in a forked child as the "nobody" user; its JSON result, or
    ``{"error": [type name, message]}`` when it raised."""
    if os.geteuid() != 0:
        pytest.skip("needs root to drop to another user (file modes do not stop root)")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            os.close(read_end)
            try:
                os.setgroups([])
                os.setgid(NOBODY)
                os.setuid(NOBODY)
            except OSError as exc:
                out = {"skip": f"cannot drop root ({exc})"}
            else:
                try:
                    out = {"ok": fn(*args)}
                except Exception as exc:
                    out = {"error": [type(exc).__name__, str(exc)]}
        except BaseException:
            out = {"crash": traceback.format_exc()}
        os.write(write_end, json.dumps(out).encode())
        os._exit(0)
    os.close(write_end)
    chunks = []
    while chunk := os.read(read_end, 65536):
        chunks.append(chunk)
    os.close(read_end)
    os.waitpid(pid, 0)
    out = json.loads(b"".join(chunks))
    if "skip" in out:
        pytest.skip(out["skip"])
    assert "crash" not in out, out["crash"]
    return out.get("ok", out)


def run_cli(*args: str) -> dict[str, Any]:
    """``liteq ARGS`` through CliRunner: exit code and output."""
    result = CliRunner().invoke(cli, list(args))
    return {"code": result.exit_code, "out": result.output,
            "traceback": result.exception is not None
            and not isinstance(result.exception, SystemExit)}


def snapshot(folder: str) -> dict[str, tuple[str, float]]:
    """Every file in *folder*: its digest and modification time."""
    out = {}
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        out[name] = (file_digest(path), os.stat(path).st_mtime)
    return out


@pytest.fixture
def shared_dir() -> Iterator[str]:
    """A root-owned directory that others can read but not write (tmp_path is private
    to root)."""
    path = tempfile.mkdtemp(prefix="liteq-access-")
    os.chmod(path, 0o755)
    yield path
    os.chmod(path, 0o755)
    shutil.rmtree(path, ignore_errors=True)


def _filled(path: str) -> liteq.Database:
    """A database with a little of everything a look command shows (left open)."""
    db = liteq.connect(path)
    q = db.queue("q", max_attempts=1)
    q.put_many([{"n": n} for n in range(3)])
    q.get().fail("boom")  # one dead message
    db.topic("orders").subscribe("billing", pattern="order.#")

    @db.task(name="access.add")
    def add(a: int, b: int) -> int:
        return a + b

    add.delay(1, 2)
    db.schedule("nightly", cron="0 3 * * *", queue="q", payload={"n": 9})
    return db


LOOK_COMMANDS = [
    ["stats"], ["peek", "q"], ["peek", "q", "--state", "dead"], ["show", "1"], ["topics"],
    ["jobs"], ["job", "4"], ["dead", "list", "q"], ["schedule", "list"],
    ["schedule", "next", "nightly"], ["schedule", "history", "nightly"],
]


# --- read-only opens (issue 15 item 14) --------------------------------------------------


def test_an_operator_without_write_access_can_run_every_look_command_and_changes_nothing(
    shared_dir,
) -> None:
    path = os.path.join(shared_dir, "app.db")
    _filled(path).close()
    os.chmod(path, 0o644)
    before = snapshot(shared_dir)

    results = as_nobody(lambda: [run_cli("--db", path, *c) for c in LOOK_COMMANDS])

    for command, result in zip(LOOK_COMMANDS, results, strict=True):
        assert result["code"] == 0 and not result["traceback"], (command, result["out"])
    assert "Error" not in "".join(r["out"] for r in results)
    assert snapshot(shared_dir) == before


def test_a_read_only_reader_sees_the_commits_of_a_writer_that_has_the_file_open(
    shared_dir,
) -> None:
    path = os.path.join(shared_dir, "app.db")
    writer = _filled(path)
    q = writer.queue("q")
    try:
        q.put({"n": "late"})  # in the WAL, not yet in the main file

        def look() -> Any:
            db = liteq.connect(path, read_only=True)
            first = [m.payload for m in db.queue("q").peek(10)]
            return first

        assert as_nobody(look) == [{"n": 1}, {"n": 2}, {"n": "late"}]
        listing = sorted(os.listdir(shared_dir))
        q.put({"n": "later"})
        out = as_nobody(lambda: run_cli("--db", path, "peek", "q", "--json"))
        assert out["code"] == 0 and "later" in out["out"], out
        assert sorted(os.listdir(shared_dir)) == listing
    finally:
        writer.close()


def test_a_read_only_open_writes_nothing_and_refuses_every_write(tmp_path) -> None:
    path = str(tmp_path / "app.db")
    _filled(path).close()
    digest = file_digest(path)
    mtime = os.stat(path).st_mtime

    db = liteq.connect(path, read_only=True)
    assert db.read_only and "read_only" in repr(db)
    assert {"default", "q"} <= set(db.queues())
    assert db.queue("q").stats()["dead"] == 1
    for write in (lambda: db.queue("q").put(1), lambda: db.queue("new"),
                  lambda: db.execute("CREATE TABLE t (x)"), lambda: db.queue("q").get()):
        with pytest.raises(liteq.StorageError, match="read-only"):
            write()
    db.close()

    assert file_digest(path) == digest and os.stat(path).st_mtime == mtime
    # SQLite may leave its shared-memory index (-shm) and an empty -wal where the
    # directory allows; nothing else, and no data.
    assert set(os.listdir(tmp_path)) <= {"app.db", "app.db.lock", "app.db-wal", "app.db-shm"}
    assert os.path.getsize(path + "-wal") == 0 if os.path.exists(path + "-wal") else True


def test_a_read_only_open_never_creates_a_file(tmp_path) -> None:
    path = str(tmp_path / "missing.db")
    with pytest.raises(liteq.LiteqError, match="no such file"):
        liteq.connect(path, read_only=True)
    assert os.listdir(tmp_path) == []


def test_a_read_only_open_of_an_empty_or_older_file_says_what_to_do(tmp_path) -> None:
    empty = str(tmp_path / "empty.db")
    apsw.Connection(empty).execute("PRAGMA journal_mode=WAL").fetchall()
    with pytest.raises(liteq.LiteqError, match="not a liteq database yet"):
        liteq.connect(empty, read_only=True)

    older = str(tmp_path / "older.db")
    liteq.connect(older).close()
    conn = apsw.Connection(older)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION - 1}")
    conn.close()
    with pytest.raises(liteq.LiteqError, match="open it read-write once to upgrade"):
        liteq.connect(older, read_only=True)


def test_read_only_must_be_a_boolean(tmp_path) -> None:
    with pytest.raises(liteq.InvalidArgument, match="read_only must be True or False"):
        liteq.connect(str(tmp_path / "x.db"), read_only="yes")  # type: ignore[arg-type]


# --- a writable file in a directory the user cannot write (issue 15 item 15) ------------


def test_a_writable_file_in_an_unwritable_directory_names_the_directory_and_why(
    shared_dir,
) -> None:
    path = os.path.join(shared_dir, "app.db")
    _filled(path).close()
    os.chown(path, NOBODY, NOBODY)  # nobody may write the file, not the directory
    before = snapshot(shared_dir)

    kind, text = as_nobody(lambda: liteq.connect(path).close())["error"]
    cli_put = as_nobody(lambda: run_cli("--db", path, "put", "q", "1"))
    cli_stats = as_nobody(lambda: run_cli("--db", path, "stats"))

    assert kind == "LiteqError"
    assert path in text and f"the directory {shared_dir} is not writable" in text, text
    assert "app.db-wal" in text and "app.db-shm" in text and "read-only" in text
    assert "the file is not writable" not in text
    assert cli_put["code"] == 1 and f"directory {shared_dir} is not writable" in cli_put["out"]
    assert cli_stats["code"] == 0, cli_stats["out"]  # looking needs no write access
    assert snapshot(shared_dir) == before


def test_a_new_file_in_an_unwritable_directory_names_the_directory(shared_dir) -> None:
    path = os.path.join(shared_dir, "new.db")

    kind, text = as_nobody(lambda: liteq.connect(path).close())["error"]

    assert kind == "LiteqError"
    assert f"the directory {shared_dir} is not writable" in text, text
    assert "cannot be created there" in text
    assert os.listdir(shared_dir) == []


def test_an_unwritable_file_is_named_as_such_and_read_only_is_suggested(shared_dir) -> None:
    path = os.path.join(shared_dir, "app.db")
    _filled(path).close()
    os.chmod(shared_dir, 0o777)  # the directory is not the problem here
    before = snapshot(shared_dir)

    kind, text = as_nobody(lambda: liteq.connect(path).close())["error"]

    assert kind == "LiteqError" and "the file is not writable" in text and "read_only=True" in text
    assert snapshot(shared_dir) == before


# --- a full disk (issue 16 item 6) --------------------------------------------------------


@pytest.fixture
def full_disk(tmp_path) -> Iterator[Path]:
    """A 2 MiB tmpfs holding a liteq database with a few messages, then filled up."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip()}")
    try:
        db = liteq.connect(str(mount / "q.db"))
        db.queue("q").put_many([{"n": n} for n in range(5)])
        db.close()
        fd = os.open(mount / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            while True:
                os.write(fd, b"\0" * 65536)
        except OSError as exc:
            assert exc.errno == 28
            while True:  # the last few bytes too
                try:
                    os.write(fd, b"\0" * 512)
                except OSError:
                    break
        finally:
            os.close(fd)
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_on_a_full_disk_a_read_write_open_names_the_cause(full_disk) -> None:
    path = str(full_disk / "q.db")
    with pytest.raises(liteq.LiteqError) as info:
        liteq.connect(path)
    text = str(info.value)
    assert path in text and "no space left on device" in text, text
    assert "disk I/O error" not in text


def test_on_a_full_disk_a_read_only_open_and_the_look_commands_still_work(full_disk) -> None:
    path = str(full_disk / "q.db")
    digest = file_digest(path)

    db = liteq.connect(path, read_only=True)
    assert [m.payload["n"] for m in db.queue("q").peek(10)] == [0, 1, 2, 3, 4]
    db.close()
    stats = run_cli("--db", path, "stats", "--json")
    peek = run_cli("--db", path, "peek", "q")
    put = run_cli("--db", path, "put", "q", "1")

    assert stats["code"] == 0 and json.loads(stats["out"])[0]["ready"] == 5, stats
    assert peek["code"] == 0, peek
    assert put["code"] == 1 and "no space left on device" in put["out"], put
    assert not put["traceback"]
    assert file_digest(path) == digest
