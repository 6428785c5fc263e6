"""``python -m agent decide``: the decide stage's options, read into a :class:`~agent.decide.DecideRequest`.

WHY a module of its own: agent/decide.py (the stage function and its fallback chain) is already
long, and these ~40 options are the command line's business, not the decision's
(neuralgraph/config_cli.py is the same split). Either ``--plan P --iteration I`` (every path and
option from the workflow's plan.json and the folder layout), or the options one by one.
Exit codes: :func:`agent.command.run_command` (0 done, 2 refused input or backend
configuration, 75 backend temporarily unavailable with ``--fallback fail``). Every output is
written atomically, and all of them only after the decision is final, so a refused input loses
nothing already computed.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Optional

from agent.command import parse_backend_options, parse_schedule, plan_or_explicit, run_command
from agent.decide import DecideRequest, decide, request_from_plan
from agent.policies.base import BACKENDS
from agent.run_plan import AGENT_DEFAULTS
from agent.sandbox import CODE_MODIFICATION_MODES, code_modification_refusal
from agent.secrets import receive_secrets
from agent.smoke import DEFAULT_SMOKE_TIMEOUT_S

#: Options the explicit form of decide cannot do without (with --plan the plan holds them).
DECIDE_REQUIRED = ("node", "ucb", "analysis_log", "config", "code", "n_blocks", "base_config", "results_dir", "out_dir")


def build_parser() -> argparse.ArgumentParser:
    """decide's options (SUPPRESS: an explicit option is absent unless given, so --plan can refuse it)."""
    p = argparse.ArgumentParser(prog="python -m agent decide", argument_default=argparse.SUPPRESS,
                                description="Either --plan P --iteration I (every path and option from the workflow's "
                                            "plan.json and the folder layout), or the explicit options below.")
    p.add_argument("--plan", default=None, help="results/<exp>/plan.json written by the workflow (agent.run_plan)")
    p.add_argument("--iteration", type=int, required=True, help="the round's last iteration")
    p.add_argument("--backend-option", action="append", default=[], metavar="KEY=VALUE",
                   help="extra backend option, repeatable (anthropic: max_tokens, timeout_s, max_retries; "
                        "claude-code: max_tokens, timeout_s, max_turns, command)")
    _add_explicit(p.add_argument_group("without --plan", "what the plan holds, given one by one"))
    return p


def _add_explicit(explicit) -> None:
    """The options the plan holds, given one by one (the form tests and hand runs use)."""
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


def run_decide(args: argparse.Namespace) -> int:
    """Receive the workflow's secrets, say how code modifications will run, and decide."""
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


def main(argv: Optional[list[str]] = None) -> int:
    """``python -m agent decide``: exit codes of :func:`agent.command.run_command`."""
    return run_command(build_parser(), run_decide, argv)
