"""The offline policy: the seed's selection table applied by fixed rules, no API needed.

Deterministic for a seed: every random choice comes from ``random.Random("<seed>:<iteration>")``.

Strategy, first matching rule (tree state = the current block's nodes in iteration order):

1. block end -> next block starts at ``root`` (strategy exploit, no mutation);
2. robustness-test: the node just analysed is a new block best with R2 >= 0.9, was made by a
   mutation (not itself a re-run) and has no re-run yet -> re-run it with training.seed + 1;
3. code-modification: the block has plateaued from its 5th node on (details below); a block
   whose best converged (R2 >= 0.9) but is below its lever bar tries rule 3b's levers first;
3b. lever: the block has plateaued (as for rule 3) and no node of it reached its lever bar
   (R2 0.9, or the experiment's claude.lever_below) -> the best node tries the next lever the
   reference found decisive that the block has not tried (details below);
4. failure-probe: 3+ consecutive R2 >= 0.9 -> push one parameter far (x/÷ 4) from the best node;
5. switch-dimension: the last 4 mutations changed the same parameter -> another parameter;
6. boundary-skip: the last 3 results are partial -> back to the best node, other parameter;
6b. step budget: no time target and no fixed-budget mode, and either the block's best node is
   below R2 0.9, no node of the block changed data_augmentation_loop yet, its W row-subspace R2
   (low-rank W) is not stuck below 0.45 and no Established Principle says more steps did not
   pay, or the best node (or the node it re-ran) was made by a doubling that gained >= 0.01
   through its re-run -> the best node doubles data_augmentation_loop (the optimizer steps per
   epoch), up to its range; a doubling that gained and has no re-run yet is re-run first
   (robustness-test). The continuation (a doubling that pays) goes before rule 6 (details below);
7. recombine: 2+ nodes with R2 > 0.9 on different branches (neither an ancestor of the
   other) -> the best one takes one differing parameter value of the other;
8. forced-branch: every node converged and branching < 10% -> a node from the bottom half of
   the UCB ranking;
9. explore: max(2, n_iter_block // 4) consecutive successes -> highest-UCB node outside the
   recent chain;
10. exploit (default): highest-UCB node, a moderate step (x/÷ 1.5-2). If the parent's own
    mutation improved on its parent, keep going the same way; otherwise a random parameter.

Code modification (rule 3): never for the first ``CODE_FREE_ITERATIONS`` (4) nodes of a
block, nor at a block end, nor on a retry after a refusal (``feedback``). From the 5th node of a block on, when the block has plateaued
(the best connectivity_R2 did not improve over the last 3 nodes, or 2+ of the last 3 nodes
failed with R2 < 0.1) and neither of the last 2 nodes was itself a code modification (its
effect is measured first), the best node of the block (then the others in UCB order) gets an
edit of :mod:`agent.policies.code_edits` not yet applied on its branch: the target function
must still be the packaged one in the node's train_loop.py (read from ``ctx.code`` for the
current node, else from ``options["results_dir"]/<node dir>``; without a readable file, from
the code mutations of its ancestors). The edit is chosen with the same seeded generator.
If its validation (static checks, smoke run) refuses it, the retry (with ``feedback``) gets a
config mutation; as the fallback of another backend (no retry), a refusal ends in the safe re-run.

Step budget (rule 6b, :func:`_step_budget`): an under-trained W is the commonest reason a
block sits below 0.9 (bench_hard, docs/benchmarks.md: 0.79 at data_augmentation_loop 2, 0.9985
at 11, learning rates alone reach 0.94), and no stepped parameter adds optimizer steps. The rule
tries one doubling per block and keeps doubling while a doubling pays, so it stops once more
steps stop helping. A doubling's gain is read through a re-run of the doubled node with another
seed (the smaller R2 of the two), so a lucky seed does not buy the next doubling, and a re-run
that became the best node no longer hides the doubling it repeats. It draws no
random number and never fires in a block that converges without it (the demo). With
training_time_target_min the time target sets data_augmentation_loop and the rule stays off;
so does the fixed-budget mode of the policy study (claude.fixed_step_budget). Each doubling
doubles an iteration's cost: docs/study.md compares the policies at equal compute too.

Levers (rule 3b, :func:`_lever`): the training settings the reference's low-rank exploration
found decisive are not among the stepped :data:`SEARCH_PARAMETERS`; they get their own rule,
which draws no random number and fires only in a block stuck below its lever bar: R2 0.9, so
runs that converge (the demo) make exactly the decisions they made before the levers existed,
unless the experiment aims higher (claude.lever_below; `snakemake reference` sets its search's
0.999 there, where the reference's recipe already converges and its levers are what is left).
In order, the first one that applies and whose parameter the block has not changed yet:
coeff_edge_diff 0 -> the reference's safe default on our scale
(:data:`agent.decision.EDGE_DIFF_REFERENCE_DEFAULT`); n_epochs + 1, only with a time target
(training_time_target_min keeps the training time; without it an epoch more is a bigger budget);
l1_start_epoch 0 -> 1 (two-phase training) when L1 is on and n_epochs >= 2; then the refining
levers of a recipe that has those already (the reference's own search): coeff_edge_diff x 1.5
(its 15,000 for one seed), L1 switched on for the last epoch where it never acts
(l1_start_epoch >= n_epochs), the penalty switched off from the same epoch (edge_diff_stop_epoch).
"""
from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any, Mapping, Optional

from agent.context import DecisionContext
from agent.decision import (ALLOWED_PARAMETERS, CODE_FREE_ITERATIONS, EDGE_DIFF_REFERENCE_DEFAULT, CodeModification,
                            ConfigMutation, ContradictedPrinciple, Decision, LogEntry, MemoryUpdate, ParameterRule,
                            locked_step_budget)
