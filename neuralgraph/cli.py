"""``python -m neuralgraph <command>``: one sub-command per pipeline stage, and the dispatcher
all three packages' CLIs share (``python -m neuralgraph|agent|pipeline <command>``).

One CLI style: each package's ``cli.py`` is only a table ``COMMANDS = {name: (target, help)}``
and a ``main`` calling :func:`dispatch`. A target is ``"module"`` or ``"module:function"``
(default function ``main``): the stage module owns its options through ``function(argv) -> int``.
The dispatcher imports a target only when its command runs, so ``--help``, ``check-config``
and the workflow's bookkeeping jobs never import torch. It lives here because neuralgraph is
the lowest package: agent and pipeline may import it, never the reverse.

Exit codes of the dispatcher: 0 for the usage listing (no command, ``-h``, ``--help``), 2 for an
unknown command; otherwise the command's own.
"""
from __future__ import annotations

import importlib
import sys
from typing import Callable, Optional

#: name -> (target, one-line help); train is the engine behind `python -m pipeline train`, listed as such.
COMMANDS: dict[str, tuple[str, str]] = {
    "check-config": ("neuralgraph.config_cli", "validate an experiment config (and its fixed fields against a base)"),
    "simulate": ("neuralgraph.simulate", "simulate the network and write the dataset folder"),
    "train": ("neuralgraph.training", "the training engine (resumes from its checkpoint); users and the workflow run it "
                                       "through `python -m pipeline train`, which sandboxes an edited loop"),
    "analyze": ("neuralgraph.analyze", "score a trained run: analysis.log, metrics.json, plots"),
}
#: Exit code of an unknown command (argparse's usage error).
EX_USAGE = 2


def usage(prog: str, commands: dict[str, tuple[str, str]]) -> str:
    """The listing ``prog --help`` prints: every command with its one-line help."""
    width = max(map(len, commands))
    lines = [f"usage: {prog} <command> [options]", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {help_}" for name, (_, help_) in commands.items()]
    lines += ["", f"Run '{prog} <command> --help' for the options of a command."]
    return "\n".join(lines)


def resolve(target: str) -> Callable[[list[str]], Optional[int]]:
    """The function of ``"module"`` (its ``main``) or ``"module:function"``, imported now (lazily)."""
    module, _, function = target.partition(":")
    return getattr(importlib.import_module(module), function or "main")


def dispatch(prog: str, commands: dict[str, tuple[str, str]], argv: Optional[list[str]] = None) -> int:
    """Run ``argv[0]``'s command with the rest of ``argv`` (default: ``sys.argv[1:]``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(prog, commands))
        return 0
    command, rest = argv[0], argv[1:]
    if command not in commands:
        print(f"{prog}: unknown command {command!r}; choose one of: {', '.join(commands)}", file=sys.stderr)
        return EX_USAGE
    return int(resolve(commands[command][0])(rest) or 0)


def main(argv: Optional[list[str]] = None) -> int:
    """``python -m neuralgraph``."""
    return dispatch("python -m neuralgraph", COMMANDS, argv)
