"""``python -m agent <command>``: the ucb-score, agent-decide and init stages.

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

from agent.decide import DecideRequest, InputError, decide, merge_nodes, read_text
from agent.decision import DecisionInvalid
from agent.policies.base import BACKENDS, BackendConfigError, RetryableBackendError
from agent.sandbox import CODE_MODIFICATION_MODES, DEFAULT_CODE_MODIFICATION, code_modification_refusal
from agent.smoke import DEFAULT_SMOKE_TIMEOUT_S
from agent.tree import NodeRecord, TreeError, code_hash, load_node, score_block, write_node, write_scores
from neuralgraph import PACKAGED_LOOP, layout
from neuralgraph.config import ALLOWED_TIME_STEPS, ConfigError, ExperimentConfig, dump_config, load_config, with_updates
from neuralgraph.io import atomic_write_json, atomic_write_text, read_json
from neuralgraph.secrets import SecretsUnavailable, receive_secrets, redact

EX_USAGE = 2
EX_TEMPFAIL = 75


# --------------------------------------------------------------------------- shared readers


def read_json_object(path: str | Path, what: str) -> dict[str, Any]:
    try:
        data = read_json(path)
    except FileNotFoundError:
        raise InputError(f"{path}: {what} not found") from None
    except ValueError as exc:
        raise InputError(f"{exc} ({what})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: {what} must be a JSON object, got {type(data).__name__}")
    return data


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



# --------------------------------------------------------------------------- init


def experiment_start_config(cfg: ExperimentConfig, schedule: Optional[list[int]]) -> ExperimentConfig:
    """Iteration 1's config: claude.n_epochs / data_augmentation_loop copied into training,
    time_step = the schedule's first entry (or the experiment's own time_step)."""
    updates: dict[str, Any] = {"training.n_epochs": cfg.claude.n_epochs,
                               "training.data_augmentation_loop": cfg.claude.data_augmentation_loop}
    if schedule:
        updates["training.time_step"] = schedule[0]
    return with_updates(cfg, updates, source="init")


def block_start_variants(start: ExperimentConfig, n: int, seed: int) -> list[tuple[ExperimentConfig, dict]]:
    """``n`` one-mutation variants of block 1's root (config, mutation record), as decide makes them
    for later blocks (agent.policies.heuristic.variant_mutations, seeded)."""
    import random

    from agent.decision import ALLOWED_PARAMETERS
    from agent.policies.heuristic import variant_mutations

    training = start.to_dict()["training"]
    variants = []
    for mutation in variant_mutations(training, n, random.Random(f"{seed}:variants:0")):
        value = int(round(mutation.new)) if ALLOWED_PARAMETERS[mutation.parameter].integer else mutation.new
        config = with_updates(start, {f"training.{mutation.parameter}": value}, source="init (block-start variant)")
        variants.append((config, {"parameter": mutation.parameter, "old": training.get(mutation.parameter),
                                  "new": value}))
    return variants


def cmd_init(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    schedule = parse_schedule(args.schedule)
    start = experiment_start_config(cfg, schedule)
    code = read_text(args.loop, "training module (--loop)")
    out = Path(args.out_dir)
    base = {"block": 1, "time_step": start.training.time_step, "code_modified": False, "code_hash": code_hash(code),
            "round": 1}
    nodes = [(out, start, {**base, "id": 1, "parent": None, "iteration": 1, "strategy": "init", "mutation": None,
                           "derived_from": None, "policy": "init", "slot": 1, "role": "root"})]
    for slot, (config, mutation) in enumerate(block_start_variants(start, args.slots - 1, args.seed), start=2):
        folder = out.parent / layout.iteration_dir_name(slot)
        nodes.append((folder, config, {**base, "id": slot, "parent": 1, "iteration": slot, "strategy": "explore",
                                       "mutation": mutation, "derived_from": 1, "policy": "block-start variant",
                                       "slot": slot, "role": "variant"}))
    for folder, config, proposal in nodes:
        dump_config(config, folder / layout.CONFIG_FILE)
        atomic_write_text(folder / layout.LOOP_FILE, code)
        atomic_write_text(folder / layout.DIFF_FILE, "")
        atomic_write_json(folder / layout.PROPOSAL_FILE, {**proposal, "dir": folder.name})
    names = ", ".join(folder.name for folder, _, _ in nodes)
    print(f"agent init: wrote config.yaml (time_step={start.training.time_step}), train_loop.py, proposal.json "
          f"into {names}")
    return 0


# --------------------------------------------------------------------------- ucb



def node_from_inputs(proposal: dict[str, Any], metrics: dict[str, Any], cfg: ExperimentConfig, code: str,
                     folder: str, source: str) -> NodeRecord:
    record = {**proposal, "dir": proposal.get("dir") or folder, "config": cfg.to_dict(), "code_hash": code_hash(code),
              "metrics": metrics, "time_step": proposal.get("time_step", cfg.training.time_step)}
    return NodeRecord.from_dict(record, source=source)


def cmd_ucb(args: argparse.Namespace) -> int:
    proposal = read_json_object(args.proposal, "proposal.json")
    metrics = read_json_object(args.metrics, "metrics.json")
    cfg = load_config(args.config)
    code = read_text(args.code, "training module (--code)")
    node = node_from_inputs(proposal, metrics, cfg, code, Path(args.out_node).parent.name, str(args.proposal))
    nodes = merge_nodes([load_node(p) for p in args.nodes], [node])
    c = cfg.claude.ucb_c if args.ucb_c is None else args.ucb_c
    scores = score_block(nodes, node.block, c)
    write_node(node, args.out_node)
    write_scores(scores, args.out_scores)
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
    )


def cmd_decide(args: argparse.Namespace) -> int:
    receive_secrets(os.environ)  # the workflow's API key, for this process only (neuralgraph/secrets.py)
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

    p = sub.add_parser("init", help="write iteration 1's config.yaml, train_loop.py, proposal.json")
    p.add_argument("--config", required=True, help="experiment config (YAML)")
    p.add_argument("--out-dir", required=True, help="iteration 1's folder, e.g. results/exp/iter_001")
    p.add_argument("--n-iter-block", type=int, default=None, help="iterations per block (default: claude.n_iter_block)")
    p.add_argument("--schedule", default="agent", help="comma list of time_steps per block, or 'agent'")
    p.add_argument("--loop", default=str(PACKAGED_LOOP), help="training module to copy (default: packaged)")
    p.add_argument("--slots", type=int, default=1,
                   help="nodes of the first round: the root and slots-1 one-mutation variants in the next folders")
    p.add_argument("--seed", type=int, default=0, help="seed of the variants' mutations")
    p.set_defaults(func=cmd_init)

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
    p.set_defaults(func=cmd_decide)
    return parser


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