from agent.policies.code_edits import LIBRARY, LibraryEdit, packaged_module_source
from agent.tree import NodeRecord, best_node, code_hash, fmt, node_folder, reward
from agent.layout import LOOP_FILE
from neuralgraph.config import ALLOWED_TIME_STEPS, inert_training_fields
from neuralgraph.metrics import CONVERGED_ABOVE, FAILED_BELOW, OUTCOMES, classify_outcome

#: The outcome thresholds, owned by neuralgraph.metrics (converged above SUCCESS, failed below PARTIAL).
SUCCESS = CONVERGED_ABOVE
PARTIAL = FAILED_BELOW
#: Parameters the heuristic steps (data_augmentation_loop stays: it sets the training time).
SEARCH_PARAMETERS = ("learning_rate_W_start", "learning_rate_start", "learning_rate_embedding_start",
                     "coeff_W_L1", "noise_recurrent_level")
#: Levers of rule 3b (not stepped; see the module docstring). Part of a node's signature, so a
#: lever setting already tried in the block (or planned by an earlier slot) is not repeated.
LEVER_PARAMETERS = ("coeff_edge_diff", "n_epochs", "l1_start_epoch", "edge_diff_stop_epoch")
#: The refining coeff_edge_diff lever multiplies the penalty by this (the reference's 10,000 -> 15,000).
EDGE_DIFF_LEVER_FACTOR = 1.5
#: The step budget of rule 6b: optimizer steps per epoch are proportional to it.
STEP_BUDGET_PARAMETER = "data_augmentation_loop"
#: Rule 6b doubles the step budget up to this value (the allowed range reaches the reference's
#: 200+, but a doubling chain that far would cost 16x a run; 25 was the range before issue 18).
STEP_BUDGET_MAX = 25
#: The n_epochs lever of rule 3b stops here (the allowed range reaches 12 since issue 18).
LEVER_MAX_EPOCHS = 5
#: Rule 6b doubles the step budget again only while the last doubling gained at least this much R2,
#: read through a re-run of the doubled node with another seed (the smaller of the two R2).
STEP_BUDGET_GAIN = 0.01
#: The subspace diagnostic (metrics.json, low-rank W only): a best node whose learned W's row
#: subspace R2 is below this is the reference's "irredeemable" signature (stuck near 0.42 while
#: connectivity_R2 stays ~0.33; science.md section 8); in our bench_lowrank study the seeds that
#: stayed low had 0.22-0.42, the ones that recovered W 0.65-0.98. Rule 6b buys no first doubling there.
SUBSPACE_STUCK = 0.45
#: Words that, in an Established Principle naming the step budget, say more steps did not pay:
#: rule 6b then buys no first doubling (the memory's principles outlive a block).
NO_GAIN_WORDS = ("no gain", "did not help", "does not help", "no improvement", "not pay", "hurt", "worse")
#: A block has plateaued when its best R2 did not improve over this many last nodes ...
PLATEAU_WINDOW = 3
#: ... or when this many of those nodes failed (R2 < PARTIAL).
PLATEAU_FAILURES = 2
#: No code edit while one of this many last nodes of the block was itself a code edit.
CODE_SPACING = 2


class HeuristicPolicy:
    """Offline policy; ``options["seed"]`` (int) fixes every choice together with the iteration."""

    name = "heuristic"

    def __init__(self, options: Optional[Mapping[str, Any]] = None):
        options = options or {}
        self.seed = int(options.get("seed") or 0)
        self.results_dir = Path(options["results_dir"]) if options.get("results_dir") else None
        self.last_call: Optional[dict[str, Any]] = None

    def decide(self, ctx: DecisionContext, feedback: Optional[str] = None) -> Decision:
        rng = random.Random(f"{self.seed}:{ctx.iteration}")
        code = _CodeView(ctx, self.results_dir) if feedback is None else None
        plan = _role_plan(ctx, rng) if ctx.slots > 1 and not ctx.is_block_end else None
        return _decision(ctx, plan or _plan(ctx, rng, code))


class _Plan:
    def __init__(self, strategy: str, parent: Any, rule: str, mutation: Optional[ConfigMutation] = None,
                 code: Optional[LibraryEdit] = None):
        self.strategy, self.parent, self.rule, self.mutation, self.code = strategy, parent, rule, mutation, code
        self.principle: Optional[str] = None


def _chain(ctx: DecisionContext) -> list[NodeRecord]:
    return sorted(ctx.block_nodes, key=lambda n: (n.iteration, n.id))


def _streak(nodes: list[NodeRecord], test) -> int:
    count = 0
    for node in reversed(nodes):
        if not test(node):
            break
        count += 1
    return count


def _ancestors(node: NodeRecord, ctx: DecisionContext) -> set[int]:
    seen, current = set(), node
    while current is not None and current.parent is not None and current.parent not in seen:
        seen.add(current.parent)
        current = ctx.node(current.parent)
    return seen


def _training(node: NodeRecord) -> dict[str, Any]:
    return (node.config or {}).get("training", {})


def _step(rule: ParameterRule, value: float, factor: float, up: bool) -> float:
    """Move ``value`` by ``factor`` on a log scale inside the rule's range (0 -> switched on)."""
    if value <= 0:
        return rule.low * 10 if up or not rule.zero_allowed else rule.low
    new = value * factor if up else value / factor
    return min(max(new, rule.low), rule.high)


def _signature(training: dict[str, Any]) -> tuple:
    """What makes two nodes' training settings the same for the search (4 significant digits)."""
    names = SEARCH_PARAMETERS + LEVER_PARAMETERS + (STEP_BUDGET_PARAMETER,)
    return tuple(float(f"{float(training.get(p) or 0.0):.4g}") for p in names)


