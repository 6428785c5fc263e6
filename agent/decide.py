"""The agent-decide stage: one decision per round, for the K children of the next round.

:func:`decide` is the stage function (``python -m agent decide``, :mod:`agent.decide_cli`, only parses its
arguments into a :class:`DecideRequest`). For each slot of the round, in slot order:

1. a :class:`~agent.context.DecisionContext` whose ``current_node`` is the finished round's
   node in that slot (its log entry) and whose ``planned`` lists the children the earlier
   slots got, so the UCB scores count them as virtual visits and a repeat is refused;
2. the fallback chain, in one place (:func:`run_policy`): the backend (behind the spend cap)
   -> one retry with the refusal reason -> the offline heuristic -> a safe re-run. A backend
   that answers a whole round in one call (``decide_round``) is asked once; its answer for a
   slot is that slot's first attempt, so a refused child is retried and replaced on its own
   and the valid ones are kept;
3. code modifications pass agent.codeedit's static checks and a sandboxed smoke run with the
   child's own settings (:class:`CodeChecker`).

The first round of a block (after a block end, and at init) trains the block root and K-1
one-mutation variants of it (:func:`agent.policies.heuristic.variant_mutations`), recorded as
its children. Every output is written atomically and only after every slot is decided, so a
refused input loses nothing already computed.
"""
from __future__ import annotations

import math
import random
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import yaml

from agent import layout
from agent.codeedit import CodeEditError, check_code_modification, editable_functions
from agent.context import ROLE_ROOT, ROLE_VARIANT, DecisionContext, PlannedChild, block_of, slot_roles
from agent.costs import CostRecordError, spent_usd
from agent.decision import (ChildPlan, Decision, DecisionInvalid, LogEntry, MemoryUpdate, build_child,
                            config_updates, source_node, validate_decision)
from agent.inputs import InputError, read_text
from agent.memory import append_full_log, block_end_text, log_entry, revise_instructions, update_memory
from agent.policies.base import (SPEND_CAP_REASON, Attempt, BackendMissingError, DecisionOutcome, HarnessError,
                                 RetryableBackendError, SpendCapReached, decide_with_fallback, get_policy)
from agent.policies.heuristic import HeuristicPolicy, safe_decision, variant_mutations
from agent.policies.spend_cap import SpendCap, is_paid
from agent.records import round_record
from agent.run_plan import AGENT_DEFAULTS, RunPlan
from agent.sandbox import code_modification_refusal
from agent.smoke import DEFAULT_SMOKE_TIMEOUT_S, SmokeHarnessError, validate_and_smoke
from agent.tree import NodeRecord, check_scores_agree, load_node, merge_nodes, node_folder, score_block
from neuralgraph.config import ExperimentConfig, dump_config, inert_training_fields, load_config, with_updates
from neuralgraph.dataset import ACTIVITY_PICTURE, CONNECTIVITY_PICTURE
from neuralgraph.io import atomic_write_json, atomic_write_text

#: The instructions every exploration starts from; each round's revision carries the same name.
SHIPPED_INSTRUCTIONS = Path(__file__).resolve().parent / layout.INSTRUCTIONS_FILE


def prompt_config_yaml(text: str) -> str:
    """A node's config.yaml as a policy sees it: without the ``reference:`` section of a reference
    case (the reference's published result and recipe: an answer key, not a setting the run uses).
    A config without one is passed as written."""
    raw = yaml.safe_load(text)
    if not isinstance(raw, dict) or "reference" not in raw:
        return text
    raw.pop("reference")
    return yaml.safe_dump(raw, sort_keys=False)


