"""One CLI style across neuralgraph, agent and pipeline (docs/architecture.md, "One CLI style").

Each package's ``cli.py`` is a table ``COMMANDS = {name: ("module[:function]", help)}`` run by
:func:`neuralgraph.cli.dispatch`: every entry names a real function, ``python -m <pkg> --help``
lists every command, an unknown command exits 2 naming the allowed ones, and every command
answers ``--help`` with exit 0 and a usage line of the command users type,
``python -m <pkg> <command>`` (its parser lives beside its stage).
"""
from __future__ import annotations

import importlib
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("neuralgraph", "agent", "pipeline")
COMMANDS = [(pkg, name) for pkg in PACKAGES for name in importlib.import_module(f"{pkg}.cli").COMMANDS]


def _run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *argv], cwd=REPO, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("package", PACKAGES)
def test_every_table_entry_names_a_function_of_an_existing_module(package):
    for name, (target, help_) in importlib.import_module(f"{package}.cli").COMMANDS.items():
        module, _, function = target.partition(":")
        assert importlib.util.find_spec(module) is not None, f"{package} {name}: no module {module}"
        assert callable(getattr(importlib.import_module(module), function or "main", None)), f"{package} {name}"
        assert help_.strip(), f"{package} {name}: no help line"


@pytest.mark.parametrize("package", PACKAGES)
def test_help_lists_every_command_and_an_unknown_command_exits_2(package):
    listing = _run(package, "--help")
    assert listing.returncode == 0, listing.stderr[-2000:]
    for name in importlib.import_module(f"{package}.cli").COMMANDS:
        assert f"  {name} " in listing.stdout, f"python -m {package} --help does not list {name}"
    unknown = _run(package, "no-such-command")
    assert unknown.returncode == 2
    assert "unknown command 'no-such-command'" in unknown.stderr
    assert ", ".join(importlib.import_module(f"{package}.cli").COMMANDS) in unknown.stderr


@pytest.mark.parametrize("package,command", COMMANDS)
def test_every_command_answers_help(package, command):
    done = _run(package, command, "--help")
    assert done.returncode == 0, done.stderr[-2000:]
    # the usage line is the command a user types, the same form for every command of every package
    assert done.stdout.startswith(f"usage: python -m {package} {command}"), done.stdout[:200]