def _tried(ctx: DecisionContext) -> set[tuple]:
    """Settings of the block's nodes and of the children earlier slots of this round got."""
    return {_signature(_training(n)) for n in ctx.block_nodes} | {_signature(p.training) for p in ctx.planned}


def _is_new(training: dict[str, Any], name: str, value: float, tried: set[tuple]) -> bool:
    return _signature({**training, name: value}) not in tried


def _mutate(ctx: DecisionContext, node: NodeRecord, rng: random.Random, factor_range: tuple[float, float],
            params: list[str], prefer: Optional[tuple[str, bool]] = None) -> ConfigMutation:
    """One parameter of ``node`` moved on a log scale; ``prefer`` = (parameter, up) to continue a trend.

    Settings already tried in this block are skipped (a repeat teaches nothing; re-runs are
    the robustness-test's job).
    """
    training = _training(node)
    tried = _tried(ctx)
    inert = inert_training_fields(node.config or {})
    order = [p for p in params if p not in inert] or list(params)  # a lever that cannot act teaches nothing
    rng.shuffle(order)
    if prefer and prefer[0] in order:
        order.remove(prefer[0])
        order.insert(0, prefer[0])
    factor = math.exp(rng.uniform(math.log(factor_range[0]), math.log(factor_range[1])))
    for i, name in enumerate(order):
        rule = ALLOWED_PARAMETERS[name]
        old = float(training.get(name, 0.0) or 0.0)
        up = prefer[1] if (prefer and i == 0 and name == prefer[0]) else rng.random() < 0.5
        for direction in (up, not up):
            new = _step(rule, old, factor, direction)
            new = float(f"{new:.4g}")
            if not math.isclose(new, old, rel_tol=1e-9) and rule.check(new) is None and _is_new(training, name, new, tried):
                return ConfigMutation(parameter=name, old=old, new=new)
    name = order[0]  # everything nearby was tried: jump to a random point of the range
    rule = ALLOWED_PARAMETERS[name]
    new = float(f"{math.exp(rng.uniform(math.log(rule.low), math.log(rule.high))):.4g}")
    return ConfigMutation(parameter=name, old=float(training.get(name, 0.0) or 0.0), new=new)


def _trend(parent: NodeRecord, ctx: DecisionContext) -> Optional[tuple[str, bool]]:
    """(parameter, up) when the parent's own mutation improved on the grandparent."""
    mutation = parent.mutation or {}
    grand = ctx.node(parent.parent) if parent.parent is not None else None
    name = mutation.get("parameter")
    if grand is None or name not in SEARCH_PARAMETERS or reward(parent) <= reward(grand):
        return None
    old, new = mutation.get("old"), mutation.get("new")
    if old is None or new is None:
        return None
    return name, float(new) > float(old)


def _params(exclude: Optional[str] = None) -> list[str]:
    return [p for p in SEARCH_PARAMETERS if p != exclude]


def _recent_params(chain: list[NodeRecord], n: int) -> list[Optional[str]]:
    return [(node.mutation or {}).get("parameter") for node in chain[-n:]]


def _distant_pair(ctx: DecisionContext, chain: list[NodeRecord]) -> Optional[tuple[NodeRecord, NodeRecord]]:
    good = sorted([n for n in chain if reward(n) > SUCCESS], key=lambda n: (-reward(n), n.id))
    for i, a in enumerate(good):
        for b in good[i + 1:]:
            if a.id not in _ancestors(b, ctx) and b.id not in _ancestors(a, ctx):
                return a, b
    return None


def _recombine(ctx: DecisionContext, a: NodeRecord, b: NodeRecord, rng: random.Random) -> Optional[ConfigMutation]:
    ta, tb = _training(a), _training(b)
    tried = _tried(ctx)
    differing = [p for p in SEARCH_PARAMETERS if tb.get(p) is not None and ta.get(p) != tb.get(p)
                 and ALLOWED_PARAMETERS[p].check(float(tb[p])) is None and _is_new(ta, p, float(tb[p]), tried)]
    if not differing:
        return None
    name = rng.choice(differing)
    return ConfigMutation(parameter=name, old=float(ta.get(name, 0.0) or 0.0), new=float(tb[name]))


def _branching_rate(chain: list[NodeRecord]) -> float:
    """Fraction of nodes whose parent is not the node of the previous iteration."""
    if len(chain) < 2:
        return 0.0
    branches = sum(1 for prev, node in zip(chain, chain[1:]) if node.parent != prev.id)
    return branches / (len(chain) - 1)


def _plan(ctx: DecisionContext, rng: random.Random, code: Optional["_CodeView"] = None) -> _Plan:
    if ctx.is_block_end:
        return _Plan("exploit", "root", "block end: the next block starts a new tree from the best node")
    chain = _chain(ctx)
    scores = ctx.scores
    top = ctx.node(scores[0].id)
    best = best_node(ctx.nodes, ctx.block)
    current = ctx.current_node
    plan = _robustness(ctx, chain, scores, top, best, current, rng)
    levers_first = best is not None and reward(best) >= SUCCESS  # converged below a higher bar: the reference's levers
    if plan is None and levers_first:
        plan = _lever(ctx, chain, best)
    if plan is None and code is not None:
        plan = _code_modification(ctx, chain, scores, best, rng, code)
    if plan is None and not levers_first:
        plan = _lever(ctx, chain, best)
    if plan is not None:
        return plan
    for rule in (_failure_probe, _switch_dimension, _step_budget_paying, _boundary_skip, _step_budget, _recombine_rule,
                 _forced_branch, _explore):
        plan = rule(ctx, chain, scores, top, best, current, rng)
        if plan is not None:
            return plan
    return _Plan("exploit", top.id, f"highest UCB (node {top.id}, UCB={scores[0].ucb:.3f})",
                 _mutate(ctx, top, rng, (1.5, 2.0), _params(), _trend(top, ctx)))