@dataclass
class DecideRequest:
    """The typed inputs of one decide job (the workflow passes them as command-line options).

    ``nodes``/``analysis_logs``/``configs``/``codes``: the finished round's nodes in slot
    order (one of each with K = 1); ``earlier_nodes``: every node before the round;
    ``next_dirs``: the next round's K folders (none after the last round).
    """

    iteration: int
    n_blocks: int
    base_config: Path
    results_dir: Path
    out_dir: Path
    nodes: list[Path]
    analysis_logs: list[Path]
    configs: list[Path]
    codes: list[Path]
    ucb: Path
    earlier_nodes: list[Path] = field(default_factory=list)
    next_dirs: list[Path] = field(default_factory=list)
    n_iter_block: Optional[int] = None
    slots: int = 1
    ucb_c: Optional[float] = None
    schedule: Optional[list[int]] = None
    memory: Optional[Path] = None
    full_log: Optional[Path] = None
    instructions: Optional[Path] = None
    images: list[Path] = field(default_factory=list)
    backend: str = AGENT_DEFAULTS.backend
    backend_options: dict[str, Any] = field(default_factory=dict)
    seed: int = AGENT_DEFAULTS.seed
    model: Optional[str] = AGENT_DEFAULTS.model
    replay_from: Optional[str] = AGENT_DEFAULTS.replay_from
    fallback: str = AGENT_DEFAULTS.fallback
    max_cost_usd: Optional[float] = AGENT_DEFAULTS.max_cost_usd
    smoke_timeout: float = DEFAULT_SMOKE_TIMEOUT_S
    code_modification: str = AGENT_DEFAULTS.code_modification
    prompt_images: bool = AGENT_DEFAULTS.prompt_images
    prompt_code: bool = AGENT_DEFAULTS.prompt_code


def request_from_plan(plan: RunPlan, iteration: int, backend_options: Optional[dict[str, Any]] = None) -> DecideRequest:
    """The decide job of the round ending at ``iteration``, every path derived from the plan and
    the folder layout: what the workflow's rule declares as the job's inputs and outputs."""
    slots, results = plan.slots, Path(plan.results)
    if not 1 <= iteration <= plan.n_iterations or iteration != layout.round_end(iteration, slots):
        raise InputError(f"--iteration {iteration}: not the last node of a round of {slots} among the plan's "
                         f"{plan.n_iterations} iterations")
    round_number = layout.round_of(iteration, slots)
    members = [layout.IterationFolder.at(results, j) for j in layout.round_iterations(round_number, slots)]
    first = layout.round_iterations(round_number, slots)[0]
    previous = layout.IterationFolder.at(results, first - 1) if first > 1 else None
    following = [] if layout.is_last_round(iteration, slots, plan.n_iterations) else \
        [layout.IterationFolder.at(results, j).path for j in layout.round_iterations(round_number + 1, slots)]
    data, agent = results / layout.DATA_DIR, plan.agent
    return DecideRequest(
        iteration=iteration, n_blocks=plan.n_blocks, n_iter_block=plan.n_iter_block, slots=slots,
        base_config=Path(plan.experiment), results_dir=results, out_dir=members[-1].path,
        nodes=[m.node_path for m in members], analysis_logs=[m.analysis_log_path for m in members],
        configs=[m.config_path for m in members], codes=[m.loop_path for m in members], ucb=members[-1].scores_path,
        earlier_nodes=[layout.IterationFolder.at(results, j).node_path for j in range(1, first)],
        next_dirs=following, ucb_c=plan.ucb_c, schedule=plan.schedule_list(),
        memory=previous.memory_path if previous else None, full_log=previous.full_log_path if previous else None,
        instructions=previous.instructions_path if previous else None,
        images=[data / ACTIVITY_PICTURE, data / CONNECTIVITY_PICTURE], backend=agent.backend,
        backend_options=dict(backend_options or {}), seed=agent.seed, model=agent.model, replay_from=agent.replay_from,
        fallback=agent.fallback, max_cost_usd=agent.max_cost_usd,
        smoke_timeout=DEFAULT_SMOKE_TIMEOUT_S if agent.smoke_timeout is None else agent.smoke_timeout,
        code_modification=agent.code_modification, prompt_images=agent.prompt_images, prompt_code=agent.prompt_code,
    )


# --------------------------------------------------------------------------- contexts


def editable_functions_of(code: str) -> tuple[str, ...]:
    try:
        return editable_functions(code)
    except (ImportError, SyntaxError, ValueError):
        return ()


