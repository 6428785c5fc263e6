"""``python -m pipeline``: command lines of the workflow-side stages; each only parses arguments.

- ``train``: the train rule's job: :func:`pipeline.train_job.run_train_job`.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional

from agent.sandbox import CODE_MODIFICATION_MODES, DEFAULT_CODE_MODIFICATION
from pipeline import train_job


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline", description="Workflow-side stages.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train one iteration; an edited loop runs in the sandbox with a stall watchdog")
    p.add_argument("--config", required=True, help="the iteration's config.yaml")
    p.add_argument("--data", required=True, help="dataset folder")
    p.add_argument("--out", required=True, help="the iteration's run folder")
    p.add_argument("--loop", required=True, help="the iteration's train_loop.py")
    p.add_argument("--threads", type=int, default=1, help="CPU threads of the training")
    p.add_argument("--code-modification", default=DEFAULT_CODE_MODIFICATION, choices=CODE_MODIFICATION_MODES,
                   help="how a loop that differs from the packaged one may run (agent.code_modification)")
    p.add_argument("--stall-floor-s", type=float, default=train_job.STALL_FLOOR_S,
                   help="shortest time without progress that counts as a stall (edited loops only)")
    p.add_argument("--startup-grace-s", type=float, default=train_job.STARTUP_GRACE_S,
                   help="time allowed before the first progress report (edited loops only)")
    p.set_defaults(func=lambda a: train_job.run_train_job(
        a.config, a.data, a.out, a.loop, code_modification=a.code_modification, threads=a.threads,
        stall_floor_s=a.stall_floor_s, startup_grace_s=a.startup_grace_s))
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except train_job.TrainJobError as exc:
        print(f"pipeline {args.command}: error: {exc}", file=sys.stderr)
        return train_job.EXIT_REFUSED