def _robustness(ctx, chain, scores, top, best, current, rng):
    rerun = (current.mutation or {}).get("parameter") == "seed"
    has_rerun = any(n.parent == current.id and (n.mutation or {}).get("parameter") == "seed" for n in chain)
    if best is current and reward(current) >= SUCCESS and current.parent is not None and not rerun and not has_rerun:
        return _Plan("robustness-test", current.id, f"new block best (node {current.id}): re-run with another seed")
    return None


class _CodeView:
    """Which library edits still apply to a node's train_loop.py (see the module docstring)."""

    def __init__(self, ctx: DecisionContext, results_dir: Optional[Path]):
        self.ctx, self.results_dir = ctx, results_dir
        self._texts: dict[int, Optional[str]] = {}

    def text(self, node: NodeRecord) -> Optional[str]:
        if node.id not in self._texts:
            self._texts[node.id] = self._read(node)
        return self._texts[node.id]

    def _read(self, node: NodeRecord) -> Optional[str]:
        if node.id == self.ctx.current_node.id and self.ctx.code.strip():
            return self.ctx.code
        if node.code_hash and node.code_hash == code_hash(packaged_module_source()):
            return packaged_module_source()
        if self.results_dir is None:
            return None
        path = node_folder(self.results_dir, node) / LOOP_FILE
        try:
            return path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return None

    def edited_functions(self, node: NodeRecord) -> set[str]:
        """Functions changed by code mutations on the path root -> node (when no code is readable)."""
        functions, current, seen = set(), node, set()
        while current is not None and current.id not in seen:
            seen.add(current.id)
            function = (current.mutation or {}).get("function")
            if function:
                functions.add(function)
            current = self.ctx.node(current.parent) if current.parent is not None else None
        return functions

    def applicable(self, node: NodeRecord) -> list[LibraryEdit]:
        allowed = set(self.ctx.editable_functions) or {edit.function for edit in LIBRARY}
        text = self.text(node)
        edited = self.edited_functions(node) if text is None else set()
        return [edit for edit in LIBRARY if edit.function in allowed
                and (edit.applies_to(text) if text is not None else edit.function not in edited)]


def _plateau(chain: list[NodeRecord]) -> Optional[str]:
    """Why the block has plateaued, or None."""
    if len(chain) <= PLATEAU_WINDOW:
        return None
    recent, earlier = chain[-PLATEAU_WINDOW:], chain[:-PLATEAU_WINDOW]
    best_before = max(reward(n) for n in earlier)
    if max(reward(n) for n in recent) <= best_before:
        return f"best connectivity_R2 {best_before:.3f} not improved in the last {PLATEAU_WINDOW} nodes"
    failures = sum(1 for n in recent if reward(n) < PARTIAL)
    if failures >= PLATEAU_FAILURES:
        return f"{failures} of the last {PLATEAU_WINDOW} nodes failed (R2 < {PARTIAL})"
    return None


def _code_modification(ctx, chain, scores, best, rng, code: _CodeView) -> Optional[_Plan]:
    if ctx.code_modification_refusal:
        return None
    if ctx.next_iter_in_block <= CODE_FREE_ITERATIONS:
        return None
    if any(n.strategy == "code-modification" for n in chain[-CODE_SPACING:]):
        return None
    why = _plateau(chain)
    if why is None:
        return None
    candidates = [best] + [ctx.node(s.id) for s in scores if best is None or s.id != best.id]
    for node in candidates:
        edits = code.applicable(node) if node is not None else []
        if edits:
            edit = rng.choice(edits)
            which = "best node" if node is best else "highest-UCB node with an edit left"
            return _Plan("code-modification", node.id,
                         f"plateau ({why}): config changes insufficient, code change '{edit.name}' on {which} {node.id}",
                         code=edit)
    return None


def _reruns(node: NodeRecord, ctx: DecisionContext) -> list[NodeRecord]:
    """The robustness re-runs of ``node`` (same config, training.seed + 1) in its block."""
    return [n for n in ctx.block_nodes if n.parent == node.id and (n.mutation or {}).get("parameter") == "seed"]


def _rerun_source(node: NodeRecord, ctx: DecisionContext) -> NodeRecord:
    """The node a re-run repeats (``node`` itself when it is not a re-run)."""
    if (node.mutation or {}).get("parameter") == "seed" and node.parent is not None:
        return ctx.node(node.parent) or node
    return node


def _doubling_gain(made: NodeRecord, ctx: DecisionContext) -> tuple[Optional[float], Optional[NodeRecord]]:
    """(gain, re-run) of a node made by a step-budget mutation: its R2 over its parent's, read
    through its re-run when there is one (the smaller R2 of the two: a lucky seed is not a
    gain); (None, None) when ``made`` was not made by one."""
    if (made.mutation or {}).get("parameter") != STEP_BUDGET_PARAMETER or made.parent is None:
        return None, None
    parent = ctx.node(made.parent)
    if parent is None:
        return None, None
    reruns = _reruns(made, ctx)
    worst = min([reward(made)] + [reward(n) for n in reruns])
    return worst - reward(parent), (reruns[0] if reruns else None)


def _subspace_stuck(node: NodeRecord) -> Optional[float]:
    """The node's W row-subspace R2 when it is below SUBSPACE_STUCK (else None)."""
    value = node.metrics.get("W_row_subspace_R2")
    if isinstance(value, (int, float)) and math.isfinite(value) and value < SUBSPACE_STUCK:
        return float(value)
    return None


