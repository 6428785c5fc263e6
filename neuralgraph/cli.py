"""``python -m neuralgraph <command>``: one sub-command per pipeline stage.

Each stage module owns its arguments through a ``main(argv) -> int`` function; this file only
dispatches, importing the stage lazily so ``--help`` and config checks stay fast (no torch
import for ``check-config``).
"""
from __future__ import annotations

import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "check-config": ("neuralgraph.config_cli", "validate an experiment config (and its fixed fields against a base)"),
    "simulate": ("neuralgraph.simulate", "simulate the network and write the dataset folder"),
    "train": ("neuralgraph.training", "the training engine (resumes from its checkpoint); users and the workflow run it "
                                       "through `python -m pipeline train`, which sandboxes an edited loop"),
    "analyze": ("neuralgraph.analyze", "score a trained run: analysis.log, metrics.json, plots"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: python -m neuralgraph <command> [options]", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run 'python -m neuralgraph <command> --help' for the options of a command."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"neuralgraph: unknown command {command!r}; choose one of: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[command][0])
    return int(module.main(rest) or 0)