def _round_nodes(req: DecideRequest, n_iter_block: int) -> list[NodeRecord]:
    k = len(req.nodes)
    if k != req.slots or not (len(req.analysis_logs) == len(req.configs) == len(req.codes) == k):
        raise InputError(f"--node/--analysis-log/--config/--code: give one per slot of the round (slots = {req.slots}); "
                         f"got {len(req.nodes)}/{len(req.analysis_logs)}/{len(req.configs)}/{len(req.codes)}")
    expected = layout.round_iterations(layout.round_of(req.iteration, req.slots), req.slots)
    if req.iteration != expected[-1]:
        raise InputError(f"--iteration {req.iteration}: with slots = {req.slots} a round ends at iteration "
                         f"{expected[-1]}; give the round's last iteration")
    nodes = [load_node(p) for p in req.nodes]
    for path, node, it in zip(req.nodes, nodes, expected):
        if node.iteration != it:
            where = "" if req.slots == 1 else f" (slot {expected.index(it) + 1} of the round ending at {req.iteration})"
            raise InputError(f"{path}: node iteration {node.iteration} differs from --iteration {it}{where}")
        if node.block != block_of(it, n_iter_block):
            raise InputError(f"{path}: node block {node.block} but iteration {it} with --n-iter-block "
                             f"{n_iter_block} is block {block_of(it, n_iter_block)}")
    return nodes


def round_contexts(req: DecideRequest, base: ExperimentConfig) -> list[DecisionContext]:
    """One context per slot of the finished round (``planned`` is filled in as slots are decided)."""
    n_iter_block = req.n_iter_block or base.claude.n_iter_block
    if n_iter_block % req.slots:
        raise InputError(f"--slots {req.slots}: --n-iter-block {n_iter_block} is not a multiple of it")
    round_nodes = _round_nodes(req, n_iter_block)
    nodes = merge_nodes([load_node(p) for p in req.earlier_nodes], round_nodes)
    ucb_c = base.claude.ucb_c if req.ucb_c is None else req.ucb_c
    ucb_scores = read_text(req.ucb, layout.SCORES_FILE)
    check_scores_agree(score_block(nodes, round_nodes[-1].block, ucb_c), ucb_scores, str(req.ucb), ucb_c)
    for image in req.images:
        if not Path(image).exists():
            print(f"agent decide: warning: picture {image} not found; the policy decides without it", file=sys.stderr)
    shared = dict(
        n_iter_block=n_iter_block, n_blocks=req.n_blocks,
        working_memory=read_text(req.memory, "previous memory.md", required=False),
        ucb_scores=ucb_scores, image_paths=[Path(p) for p in req.images], nodes=nodes, ucb_c=ucb_c,
        instructions=read_text(req.instructions or SHIPPED_INSTRUCTIONS, "instructions"),
        schedule=req.schedule, seed=req.seed, base_config=base.to_dict(),
        code_modification_refusal=code_modification_refusal(req.code_modification),
        slots=req.slots, round_nodes=round_nodes, prompt_images=req.prompt_images, prompt_code=req.prompt_code,
    )
    contexts = []
    block_start = None
    for slot, (node, log_path, cfg_path, code_path) in enumerate(
            zip(round_nodes, req.analysis_logs, req.configs, req.codes), start=1):
        cfg = load_config(cfg_path, base=base)
        code = read_text(code_path, "training module (--code)")
        ctx = DecisionContext(
            iteration=node.iteration, analysis_log=read_text(log_path, layout.ANALYSIS_LOG_FILE), config=cfg.to_dict(),
            config_yaml=prompt_config_yaml(read_text(cfg_path, "config")), code=code, editable_functions=editable_functions_of(code),
            current_node=node, **shared)
        if block_start is None:
            block_start = ctx.is_block_end and not ctx.is_last_iteration
        ctx.role = slot_roles(req.slots, block_start)[slot - 1]
        ctx.slot = slot
        contexts.append(ctx)
    return contexts


# --------------------------------------------------------------------------- checking children



