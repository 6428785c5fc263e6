"""The ``random`` policy: random search, the baseline every other policy is measured against.

WHY: a search policy earns its place only if it beats random search at the same budget.
This policy spends the same budget with no judgement at all:

- parent: drawn uniformly from the nodes of the current block (no UCB, no metrics);
- mutation: one parameter drawn uniformly from the mutable parameters of
  :data:`agent.decision.ALLOWED_PARAMETERS` (except the training-time knob, see
  :data:`BUDGET_PARAMETERS`, and n_epochs unless the experiment has a time target, see
  :data:`TIME_TARGET_PARAMETERS`), its new value drawn inside that parameter's allowed range:
  log-uniformly when the rule says ``log_scale`` (learning rates, penalty coefficients, noise),
  uniformly otherwise; integer parameters uniformly over their allowed integers other than the
  parent's value. The range and every cross-field rule (e.g. ``recurrent_training_start_epoch
  < n_epochs``) come from :mod:`agent.decision` and its validator, so this module spells no
  range itself. ``0`` (a penalty switched off) is not drawn: it is not a point of the range;
- never a code modification, never a re-run;
- block end: parent ``root`` (the next block starts from the finished block's best node, as
  for every policy) and the next ``time_step`` from the schedule, else drawn uniformly from
  :data:`neuralgraph.config.ALLOWED_TIME_STEPS`.

Reproducible: every draw comes from ``random.Random("random:<seed>:<iteration>")`` (a retry
after a refusal draws from a separate stream, so it does not repeat the refused choice).
"""
from __future__ import annotations

import math
import random
from typing import Any, Mapping, Optional

from agent.context import DecisionContext
from agent.decision import (ALLOWED_PARAMETERS, ConfigMutation, Decision, DecisionInvalid, LogEntry, MemoryUpdate,
                            ParameterRule, validate_decision)
from agent.policies.heuristic import _observation, _outcome
from agent.tree import NodeRecord
from neuralgraph.config import ALLOWED_TIME_STEPS

#: Not searched: data_augmentation_loop sets the training time of an iteration (the seed keeps
#: it for holding the time budget constant), so drawing it would compare unequal budgets.
BUDGET_PARAMETERS = frozenset({"data_augmentation_loop"})
#: Searched only when the experiment has a time target (training.training_time_target_min): the
#: trainer then chooses data_augmentation_loop for the whole run, so more epochs means shorter
#: epochs in the same time. Without one, each extra epoch is a full epoch's time more.
TIME_TARGET_PARAMETERS = frozenset({"n_epochs"})
#: Significant digits of a drawn value (readable configs; far finer than any effect measured).
DIGITS = 4


def has_time_target(config: Optional[Mapping[str, Any]]) -> bool:
    """Whether an experiment config (dict) fixes the training time (training_time_target_min)."""
    return bool(((config or {}).get("training") or {}).get("training_time_target_min"))


def searched_parameters(config: Optional[Mapping[str, Any]] = None) -> list[ParameterRule]:
    """The rules random search draws from, in the validator's order (``config``: the current
    experiment config; n_epochs only when it has a time target, see TIME_TARGET_PARAMETERS)."""
    skip = BUDGET_PARAMETERS | (frozenset() if has_time_target(config) else TIME_TARGET_PARAMETERS)
    return [rule for name, rule in ALLOWED_PARAMETERS.items() if name not in skip]


def draw_value(rule: ParameterRule, rng: random.Random) -> float:
    """One continuous value inside ``[rule.low, rule.high]``: log-uniform when ``rule.log_scale``."""
    if rule.log_scale and rule.low > 0:
        value = math.exp(rng.uniform(math.log(rule.low), math.log(rule.high)))
    else:
        value = rng.uniform(rule.low, rule.high)
    return min(max(float(f"{value:.{DIGITS}g}"), rule.low), rule.high)


def integer_values(rule: ParameterRule, exclude: Optional[float]) -> list[int]:
    """Every allowed integer of ``rule`` except the parent's value (a repeat teaches nothing)."""
    values = range(int(math.ceil(rule.low)), int(math.floor(rule.high)) + 1)
    return [v for v in values if exclude is None or not math.isclose(v, exclude)]


def _training(node: NodeRecord) -> dict[str, Any]:
    return (node.config or {}).get("training", {})


