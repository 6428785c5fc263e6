"""``python -m agent <command>``: the ucb-score, agent-decide and init stages (argument parsing only:
the stage functions are :func:`agent.start.start_experiment`, :func:`agent.ucb.score_iteration`
and :func:`agent.decide.decide`).

- ``init``: iteration 1's config.yaml, train_loop.py, proposal.json (and an empty code.diff).
- ``ucb``: node.json (from proposal.json + metrics.json + config + code) and ucb_scores.txt.
- ``decide``: this iteration's decision.json, memory.md, analysis.md, instructions.md and the
  next iteration's config.yaml, train_loop.py, proposal.json, code.diff.

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

from agent.decide import DecideRequest, InputError, decide
from agent.decision import DecisionInvalid
from agent.layout import iteration_dir_name
from agent.policies.base import BACKENDS, BackendConfigError, RetryableBackendError
from agent.sandbox import CODE_MODIFICATION_MODES, DEFAULT_CODE_MODIFICATION, code_modification_refusal
from agent.secrets import SecretsUnavailable, receive_secrets
from agent.smoke import DEFAULT_SMOKE_TIMEOUT_S
from agent.start import start_experiment
from agent.tree import TreeError
from agent.ucb import score_iteration
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


def cmd_init(args: argparse.Namespace) -> int:
    written = start_experiment(Path(args.config), Path(args.out_dir), parse_schedule(args.schedule),
                               Path(args.loop), slots=args.slots, seed=args.seed)
    print(f"agent init: wrote config.yaml, train_loop.py, proposal.json, code.diff into "
          f"{', '.join(p.name for p in written)}")
    return 0


def cmd_ucb(args: argparse.Namespace) -> int:
    node, scores = score_iteration(Path(args.proposal), Path(args.metrics), Path(args.config), Path(args.code),
                                   [Path(p) for p in args.nodes], args.ucb_c, Path(args.out_node),
                                   Path(args.out_scores))
    print(f"agent ucb: node {node.id} (block {node.block}) R2={node.r2}; {len(scores)} nodes scored -> {args.out_scores}")
    return 0


# --------------------------------------------------------------------------- decide


def decide_request(args: argparse.Namespace) -> DecideRequest:
    """The decide options as the stage function's typed inputs."""
    return DecideRequest(
        iteration=args.iteration, n_blocks=args.n_blocks, n_iter_block=args.n_iter_block, slots=args.slots,
        base_config=Path(args.base_config), results_dir=Path(args.results_dir), out_dir=Path(args.out_dir),
        nodes=[Path(p) for p in args.node], analysis_logs=[Path(p) for p in args.analysis_log],
        configs=[Path(p) for p in args.config], codes=[Path(p) for p in args.code], ucb=Path(args.ucb),
        earlier_nodes=[Path(p) for p in args.nodes], next_dirs=[Path(p) for p in args.next_dir],
        ucb_c=args.ucb_c, schedule=parse_schedule(args.schedule, args.n_blocks),
        memory=args.memory, full_log=args.full_log, instructions=args.instructions,
        images=[Path(p) for p in args.images], backend=args.backend,
        backend_options=parse_backend_options(args.backend_option), seed=args.seed, model=args.model,
        replay_from=args.replay_from, fallback=args.fallback, max_cost_usd=args.max_cost_usd,
        smoke_timeout=args.smoke_timeout, code_modification=args.code_modification,
        prompt_images=args.prompt_images, prompt_code=args.prompt_code,
    )


def cmd_decide(args: argparse.Namespace) -> int:
    receive_secrets(os.environ)  # the workflow's API key, for this process only (agent/secrets.py)
    request = decide_request(args)
    refusal = code_modification_refusal(args.code_modification)
    if refusal:
        print(f"agent decide: {refusal}; config mutations go on", file=sys.stderr)
    elif args.code_modification == "unsandboxed":
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
    return parser


def _add_init(sub) -> None:
    p = sub.add_parser("init", help="write iteration 1's config.yaml, train_loop.py, proposal.json")
    p.add_argument("--config", required=True, help="experiment config (YAML)")
    p.add_argument("--out-dir", required=True, help=f"iteration 1's folder, e.g. results/exp/{iteration_dir_name(1)}")
    p.add_argument("--n-iter-block", type=int, default=None, help="iterations per block (default: claude.n_iter_block)")
    p.add_argument("--schedule", default="agent", help="comma list of time_steps per block, or 'agent'")
    p.add_argument("--loop", default=str(PACKAGED_LOOP), help="training module to copy (default: packaged)")
    p.add_argument("--slots", type=int, default=1,
                   help="nodes of the first round: the root and slots-1 one-mutation variants in the next folders")
    p.add_argument("--seed", type=int, default=0, help="seed of the variants' mutations")
    p.set_defaults(func=cmd_init)