def resolve_next_time_step(ctx: DecisionContext, decision: Decision) -> tuple[Optional[int], str, str]:
    """(time_step of the next block, source 'schedule'/'policy', reason) at a block end."""
    if not ctx.is_block_end or ctx.is_last_iteration:
        return None, "", ""
    if ctx.scheduled_next_time_step is not None:
        note = "" if decision.next_time_step in (None, ctx.scheduled_next_time_step) else \
            f" (policy asked for {decision.next_time_step}; the schedule wins)"
        return ctx.scheduled_next_time_step, "schedule", f"experiment schedule{note}"
    return decision.next_time_step, "policy", decision.time_step_reason or "chosen by the policy"


class CodeChecker:
    """Validation of one slot's decision: the seed's rules, no repeat of an earlier slot's child,
    and for a code modification agent.codeedit's static checks, then agent.smoke's sandboxed
    smoke run with the child's own settings (its time_step, recurrence, ODE options).

    Remembers the accepted module text so the child gets exactly what was checked. A smoke
    run that fails for a reason of the harness becomes :class:`HarnessError`: the fallback
    chain then skips the retry instead of sending our problem back to the policy.
    """

    def __init__(self, req: DecideRequest, base: ExperimentConfig):
        self.req, self.base = req, base
        self.accepted: dict[tuple[str, str], str] = {}
        self.smoke: Optional[dict[str, Any]] = None

    def __call__(self, decision: Decision, ctx: DecisionContext) -> Decision:
        decision = validate_decision(decision, ctx)
        refuse_repeat(decision, ctx)
        mod = decision.code_modification
        if mod is None:
            return decision
        parent_dir = layout.IterationFolder(node_folder(self.req.results_dir, source_node(decision, ctx)))
        parent_code = read_text(parent_dir.loop_path, "parent's train_loop.py")
        try:
            if self.req.smoke_timeout > 0:
                edit = validate_and_smoke(parent_code, mod.function, mod.new_source,
                                          self.req.out_dir / f"smoke{'' if ctx.slots == 1 else f'_slot{ctx.slot}'}",
                                          child_config=self.child_config(decision, ctx, parent_dir),
                                          sandboxed=self.req.code_modification == "sandboxed",
                                          timeout_s=self.req.smoke_timeout,
                                          cache_dir=self.req.results_dir / "smoke_data")
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

    def child_config(self, decision: Decision, ctx: DecisionContext,
                     parent_dir: layout.IterationFolder) -> ExperimentConfig:
        """The child's config as the smoke run needs it: the parent's, at the next block's time_step."""
        parent_cfg = load_config(parent_dir.config_path, base=self.base)
        next_ts, _, _ = resolve_next_time_step(ctx, decision)
        return with_updates(parent_cfg, {"training.time_step": next_ts}, source="smoke") if next_ts else parent_cfg


def child_training(decision: Decision, ctx: DecisionContext) -> dict[str, Any]:
    """The training section the child would get (its parent's plus the decision's updates)."""
    parent = source_node(decision, ctx)
    training = dict((parent.config or {}).get("training", {}))
    next_ts, _, _ = resolve_next_time_step(ctx, decision)
    updates, _ = config_updates(decision, training, next_ts)
    training.update({key.split(".", 1)[1]: value for key, value in updates.items()})
    return training


def _child_code_key(decision: Decision, ctx: DecisionContext) -> str:
    mod = decision.code_modification
    parent = source_node(decision, ctx)
    return f"{parent.code_hash}|{mod.function}|{mod.new_source}" if mod else parent.code_hash


def refuse_repeat(decision: Decision, ctx: DecisionContext) -> None:
    """Two children of one round with the same config and code teach nothing twice: refused."""
    training, code = child_training(decision, ctx), _child_code_key(decision, ctx)
    for earlier in ctx.planned:
        if earlier.training == training and earlier.code == code:
            raise DecisionInvalid([
                f"duplicate: slot {ctx.slot}'s child would have the same config and code as slot {earlier.slot}'s "
                f"(parent {earlier.parent}); change another parameter or choose another parent"])


# --------------------------------------------------------------------------- the fallback chain