class RandomPolicy:
    """Random search (see the module docstring); ``options["seed"]`` fixes every draw."""

    name = "random"

    def __init__(self, options: Optional[Mapping[str, Any]] = None):
        self.seed = int((options or {}).get("seed") or 0)
        self.last_call: Optional[dict[str, Any]] = None

    def decide(self, ctx: DecisionContext, feedback: Optional[str] = None) -> Decision:
        stream = f"random:{self.seed}:{ctx.iteration}" + (":retry" if feedback else "")
        rng = random.Random(stream)
        if ctx.is_block_end:
            return self._block_end(ctx, rng)
        parent = rng.choice(sorted(ctx.block_nodes, key=lambda n: n.id))
        return self._mutation(ctx, parent, rng)

    # ------------------------------------------------------------------ within a block

    def _mutation(self, ctx: DecisionContext, parent: NodeRecord, rng: random.Random) -> Decision:
        """Draw a parameter, then a value; a draw the validator refuses is dropped and redrawn.

        Continuous values always pass (they are drawn inside the range); integer parameters are
        drawn among the allowed integers that pass, so the draw stays uniform over what is legal.
        """
        training = _training(parent)
        rules = searched_parameters(ctx.config)
        rng.shuffle(rules)
        for rule in rules:
            old = training.get(rule.name)
            old = float(old) if isinstance(old, (int, float)) and not isinstance(old, bool) else None
            if rule.integer:
                legal = [v for v in integer_values(rule, old) if self._valid(ctx, parent, rule, old, v)]
                if legal:
                    return self._decision(ctx, parent, rule, old, float(rng.choice(legal)))
                continue
            new = draw_value(rule, rng)
            if self._valid(ctx, parent, rule, old, new):
                return self._decision(ctx, parent, rule, old, new)
        raise DecisionInvalid([f"random policy: no parameter of node {parent.id} can be changed inside its range"])

    def _valid(self, ctx: DecisionContext, parent: NodeRecord, rule: ParameterRule, old: Optional[float],
               new: float) -> bool:
        try:
            validate_decision(self._decision(ctx, parent, rule, old, new), ctx)
        except DecisionInvalid:
            return False
        return True

    def _decision(self, ctx: DecisionContext, parent: NodeRecord, rule: ParameterRule, old: Optional[float],
                  new: float) -> Decision:
        mutation = ConfigMutation(parameter=rule.name, old=old, new=new)
        how = "log-uniform" if rule.log_scale and not rule.integer else "uniform"
        rule_text = (f"random search: parent drawn uniformly from block {ctx.block}'s {len(ctx.block_nodes)} nodes; "
                     f"{rule.name} drawn {how} in {rule.allowed()}")
        note = f"Random search: node {parent.id} with {rule.name} {old if old is not None else 'unset'} -> {new:g}."
        return self._build(ctx, parent.id, rule_text, note, config_mutation=mutation)

    # ------------------------------------------------------------------ block end

    def _block_end(self, ctx: DecisionContext, rng: random.Random) -> Decision:
        next_ts: Optional[int] = None
        reason: Optional[str] = None
        if not ctx.is_last_iteration:
            if ctx.scheduled_next_time_step is not None:
                next_ts, reason = ctx.scheduled_next_time_step, "experiment schedule"
            else:
                next_ts = rng.choice(ALLOWED_TIME_STEPS)
                reason = f"drawn uniformly from {', '.join(map(str, ALLOWED_TIME_STEPS))} (random search)"
        note = f"Random search: block {ctx.block} ends; the next block starts from its best node."
        return self._build(ctx, "root", "block end: the next block starts a new tree", note,
                           next_time_step=next_ts, time_step_reason=reason,
                           selection_rule_edits=[] if ctx.is_block_end else None)

    # ------------------------------------------------------------------ texts

    def _build(self, ctx: DecisionContext, parent: Any, rule_text: str, note: str, **fields: Any) -> Decision:
        log = LogEntry(outcome=_outcome(ctx.current_node), mode="random", parent_rule=rule_text,
                       observation=_observation(ctx), next_parent=parent)
        return Decision(parent=parent, strategy="explore", log=log,
                        memory_update=MemoryUpdate(emerging_observations=note), **fields)