def _steps_refuted(ctx: DecisionContext) -> Optional[str]:
    """An Established Principle of the memory saying more steps did not pay (LLM text is data:
    only matched against fixed words, never executed or echoed beyond 80 characters)."""
    if not ctx.working_memory.strip():
        return None
    from agent.memory import parse_memory

    for principle in parse_memory(ctx.working_memory).principles:
        text = principle.lower()
        if (STEP_BUDGET_PARAMETER in text or "step budget" in text) and any(w in text for w in NO_GAIN_WORDS):
            return principle.lstrip("- ").strip()[:80]
    return None


def _step_budget(ctx, chain, scores, top, best, current, rng, paying_only: bool = False) -> Optional[_Plan]:
    """Rule 6b: double the best node's optimizer steps while it is under-trained (module docstring).

    A doubling's gain is believed only through a re-run with another seed: a doubling that
    gained is re-run first, then doubled again while the smaller of the two R2 keeps the gain.
    ``paying_only``: only that continuation (it goes before rule 6's boundary-skip, so three
    partial results do not end a doubling that pays).
    """
    if best is None:
        return None
    training = _training(best)
    if training.get("training_time_target_min") or STEP_BUDGET_PARAMETER in locked_step_budget(ctx.base_config):
        return None  # the time target or the fixed-budget mode sets the step budget
    made = _rerun_source(best, ctx)
    gain, rerun = _doubling_gain(made, ctx)
    if gain is not None and gain >= STEP_BUDGET_GAIN and rerun is None:
        return _Plan("robustness-test", made.id, f"step budget: the doubling that made node {made.id} gained "
                     f"{gain:+.3f}; re-run it with another seed before believing the gain")
    paying = gain is not None and gain >= STEP_BUDGET_GAIN
    if paying_only and not paying:
        return None
    tried = any((n.mutation or {}).get("parameter") == STEP_BUDGET_PARAMETER for n in chain)
    if not paying and (reward(best) >= SUCCESS or tried):
        return None
    if not paying and (_subspace_stuck(best) is not None or _steps_refuted(ctx)):
        return None  # the diagnostic or the memory says more steps will not lift this block
    rule = ALLOWED_PARAMETERS[STEP_BUDGET_PARAMETER]
    old = int(training.get(STEP_BUDGET_PARAMETER) or 1)
    new = min(int(rule.high), STEP_BUDGET_MAX, 2 * old)
    if new == old or not _is_new(training, STEP_BUDGET_PARAMETER, new, _tried(ctx)):
        return None
    why = (f"the last doubling gained {gain:+.3f} through its re-run (node {rerun.id})" if paying
           else f"best connectivity_R2 {reward(best):.3f} < {SUCCESS}: under-trained?")
    return _Plan("exploit", best.id, f"step budget: {why} {STEP_BUDGET_PARAMETER} {old} -> {new} on best node {best.id}",
                 ConfigMutation(parameter=STEP_BUDGET_PARAMETER, old=old, new=new))


def _step_budget_paying(ctx, chain, scores, top, best, current, rng) -> Optional[_Plan]:
    return _step_budget(ctx, chain, scores, top, best, current, rng, paying_only=True)


def lever_mutations(training: dict[str, Any], time_target: bool) -> list[ConfigMutation]:
    """The levers of rule 3b that apply to a node's training settings, in the rule's order:
    first those that switch on what the node lacks (the edge-difference penalty, an epoch more
    under a time target, two phases for an L1 acting from the start), then those that refine a
    recipe that already has them, as the reference's low-rank search did (science.md section 8:
    coeff_edge_diff 15,000 instead of 10,000 for one seed; its second phase, L1 on and the penalty
    off, where its recipe never reaches it)."""
    found = []
    edge_diff = float(training.get("coeff_edge_diff") or 0.0)
    if edge_diff == 0:
        found.append(ConfigMutation(parameter="coeff_edge_diff", old=edge_diff, new=EDGE_DIFF_REFERENCE_DEFAULT))
    n_epochs = int(training.get("n_epochs") or 1)
    if time_target and n_epochs < min(ALLOWED_PARAMETERS["n_epochs"].high, LEVER_MAX_EPOCHS):
        found.append(ConfigMutation(parameter="n_epochs", old=n_epochs, new=n_epochs + 1))
    l1_start = int(training.get("l1_start_epoch") or 0)
    l1_on = float(training.get("coeff_W_L1") or 0.0) > 0
    if l1_on and l1_start == 0 and n_epochs >= 2:
        found.append(ConfigMutation(parameter="l1_start_epoch", old=l1_start, new=1))
    return found + _refining_levers(training, edge_diff, n_epochs, l1_start, l1_on)


def _refining_levers(training: dict[str, Any], edge_diff: float, n_epochs: int, l1_start: int,
                     l1_on: bool) -> list[ConfigMutation]:
    """The levers of a recipe that already uses the penalty and two phases (see lever_mutations):
    the penalty x EDGE_DIFF_LEVER_FACTOR; L1 switched on for the last epoch where it never acts
    (l1_start_epoch >= n_epochs); the penalty switched off from the same epoch (the reference's
    n_epochs_init ends both phases at once; a decision changes one field, so these are two nodes)."""
    found = []
    if edge_diff > 0:
        new = min(float(f"{edge_diff * EDGE_DIFF_LEVER_FACTOR:.4g}"), ALLOWED_PARAMETERS["coeff_edge_diff"].high)
        if new > edge_diff:
            found.append(ConfigMutation(parameter="coeff_edge_diff", old=edge_diff, new=new))
    if n_epochs < 2:
        return found
    if l1_on and l1_start >= n_epochs:
        found.append(ConfigMutation(parameter="l1_start_epoch", old=l1_start, new=n_epochs - 1))
    stop = int(training.get("edge_diff_stop_epoch") or 0)
    boundary = l1_start if 0 < l1_start < n_epochs else n_epochs - 1
    if edge_diff > 0 and (stop == 0 or stop >= n_epochs):
        found.append(ConfigMutation(parameter="edge_diff_stop_epoch", old=stop, new=boundary))
    return found