def capped(policy: Any, req: DecideRequest, ctx: DecisionContext) -> tuple[Any, Optional[Any]]:
    """``policy`` behind the spend cap when a cap is set and the policy is paid."""
    if req.max_cost_usd is not None and not (math.isfinite(req.max_cost_usd) and req.max_cost_usd >= 0):
        raise InputError(f"--max-cost-usd {req.max_cost_usd}: must be a number >= 0 (USD for the whole experiment)")
    if req.max_cost_usd is None or not is_paid(policy):
        return policy, None
    try:
        spent = spent_usd(req.results_dir, before_iteration=ctx.iteration)
    except CostRecordError as exc:
        raise InputError(str(exc)) from None
    cap = SpendCap(policy, req.max_cost_usd, spent)
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


class RoundAnswer:
    """A backend's one-call answer to a whole round, seen one slot at a time.

    The first attempt of a slot is the answer's child for it, or the error the round call
    raised (so the slot's fallback chain treats it as it treats its own call: unavailable ->
    fail or offline, unusable -> retry then fallback); the call is recorded once, on slot 1.
    A retry asks the backend again for that slot alone, with the refusal reason.
    """

    def __init__(self, policy: Any, children: Optional[list[Decision]], error: Optional[Exception],
                 call: Optional[dict[str, Any]], slots: tuple[int, ...] = ()):
        self.policy, self.children, self.error, self.call = policy, children, error, call
        self.slots = slots  # the slots the round call answered
        self.name = policy.name
        self.last_call: Optional[dict[str, Any]] = None

    def decide(self, ctx: DecisionContext, feedback: Optional[str] = None) -> Decision:
        if feedback is None:
            self.last_call = self.call if ctx.slot == 1 else None
            if self.error is not None:
                raise self.error
            return self.children[ctx.slot - 1]
        decision = self.policy.decide(ctx, feedback)
        self.last_call = getattr(self.policy, "last_call", None)
        return decision


@dataclass
class Backends:
    primary: Any
    fallback: Any
    cap: Any = None


def make_backends(req: DecideRequest, ctx: DecisionContext) -> Backends:
    options = {**req.backend_options, "seed": req.seed, "model": req.model, "replay_from": req.replay_from,
               "results_dir": str(req.results_dir)}
    try:
        primary = get_policy(req.backend, options)
    except BackendMissingError as exc:
        if req.fallback != "offline":
            raise
        primary = MissingBackend(req.backend, str(exc))
    primary, cap = capped(primary, req, ctx)
    fallback = None if req.backend == "heuristic" else HeuristicPolicy(options)
    return Backends(primary, fallback, cap)


def run_policy(policy: Any, fallback: Any, ctx: DecisionContext, req: DecideRequest,
               checker: CodeChecker) -> DecisionOutcome:
    """The fallback chain of one slot: policy -> retry -> offline heuristic -> safe re-run."""
    try:
        return decide_with_fallback(policy, ctx, fallback=fallback, offline_on_unavailable=req.fallback == "offline",
                                    validate=checker)
    except DecisionInvalid as exc:  # even the offline policy was refused: never stop the loop
        decision = validate_decision(safe_decision(ctx, str(exc)), ctx)
        return DecisionOutcome(decision, f"safe re-run (after: {' '.join(str(exc).split())})",
                               [Attempt("safe re-run", True, str(exc), None)])


def ask_round(backends: Backends, contexts: list[DecisionContext]) -> Any:
    """The policy the slots ask: a :class:`RoundAnswer` when the backend answers a round in one call."""
    primary = backends.primary
    answer_round = getattr(primary, "decide_round", None)
    if answer_round is None or len(contexts) == 1:
        return primary
    try:
        children, error = answer_round(contexts), None
    except Exception as exc:  # replayed to every slot's fallback chain (see RoundAnswer)
        children, error = None, exc
    return RoundAnswer(primary, children, error, getattr(primary, "last_call", None),
                       tuple(c.slot for c in contexts))


# --------------------------------------------------------------------------- what happened on the way

#: Characters of a refusal reason in an event line (the whole reason is in the slot's attempts).
EVENT_REASON_CHARS = 400


def _short(reason: Optional[str]) -> str:
    text = " | ".join(line.strip() for line in str(reason or "").splitlines() if line.strip())
    return text if len(text) <= EVENT_REASON_CHARS else text[:EVENT_REASON_CHARS] + " ..."


