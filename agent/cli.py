"""``python -m agent <command>``: the ucb-score, agent-decide and init stages (argument parsing only:
the stage functions are :func:`agent.start.start_experiment`, :func:`agent.ucb.score_iteration`
and :func:`agent.decide.decide`).

- ``init``: iteration 1's config.yaml, train_loop.py, proposal.json (and an empty code.diff).
- ``ucb``: node.json (from proposal.json + metrics.json + config + code) and ucb_scores.txt.
- ``decide``: this iteration's decision.json, memory.md, analysis.md, instructions.md and the
  next iteration's config.yaml, train_loop.py, proposal.json, code.diff.
- ``costs``: costs.tsv, every recorded LLM call of an experiment (:mod:`agent.costs`).

Exit codes: 0 done; 2 bad input or backend configuration (the message names the file or
option); 75 (EX_TEMPFAIL) the LLM backend is temporarily unavailable and ``--fallback fail``
(the default): re-run later. Every output is written atomically, and all of them only after
the decision is final, so a refused input loses nothing already computed.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Optional

from agent.costs import CostRecordError, total_usd, write_costs_tsv
from agent.decide import AGENT_DEFAULTS, DecideRequest, decide, request_from_plan
from agent.decision import DecisionInvalid
from agent.inputs import InputError
from agent.layout import iteration_dir_name
from agent.policies.base import BACKENDS, BackendConfigError, RetryableBackendError
from agent.run_plan import PlanError, RunPlan, read_plan
from agent.sandbox import CODE_MODIFICATION_MODES, code_modification_refusal
from agent.secrets import SecretsUnavailable, receive_secrets
from agent.smoke import DEFAULT_SMOKE_TIMEOUT_S
from agent.start import start_experiment, start_from_plan
from agent.tree import TreeError
from agent.ucb import score_from_plan, score_iteration
from neuralgraph import PACKAGED_LOOP
from neuralgraph.config import ALLOWED_TIME_STEPS, ConfigError
from neuralgraph.redaction import redact

EX_USAGE = 2
EX_TEMPFAIL = 75


# --------------------------------------------------------------------------- shared readers


def parse_schedule(text: Optional[str], n_blocks: Optional[int] = None) -> Optional[list[int]]:
    """'agent' (or empty) -> None; '1,4,16' -> [1, 4, 16] (each in ALLOWED_TIME_STEPS)."""
    if text is None or text.strip().lower() in ("", "agent"):
        return None
    allowed = ", ".join(map(str, ALLOWED_TIME_STEPS))
    values = []
    for part in text.split(","):
        try:
            value = int(part.strip())
        except ValueError:
            raise InputError(f"--schedule {text!r}: {part.strip()!r} is not an integer; use 'agent' or a "
                             f"comma list of {allowed}") from None
        if value not in ALLOWED_TIME_STEPS:
            raise InputError(f"--schedule {text!r}: time_step {value} must be one of {allowed}")
        values.append(value)
    if n_blocks is not None and len(values) < n_blocks:
        raise InputError(f"--schedule {text!r}: {len(values)} time_steps for --n-blocks {n_blocks}; give one per block")
    return values


def parse_backend_options(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs (values read as YAML scalars: 4096 -> int, 60.0 -> float) for the backend."""
    import yaml

    options: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--backend-option {item!r}: expected KEY=VALUE, e.g. max_tokens=8000")
        try:
            options[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            options[key.strip()] = value
    return options



# --------------------------------------------------------------------------- init and ucb


def plan_or_explicit(args: argparse.Namespace, required: tuple[str, ...]) -> Optional[RunPlan]:
    """The plan of ``--plan`` (None without it), refusing the options the plan already holds, or
    refusing a command without the plan that lacks a ``required`` option. The options a plan can
    replace have no argparse default (SUPPRESS): present in ``args`` only when given."""
    given = sorted(k for k in vars(args) if k not in PLAN_FREE_OPTIONS)
    if args.plan is not None:
        if given:
            raise InputError(f"{', '.join(map(_option, given))}: comes from the plan with --plan {args.plan}")
        return read_plan(args.plan)
    missing = [name for name in required if name not in vars(args)]
    if missing:
        raise InputError(f"{', '.join(map(_option, missing))}: required without --plan")
    return None


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def cmd_init(args: argparse.Namespace) -> int:
    plan = plan_or_explicit(args, ("config", "out_dir"))
    if plan is not None:
        written = start_from_plan(plan, Path(args.loop))
    else:
        written = start_experiment(Path(args.config), Path(args.out_dir), parse_schedule(getattr(args, "schedule", None)),
                                   Path(args.loop), slots=getattr(args, "slots", 1),
                                   seed=getattr(args, "seed", AGENT_DEFAULTS.seed))
    print(f"agent init: wrote config.yaml, train_loop.py, proposal.json, code.diff into "
          f"{', '.join(p.name for p in written)}")
    return 0


def cmd_ucb(args: argparse.Namespace) -> int:
    plan = plan_or_explicit(args, ("proposal", "metrics", "config", "code", "out_node", "out_scores"))
    if plan is not None:
        if args.iteration is None:
            raise InputError("--iteration: required with --plan")
        node, scores = score_from_plan(plan, args.iteration)
    else:
        node, scores = score_iteration(Path(args.proposal), Path(args.metrics), Path(args.config), Path(args.code),
                                       [Path(p) for p in getattr(args, "nodes", [])], getattr(args, "ucb_c", None),
                                       Path(args.out_node), Path(args.out_scores))
    print(f"agent ucb: node {node.id} (block {node.block}) R2={node.r2}; {len(scores)} nodes scored")
    return 0


def cmd_costs(args: argparse.Namespace) -> int:
    if not Path(args.results).is_dir():
        raise InputError(f"--results {args.results}: not a folder")
    rows = write_costs_tsv(args.results, args.out)
    print(f"agent costs: {len(rows)} LLM call(s), {total_usd(rows):.6f} USD -> {args.out}")
    return 0


# --------------------------------------------------------------------------- decide


#: Options the explicit form of decide cannot do without (with --plan the plan holds them).
DECIDE_REQUIRED = ("node", "ucb", "analysis_log", "config", "code", "n_blocks", "base_config", "results_dir", "out_dir")
#: What a command takes besides the plan (everything else the plan holds).
PLAN_FREE_OPTIONS = ("plan", "iteration", "backend_option", "loop", "func", "command")


def decide_request(args: argparse.Namespace) -> DecideRequest:
    """The decide options as the stage function's typed inputs: from the plan, or given one by one."""
    plan = plan_or_explicit(args, DECIDE_REQUIRED)
    if plan is not None:
        return request_from_plan(plan, args.iteration, parse_backend_options(args.backend_option))
    opt = lambda name, default=None: getattr(args, name, default)  # noqa: E731 (a default per option, here)
    a = AGENT_DEFAULTS
    n_blocks = args.n_blocks
    return DecideRequest(
        iteration=args.iteration, n_blocks=n_blocks, n_iter_block=opt("n_iter_block"), slots=opt("slots", 1),
        base_config=Path(args.base_config), results_dir=Path(args.results_dir), out_dir=Path(args.out_dir),
        nodes=[Path(p) for p in args.node], analysis_logs=[Path(p) for p in args.analysis_log],
        configs=[Path(p) for p in args.config], codes=[Path(p) for p in args.code], ucb=Path(args.ucb),
        earlier_nodes=[Path(p) for p in opt("nodes", [])], next_dirs=[Path(p) for p in opt("next_dir", [])],
        ucb_c=opt("ucb_c"), schedule=parse_schedule(opt("schedule", "agent"), n_blocks),
        memory=opt("memory"), full_log=opt("full_log"), instructions=opt("instructions"),
        images=[Path(p) for p in opt("images", [])], backend=opt("backend", a.backend),
        backend_options=parse_backend_options(args.backend_option), seed=opt("seed", a.seed), model=opt("model", a.model),
        replay_from=opt("replay_from", a.replay_from), fallback=opt("fallback", a.fallback),
        max_cost_usd=opt("max_cost_usd", a.max_cost_usd), smoke_timeout=opt("smoke_timeout", DEFAULT_SMOKE_TIMEOUT_S),
        code_modification=opt("code_modification", a.code_modification),
        prompt_images=opt("prompt_images", a.prompt_images), prompt_code=opt("prompt_code", a.prompt_code),
    )


def cmd_decide(args: argparse.Namespace) -> int:
    receive_secrets(os.environ)  # the workflow's API key, for this process only (agent/secrets.py)
    request = decide_request(args)
    refusal = code_modification_refusal(request.code_modification)
    if refusal:
        print(f"agent decide: {refusal}; config mutations go on", file=sys.stderr)
    elif request.code_modification == "unsandboxed":
        print("agent decide: agent.code_modification: unsandboxed: code modifications run WITHOUT the sandbox",
              file=sys.stderr)
    decide(request)
    return 0


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m agent", description="Exploration agent stages.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_init(sub)
    _add_ucb(sub)
    _add_decide(sub)
    _add_costs(sub)
    return parser


def _add_costs(sub) -> None:
    p = sub.add_parser("costs", help="tokens and cost of every LLM call of an experiment (costs.tsv)")
    p.add_argument("--results", required=True, help="the experiment's results folder (results/<exp>)")
    p.add_argument("--out", required=True, help="the table to write, e.g. results/<exp>/summary/costs.tsv")
    p.set_defaults(func=cmd_costs)


def _add_plan(p) -> None:
    """--plan and --iteration: the form the workflow's rules use (agent.run_plan)."""
    p.add_argument("--plan", default=None, help="results/<exp>/plan.json written by the workflow (agent.run_plan)")
    p.add_argument("--iteration", type=int, default=None, help="the iteration (with --plan)")


def _add_init(sub) -> None:
    p = sub.add_parser("init", help="write iteration 1's config.yaml, train_loop.py, proposal.json",
                       argument_default=argparse.SUPPRESS,
                       description="Either --plan P (experiment, schedule, slots and seed from plan.json) or the "
                                   "explicit options.")
    _add_plan(p)
    p.add_argument("--loop", default=str(PACKAGED_LOOP), help="training module to copy (default: packaged)")
    explicit = p.add_argument_group("without --plan")
    explicit.add_argument("--config", help="experiment config (YAML)")
    explicit.add_argument("--out-dir", help=f"iteration 1's folder, e.g. results/exp/{iteration_dir_name(1)}")
    explicit.add_argument("--n-iter-block", type=int, help="iterations per block (default: claude.n_iter_block)")
    explicit.add_argument("--schedule", help="comma list of time_steps per block, or 'agent' (the default)")
    explicit.add_argument("--slots", type=int,
                          help="nodes of the first round (default 1): the root and slots-1 one-mutation variants")
    explicit.add_argument("--seed", type=int, help=f"seed of the variants' mutations (default {AGENT_DEFAULTS.seed})")
    p.set_defaults(func=cmd_init)


def _add_ucb(sub) -> None:
    p = sub.add_parser("ucb", help="write node.json and ucb_scores.txt for one iteration",
                       argument_default=argparse.SUPPRESS,
                       description="Either --plan P --iteration I (every path from plan.json and the folder "
                                   "layout) or the explicit options.")
    _add_plan(p)
    explicit = p.add_argument_group("without --plan")
    explicit.add_argument("--proposal")
    explicit.add_argument("--metrics")
    explicit.add_argument("--config")
    explicit.add_argument("--code")
    explicit.add_argument("--nodes", nargs="*", help="node.json of earlier iterations")
    explicit.add_argument("--ucb-c", type=float, help="exploration constant (default: claude.ucb_c)")
    explicit.add_argument("--out-node")
    explicit.add_argument("--out-scores")
    p.set_defaults(func=cmd_ucb)


def _add_decide(sub) -> None:
    p = sub.add_parser("decide", help="decide the next node; write memory, full log, instructions, next config/code",
                       argument_default=argparse.SUPPRESS,
                       description="Either --plan P --iteration I (every path and option from the workflow's "
                                   "plan.json and the folder layout), or the explicit options below.")
    p.add_argument("--plan", default=None, help="results/<exp>/plan.json written by the workflow (agent.run_plan)")
    p.add_argument("--iteration", type=int, required=True, help="the round's last iteration")
    p.add_argument("--backend-option", action="append", default=[], metavar="KEY=VALUE",
                   help="extra backend option, repeatable (anthropic: max_tokens, timeout_s, max_retries; "
                        "claude-code: max_tokens, timeout_s, max_turns, command)")
    explicit = p.add_argument_group("without --plan", "what the plan holds, given one by one")
    explicit.add_argument("--node", nargs="+", help="node.json of the finished round's nodes, in slot order")
    explicit.add_argument("--nodes", nargs="*", help="node.json of earlier iterations")
    explicit.add_argument("--ucb", help="this iteration's ucb_scores.txt")
    explicit.add_argument("--ucb-c", type=float,
                          help="exploration constant, the same as the ucb stage's (default: claude.ucb_c)")
    explicit.add_argument("--analysis-log", nargs="+", help="analysis.log of each node of the round")
    explicit.add_argument("--config", nargs="+", help="config.yaml of each node of the round")
    explicit.add_argument("--code", nargs="+", help="train_loop.py of each node of the round")
    explicit.add_argument("--memory", help="previous memory.md (absent at iteration 1)")
    explicit.add_argument("--full-log", help="previous analysis.md (absent at iteration 1)")
    explicit.add_argument("--instructions", help="previous instructions.md (default: the shipped one)")
    explicit.add_argument("--images", nargs="*", help="dataset pictures shown to the policy")
    explicit.add_argument("--n-iter-block", type=int, help="default: the base config's claude.n_iter_block")
    explicit.add_argument("--slots", type=int, help="nodes per round (K, default 1); n_iter_block must be a multiple")
    explicit.add_argument("--n-blocks", type=int)
    explicit.add_argument("--schedule", help="comma list of time_steps per block, or 'agent' (the default)")
    explicit.add_argument("--backend", choices=list(BACKENDS), help=f"default: {AGENT_DEFAULTS.backend}")
    explicit.add_argument("--seed", type=int, help=f"default: {AGENT_DEFAULTS.seed}")
    explicit.add_argument("--model", help="LLM model id (default: the backend's config/environment)")
    explicit.add_argument("--replay-from", help="results folder whose decisions the replay backend re-applies")
    explicit.add_argument("--max-cost-usd", type=float,
                          help="spend cap of the whole experiment in USD (paid backends; default: none); a call "
                               "that could cross it is not made and the heuristic decides")
    explicit.add_argument("--fallback", choices=["offline", "fail"],
                          help="when the LLM is unavailable or the prompt is too long even trimmed: let the "
                               "heuristic decide (offline) or exit 75 / 2 (fail; the default)")
    explicit.add_argument("--base-config", help="the experiment config (fixed fields)")
    explicit.add_argument("--results-dir", help="experiment results folder (parents' iteration folders)")
    explicit.add_argument("--out-dir", help="this iteration's folder")
    explicit.add_argument("--next-dir", nargs="*",
                          help="the next round's folders, in slot order (omit after the very last round)")
    explicit.add_argument("--smoke-timeout", type=float,
                          help=f"seconds for the smoke run of a code modification (0: static checks only; "
                               f"default {DEFAULT_SMOKE_TIMEOUT_S:g})")
    explicit.add_argument("--code-modification", choices=CODE_MODIFICATION_MODES,
                          help="sandboxed (the default): code edits run only inside bubblewrap (refused up front "
                               "without it); unsandboxed: run them without it (explicit opt-in); off: config "
                               "mutations only")
    explicit.add_argument("--no-prompt-images", dest="prompt_images", action="store_false",
                          help="leave the dataset pictures out of an LLM's prompt (agent.prompt_images: false)")
    explicit.add_argument("--no-prompt-code", dest="prompt_code", action="store_false",
                          help="leave the training code out of an LLM's prompt (agent.prompt_code: false)")
    p.set_defaults(func=cmd_decide)


def _check_numbers(args: argparse.Namespace) -> None:
    for name in ("iteration", "n_iter_block", "n_blocks", "slots"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise InputError(f"--{name.replace('_', '-')} {value}: must be >= 1")


class _RedactingStream:
    """stdout/stderr of the agent CLI with known secret values replaced (API error texts, logs)."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> int:
        return self.stream.write(redact(text))

    def __getattr__(self, name: str):
        return getattr(self.stream, name)


def main(argv: Optional[list[str]] = None) -> int:
    if not isinstance(sys.stderr, _RedactingStream):
        sys.stdout, sys.stderr = _RedactingStream(sys.stdout), _RedactingStream(sys.stderr)
    args = build_parser().parse_args(argv)
    prog = f"agent {args.command}"
    try:
        _check_numbers(args)
        return int(args.func(args) or 0)
    except RetryableBackendError as exc:
        print(f"{prog}: the LLM backend is temporarily unavailable ({exc}); nothing was written. "
              f"Re-run later, or pass --fallback offline to let the heuristic decide (exit {EX_TEMPFAIL})",
              file=sys.stderr)
        return EX_TEMPFAIL
    except BackendConfigError as exc:
        print(f"{prog}: backend configuration error: {exc}", file=sys.stderr)
        return EX_USAGE
    except (InputError, ConfigError, TreeError, DecisionInvalid, SecretsUnavailable, PlanError, CostRecordError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return EX_USAGE