def lever_bar(ctx: DecisionContext) -> float:
    """Rule 3b fires while the block's best connectivity_R2 is below this: the experiment's
    claude.lever_below (a search for a higher bar, `snakemake reference`), else SUCCESS."""
    bar = (ctx.base_config.get("claude") or {}).get("lever_below")
    return float(bar) if bar is not None else SUCCESS


def _lever(ctx: DecisionContext, chain: list[NodeRecord], best: Optional[NodeRecord]) -> Optional[_Plan]:
    """Rule 3b: a block stuck below its lever bar (R2 0.9 unless the experiment sets
    claude.lever_below) tries the next untried lever on its best node (no random draw)."""
    bar = lever_bar(ctx)
    if best is None or reward(best) >= bar:
        return None
    why = _plateau(chain)
    if why is None:
        return None
    training = _training(best)
    time_target = bool(training.get("training_time_target_min"))
    locked = locked_step_budget(ctx.base_config)
    used = {(n.mutation or {}).get("parameter") for n in chain} | set(locked)
    tried = _tried(ctx)
    for mutation in lever_mutations(training, time_target):
        if mutation.parameter in used or not _is_new(training, mutation.parameter, mutation.new, tried):
            continue
        return _Plan("switch-dimension", best.id,
                     f"plateau below {fmt(bar)} ({why}): lever {mutation.parameter} "
                     f"{fmt(mutation.old)} -> {fmt(mutation.new)} on best node {best.id}", mutation)
    return None


def _failure_probe(ctx, chain, scores, top, best, current, rng):
    if _streak(chain, lambda n: reward(n) >= SUCCESS) >= 3:
        return _Plan("failure-probe", best.id, f"3+ consecutive R2 >= 0.9: probe a boundary from best node {best.id}",
                     _mutate(ctx, best, rng, (4.0, 4.0), _params()))
    return None


def _switch_dimension(ctx, chain, scores, top, best, current, rng):
    recent = _recent_params(chain, 4)
    if len(recent) == 4 and recent[0] is not None and len(set(recent)) == 1:
        return _Plan("switch-dimension", top.id, f"4 consecutive mutations of {recent[0]}: change another parameter",
                     _mutate(ctx, top, rng, (1.5, 2.0), _params(exclude=recent[0])))
    return None


def _boundary_skip(ctx, chain, scores, top, best, current, rng):
    if len(chain) >= 3 and all(PARTIAL <= reward(n) <= SUCCESS for n in chain[-3:]):
        last = (current.mutation or {}).get("parameter")
        return _Plan("boundary-skip", best.id, f"3 partial results: accept the boundary, back to best node {best.id}",
                     _mutate(ctx, best, rng, (1.5, 2.0), _params(exclude=last)))
    return None


def _recombine_rule(ctx, chain, scores, top, best, current, rng):
    if any(n.strategy == "recombine" for n in chain[-3:]):
        return None
    pair = _distant_pair(ctx, chain)
    mutation = _recombine(ctx, *pair, rng) if pair else None
    if mutation is None:
        return None
    return _Plan("recombine", pair[0].id, f"nodes {pair[0].id} and {pair[1].id} both > 0.9 on different branches",
                 mutation)


