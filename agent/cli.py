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
import math
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from agent.context import DecisionContext, block_of
from agent.decision import (ChildPlan, Decision, DecisionInvalid, build_child, source_node,
                            validate_decision)
from agent.memory import append_full_log, block_end_text, log_entry, revise_instructions, update_memory
from agent.policies.base import (BACKENDS, Attempt, BackendConfigError, BackendMissingError, DecisionOutcome,
                                 HarnessError, RetryableBackendError, decide_with_fallback, get_policy)
from agent.sandbox import CODE_MODIFICATION_MODES, DEFAULT_CODE_MODIFICATION, code_modification_refusal
from agent.smoke import DEFAULT_SMOKE_TIMEOUT_S, SmokeHarnessError, validate_and_smoke
from agent.tree import NodeRecord, TreeError, check_scores_agree, check_tree, code_hash, load_node, score_block, write_node, write_scores
from neuralgraph.config import ALLOWED_TIME_STEPS, ConfigError, ExperimentConfig, dump_config, load_config, with_updates
from neuralgraph.io import atomic_write_json, atomic_write_text, read_json
from neuralgraph.secrets import SecretsUnavailable, receive_secrets, redact

EX_USAGE = 2
EX_TEMPFAIL = 75
PACKAGE_DIR = Path(__file__).resolve().parent
SHIPPED_INSTRUCTIONS = PACKAGE_DIR / "instructions.md"
PACKAGED_TRAIN_LOOP = PACKAGE_DIR.parent / "neuralgraph" / "train_loop.py"


class InputError(ValueError):
    """A missing or malformed input; the message names the file or option."""


# --------------------------------------------------------------------------- shared readers


def read_text(path: Optional[str | Path], what: str, required: bool = True) -> str:
    if path is None:
        if required:
            raise InputError(f"{what}: path is required")
        return ""
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: {what} not found") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: {what} is not UTF-8 text") from None


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


def editable_functions_of(code: str) -> tuple[str, ...]:
    try:
        from agent.codeedit import editable_functions

        return editable_functions(code)
    except (ImportError, SyntaxError, ValueError):
        return ()


# --------------------------------------------------------------------------- init


def experiment_start_config(cfg: ExperimentConfig, schedule: Optional[list[int]]) -> ExperimentConfig:
    """Iteration 1's config: claude.n_epochs / data_augmentation_loop copied into training,
    time_step = the schedule's first entry (or the experiment's own time_step)."""
    updates: dict[str, Any] = {"training.n_epochs": cfg.claude.n_epochs,
                               "training.data_augmentation_loop": cfg.claude.data_augmentation_loop}
    if schedule:
        updates["training.time_step"] = schedule[0]
    return with_updates(cfg, updates, source="init")


