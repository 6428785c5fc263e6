"""One decision per iteration: its schema, the rules it must obey, and how it makes the child.

:class:`Decision` is what every policy returns (the LLM fills it through structured output,
so the schema stays plain: objects, strings, numbers, lists, enums and optional fields).
It holds:

- ``parent``: the node id the child (iteration i+1) is made from, or ``"root"`` (only when
  iteration i ends a block: the next block starts a new tree);
- ``strategy``: one of the seed's table (:data:`STRATEGIES`);
- ``log``: the log-entry fields the seed's agent wrote for node i (outcome, mode, parent
  rule, observation, next parent);
- ``memory_update``: the text for the working memory;
- exactly one of ``config_mutation`` (one training parameter; ``data_augmentation_loop`` may
  ride along to keep the training time constant) or ``code_modification`` (one editable
  function of train_loop.py). ``robustness-test`` may carry neither: the parent's config is
  re-run with ``training.seed`` + 1.
- at a block end: ``next_time_step`` and ``selection_rule_edits``.

Validation (:func:`validate_decision`) collects every problem, each naming the field and
what is allowed, and raises :class:`DecisionInvalid`. Ranges are checked here because the
JSON schema bounds are not enforced by the model.

Text from a policy is data, not layout: it ends up in memory.md, analysis.md and
instructions.md, whose structure (markdown sections, one log line per field) a newline or a
``## `` heading inside a field would break, and whose size a megabyte reply would blow up.
So every text field is cleaned where a Decision is made -- by the pydantic validators of the
field types below (:data:`Name`, :data:`Line`, :data:`Note`), which run for every backend
(the SDK's structured-output parse, replay's ``model_validate``, the heuristic's
constructor): one-line fields lose newlines and heading markers, notes keep their lines but
lose heading markers, and each is clipped to its cap (``TEXT_CAPS``). Lists are cut to their
item caps. Only the code of a code modification is refused instead of clipped (clipped code
would not compile, and the refusal tells the model why).
"""
from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal, Optional, Union, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from agent.codeedit import code_diff
from neuralgraph.config import ALLOWED_TIME_STEPS
from neuralgraph.metrics import CONVERGED_ABOVE, FAILED_BELOW, OUTCOMES

if TYPE_CHECKING:  # pragma: no cover
    from agent.context import DecisionContext

Strategy = Literal[
    "exploit",
    "failure-probe",
    "explore",
    "robustness-test",
    "recombine",
    "forced-branch",
    "switch-dimension",
    "boundary-skip",
    "code-modification",
]
#: The seed's strategy table (plus code-modification), in the seed's order.
STRATEGIES: tuple[str, ...] = get_args(Strategy)

Outcome = Literal[OUTCOMES]  # neuralgraph.metrics owns the outcome names and thresholds

#: No code change for the first iterations of a block (seed: "NEVER modify code in first 4").
CODE_FREE_ITERATIONS = 4


# --------------------------------------------------------------------------- text caps

#: Characters per text field of a decision (the only definition; prompt and docs quote it).
#: name: identifiers (mode, parameter, function); line: one-line prose (parent rule,
#: observation, change summary, hypothesis, reasons, each list item); note: multi-line notes
#: (emerging observations, hypotheses, block summary); code: a function's new source.
TEXT_CAPS: dict[str, int] = {"name": 80, "line": 400, "note": 4000, "code": 20_000}
#: Items per list field: new principles and open questions per decision.
MAX_LIST_ITEMS = 10
#: Parent-selection rules a block end may add to instructions.md (each a ``line``).
MAX_RULE_EDITS = 5
#: Appended where a text was clipped, so a reader knows it was longer.
CLIP_MARK = " [...]"

_HEADING_MARKERS = re.compile(r"^\s*(?:#+\s*)+")


