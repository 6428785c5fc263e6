"""``python -m pipeline <command>``: workflow-side commands (argument parsing only; the work is in the modules).

- ``train``: the train command, and the train rule's job (:func:`pipeline.train_job.run_train_job`); with
  ``--plan P --iteration I`` its paths come from plan.json and the layout;
- ``append-log``: the train rule's ``tee -a`` that refuses links (:mod:`pipeline.append_log`,
  dispatched by ``__main__`` before this module is imported);
- ``explorer``: the exploration's HTML page (:func:`pipeline.explorer.write_explorer`);
- ``summarize``: summary tables and figures (:func:`pipeline.summary.summarize`);
- ``archive`` / ``verify-archive``: pack and check a results folder (:mod:`pipeline.archive`);
- ``study``: run each policy on the benchmarks over seeds, tables and figure (:mod:`pipeline.study`);
- ``reference``: the reference's published cases with its recipes, and their table (:mod:`pipeline.reference`).

``summarize``, ``archive``, ``verify-archive``, ``study`` and ``reference`` keep their options next to their stage
function (``main(argv)`` in the module); this file only dispatches to them.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

from agent import layout
from agent.run_plan import PlanError, read_plan
from agent.sandbox import CODE_MODIFICATION_MODES, DEFAULT_CODE_MODIFICATION
from neuralgraph import PACKAGED_LOOP
from pipeline.summary import SummaryError
from pipeline import train_job
from pipeline.append_log import main as _append_log_main


#: What `pipeline train --plan P --iteration I` derives from the plan (refused beside --plan).
TRAIN_FROM_PLAN = ("config", "data", "out", "loop", "code_modification")


def train_inputs(args: argparse.Namespace) -> dict:
    """config, data, out, loop and code_modification of the train job: from the plan and the
    layout (the iteration's folder, the results' dataset folder), or as given one by one."""
    if args.plan is None:
        missing = [name for name in ("config", "data", "out") if getattr(args, name) is None]
        if missing:
            raise train_job.TrainJobError(f"{', '.join('--' + m for m in missing)}: required without --plan")
        return {"config": args.config, "data": args.data, "out": args.out, "loop": args.loop or str(PACKAGED_LOOP),
                "code_modification": args.code_modification or DEFAULT_CODE_MODIFICATION}
    given = ["--" + name.replace("_", "-") for name in TRAIN_FROM_PLAN if getattr(args, name) is not None]
    if given:
        raise train_job.TrainJobError(f"{', '.join(given)}: comes from the plan with --plan {args.plan}")
    if args.iteration is None:
        raise train_job.TrainJobError("--iteration: required with --plan")
    try:
        plan = read_plan(args.plan)
    except PlanError as exc:
        raise train_job.TrainJobError(str(exc)) from None
    folder = layout.IterationFolder.at(plan.results, args.iteration)
    return {"config": str(folder.config_path), "data": str(Path(plan.results) / layout.DATA_DIR),
            "out": str(folder.path), "loop": str(folder.loop_path), "code_modification": plan.agent.code_modification}


def _train(args: argparse.Namespace) -> int:
    try:
        job = train_inputs(args)
        return train_job.run_train_job(job["config"], job["data"], job["out"], job["loop"],
                                       code_modification=job["code_modification"], threads=args.threads,
                                       stall_floor_s=args.stall_floor_s, startup_grace_s=args.startup_grace_s,
                                       default_wall_cap_s=args.default_wall_cap_s)
    except train_job.TrainJobError as exc:
        print(f"pipeline train: error: {exc}", file=sys.stderr)
        return train_job.EXIT_REFUSED


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
    p = commands.add_parser("train", help="train one iteration; an edited loop runs in the sandbox with a stall watchdog")
    p.add_argument("--plan", default=None, help="results/<exp>/plan.json: config, data, run folder, loop and "
                                                 "code-modification mode of --iteration from it (agent.run_plan)")
    p.add_argument("--iteration", type=int, default=None, help="the iteration to train (with --plan)")
    p.add_argument("--config", default=None, help="the run's config.yaml (without --plan)")
    p.add_argument("--data", default=None, help="dataset folder (without --plan)")
    p.add_argument("--out", default=None, help="the run folder (without --plan)")
    p.add_argument("--loop", default=None, help="the run's training module (default: the packaged one)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads of the training")
    p.add_argument("--code-modification", default=None, choices=CODE_MODIFICATION_MODES,
                   help=f"how a loop that differs from the packaged one may run (agent.code_modification; "
                        f"default {DEFAULT_CODE_MODIFICATION})")
    p.add_argument("--stall-floor-s", type=float, default=train_job.STALL_FLOOR_S,
                   help="shortest time without progress that counts as a stall (edited loops only)")
    p.add_argument("--startup-grace-s", type=float, default=train_job.STARTUP_GRACE_S,
                   help="time allowed before the first progress report (edited loops only)")
    p.add_argument("--default-wall-cap-s", type=float, default=train_job.DEFAULT_WALL_CAP_S,
                   help="wall-clock cap of an edited loop without a time target or a parent's training time")
    p.set_defaults(run=_train)
    tee = commands.add_parser("append-log", help="copy stdin to stdout and append it to FILE (never through a link)")
    tee.add_argument("file", help="the log to append to")
    tee.set_defaults(run=lambda args: _append_log_main([args.file]))
    explorer = commands.add_parser(
        "explorer", help="write the experiment's self-contained HTML explorer (tree, table, node details)")
    explorer.add_argument("--results", required=True, type=Path, help="experiment results folder, e.g. results/demo")
    explorer.add_argument("--out", type=Path, default=None,
                          help="page to write (default: RESULTS/summary/explorer.html)")
    explorer.set_defaults(run=_explorer)
    return parser


def _delegated() -> dict:
    """Commands whose options live in their stage module (imported only when called)."""
    from pipeline import archive, reference, study, summary

    return {"summarize": summary.main, "archive": archive.main, "verify-archive": archive.main_verify,
            "study": study.main, "reference": reference.main}


DELEGATED_COMMANDS = ("summarize", "archive", "verify-archive", "study", "reference")


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in DELEGATED_COMMANDS:
        return int(_delegated()[argv[0]](argv[1:]) or 0)
    args = build_parser().parse_args(argv)
    return int(args.run(args))
