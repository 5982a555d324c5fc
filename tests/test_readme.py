"""The README's first screen: the commands a new user copies first must work as written.

These check the text (the commands themselves are run from a fresh clone before a
release, see the closing notes); they fail when an install line names a distribution
that is not this one, or when the two first commands share a virtual environment.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
DIST = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["name"]


def first_screen_commands() -> list[str]:
    block = re.search(r"```sh\n(.*?)```", README, re.S)
    assert block, "the README starts with a sh block of commands"
    return [line for line in block.group(1).splitlines() if line and not line.startswith("#")]


def test_the_distribution_is_not_the_unrelated_liteq_on_the_package_index() -> None:
    # 'liteq' on the package index is someone else's project: pip install liteq
    # would install it.
    assert DIST != "liteq"
    assert re.fullmatch(r"[a-z0-9][a-z0-9-]*", DIST)


def test_every_pip_install_from_the_index_names_this_distribution() -> None:
    docs = [README] + [(ROOT / name).read_text(encoding="utf-8")
                       for name in ("bench/README.md", "DESIGN-NOTES.md", "CHANGELOG.md")]
    names = []
    for text in docs:
        for match in re.finditer(r"pip install ([^\s`]+)", text):
            target = match.group(1)
            if target.startswith(("-", ".", "'", '"')):
                continue  # a checkout (., -e '.[test]') or an option, not an index name
            names.append(target.split("[")[0].split("==")[0])
    assert DIST in names, "the README says how to install from the package index"
    assert "liteq" not in names


def test_the_two_first_commands_each_make_a_fresh_virtual_environment() -> None:
    commands = first_screen_commands()
    assert len(commands) == 2
    venvs = []
    for command in commands:
        made = re.search(r"python3 -m venv (\S+)", command)
        assert made, command
        venv = made.group(1)
        assert f"rm -rf {venv} &&" in command, "a second run must not reuse the first one's venv"
        venvs.append(venv)
    assert venvs[0] != venvs[1]
    assert "liteq demo" in commands[0]
    assert "pytest" in commands[1]


def test_the_test_command_says_how_long_the_suite_takes() -> None:
    block = re.search(r"```sh\n(.*?)```", README, re.S)
    assert block and re.search(r"# run the tests.*~\d+ min", block.group(1))