def _add_ucb(sub) -> None:
    p = sub.add_parser("ucb", help="write node.json and ucb_scores.txt for one iteration")
    p.add_argument("--proposal", required=True)
    p.add_argument("--metrics", required=True)
    p.add_argument("--config", required=True)
    p.add_argument("--code", required=True)
    p.add_argument("--nodes", nargs="*", default=[], help="node.json of earlier iterations")
    p.add_argument("--ucb-c", type=float, default=None, help="exploration constant (default: claude.ucb_c)")
    p.add_argument("--out-node", required=True)
    p.add_argument("--out-scores", required=True)
    p.set_defaults(func=cmd_ucb)



def _add_decide(sub) -> None:
    p = sub.add_parser("decide", help="decide the next node; write memory, full log, instructions, next config/code")
    p.add_argument("--node", required=True, nargs="+",
                   help="node.json of the finished round's nodes, in slot order (one with --slots 1)")
    p.add_argument("--nodes", nargs="*", default=[], help="node.json of earlier iterations")
    p.add_argument("--ucb", required=True, help="this iteration's ucb_scores.txt")
    p.add_argument("--ucb-c", type=float, default=None,
                   help="exploration constant, the same as the ucb stage's (default: claude.ucb_c)")
    p.add_argument("--analysis-log", required=True, nargs="+", help="analysis.log of each node of the round")
    p.add_argument("--config", required=True, nargs="+", help="config.yaml of each node of the round")
    p.add_argument("--code", required=True, nargs="+", help="train_loop.py of each node of the round")
    p.add_argument("--memory", default=None, help="previous memory.md (absent at iteration 1)")
    p.add_argument("--full-log", default=None, help="previous analysis.md (absent at iteration 1)")
    p.add_argument("--instructions", default=None, help="previous instructions.md (default: the shipped one)")
    p.add_argument("--images", nargs="*", default=[], help="dataset pictures shown to the policy")
    p.add_argument("--iteration", type=int, required=True, help="the round's last iteration")
    p.add_argument("--n-iter-block", type=int, default=None, help="default: the base config's claude.n_iter_block")
    p.add_argument("--slots", type=int, default=1, help="nodes per round (K); n_iter_block must be a multiple")
    p.add_argument("--n-blocks", type=int, required=True)
    p.add_argument("--schedule", default="agent", help="comma list of time_steps per block, or 'agent'")
    p.add_argument("--backend", default="heuristic", choices=list(BACKENDS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", default=None, help="LLM model id (default: the backend's config/environment)")
    p.add_argument("--replay-from", default=None, help="results folder whose decisions the replay backend re-applies")
    p.add_argument("--backend-option", action="append", default=[], metavar="KEY=VALUE",
                   help="extra backend option, repeatable (anthropic: max_tokens, timeout_s, max_retries; "
                        "claude-code: max_tokens, timeout_s, max_turns, command)")
    p.add_argument("--max-cost-usd", type=float, default=None,
                   help="spend cap of the whole experiment in USD (paid backends; default: none); a call that "
                        "could cross it is not made and the heuristic decides")
    p.add_argument("--fallback", default="fail", choices=["offline", "fail"],
                   help="when the LLM is unavailable or the prompt is too long even trimmed: let the heuristic "
                        "decide (offline) or exit 75 / 2 (fail)")
    p.add_argument("--base-config", required=True, help="the experiment config (fixed fields)")
    p.add_argument("--results-dir", required=True, help="experiment results folder (parents' iteration folders)")
    p.add_argument("--out-dir", required=True, help="this iteration's folder")
    p.add_argument("--next-dir", nargs="*", default=[],
                   help="the next round's folders, in slot order (omit after the very last round)")
    p.add_argument("--smoke-timeout", type=float, default=DEFAULT_SMOKE_TIMEOUT_S,
                   help="seconds for the smoke run of a code modification (0: static checks only)")
    p.add_argument("--code-modification", default=DEFAULT_CODE_MODIFICATION, choices=CODE_MODIFICATION_MODES,
                   help="sandboxed: code edits run only inside bubblewrap (refused up front without it); "
                        "unsandboxed: run them without it (explicit opt-in); off: config mutations only")
    p.add_argument("--no-prompt-images", dest="prompt_images", action="store_false",
                   help="leave the dataset pictures out of an LLM's prompt (agent.prompt_images: false)")
    p.add_argument("--no-prompt-code", dest="prompt_code", action="store_false",
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
    except (InputError, ConfigError, TreeError, DecisionInvalid, SecretsUnavailable) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return EX_USAGE