def _retry_events(call: Optional[dict[str, Any]], who: str, slot: Optional[int]) -> list[dict[str, Any]]:
    """One event per HTTP attempt that failed and was tried again (the backend's ``http_retried``)."""
    events = []
    for entry in (call or {}).get("http_retried") or []:
        if not isinstance(entry, dict):
            continue
        status = entry.get("status")
        failure = f"HTTP {status}" if status is not None else f"connection failure ({entry.get('error')})"
        events.append({"event": "http_retry", "slot": slot, "http_attempt": entry.get("attempt"), "status": status,
                       "text": f"{who}: {failure} on HTTP attempt {entry.get('attempt')}; tried again "
                               f"(attempt {int(entry.get('attempt') or 0) + 1})"})
    return events


def round_events(asked: Any, cap: Any) -> list[dict[str, Any]]:
    """What happened to the whole-round call (HTTP retries, a refused reply) and every spend-cap refusal."""
    events: list[dict[str, Any]] = []
    if isinstance(asked, RoundAnswer):
        who = f"whole-round call (slots {', '.join(map(str, asked.slots))})"
        events += _retry_events(asked.call, who, None)
        if asked.error is not None and not isinstance(asked.error, SpendCapReached):
            events.append({"event": "refused", "slot": None, "reason": _short(str(asked.error)),
                           "text": f"{who}: no usable answer ({_short(str(asked.error))}); each slot's fallback "
                                   f"chain goes on from there"})
    for refusal in (cap.refusals if cap is not None else []):
        events.append({"event": "spend_cap", "slot": None, **{k: v for k, v in refusal.items() if k != "reason"},
                       "text": f"spend cap: {refusal['reason']} (call: {refusal['call']})"})
    return events


def slot_events(result: "SlotResult", asked: Any, primary_name: str) -> list[dict[str, Any]]:
    """What happened in one slot's fallback chain: HTTP retries, each refused attempt and what
    came next (asked again, or not), and the fallback that decided."""
    slot, attempts = result.ctx.slot, result.outcome.attempts
    from_round = isinstance(asked, RoundAnswer) and slot in asked.slots
    events: list[dict[str, Any]] = []
    for index, attempt in enumerate(attempts):
        first_of_round = from_round and index == 0
        if not first_of_round:
            events += _retry_events(attempt.call, f"slot {slot}: {attempt.policy} call", slot)
        if attempt.accepted or (attempt.reason or "").startswith(SPEND_CAP_REASON):
            continue  # a spend-cap refusal is a round event (with its bound); the fallback event follows
        following = attempts[index + 1] if index + 1 < len(attempts) else None
        again = following is not None and following.policy == attempt.policy
        then = (f"slot {slot} asked again with the reason" if again else
                f"not asked again; {following.policy} decides" if following is not None else "no attempt left")
        if first_of_round and asked.error is not None:
            text = f"slot {slot}: the whole-round call gave no child for it; {then}"
        else:
            what = "the whole-round reply's child" if first_of_round else f"attempt {index + 1} ({attempt.policy})"
            text = f"slot {slot}: {what} was refused: {_short(attempt.reason)}; {then}"
        events.append({"event": "refused", "slot": slot, "attempt": index + 1, "reason": _short(attempt.reason),
                       "asked_again": again, "text": text})
    label = result.outcome.policy
    if attempts and label != primary_name:
        events.append({"event": "fallback", "slot": slot, "policy": label,
                       "text": f"slot {slot}: fallback: {_short(label)}"})
    return events


# --------------------------------------------------------------------------- the round


@dataclass
class SlotResult:
    ctx: DecisionContext
    outcome: DecisionOutcome
    plan: Optional[ChildPlan]
    smoke: Optional[dict[str, Any]] = None
    events: list[dict[str, Any]] = field(default_factory=list)


def _variant_decision(ctx: DecisionContext, mutation: Any, root_id: int) -> Decision:
    """A block-start variant: one mutation of the block root, recorded as the root's child."""
    node = ctx.current_node
    log = LogEntry(outcome=(node.metrics or {}).get("outcome") or "partial", mode="block-start",
                   parent_rule=f"first round of the block: a one-mutation variant of the block root (node {root_id})",
                   observation=f"connectivity_R2={node.r2}", next_parent="root")
    return Decision(parent="root", strategy="explore", log=log,
                    memory_update=MemoryUpdate(emerging_observations=""), config_mutation=mutation)


