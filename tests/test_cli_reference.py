"""Every ``liteq`` command is documented: its help ends with an example, and the
README's command reference is the help as it is now."""

from __future__ import annotations

import importlib.util
import inspect
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import click
import pytest
from click.testing import CliRunner

from liteq.cli import cli

ROOT = Path(__file__).resolve().parent.parent


def _reference_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("cli_reference", ROOT / "tools" / "cli_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TOOL = _reference_tool()
COMMANDS = TOOL.walk()


def test_the_walk_finds_every_command_and_group() -> None:
    names = {" ".join(words) for words, _ in COMMANDS}
    for expected in ("liteq", "liteq stats", "liteq dead", "liteq dead list", "liteq queue",
                     "liteq queue create", "liteq put", "liteq demo", "liteq vacuum"):
        assert expected in names


@pytest.mark.parametrize("words,ctx", COMMANDS, ids=[" ".join(w) for w, _ in COMMANDS])
def test_every_command_has_help_that_ends_with_an_example(words: tuple[str, ...],
                                                          ctx: click.Context) -> None:
    doc = inspect.cleandoc(ctx.command.help or "")
    paragraphs = [p.strip() for p in doc.split("\n\n") if p.strip()]
    assert len(paragraphs) >= 2, f"{' '.join(words)}: needs a description and an example"
    last = paragraphs[-1].replace("\b\n", "")
    assert last.startswith(("Example: ", "Examples:")), last
    examples = [line.strip() for line in last.splitlines()[1:]] or [last[len("Example: "):]]
    for example in examples:
        assert example.startswith("liteq ") or " | liteq " in example, example
        # the example names this very command (a group: one of its commands)
        assert example.split()[1:].count(words[-1]) or len(words) == 1, example
    help_text = CliRunner().invoke(cli, [*words[1:], "--help"]).stdout
    assert examples[-1] in help_text
    assert ctx.command.get_short_help_str(80) and not ctx.command.get_short_help_str(
        80).endswith("...")


def test_the_readme_command_reference_is_up_to_date() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert TOOL.updated(readme) == readme, "README.md is stale: run python tools/cli_reference.py"


def test_the_reference_tool_check_mode_agrees() -> None:
    assert TOOL.main(["--check"]) == 0


def test_python_dash_m_liteq_is_the_command(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "liteq", "--db", str(tmp_path / "x.db"),
                             "stats"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 1
    assert result.stderr.startswith("Error: no liteq database at ")
    assert not (tmp_path / "x.db").exists()
    help_result = subprocess.run([sys.executable, "-m", "liteq", "--help"], capture_output=True,
                                 text=True, cwd=ROOT, timeout=60)
    assert help_result.returncode == 0 and help_result.stdout.startswith("Usage: liteq ")