def cmd_init(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    schedule = parse_schedule(args.schedule)
    start = experiment_start_config(cfg, schedule)
    code = read_text(args.loop, "training module (--loop)")
    out = Path(args.out_dir)
    proposal = {"id": 1, "parent": None, "block": 1, "iteration": 1, "time_step": start.training.time_step,
                "dir": out.name, "strategy": "init", "mutation": None, "code_modified": False,
                "code_hash": code_hash(code), "derived_from": None, "policy": "init"}
    dump_config(start, out / "config.yaml")
    atomic_write_text(out / "train_loop.py", code)
    atomic_write_text(out / "code.diff", "")
    atomic_write_json(out / "proposal.json", proposal)
    print(f"agent init: wrote {out}/config.yaml (time_step={start.training.time_step}), train_loop.py, proposal.json")
    return 0


# --------------------------------------------------------------------------- ucb


def merge_nodes(earlier: list[NodeRecord], current: NodeRecord) -> list[NodeRecord]:
    """Earlier records plus the current one (a stale record with the current id is replaced)."""
    nodes = [n for n in earlier if n.id != current.id] + [current]
    check_tree(nodes)
    return nodes


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
    nodes = merge_nodes([load_node(p) for p in args.nodes], node)
    c = cfg.claude.ucb_c if args.ucb_c is None else args.ucb_c
    scores = score_block(nodes, node.block, c)
    write_node(node, args.out_node)
    write_scores(scores, args.out_scores)
    print(f"agent ucb: node {node.id} (block {node.block}) R2={node.r2}; {len(scores)} nodes scored -> {args.out_scores}")
    return 0


# --------------------------------------------------------------------------- decide


def build_context(args: argparse.Namespace, base: ExperimentConfig) -> DecisionContext:
    node = load_node(args.node)
    if node.iteration != args.iteration:
        raise InputError(f"{args.node}: node iteration {node.iteration} differs from --iteration {args.iteration}")
    n_iter_block = args.n_iter_block or base.claude.n_iter_block
    if node.block != block_of(args.iteration, n_iter_block):
        raise InputError(f"{args.node}: node block {node.block} but iteration {args.iteration} with --n-iter-block "
                         f"{n_iter_block} is block {block_of(args.iteration, n_iter_block)}")
    cfg = load_config(args.config, base=base)
    code = read_text(args.code, "training module (--code)")
    ucb_c = base.claude.ucb_c if args.ucb_c is None else args.ucb_c
    ucb_scores = read_text(args.ucb, "ucb_scores.txt")
    nodes = merge_nodes([load_node(p) for p in args.nodes], node)
    check_scores_agree(score_block(nodes, node.block, ucb_c), ucb_scores, str(args.ucb), ucb_c)
    images = [Path(p) for p in args.images]
    for image in images:
        if not image.exists():
            print(f"agent decide: warning: picture {image} not found; the policy decides without it", file=sys.stderr)
    return DecisionContext(
        iteration=args.iteration, n_iter_block=n_iter_block, n_blocks=args.n_blocks,
        working_memory=read_text(args.memory, "previous memory.md", required=False),
        analysis_log=read_text(args.analysis_log, "analysis.log"),
        ucb_scores=ucb_scores,
        config=cfg.to_dict(), config_yaml=read_text(args.config, "config"), code=code,
        editable_functions=editable_functions_of(code),
        instructions=read_text(args.instructions or SHIPPED_INSTRUCTIONS, "instructions"),
        image_paths=images, nodes=nodes, current_node=node,
        ucb_c=ucb_c, schedule=parse_schedule(args.schedule, args.n_blocks), seed=args.seed,
        base_config=base.to_dict(), code_modification_refusal=code_modification_refusal(args.code_modification),
    )


def node_folder(results_dir: Path, node: NodeRecord) -> Path:
    folder = Path(node.dir) if node.dir else Path(f"iter_{node.iteration:03d}")
    return folder if folder.is_absolute() else results_dir / folder


class CodeChecker:
    """Validation of code modifications: agent.codeedit's static checks, then agent.smoke's
    sandboxed smoke run with the child's own settings (its time_step, recurrence, ODE options).

    Remembers the accepted module text so the child gets exactly what was checked. A smoke
    run that fails for a reason of the harness becomes :class:`HarnessError`: the fallback
    chain then skips the retry instead of sending our problem back to the policy.
    """

    def __init__(self, args: argparse.Namespace, results_dir: Path, base: ExperimentConfig):
        self.args, self.results_dir, self.base = args, results_dir, base
        self.accepted: dict[tuple[str, str], str] = {}
        self.smoke: Optional[dict[str, Any]] = None

    def __call__(self, decision: Decision, ctx: DecisionContext) -> Decision:
        decision = validate_decision(decision, ctx)
        mod = decision.code_modification
        if mod is None:
            return decision
        from agent.codeedit import CodeEditError, check_code_modification

        parent_dir = node_folder(self.results_dir, source_node(decision, ctx))
        parent_code = read_text(parent_dir / "train_loop.py", "parent's train_loop.py")
        try:
            if self.args.smoke_timeout > 0:
                edit = validate_and_smoke(parent_code, mod.function, mod.new_source, Path(self.args.out_dir) / "smoke",
                                          child_config=self.child_config(decision, ctx, parent_dir),
                                          sandboxed=self.args.code_modification == "sandboxed",
                                          timeout_s=self.args.smoke_timeout, cache_dir=self.results_dir / "smoke_data")
                child, self.smoke = edit.child_source, edit.smoke.to_dict()
            else:
                child = check_code_modification(parent_code, mod.function, mod.new_source)
        except CodeEditError as exc:
            raise DecisionInvalid([f"code_modification ({mod.function}): {exc}"]) from None
        except SmokeHarnessError as exc:
            print(f"agent decide: the smoke run of the code modification failed on our side: {exc}", file=sys.stderr)
            raise HarnessError(f"smoke run of {mod.function}: {exc}") from None
        self.accepted[(mod.function, mod.new_source)] = child
        return decision

    def child_config(self, decision: Decision, ctx: DecisionContext, parent_dir: Path) -> ExperimentConfig:
        """The child's config as the smoke run needs it: the parent's, at the next block's time_step."""
        parent_cfg = load_config(parent_dir / "config.yaml", base=self.base)
        next_ts, _, _ = resolve_next_time_step(ctx, decision)
        return with_updates(parent_cfg, {"training.time_step": next_ts}, source="smoke") if next_ts else parent_cfg


def resolve_next_time_step(ctx: DecisionContext, decision: Decision) -> tuple[Optional[int], str, str]:
    """(time_step of the next block, source 'schedule'/'policy', reason) at a block end."""
    if not ctx.is_block_end or ctx.is_last_iteration:
        return None, "", ""
    if ctx.scheduled_next_time_step is not None:
        note = "" if decision.next_time_step in (None, ctx.scheduled_next_time_step) else \
            f" (policy asked for {decision.next_time_step}; the schedule wins)"
        return ctx.scheduled_next_time_step, "schedule", f"experiment schedule{note}"
    return decision.next_time_step, "policy", decision.time_step_reason or "chosen by the policy"


def plan_child(args: argparse.Namespace, ctx: DecisionContext, outcome: DecisionOutcome, base: ExperimentConfig,
               checker: CodeChecker, next_time_step: Optional[int]) -> Optional[ChildPlan]:
    if ctx.is_last_iteration or args.next_dir is None:
        return None
    decision = outcome.decision
    folder = node_folder(Path(args.results_dir), source_node(decision, ctx))
    parent_cfg = load_config(folder / "config.yaml", base=base)
    parent_code = read_text(folder / "train_loop.py", "parent's train_loop.py")
    mod = decision.code_modification
    child_code = checker.accepted.get((mod.function, mod.new_source)) if mod else None
    return build_child(decision, ctx, parent_cfg=parent_cfg, parent_code=parent_code, base_cfg=base,
                       next_time_step=next_time_step, child_id=max(n.id for n in ctx.nodes) + 1,
                       child_dir=Path(args.next_dir).name, policy_label=outcome.policy, child_code=child_code)


def decision_record(ctx: DecisionContext, outcome: DecisionOutcome, plan: Optional[ChildPlan],
                    next_ts: Optional[int], ts_source: str, smoke: Optional[dict[str, Any]],
                    code_mode: str) -> dict[str, Any]:
    return {
        "iteration": ctx.iteration, "node_id": ctx.current_node.id, "block": ctx.block,
        "iter_in_block": ctx.iter_in_block, "is_block_end": ctx.is_block_end, "policy": outcome.policy,
        "decision": outcome.decision.model_dump(mode="json"),
        "attempts": [a.to_dict() for a in outcome.attempts],
        "next": plan.proposal if plan else None, "next_time_step": next_ts, "time_step_source": ts_source or None,
        "code_smoke_run": smoke, "code_modification_mode": code_mode,
        "code_modification_refused_up_front": ctx.code_modification_refusal, "spend_cap": outcome.spend,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def capped(policy: Any, args: argparse.Namespace, ctx: DecisionContext) -> tuple[Any, Optional[Any]]:
    """``policy`` behind the spend cap when --max-cost-usd is given and the policy is paid."""
    from agent.costs import CostRecordError, spent_usd
    from agent.policies.spend_cap import SpendCap, is_paid

    if args.max_cost_usd is not None and not (math.isfinite(args.max_cost_usd) and args.max_cost_usd >= 0):
        raise InputError(f"--max-cost-usd {args.max_cost_usd}: must be a number >= 0 (USD for the whole experiment)")
    if args.max_cost_usd is None or not is_paid(policy):
        return policy, None
    try:
        spent = spent_usd(args.results_dir, before_iteration=ctx.iteration)
    except CostRecordError as exc:
        raise InputError(str(exc)) from None
    cap = SpendCap(policy, args.max_cost_usd, spent)
    return cap, cap


class MissingBackend:
    """Stands in for a backend that is not installed here, under ``--fallback offline``.

    It answers every call as "unavailable", so the fallback chain's own offline path lets the
    heuristic decide and records why (no second code path for the same outcome).
    """

    def __init__(self, name: str, reason: str):
        self.name, self.reason = name, reason
        self.last_call: Optional[dict[str, Any]] = None

    def decide(self, ctx: DecisionContext, feedback: Optional[str] = None) -> Decision:
        raise RetryableBackendError(self.reason)


def run_policy(args: argparse.Namespace, ctx: DecisionContext, checker: CodeChecker) -> DecisionOutcome:
    from agent.policies.heuristic import HeuristicPolicy, safe_decision

    options = {**parse_backend_options(args.backend_option), "seed": args.seed, "model": args.model,
               "replay_from": args.replay_from, "results_dir": args.results_dir}
    try:
        primary = get_policy(args.backend, options)
    except BackendMissingError as exc:
        if args.fallback != "offline":
            raise
        primary = MissingBackend(args.backend, str(exc))
    primary, cap = capped(primary, args, ctx)
    fallback = None if args.backend == "heuristic" else HeuristicPolicy(options)
    try:
        outcome = decide_with_fallback(primary, ctx, fallback=fallback,
                                       offline_on_unavailable=args.fallback == "offline", validate=checker)
    except DecisionInvalid as exc:  # even the offline policy was refused: never stop the loop
        decision = validate_decision(safe_decision(ctx, str(exc)), ctx)
        outcome = DecisionOutcome(decision, f"safe re-run (after: {' '.join(str(exc).split())})",
                                  [Attempt("safe re-run", True, str(exc), None)])
    if cap is not None:
        outcome.spend = cap.record()
        if cap.stopped:
            print(f"agent decide: iteration {ctx.iteration}: spend cap: {cap.stopped}")
    return outcome


def cmd_decide(args: argparse.Namespace) -> int:
    receive_secrets(os.environ)  # the workflow's API key, for this process only (neuralgraph/secrets.py)
    base = load_config(args.base_config)
    ctx = build_context(args, base)
    if ctx.code_modification_refusal:
        print(f"agent decide: {ctx.code_modification_refusal}; config mutations go on", file=sys.stderr)
    elif args.code_modification == "unsandboxed":
        print("agent decide: agent.code_modification: unsandboxed: code modifications run WITHOUT the sandbox",
              file=sys.stderr)
    checker = CodeChecker(args, Path(args.results_dir), base)
    outcome = run_policy(args, ctx, checker)
    decision = outcome.decision
    next_ts, ts_source, ts_reason = resolve_next_time_step(ctx, decision)
    plan = plan_child(args, ctx, outcome, base, checker, next_ts)
    entry = log_entry(ctx.current_node, decision, ctx.analysis_log)
    block_text = block_end_text(ctx, decision, next_ts, ts_reason) if ctx.is_block_end else ""
    previous_log = read_text(args.full_log, "previous analysis.md", required=False)
    out = Path(args.out_dir)
    if plan is not None:
        nxt = Path(args.next_dir)
        dump_config(plan.config, nxt / "config.yaml")
        atomic_write_text(nxt / "train_loop.py", plan.code)
        atomic_write_text(nxt / "code.diff", plan.diff)
        atomic_write_json(nxt / "proposal.json", plan.proposal)
    atomic_write_text(out / "memory.md", update_memory(ctx.working_memory, ctx, decision, entry, next_ts))
    atomic_write_text(out / "analysis.md", append_full_log(previous_log, entry, block_text))
    edits = decision.selection_rule_edits if ctx.is_block_end else None
    atomic_write_text(out / "instructions.md", revise_instructions(ctx.instructions, ctx.block, edits or []))
    atomic_write_json(out / "decision.json", decision_record(ctx, outcome, plan, next_ts, ts_source, checker.smoke,
                                                              args.code_modification))
    target = f"node {plan.proposal['id']} (parent={decision.parent})" if plan else "no next iteration"
    print(f"agent decide: iteration {ctx.iteration}: {outcome.policy} chose {decision.strategy} -> {target}")
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
    p.add_argument("--loop", default=str(PACKAGED_TRAIN_LOOP), help="training module to copy (default: packaged)")
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
    p.add_argument("--node", required=True, help="this iteration's node.json")
    p.add_argument("--nodes", nargs="*", default=[], help="node.json of earlier iterations")
    p.add_argument("--ucb", required=True, help="this iteration's ucb_scores.txt")
    p.add_argument("--ucb-c", type=float, default=None,
                   help="exploration constant, the same as the ucb stage's (default: claude.ucb_c)")
    p.add_argument("--analysis-log", required=True)
    p.add_argument("--config", required=True, help="this iteration's config.yaml")
    p.add_argument("--code", required=True, help="this iteration's train_loop.py")
    p.add_argument("--memory", default=None, help="previous memory.md (absent at iteration 1)")
    p.add_argument("--full-log", default=None, help="previous analysis.md (absent at iteration 1)")
    p.add_argument("--instructions", default=None, help="previous instructions.md (default: the shipped one)")
    p.add_argument("--images", nargs="*", default=[], help="dataset pictures shown to the policy")
    p.add_argument("--iteration", type=int, required=True)
    p.add_argument("--n-iter-block", type=int, default=None, help="default: the base config's claude.n_iter_block")
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
    p.add_argument("--next-dir", default=None, help="next iteration's folder (omit on the very last iteration)")
    p.add_argument("--smoke-timeout", type=float, default=DEFAULT_SMOKE_TIMEOUT_S,
                   help="seconds for the smoke run of a code modification (0: static checks only)")
    p.add_argument("--code-modification", default=DEFAULT_CODE_MODIFICATION, choices=CODE_MODIFICATION_MODES,
                   help="sandboxed: code edits run only inside bubblewrap (refused up front without it); "
                        "unsandboxed: run them without it (explicit opt-in); off: config mutations only")
    p.set_defaults(func=cmd_decide)
    return parser


def _check_numbers(args: argparse.Namespace) -> None:
    for name in ("iteration", "n_iter_block", "n_blocks"):
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