def _plan_child(req: DecideRequest, ctx: DecisionContext, outcome: DecisionOutcome, base: ExperimentConfig,
                checker: CodeChecker, next_ts: Optional[int], root: Optional[ChildPlan]) -> Optional[ChildPlan]:
    if ctx.is_last_iteration or not req.next_dirs:
        return None
    decision = outcome.decision
    child_dir = Path(req.next_dirs[ctx.slot - 1])
    if root is not None:  # a variant of the block root planned in slot 1
        plan = build_child(decision.model_copy(update={"parent": "root"}), ctx, parent_cfg=root.config,
                           parent_code=root.code, base_cfg=base, next_time_step=None,
                           child_id=ctx.next_iteration, child_dir=child_dir.name, policy_label=outcome.policy)
        plan.proposal.update(parent=root.proposal["id"], derived_from=root.proposal["id"],
                             block=root.proposal["block"])
        return plan
    folder = layout.IterationFolder(node_folder(req.results_dir, source_node(decision, ctx)))
    parent_cfg = load_config(folder.config_path, base=base)
    parent_code = read_text(folder.loop_path, "parent's train_loop.py")
    mod = decision.code_modification
    child_code = checker.accepted.get((mod.function, mod.new_source)) if mod else None
    return build_child(decision, ctx, parent_cfg=parent_cfg, parent_code=parent_code, base_cfg=base,
                       next_time_step=next_ts, child_id=ctx.next_iteration, child_dir=child_dir.name,
                       policy_label=outcome.policy, child_code=child_code)


def _annotate(plan: Optional[ChildPlan], ctx: DecisionContext, tested_principle: Optional[str]) -> None:
    if plan is None:
        return
    plan.proposal.update(round=ctx.round + 1, slot=ctx.slot, role=ctx.role)
    if tested_principle:
        plan.proposal["tested_principle"] = tested_principle


def decide_round(req: DecideRequest, base: ExperimentConfig) -> tuple[list[SlotResult], list[dict[str, Any]]]:
    """Decide every slot of the round in slot order (see the module docstring); also the round's
    events (the whole-round call's retries and refusal, every spend-cap refusal)."""
    contexts = round_contexts(req, base)
    backends = make_backends(req, contexts[0])
    asked = ask_round(backends, [c for c in contexts if c.role != ROLE_VARIANT])
    results: list[SlotResult] = []
    root: Optional[ChildPlan] = None
    variants: list[Any] = []
    for ctx in contexts:
        ctx.planned = [PlannedChild(r.ctx.slot, r.ctx.role, r.plan.proposal["parent"] if r.plan else None,
                                    dict(r.plan.config.to_dict()["training"]) if r.plan else {},
                                    _child_code_key(r.outcome.decision, r.ctx))
                       for r in results]
        checker = CodeChecker(req, base)
        if ctx.role == ROLE_VARIANT and root is not None:
            if not variants:
                rng = random.Random(f"{req.seed}:variants:{ctx.round_end}")
                config = root.config.to_dict()
                variants = variant_mutations(config["training"], req.slots - 1, rng, inert_training_fields(config))
            decision = _variant_decision(ctx, variants[ctx.slot - 2], root.proposal["id"])
            outcome = DecisionOutcome(decision, "block-start variant", [])
            plan = _plan_child(req, ctx, outcome, base, checker, None, root)
        else:
            outcome = run_policy(asked, backends.fallback, ctx, req, checker)
            next_ts, _, _ = resolve_next_time_step(ctx, outcome.decision)
            plan = _plan_child(req, ctx, outcome, base, checker, next_ts, None)
            if ctx.role == ROLE_ROOT:
                root = plan
        _annotate(plan, ctx, outcome.decision.tested_principle)
        results.append(SlotResult(ctx, outcome, plan, checker.smoke))
    if backends.cap is not None:
        results[0].outcome.spend = backends.cap.record()
    events = round_events(asked, backends.cap)
    for result in results:
        result.events = slot_events(result, asked, backends.primary.name)
        if result.plan is not None:  # the child's record says how it was decided (summary.tsv decide_events)
            asked_here = events if result.outcome.attempts else []  # a block-start variant asks nobody
            result.plan.proposal["decide_events"] = [e["text"] for e in asked_here + result.events]
    return results, events