def clip(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, the cut marked with :data:`CLIP_MARK`."""
    if len(text) <= limit:
        return text
    return text[:max(0, limit - len(CLIP_MARK))].rstrip() + CLIP_MARK


def strip_heading(line: str) -> str:
    """``line`` without leading markdown heading markers ('#', '## ', '  ### ' ...)."""
    return _HEADING_MARKERS.sub("", line)


def one_line(text: str, limit: int = TEXT_CAPS["line"]) -> str:
    """One line: each line loses its heading markers, every whitespace run (newlines included)
    becomes a space, then the cap applies. A log field stays one line of its entry."""
    return clip(" ".join(" ".join(map(strip_heading, str(text).splitlines())).split()), limit)


def plain_text(text: str, limit: int = TEXT_CAPS["note"]) -> str:
    """Lines kept, but none may open a markdown section (leading '#' markers go); capped."""
    lines = [strip_heading(line).rstrip() for line in str(text).splitlines()]
    return clip("\n".join(lines).strip(), limit)


def _code_size(source: str) -> str:
    if len(source) > TEXT_CAPS["code"]:
        raise ValueError(f"new_source has {len(source)} characters; at most {TEXT_CAPS['code']} "
                         f"(one editable function, not a module)")
    return source


def _first(limit: int):
    return AfterValidator(lambda items: [item for item in items if item][:limit])


Name = Annotated[str, AfterValidator(lambda text: one_line(text, TEXT_CAPS["name"]))]
Line = Annotated[str, AfterValidator(one_line)]
Note = Annotated[str, AfterValidator(plain_text)]
Lines = Annotated[list[Line], _first(MAX_LIST_ITEMS)]
RuleEdits = Annotated[list[Line], _first(MAX_RULE_EDITS)]
Code = Annotated[str, AfterValidator(_code_size)]


class _Plain(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LogEntry(_Plain):
    """The free-text parts of the seed's log form for the node just analysed (node i)."""

    outcome: Outcome = Field(description=f"converged (connectivity_R2 > {CONVERGED_ABOVE}), partial "
                                         f"({FAILED_BELOW}-{CONVERGED_ABOVE}) or failed (< {FAILED_BELOW}).")
    mode: Name = Field(description="Mode, e.g. success-exploit or failure-probe.")
    parent_rule: Line = Field(description="One line: why this parent was chosen for the next node.")
    observation: Line = Field(description="One line: what this iteration showed (compare to its parent).")
    next_parent: Union[int, Literal["root"]] = Field(description="Parent of the next node; must equal `parent`.")


class ContradictedPrinciple(_Plain):
    """An Established Principle that a principle-test node contradicted, with the evidence."""

    principle: Line = Field(description="The principle's text as it stands in Established Principles.")
    evidence: Line = Field(description="Node ids and numbers that contradict it, e.g. 'node 7 R2=0.95 vs node 3 0.80'.")


class MemoryUpdate(_Plain):
    """What the working memory gains this iteration."""

    emerging_observations: Note = Field(description="Replaces the 'Emerging Observations' section (running notes).")
    new_principles: Lines = Field(default_factory=list, description="Confirmed principles to add to the knowledge base.")
    open_questions: Optional[Lines] = Field(None, description="If given, replaces the Open Questions list.")
    current_hypothesis: Optional[Note] = Field(None, description="If given, replaces the current block's Hypothesis.")
    block_summary: Optional[Note] = Field(None, description="Block end: 2-3 line summary of the finished block.")
    key_finding: Optional[Line] = Field(None, description="Block end: key finding for the time-step comparison table.")
    next_block_hypothesis: Optional[Note] = Field(None, description="Block end: hypothesis for the next block.")
    contradicted_principles: list[ContradictedPrinciple] = Field(
        default_factory=list, description="Established Principles a result contradicted: moved to Open Questions."
    )


class ConfigMutation(_Plain):
    """One training parameter changed (plus, optionally, data_augmentation_loop)."""

    parameter: Name = Field(description="A training parameter from the allowed table, e.g. learning_rate_W_start.")
    old: Optional[float] = Field(None, description="The parent's value (checked against the parent's config).")
    new: float = Field(description="The new value, inside the parameter's allowed range.")
    data_augmentation_loop: Optional[int] = Field(
        None, description="Optional new data_augmentation_loop (1-25) to keep training time ~constant."
    )


class CodeModification(_Plain):
    """A new version of one editable function of the training module."""

    function: Name = Field(description="Name of the editable function (see EDITABLE_FUNCTIONS).")
    new_source: Code = Field(description="Complete source of the new function (same signature).")
    hypothesis: Line = Field(description="Why this change should help.")
    change_summary: Line = Field(description="One line: what changed.")


class Decision(_Plain):
    """A policy's choice for the next node; see the module docstring for the rules."""

    parent: Union[int, Literal["root"]] = Field(description="Node id of the parent, or 'root' only at a block end.")
    strategy: Strategy = Field(description="Strategy from the selection table.")
    log: LogEntry
    memory_update: MemoryUpdate
    config_mutation: Optional[ConfigMutation] = Field(None, description="Exactly one of config_mutation / code_modification.")
    code_modification: Optional[CodeModification] = Field(None, description="Exactly one of config_mutation / code_modification.")
    next_time_step: Optional[int] = Field(None, description="Block end only: time_step of the next block (1, 4, 16, 32, 64).")
    time_step_reason: Optional[Line] = Field(None, description="Block end only: why this time_step.")
    selection_rule_edits: Optional[RuleEdits] = Field(
        None, description="Block end only: parent-selection rules to add to the instructions."
    )
    tested_principle: Optional[Line] = Field(
        None, description="Slot role principle-test only: the Established Principle this child could contradict."
    )


class RoundDecision(_Plain):
    """A whole round in one reply: ``children[k]`` is slot k+1's decision (in slot order)."""

    children: list[Decision] = Field(description="One decision per slot of the round, in slot order.")


class DecisionInvalid(ValueError):
    """A decision broke the rules. ``problems`` lists one message per broken rule."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


@dataclass(frozen=True)
class ParameterRule:
    """A mutable training parameter: allowed range and how offline policies step it."""

    name: str
    low: float
    high: float
    integer: bool = False
    zero_allowed: bool = False
    log_scale: bool = True
    description: str = ""

    def allowed(self) -> str:
        fmt = (lambda v: str(int(v))) if self.integer else (lambda v: f"{v:g}")
        text = f"{fmt(self.low)}..{fmt(self.high)}"
        return f"0 or {text}" if self.zero_allowed and self.low > 0 else text

    def check(self, value: float) -> Optional[str]:
        """None when ``value`` is allowed, otherwise the rule it breaks."""
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            return f"must be a finite number in {self.allowed()}"
        if self.integer and float(value) != int(value):
            return f"must be an integer in {self.allowed()}"
        if value == 0 and self.zero_allowed:
            return None
        if not (self.low <= value <= self.high):
            return f"must be in {self.allowed()}"
        return None


#: coeff_edge_diff on our scale that acts like the reference's safe default of 10,000 (its
#: refined value 15,000 is ~28,000 here). The two penalties differ in normalisation:
#:   reference: coeff * sum over the B frames of a batch of || relu(f(u) - f(u + x_norm/150)) ||_2
#:              over the N neurons of that frame (the regulariser is added once per frame);
#:   ours:      coeff * || relu(f(u) - f(u + u_scale/100)) ||_2 over all B x N entries at once.
#: For the same violation pattern one norm over B frames is sqrt(B) times smaller than the sum
#: of B per-frame norms, and our larger step (u_scale/100 versus x_norm/150, x_norm ~ u_scale)
#: makes each violation 1.5 times larger: ours = reference * 1.5 / sqrt(B), i.e. the same effect
#: needs coeff_ours = coeff_ref * sqrt(B) / 1.5 = 1.886 x coeff_ref at batch 8 (docs/agent.md).
EDGE_DIFF_REFERENCE_SCALE = math.sqrt(8) / 1.5
EDGE_DIFF_REFERENCE_DEFAULT = float(f"{10_000 * EDGE_DIFF_REFERENCE_SCALE:.2g}")  # 19,000

#: The training parameters a decision may change, with the seed's ranges. coeff_W_L1 allows
#: 0 besides 1e-6..1e-4 because the seed config starts at 0 (L1 off) and turning it off again
#: is a legitimate probe. learning_rate_embedding_start has no range in the seed; 1e-5..1e-2
#: brackets its default 7.5e-4 by an order of magnitude either way. The last three are the
#: levers the reference's explorations found decisive (issue 12): coeff_edge_diff reaches
#: 50,000 so that the reference's 10,000-15,000 (19,000-28,000 on our scale, see
#: EDGE_DIFF_REFERENCE_SCALE) lie inside with room above; n_epochs 1-5 (2 versus 3 epochs moved
#: its results by up to 0.07; with training.training_time_target_min the time target spreads the
#: same training time over the epochs, without it every epoch adds a full epoch's time); and
#: l1_start_epoch, two-phase training (the first epochs without the L1 penalty on W).
#: Issue 18 widened the ranges so that every published reference recipe is reachable from its
#: case's start config (config/experiments/reference/, tests/test_reference_cases.py):
#: data_augmentation_loop to 400 (the reference's loops used 40-200), n_epochs and
#: l1_start_epoch to 12 (its gain-2 regime's best used 8-12 epochs), and edge_diff_stop_epoch,
#: the reference's second phase without the edge-difference penalty. The reference's experiment
#: log (signal_landscape_Claude_analysis.md) added two more: lr_W to 3e-2 (its g=1 best ran 1.5e-2;
#: its landscape explored to 3e-2) and coeff_lin_phi_zero (its two-phase runs add 1.0 per frame,
#: batch_size here: our penalty is added once per step). The heuristic keeps its own narrower caps
#: (agent.policies.heuristic), so its decisions are unchanged.
ALLOWED_PARAMETERS: dict[str, ParameterRule] = {
    rule.name: rule
    for rule in (
        ParameterRule("learning_rate_W_start", 1e-4, 3e-2, description="Adam lr of W (lr_W)"),
        ParameterRule("learning_rate_start", 1e-5, 1e-3, description="Adam lr of the MLPs (lr)"),
        ParameterRule("learning_rate_embedding_start", 1e-5, 1e-2, description="Adam lr of embeddings (lr_emb)"),
        ParameterRule("coeff_W_L1", 1e-6, 1e-4, zero_allowed=True, description="L1 penalty on W"),
        ParameterRule("coeff_edge_diff", 1.0, 50_000.0, zero_allowed=True,
                      description="monotone lin_edge penalty (reference 10,000 = 19,000 here)"),
        ParameterRule("noise_recurrent_level", 1e-4, 0.1, zero_allowed=True, description="noise per unrolled step"),
        ParameterRule("data_augmentation_loop", 1, 400, integer=True, description="iterations per epoch factor"),
        ParameterRule(
            "recurrent_training_start_epoch", 0, 10, integer=True, log_scale=False,
            description="single-step warm-up epochs (must stay < n_epochs)",
        ),
        ParameterRule("n_epochs", 1, 12, integer=True, log_scale=False,
                      description="epochs per training (with a time target the same total time)"),
        ParameterRule("l1_start_epoch", 0, 12, integer=True, log_scale=False,
                      description="two-phase training: epochs without L1 first (must stay < n_epochs)"),
        ParameterRule("edge_diff_stop_epoch", 0, 12, integer=True, log_scale=False,
                      description="two-phase training: coeff_edge_diff only in epochs before this one (0 = all)"),
        ParameterRule("coeff_lin_phi_zero", 0.1, 100.0, zero_allowed=True,
                      description="penalty on lin_phi(0, a) (the reference's 1.0 per frame = batch_size here)"),
    )
}

#: Parameters that must stay below training.n_epochs (otherwise their phase never starts).
EPOCH_INDEX_PARAMETERS = ("recurrent_training_start_epoch", "l1_start_epoch")

#: Short names the seed's log uses, accepted in ``config_mutation.parameter``.
PARAMETER_ALIASES: dict[str, str] = {
    "lr_W": "learning_rate_W_start",
    "lr": "learning_rate_start",
    "lr_emb": "learning_rate_embedding_start",
}

#: Why a known but forbidden parameter is refused.
FIXED_PARAMETER_REASONS: dict[str, str] = {
    "time_step": "time_step is fixed within a block; choose next_time_step at a block end",
    "batch_size": "batch_size is fixed for the whole experiment",
}


def canonical_parameter(name: str) -> str:
    """Strip a 'training.' prefix and resolve the seed's short names (lr_W -> learning_rate_W_start)."""
    name = name.strip()
    if name.startswith("training."):
        name = name[len("training."):]
    return PARAMETER_ALIASES.get(name, name)


def _refuse_parameter(raw: str) -> str:
    allowed = ", ".join(ALLOWED_PARAMETERS)
    name = canonical_parameter(raw)
    if name in FIXED_PARAMETER_REASONS:
        why = FIXED_PARAMETER_REASONS[name]
    elif raw.strip().startswith("claude."):
        why = "claude keys are fixed by the experiment"
    elif raw.strip().startswith("simulation."):
        why = "the simulation is fixed for the whole experiment"
    else:
        why = "not a mutable training parameter"
    return f"config_mutation.parameter = {raw!r}: {why}; allowed parameters: {allowed}"


def _close(a: float, b: float) -> bool:
    return math.isclose(float(a), float(b), rel_tol=1e-3, abs_tol=1e-12)


def parent_node_id(decision: Decision) -> Optional[int]:
    return None if decision.parent == "root" else int(decision.parent)


def _check_parent(decision: Decision, ctx: "DecisionContext") -> list[str]:
    block_ids = sorted(n.id for n in ctx.block_nodes)
    problems = []
    if ctx.is_block_end:
        if decision.parent != "root":
            problems.append(
                f"parent = {decision.parent!r}: iteration {ctx.iteration} ends block {ctx.block}, "
                f"so the next node starts block {ctx.block + 1} and must have parent 'root'"
            )
    elif decision.parent == "root" or decision.parent not in block_ids:
        problems.append(
            f"parent = {decision.parent!r}: must be a node of block {ctx.block}'s tree: one of {block_ids}"
        )
    if decision.log.next_parent != decision.parent:
        problems.append(
            f"log.next_parent = {decision.log.next_parent!r}: must equal parent = {decision.parent!r}"
        )
    return problems


def _check_mutation(mutation: ConfigMutation, parent_training: dict[str, Any], n_epochs: int) -> list[str]:
    name = canonical_parameter(mutation.parameter)
    rule = ALLOWED_PARAMETERS.get(name)
    if rule is None:
        return [_refuse_parameter(mutation.parameter)]
    problems = []
    broken = rule.check(mutation.new)
    if broken:
        problems.append(f"config_mutation.new = {mutation.new!r} for {name}: {broken}")
    if name == "recurrent_training_start_epoch" and not broken and mutation.new >= n_epochs:
        problems.append(
            f"config_mutation.new = {mutation.new!r} for {name}: must be < training.n_epochs = {n_epochs} "
            f"(otherwise recurrent training never starts)"
        )
    if name == "l1_start_epoch" and not broken and mutation.new > 0 and mutation.new >= n_epochs:
        problems.append(
            f"config_mutation.new = {mutation.new!r} for {name}: must be < training.n_epochs = {n_epochs} "
            f"(otherwise the L1 penalty never starts; set coeff_W_L1 to 0 to train without it)"
        )
    if name == "n_epochs" and not broken:
        for other in EPOCH_INDEX_PARAMETERS:
            start = int(parent_training.get(other) or 0)
            if start > 0 and mutation.new <= start:
                problems.append(
                    f"config_mutation.new = {mutation.new!r} for n_epochs: must be > training.{other} = {start} "
                    f"(otherwise that phase never starts)"
                )
    current = parent_training.get(name)
    if mutation.old is not None and current is not None and not _close(mutation.old, current):
        problems.append(
            f"config_mutation.old = {mutation.old!r}: the parent's {name} is {current!r} "
            f"(the child starts from the parent's config)"
        )
    if mutation.data_augmentation_loop is not None:
        broken = ALLOWED_PARAMETERS["data_augmentation_loop"].check(mutation.data_augmentation_loop)
        if broken:
            problems.append(f"config_mutation.data_augmentation_loop = {mutation.data_augmentation_loop!r}: {broken}")
    return problems


def _check_change_kind(decision: Decision, ctx: "DecisionContext") -> list[str]:
    has_config = decision.config_mutation is not None
    has_code = decision.code_modification is not None
    problems = []
    if has_config and has_code:
        problems.append("config_mutation and code_modification: give exactly one (one change at a time)")
    if not has_config and not has_code and decision.strategy != "robustness-test" and not ctx.is_block_end:
        problems.append(
            "config_mutation / code_modification: exactly one is required "
            "(only strategy robustness-test may re-run the parent's config unchanged)"
        )
    if has_code and decision.strategy != "code-modification":
        problems.append(f"strategy = {decision.strategy!r}: a code_modification needs strategy 'code-modification'")
    if decision.strategy == "code-modification" and not has_code:
        problems.append("strategy = 'code-modification': code_modification is missing")
    if has_code:
        problems += _check_code_timing(decision.code_modification, ctx)
    return problems


def _check_code_timing(mod: CodeModification, ctx: "DecisionContext") -> list[str]:
    if ctx.code_modification_refusal:
        return [f"code_modification: refused up front: {ctx.code_modification_refusal}"]
    problems = []
    child_pos = ctx.next_iter_in_block
    if ctx.is_block_end or child_pos <= CODE_FREE_ITERATIONS:
        problems.append(
            f"code_modification: not allowed for the first {CODE_FREE_ITERATIONS} iterations of a block "
            f"(the next node is iteration {child_pos if not ctx.is_block_end else 1} of its block)"
        )
    if ctx.editable_functions and mod.function not in ctx.editable_functions:
        problems.append(
            f"code_modification.function = {mod.function!r}: only these functions may be edited: "
            f"{', '.join(ctx.editable_functions)}"
        )
    return problems


def _check_block_end(decision: Decision, ctx: "DecisionContext") -> list[str]:
    problems = []
    allowed = ", ".join(map(str, ALLOWED_TIME_STEPS))
    if decision.next_time_step is not None and decision.next_time_step not in ALLOWED_TIME_STEPS:
        problems.append(f"next_time_step = {decision.next_time_step!r}: must be one of {allowed}")
    if not ctx.is_block_end:
        if decision.next_time_step is not None and decision.next_time_step != ctx.time_step:
            problems.append(
                f"next_time_step = {decision.next_time_step!r}: time_step is fixed within a block "
                f"(block {ctx.block} uses {ctx.time_step}); it may change only at a block end"
            )
        return problems
    if ctx.is_last_iteration:
        return problems
    if ctx.scheduled_next_time_step is None and decision.next_time_step is None:
        problems.append(f"next_time_step: required at a block end (the schedule leaves it to the agent); one of {allowed}")
    return problems


def validate_decision(decision: Decision, ctx: "DecisionContext") -> Decision:
    """Check ``decision`` against the seed's rules; return it with the parameter name made canonical.

    Raises :class:`DecisionInvalid` listing every broken rule (each names the field and what
    is allowed). The parent's config is read from the node records in ``ctx``.
    """
    problems = _check_parent(decision, ctx)
    problems += _check_change_kind(decision, ctx)
    problems += _check_block_end(decision, ctx)
    if decision.config_mutation is not None:
        parent_cfg = parent_config(decision, ctx)
        training = parent_cfg.get("training", {}) if parent_cfg else {}
        n_epochs = int(training.get("n_epochs", ctx.config.get("training", {}).get("n_epochs", 1)))
        problems += _check_mutation(decision.config_mutation, training, n_epochs)
    if problems:
        raise DecisionInvalid(problems)
    if decision.config_mutation is not None:
        mutation = decision.config_mutation.model_copy(
            update={"parameter": canonical_parameter(decision.config_mutation.parameter)}
        )
        decision = decision.model_copy(update={"config_mutation": mutation})
    return decision


def parent_config(decision: Decision, ctx: "DecisionContext") -> dict[str, Any]:
    """The config the child starts from: the parent node's, or at a block end the block's best node's."""
    from agent.tree import best_node

    if decision.parent == "root":
        best = best_node(ctx.nodes, ctx.block)
        return dict(best.config) if best is not None else dict(ctx.config)
    node = ctx.node(int(decision.parent))
    return dict(node.config) if node is not None else {}


def decision_json_schema() -> dict[str, Any]:
    """JSON schema of :class:`Decision` (for structured output)."""
    return Decision.model_json_schema()


# --------------------------------------------------------------------------- making the child


@dataclass
class ChildPlan:
    """What the next iteration starts from: its config, its code and its proposal record."""

    config: Any  # neuralgraph.config.ExperimentConfig
    code: str
    diff: str
    proposal: dict[str, Any]


def source_node(decision: Decision, ctx: "DecisionContext"):
    """The node whose config and code the child copies.

    Within a block: the parent. At a block end (parent 'root'): the best node of the finished
    block (highest connectivity_R2, ties: lower id) -- the new block starts from what worked,
    with the new time_step.
    """
    from agent.tree import best_node

    if decision.parent == "root":
        return best_node(ctx.nodes, ctx.block) or ctx.current_node
    node = ctx.node(int(decision.parent))
    if node is None:
        raise DecisionInvalid([f"parent = {decision.parent!r}: no such node"])
    return node


def _cast(rule: ParameterRule, value: float) -> float | int:
    return int(round(value)) if rule.integer else float(value)


def config_updates(decision: Decision, parent_training: dict[str, Any],
                   next_time_step: Optional[int]) -> tuple[dict[str, Any], Optional[dict[str, Any]]]:
    """Dotted config updates the decision makes, and the mutation record for proposal.json."""
    updates: dict[str, Any] = {}
    record: Optional[dict[str, Any]] = None
    mutation = decision.config_mutation
    if mutation is not None:
        name = canonical_parameter(mutation.parameter)
        rule = ALLOWED_PARAMETERS[name]
        updates[f"training.{name}"] = _cast(rule, mutation.new)
        record = {"parameter": name, "old": parent_training.get(name), "new": _cast(rule, mutation.new)}
        if mutation.data_augmentation_loop is not None and name != "data_augmentation_loop":
            updates["training.data_augmentation_loop"] = int(mutation.data_augmentation_loop)
            record["data_augmentation_loop"] = {
                "old": parent_training.get("data_augmentation_loop"), "new": int(mutation.data_augmentation_loop)}
    elif decision.code_modification is not None:
        mod = decision.code_modification
        record = {"parameter": f"[code] {mod.function}", "function": mod.function,
                  "change_summary": mod.change_summary, "hypothesis": mod.hypothesis}
    elif decision.strategy == "robustness-test" and decision.parent != "root":
        seed = int(parent_training.get("seed", 0))
        updates["training.seed"] = seed + 1
        record = {"parameter": "seed", "old": seed, "new": seed + 1}
    if decision.parent == "root" and next_time_step is not None:
        old = parent_training.get("time_step")
        updates["training.time_step"] = int(next_time_step)
        if record is None:
            record = {"parameter": "time_step", "old": old, "new": int(next_time_step)}
    return updates, record


def locked_step_budget(base_config: dict[str, Any], time_step: Optional[int] = None) -> dict[str, Any]:
    """The step-budget fields an experiment in fixed-budget mode (``claude.fixed_step_budget``)
    holds, with the block root's values (agent.start copies claude's n_epochs and
    data_augmentation_loop into it); empty when the mode is off. These fields set a training's
    optimizer steps x horizon (batch_size is fixed anyway). With a time target the trainer
    chooses data_augmentation_loop for the whole run, so n_epochs and the warm-up only spread the
    same time: they stay levers. The single-step warm-up (recurrent_training_start_epoch)
    changes steps x horizon only when ``time_step`` > 1 (at 1 every step's horizon is 1): it
    stays a lever there too.

    The fixed-budget mode of the policy study (pipeline/study.py) compares policies on the other
    levers: none may buy more optimizer steps per iteration.
    """
    claude, training = base_config.get("claude") or {}, base_config.get("training") or {}
    if not claude.get("fixed_step_budget"):
        return {}
    held = {"data_augmentation_loop": int(claude.get("data_augmentation_loop") or 1)}
    if not training.get("training_time_target_min"):
        held["n_epochs"] = int(claude.get("n_epochs") or 1)
        if time_step is None or time_step > 1:
            held["recurrent_training_start_epoch"] = int(training.get("recurrent_training_start_epoch") or 0)
    return held


def lock_step_budget(config: Any, base_cfg: Any, source: str) -> tuple[Any, dict[str, Any]]:
    """``config`` with the locked step budget put back, and what was neutralised
    ({field: {"asked": value, "kept": value}}); the single point every child config passes
    (:func:`build_child`), so every policy (heuristic, random, LLM) is held to it."""
    from neuralgraph.config import with_updates

    training = config.to_dict()["training"]
    held = locked_step_budget(base_cfg.to_dict(), int(training["time_step"]))
    changed = {name: {"asked": training[name], "kept": value} for name, value in held.items() if training[name] != value}
    if not changed:
        return config, {}
    updates = {f"training.{name}": v["kept"] for name, v in changed.items()}
    return with_updates(config, updates, source=f"{source} (fixed step budget)"), changed


def build_child(decision: Decision, ctx: "DecisionContext", *, parent_cfg: Any, parent_code: str,
                base_cfg: Any, next_time_step: Optional[int], child_id: int, child_dir: str,
                policy_label: str, child_code: Optional[str] = None) -> ChildPlan:
    """Child config = the source node's config + the mutation; child code = the packaged module
    with the source node's checked function edits + the new edit (never the parent's file as is).

    ``parent_cfg`` / ``parent_code`` are the source node's (see :func:`source_node`) config and
    train_loop.py, read from its iteration folder. ``child_code``: the already checked module
    text for a code modification (see agent.codeedit); when None and the decision edits code,
    the static checks run here. Fixed fields are re-checked against ``base_cfg``.
    """
    from agent.tree import code_hash
    from neuralgraph.config import check_fixed_fields, with_updates

    parent_training = parent_cfg.to_dict()["training"]
    updates, record = config_updates(decision, parent_training, next_time_step)
    source = f"decision for iteration {ctx.next_iteration}"
    config = with_updates(parent_cfg, updates, source=source) if updates else parent_cfg
    config, neutralised = lock_step_budget(config, base_cfg, source)
    check_fixed_fields(base_cfg, config, source=source)
    dropped: dict[str, str] = {}
    if decision.code_modification is not None:
        code = child_code if child_code is not None else apply_code_modification(parent_code, decision.code_modification)
    else:
        code, dropped = rebuild_parent_code(parent_code)
    diff = code_diff(parent_code, code)
    src = source_node(decision, ctx)
    proposal = {
        "id": child_id,
        "parent": parent_node_id(decision),
        "block": ctx.block + 1 if decision.parent == "root" else ctx.block,
        "iteration": ctx.next_iteration,
        "time_step": int(config.training.time_step),
        "dir": child_dir,
        "strategy": decision.strategy,
        "mutation": record,
        "code_modified": code != parent_code,
        "code_hash": code_hash(code),
        "derived_from": src.id,
        "policy": policy_label,
    }
    if neutralised:  # fixed-budget mode: the decision asked for another step budget; it was not given
        proposal["step_budget_neutralised"] = neutralised
    if dropped:  # unchecked code of the parent's file left behind
        proposal["dropped_edits"] = dropped
    return ChildPlan(config=config, code=code, diff=diff, proposal=proposal)


def rebuild_parent_code(parent_code: str) -> tuple[str, dict[str, str]]:
    """The parent's loop as a child gets it without a new edit: the packaged module plus the
    parent's re-checked function edits (agent.codeedit.rebuild_module), never the file on disk
    (its module-level code would reach the child unchecked). A parent function that no longer
    passes the checks (only a file changed behind the agent's back, or an edit accepted by an
    older checker, can be one) is replaced by the packaged one, said on stderr (decide.log) and
    returned with its reason: the chain goes on, without the unchecked code."""
    from agent.codeedit import CodeEditError, rebuild_module

    dropped: dict[str, str] = {}
    try:
        code = rebuild_module(parent_code, dropped=dropped)
    except CodeEditError as exc:  # the parent's file does not parse or lacks a function
        raise DecisionInvalid([f"the parent's train_loop.py: {exc}"]) from None
    for reason in dropped.values():
        print(f"agent decide: {reason}; the child gets the packaged function instead", file=sys.stderr)
    return code, dropped


def apply_code_modification(parent_code: str, mod: CodeModification) -> str:
    """Static checks of agent.codeedit (imported lazily); a refusal becomes DecisionInvalid."""
    from agent.codeedit import CodeEditError, check_code_modification

    try:
        return check_code_modification(parent_code, mod.function, mod.new_source)
    except CodeEditError as exc:
        raise DecisionInvalid([f"code_modification ({mod.function}): {exc}"]) from None
