"""What a database path is: symlinks resolve once to the real file (the schema lock and
the wake-up watch sit beside it), and paths that are not files are refused before
SQLite or the lock creates anything."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import socket
import stat
import tempfile
from collections.abc import Iterator

import pytest
from click.testing import CliRunner
from helpers import PATIENCE, open_new_file_at_once, put_when_told

import liteq
from liteq.backends.sqlite.schema import SCHEMA_VERSION
from liteq.cli import cli


def _open_at_once(paths: list[str], out_dir: str) -> list[str]:
    """Open each path in its own process, all released together; their results."""
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(len(paths))
    procs = [
        ctx.Process(target=open_new_file_at_once, args=(path, barrier, i, out_dir))
        for i, path in enumerate(paths)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(PATIENCE)
    results = []
    for i in range(len(paths)):
        with open(os.path.join(out_dir, f"open-{i}.json")) as f:
            results.append(json.load(f))
    return results


@pytest.mark.parametrize("link", ["file", "directory"])
def test_processes_opening_a_new_file_through_a_symlink_and_its_real_path_at_once_all_succeed(
    tmp_path, link: str
) -> None:
    for round_ in range(4):
        folder = tmp_path / f"round{round_}"
        real_dir = folder / "real"
        real_dir.mkdir(parents=True)
        real = real_dir / "new.db"
        if link == "file":
            alias = folder / "alias.db"
            alias.symlink_to(real)  # dangling until the first open creates the file
        else:
            (folder / "alias").symlink_to(real_dir, target_is_directory=True)
            alias = folder / "alias" / "new.db"
        paths = [str(real if i % 2 else alias) for i in range(12)]

        results = _open_at_once(paths, str(folder))

        assert [r for r in results if r != "ok"] == []
        db = liteq.connect(str(real))
        assert db.execute("PRAGMA user_version") == [(SCHEMA_VERSION,)]
        assert sorted(m.payload for m in db.queue("opened").peek(20)) == list(range(12))
        assert db.integrity_check() == ["ok"]
        db.close()
        assert os.path.exists(str(real) + ".lock")
        assert not os.path.lexists(str(folder / "alias.db.lock"))


def test_a_database_opened_through_a_symlink_keeps_its_path_and_knows_the_real_file(
    tmp_path,
) -> None:
    real = tmp_path / "real.db"
    alias = tmp_path / "alias.db"
    alias.symlink_to(real)
    db = liteq.connect(str(alias))
    db.queue("q").put(1)
    assert db.path == str(alias)
    assert db.real_path == str(real)
    db.close()
    assert liteq.connect(str(real)).queue("q").peek(5)[0].payload == 1


def test_a_consumer_waiting_through_a_symlinked_path_is_woken_by_inotify_not_polling(
    tmp_path,
) -> None:
    real = tmp_path / "real.db"
    alias = tmp_path / "alias.db"
    alias.symlink_to(real)
    db = liteq.connect(str(alias))
    q = db.queue("q")
    ctx = mp.get_context("fork")
    go = ctx.Event()
    producer = ctx.Process(target=put_when_told, args=(str(real), "q", go, "hello"))
    producer.start()
    try:
        waiter = db.waiter()
        # Polling (the fallback when the watched -wal does not exist) never reports a
        # wake-up: wait() returns False after each poll.
        assert waiter.uses_inotify, "the watch is not on the WAL beside the real file"
        waiter.arm()
        go.set()
        assert waiter.wait(PATIENCE) is True
        msg = q.get(wait=PATIENCE)
        assert msg is not None and msg.payload == "hello"
    finally:
        go.set()
        producer.join(PATIENCE)
        db.close()


# --- paths that are not database files -------------------------------------------------


@pytest.fixture
def lonely_dir() -> Iterator[str]:
    """A directory holding only the path under test (so stray side files show)."""
    path = tempfile.mkdtemp(prefix="liteq-paths-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _make_node(folder: str, kind: str) -> tuple[str, object]:
    """Create a path of *kind* in *folder*; return it and what keeps it alive."""
    path = os.path.join(folder, "q.db")
    keep: object = None
    if kind == "directory":
        os.mkdir(path)
    elif kind == "FIFO":
        os.mkfifo(path)
    elif kind == "socket":
        keep = sock = socket.socket(socket.AF_UNIX)
        sock.bind(path)
    else:
        mode, dev = {
            "character device": (stat.S_IFCHR, os.makedev(1, 3)),  # a twin of /dev/null
            "block device": (stat.S_IFBLK, os.makedev(7, 200)),  # a loop device number
        }[kind]
        try:
            os.mknod(path, mode | 0o666, dev)
        except PermissionError:
            pytest.skip(f"making a {kind} node needs root (CAP_MKNOD)")
    return path, keep


KINDS = ["character device", "block device", "FIFO", "socket", "directory"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_path_that_is_not_a_regular_file_is_refused_naming_what_it_is_and_left_alone(
    lonely_dir, kind: str
) -> None:
    path, keep = _make_node(lonely_dir, kind)

    with pytest.raises(liteq.LiteqError) as info:
        liteq.connect(path)

    text = str(info.value)
    assert path in text and f"it is a {kind}" in text, text
    assert sorted(os.listdir(lonely_dir)) == ["q.db"], "stray files beside the refused path"
    del keep


@pytest.mark.parametrize("kind", ["FIFO", "character device"])
def test_a_symlink_to_a_path_that_is_not_a_file_is_refused_naming_the_real_path(
    lonely_dir, kind: str
) -> None:
    real, keep = _make_node(lonely_dir, kind)
    alias = os.path.join(lonely_dir, "alias.db")
    os.symlink(real, alias)

    with pytest.raises(liteq.LiteqError) as info:
        liteq.connect(alias)

    text = str(info.value)
    assert alias in text and real in text and kind in text, text
    assert sorted(os.listdir(lonely_dir)) == ["alias.db", "q.db"]
    del keep


@pytest.mark.parametrize("command", [["stats"], ["put", "q", "1"], ["queue", "create", "q"]],
                         ids=lambda c: c[0])
def test_the_cli_refuses_dev_null_as_a_database_and_writes_nothing_into_dev(
    command: list[str],
) -> None:
    before = sorted(os.listdir("/dev"))

    result = CliRunner().invoke(cli, ["--db", "/dev/null", *command])

    assert result.exit_code == 1, result.output
    assert result.output.startswith("Error: cannot open /dev/null: it is a character device")
    assert "Traceback" not in result.output
    # (/dev is shared with every other process on the machine: compare before and after
    # rather than assume that /dev/null-journal was never made by anything else)
    assert sorted(os.listdir("/dev")) == before


@pytest.mark.parametrize("kind", ["FIFO", "socket"])
def test_the_cli_refuses_a_fifo_or_socket_naming_it_with_no_stray_files(lonely_dir, kind) -> None:
    path, keep = _make_node(lonely_dir, kind)

    result = CliRunner().invoke(cli, ["--db", path, "put", "q", "1"])

    assert result.exit_code == 1
    assert f"Error: cannot open {path}: it is a {kind}" in result.output
    assert sorted(os.listdir(lonely_dir)) == ["q.db"]
    del keep


def test_a_path_under_a_missing_directory_is_refused_and_nothing_is_created(lonely_dir) -> None:
    path = os.path.join(lonely_dir, "nope", "q.db")
    with pytest.raises(liteq.LiteqError, match="does not exist"):
        liteq.connect(path)
    assert os.listdir(lonely_dir) == []
