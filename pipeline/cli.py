"""``python -m pipeline <command>``: workflow-side commands (argument parsing only; the work is in the modules)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from neuralgraph.summarize import SummaryError


def _explorer(args: argparse.Namespace) -> int:
    from pipeline.explorer import write_explorer

    try:
        path = write_explorer(args.results, args.out)
    except (SummaryError, FileNotFoundError, ValueError) as exc:
        print(f"pipeline explorer: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    explorer = commands.add_parser(
        "explorer", help="write the experiment's self-contained HTML explorer (tree, table, node details)")
    explorer.add_argument("--results", required=True, type=Path, help="experiment results folder, e.g. results/demo")
    explorer.add_argument("--out", type=Path, default=None,
                          help="page to write (default: RESULTS/summary/explorer.html)")
    explorer.set_defaults(run=_explorer)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.run(args))