def _slot_record(result: SlotResult) -> dict[str, Any]:
    return {"slot": result.ctx.slot, "role": result.ctx.role, "node_id": result.ctx.current_node.id,
            "policy": result.outcome.policy, "decision": result.outcome.decision.model_dump(mode="json"),
            "attempts": [a.to_dict() for a in result.outcome.attempts],
            "next": result.plan.proposal if result.plan else None, "code_smoke_run": result.smoke,
            "events": result.events}


def decision_record(req: DecideRequest, results: list[SlotResult], next_ts: Optional[int], ts_source: str,
                    events: Optional[list[dict[str, Any]]] = None) -> dict:
    """decision.json (format: agent.records)."""
    first, last = results[0], results[-1].ctx
    round_fields = {
        "iteration": req.iteration, "block": last.block, "iter_in_block": last.iter_in_block,
        "is_block_end": last.is_block_end, "round": last.round, "slots_per_round": req.slots,
        "next_time_step": next_ts, "time_step_source": ts_source or None,
        "code_modification_mode": req.code_modification,
        "code_modification_refused_up_front": last.code_modification_refusal, "spend_cap": first.outcome.spend,
        "round_events": events or [], "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    return round_record(round_fields, [_slot_record(r) for r in results])


def decide(req: DecideRequest) -> list[SlotResult]:
    """The stage function: decide the round, then write its files and the next round's."""
    base = load_config(req.base_config)
    results, events = decide_round(req, base)
    first, last = results[0], results[-1]
    next_ts, ts_source, ts_reason = resolve_next_time_step(first.ctx, first.outcome.decision)
    entries = [log_entry(r.ctx.current_node, r.outcome.decision, r.ctx.analysis_log) for r in results]
    block_text = block_end_text(last.ctx, first.outcome.decision, next_ts, ts_reason) if last.ctx.is_block_end else ""
    previous_log = read_text(req.full_log, "previous analysis.md", required=False)
    memory = update_memory(last.ctx.working_memory, last.ctx, [r.outcome.decision for r in results], entries, next_ts)
    for result in results:
        if result.plan is None:
            continue
        nxt = Path(req.next_dirs[result.ctx.slot - 1])
        dump_config(result.plan.config, nxt / layout.CONFIG_FILE)
        atomic_write_text(nxt / layout.LOOP_FILE, result.plan.code)
        atomic_write_text(nxt / layout.DIFF_FILE, result.plan.diff)
        atomic_write_json(nxt / layout.PROPOSAL_FILE, result.plan.proposal)
    out = req.out_dir
    atomic_write_text(out / layout.MEMORY_FILE, memory)
    atomic_write_text(out / layout.FULL_LOG_FILE, append_full_log(previous_log, "\n\n".join(entries), block_text))
    edits = first.outcome.decision.selection_rule_edits if last.ctx.is_block_end else None
    atomic_write_text(out / layout.INSTRUCTIONS_FILE, revise_instructions(last.ctx.instructions, last.ctx.block,
                                                                          edits or []))
    atomic_write_json(out / layout.DECISION_FILE, decision_record(req, results, next_ts, ts_source, events))
    for event in events + [e for r in results for e in r.events]:
        print(f"agent decide: round ending at iteration {req.iteration}: {event['text']}")
    for result in results:
        target = (f"node {result.plan.proposal['id']} (parent={result.plan.proposal['parent']})" if result.plan
                  else "no next iteration")
        where = "" if req.slots == 1 else f" (slot {result.ctx.slot}, {result.ctx.role})"
        print(f"agent decide: iteration {result.ctx.iteration}{where}: {result.outcome.policy} chose "
              f"{result.outcome.decision.strategy} -> {target}")
    return results