def _forced_branch(ctx, chain, scores, top, best, current, rng):
    if len(chain) >= 4 and all(reward(n) > SUCCESS for n in chain) and _branching_rate(chain) < 0.1:
        bottom = scores[len(scores) // 2:]
        pick = ctx.node(rng.choice(bottom).id)
        return _Plan("forced-branch", pick.id, f"100% convergence, branching < 10%: branch from node {pick.id}",
                     _mutate(ctx, pick, rng, (1.5, 2.0), _params()))
    return None


def _explore(ctx, chain, scores, top, best, current, rng):
    need = max(2, ctx.n_iter_block // 4)
    if _streak(chain, lambda n: reward(n) >= SUCCESS) < need:
        return None
    recent = {n.id for n in chain[-need:]} | _ancestors(current, ctx)
    outside = [s for s in scores if s.id not in recent]
    if not outside:
        return None
    pick = ctx.node(outside[0].id)
    return _Plan("explore", pick.id, f"{need} consecutive successes: highest UCB outside the recent chain (node {pick.id})",
                 _mutate(ctx, pick, rng, (1.5, 2.0), _params()))


# --------------------------------------------------------------------------- slot roles (K > 1)


def variant_mutations(training: dict[str, Any], n: int, rng: random.Random,
                      inert: frozenset[str] | set[str] = frozenset()) -> list[ConfigMutation]:
    """``n`` one-mutation variants of a block root: distinct parameters, each moved x/÷ 2 (seeded);
    ``inert`` parameters (:func:`neuralgraph.config.inert_training_fields` of the root) are left
    alone while others remain.

    The first round of a block trains the root and these variants side by side, so it is
    already ``n + 1`` different runs (docs/agent.md).
    """
    names = [p for p in SEARCH_PARAMETERS if p not in inert] or list(SEARCH_PARAMETERS)
    rng.shuffle(names)
    variants = []
    for name in names:
        if len(variants) == n:
            break
        rule = ALLOWED_PARAMETERS[name]
        old = float(training.get(name, 0.0) or 0.0)
        up = rng.random() < 0.5
        for direction in (up, not up):
            new = float(f"{_step(rule, old, 2.0, direction):.4g}")
            if not math.isclose(new, old, rel_tol=1e-9) and rule.check(new) is None:
                variants.append(ConfigMutation(parameter=name, old=old, new=new))
                break
    while len(variants) < n:  # fewer parameters than slots: random points of the ranges
        name = rng.choice(names)
        rule = ALLOWED_PARAMETERS[name]
        new = float(f"{math.exp(rng.uniform(math.log(rule.low), math.log(rule.high))):.4g}")
        variants.append(ConfigMutation(parameter=name, old=float(training.get(name, 0.0) or 0.0), new=new))
    return variants


def _role_plan(ctx: DecisionContext, rng: random.Random) -> Optional[_Plan]:
    """The explore and principle-test slots of a round; exploit slots use the selection table."""
    if ctx.role == "explore":
        return _explore_slot(ctx, rng)
    if ctx.role == "principle-test":
        return _principle_slot(ctx, rng)
    return None


def _explore_slot(ctx: DecisionContext, rng: random.Random) -> _Plan:
    """A node outside the recent chain (the round's nodes and their ancestors); the bottom half of
    the UCB ranking when every node of the block converged."""
    scores = ctx.scores
    recent = {n.id for n in ctx.round_nodes}
    for node in ctx.round_nodes:
        recent |= _ancestors(node, ctx)
    if all(reward(n) > SUCCESS for n in ctx.block_nodes):
        pool = scores[len(scores) // 2:] or scores
        pick = ctx.node(rng.choice(pool).id)
        why = f"explore slot: block 100% converged, node {pick.id} from the bottom half of the UCB ranking"
    else:
        outside = [s for s in scores if s.id not in recent] or scores
        pick = ctx.node(outside[0].id)
        why = f"explore slot: highest UCB outside the recent chain (node {pick.id}, UCB={outside[0].ucb:.3f})"
    return _Plan("explore", pick.id, why, _mutate(ctx, pick, rng, (2.0, 4.0), _params()))


def principle_parameter(principle: str) -> Optional[str]:
    """The search parameter a principle talks about (its name, or the lr_W / lr / lr_emb short forms)."""
    text = principle.lower()
    for name in SEARCH_PARAMETERS:
        if name.lower() in text:
            return name
    for short, name in (("lr_emb", "learning_rate_embedding_start"), ("lr_w", "learning_rate_W_start"),
                        ("lr=", "learning_rate_start")):
        if short in text:
            return name
    return None


def _principle_slot(ctx: DecisionContext, rng: random.Random) -> _Plan:
    """Test one Established Principle (rotating by round) by moving its parameter far from the best
    node's value; before any principle exists, probe a parameter's range boundary."""
    from agent.memory import parse_memory

    best = best_node(ctx.nodes, ctx.block) or ctx.current_node
    principles = [p.lstrip("- ").strip() for p in parse_memory(ctx.working_memory).principles
                  if p.strip() and not p.startswith("(")] if ctx.working_memory.strip() else []
    if principles:
        principle = principles[(ctx.round - 1) % len(principles)]
        name = principle_parameter(principle) or rng.choice(SEARCH_PARAMETERS)
        plan = _Plan("failure-probe", best.id, f"principle test: could '{principle[:120]}' be wrong? "
                     f"{name} x/÷ 4 from best node {best.id}", _mutate(ctx, best, rng, (4.0, 4.0), [name]))
        plan.principle = principle
        return plan
    name = rng.choice(SEARCH_PARAMETERS)
    rule = ALLOWED_PARAMETERS[name]
    old = float(_training(best).get(name, 0.0) or 0.0)
    bounds = [b for b in (rule.high, rule.low) if not math.isclose(b, old, rel_tol=1e-9)]
    new = float(f"{rng.choice(bounds):.4g}") if bounds else float(f"{rule.high:.4g}")
    return _Plan("failure-probe", best.id, f"principle test before any principle: {name} to its range boundary "
                 f"{fmt(new)} from best node {best.id}", ConfigMutation(parameter=name, old=old, new=new))


def contradicted(ctx: DecisionContext) -> list[tuple[str, str]]:
    """(principle, evidence) for principle-test nodes of the finished round that beat the block's
    best before them: the principle predicted the setting they left was the better one."""
    found = []
    for node in ctx.round_nodes:
        principle = getattr(node, "tested_principle", "")
        if not principle or node.parent is None:
            continue
        before = [n for n in ctx.block_nodes if n.id < node.id - (node.slot - 1 if node.slot else 0)]
        best_before = max((reward(n) for n in before), default=0.0)
        if reward(node) > best_before + 0.005:
            found.append((principle, f"node {node.id} R2={fmt(node.r2)} beat the block's best before it "
                                     f"({best_before:.4f})"))
    return found


# --------------------------------------------------------------------------- texts


def _outcome(node: NodeRecord) -> str:
    value = node.metrics.get("outcome")
    if value in OUTCOMES:
        return value
    return classify_outcome(reward(node))[0]


def _observation(ctx: DecisionContext) -> str:
    node = ctx.current_node
    parent = ctx.node(node.parent) if node.parent is not None else None
    text = f"connectivity_R2={fmt(node.r2)}"
    if parent is not None:
        delta = reward(node) - reward(parent)
        text += f" vs parent {parent.id} {fmt(parent.r2)} ({'+' if delta >= 0 else ''}{delta:.3f})"
    reason = node.metrics.get("outcome_reason")
    return text + (f"; {reason}" if reason else "")


def _next_time_step(ctx: DecisionContext) -> tuple[Optional[int], Optional[str]]:
    if not ctx.is_block_end or ctx.is_last_iteration:
        return None, None
    if ctx.scheduled_next_time_step is not None:
        return ctx.scheduled_next_time_step, "experiment schedule"
    tested = {n.time_step for n in ctx.nodes}
    larger = [t for t in ALLOWED_TIME_STEPS if t not in tested and t > ctx.time_step]
    untested = [t for t in ALLOWED_TIME_STEPS if t not in tested]
    if larger:
        return larger[0], f"next untested recurrence depth above {ctx.time_step}"
    if untested:
        return untested[0], "smallest untested time_step"
    bests = {t: max(reward(n) for n in ctx.nodes if n.time_step == t) for t in tested}
    choice = max(sorted(bests), key=lambda t: bests[t])
    return choice, f"all time_steps tested; revisit the best one (R2={bests[choice]:.3f})"


def _rule_edits(ctx: DecisionContext) -> list[str]:
    """The seed's block-end evaluation: branching < 20%, improvement < 30%, 3+ iteration plateau."""
    chain = _chain(ctx)
    edits = []
    if _branching_rate(chain) < 0.2:
        edits.append(f"branching rate {100 * _branching_rate(chain):.0f}% < 20% -> after 2 "
                     "consecutive children of the same chain, pick the best node outside that chain (explore).")
    improvements = sum(1 for n in chain if n.parent is not None and ctx.node(n.parent)
                       and reward(n) > reward(ctx.node(n.parent)))
    if chain and improvements / len(chain) < 0.3:
        edits.append(f"improvement rate {100 * improvements / len(chain):.0f}% < 30% -> "
                     "exploit more: parent = highest-R2 node, mutate by at most x/÷ 1.5.")
    if len(chain) >= 3 and max(reward(n) for n in chain[-3:]) - min(reward(n) for n in chain[-3:]) < 0.01:
        edits.append("R2 plateau over the last 3 iterations -> force a branch from the "
                     "bottom half of the UCB ranking.")
    return edits


def _decision(ctx: DecisionContext, plan: _Plan) -> Decision:
    node = ctx.current_node
    best = best_node(ctx.nodes, ctx.block)
    next_ts, ts_reason = _next_time_step(ctx)
    emerging = (f"Block {ctx.block} (time_step={ctx.time_step}): {len(ctx.block_nodes)} nodes, best connectivity_R2="
                f"{fmt(best.r2 if best else None)} at node {best.id if best else '-'}. Last: node {node.id} "
                f"{_observation(ctx)}. Next: {plan.strategy} from {plan.parent}.")
    update = MemoryUpdate(emerging_observations=emerging)
    if ctx.is_block_end:
        tr = _training(best) if best else {}
        finding = (f"best R2={fmt(best.r2 if best else None)} with lr_W={fmt(tr.get('learning_rate_W_start'))}, "
                   f"lr={fmt(tr.get('learning_rate_start'))}")
        update = MemoryUpdate(
            emerging_observations=emerging,
            new_principles=[f"time_step={ctx.time_step}: {finding} (block {ctx.block})"],
            block_summary=f"time_step={ctx.time_step}: {finding}; "
                          f"{sum(1 for n in ctx.block_nodes if reward(n) > SUCCESS)}/{len(ctx.block_nodes)} converged.",
            key_finding=finding,
            next_block_hypothesis=(f"time_step={next_ts} starting from node {best.id if best else '-'}'s config "
                                   f"reaches R2 > 0.9" if next_ts else None),
        )
    modification: Optional[CodeModification] = None
    if plan.code is not None:
        modification = plan.code.modification()
        update = MemoryUpdate(
            emerging_observations=emerging + f" Code change ({modification.function}): {modification.change_summary}; "
                                              f"compare node {plan.parent} (same config, code-only diff).",
            current_hypothesis=f"Code ({plan.code.name}): {modification.hypothesis}",
        )
    mode = "success-exploit" if reward(node) >= SUCCESS else "failure-probe"
    log = LogEntry(outcome=_outcome(node), mode=mode, parent_rule=plan.rule, observation=_observation(ctx),
                   next_parent=plan.parent)
    gone = contradicted(ctx) if ctx.slot == 1 else []
    if gone:
        update = update.model_copy(update={"contradicted_principles": [
            ContradictedPrinciple(principle=p, evidence=e) for p, e in gone]})
    return Decision(parent=plan.parent, strategy=plan.strategy, log=log, memory_update=update,
                    config_mutation=plan.mutation, code_modification=modification, next_time_step=next_ts,
                    time_step_reason=ts_reason, selection_rule_edits=_rule_edits(ctx) if ctx.is_block_end else None,
                    tested_principle=plan.principle)


def safe_decision(ctx: DecisionContext, reason: str) -> Decision:
    """A decision that always validates: re-run the highest-UCB node (or open the next block).

    The last resort when even the offline policy's decision was refused, so that the loop
    never stops on a bad decision; ``reason`` is kept in the log's parent rule.
    """
    next_ts, ts_reason = _next_time_step(ctx)
    parent: Any = "root" if ctx.is_block_end else ctx.scores[0].id
    rule = f"last resort after refused decisions: {' '.join(reason.split())}"
    log = LogEntry(outcome=_outcome(ctx.current_node), mode="failure-probe", parent_rule=rule,
                   observation=_observation(ctx), next_parent=parent)
    return Decision(parent=parent, strategy="robustness-test", log=log,
                    memory_update=MemoryUpdate(emerging_observations=f"Decision refused ({rule}); re-running."),
                    next_time_step=next_ts if next_ts is not None else (ctx.time_step if ctx.is_block_end and not ctx.is_last_iteration else None),
                    time_step_reason=ts_reason)
