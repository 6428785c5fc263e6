"""The offline policy: deterministic per seed, the seed's strategy table, valid and sensible steps,
and its library of code modifications (agent/policies/code_edits.py)."""
from __future__ import annotations

import json

import pytest
import torch

from agent.codeedit import check_code_modification, editable_functions
from agent.smoke import validate_and_smoke
from agent.decision import ALLOWED_PARAMETERS, validate_decision
from agent.policies.code_edits import LIBRARY, packaged_module_source
from agent.policies.heuristic import LEVER_PARAMETERS, SEARCH_PARAMETERS, STEP_BUDGET_PARAMETER, HeuristicPolicy
from agent_helpers import context, decision_of, fake_r2, iter_dir, node, run_exploration
from tiny_configs import REPO

LIBRARY_BY_NAME = {edit.name: edit for edit in LIBRARY}


def chain(r2s, mutated="learning_rate_start", n_iter_block=8):
    """A chain 1 -> 2 -> ... with the given R2 values; each node mutated ``mutated``."""
    nodes = []
    for i, r2 in enumerate(r2s, start=1):
        mutation = None if i == 1 else {"parameter": mutated, "old": 1e-3, "new": 1e-3}
        nodes.append(node(i, i - 1 or None, r2, mutation=mutation, strategy="exploit"))
    return context(nodes, n_iter_block=n_iter_block, n_blocks=2)


def decide(ctx, seed=0):
    decision = HeuristicPolicy({"seed": seed}).decide(ctx)
    return validate_decision(decision, ctx)


def test_same_seed_same_decisions_and_another_seed_differs_somewhere():
    contexts = [chain([0.5, 0.6, 0.55][:k]) for k in (1, 2, 3)] + [chain([0.3, 0.8, 0.2, 0.4])]
    first = [decide(c, seed=7).model_dump() for c in contexts]
    again = [decide(c, seed=7).model_dump() for c in contexts]
    assert first == again
    others = [[decide(c, seed=s).model_dump() for c in contexts] for s in range(8, 14)]
    assert any(o != first for o in others)


def test_default_is_exploit_from_highest_ucb_with_a_moderate_log_step():
    ctx = chain([0.5, 0.7])
    d = decide(ctx)
    top = ctx.scores[0].id
    assert d.strategy == "exploit" and d.parent == top
    m = d.config_mutation
    ratio = m.new / m.old if m.old else None
    assert ratio is None or 1.4 <= max(ratio, 1 / ratio) <= 2.05
    assert ALLOWED_PARAMETERS[m.parameter].check(m.new) is None


def test_three_consecutive_successes_trigger_a_failure_probe_from_the_best_node():
    ctx = chain([0.5, 0.91, 0.95, 0.93])
    d = decide(ctx)
    assert d.strategy == "failure-probe" and d.parent == 3
    m = d.config_mutation
    if m.old:
        assert max(m.new / m.old, m.old / m.new) > 3.5 or m.new in (ALLOWED_PARAMETERS[m.parameter].low,
                                                                   ALLOWED_PARAMETERS[m.parameter].high)


def test_four_same_parameter_mutations_switch_dimension():
    d = decide(chain([0.5, 0.6, 0.62, 0.64, 0.66], mutated="learning_rate_W_start"))
    assert d.strategy == "switch-dimension" and d.config_mutation.parameter != "learning_rate_W_start"


def test_three_partial_results_skip_the_boundary_back_to_the_best_node():
    ctx = chain([0.85, 0.3, 0.4])  # 3 nodes: the next one is the block's 4th, before any code change
    d = decide(ctx)
    assert d.strategy == "boundary-skip" and d.parent == 1


def test_a_new_good_best_is_rerun_once_as_robustness_test():
    ctx = chain([0.5, 0.95])
    d = decide(ctx)
    assert d.strategy == "robustness-test" and d.parent == 2 and d.config_mutation is None


def test_two_good_nodes_on_different_branches_are_recombined():
    nodes = [node(1, None, 0.5), node(2, 1, 0.95, training={"learning_rate_W_start": 4e-3}),
             node(3, 1, 0.92, training={"learning_rate_start": 2e-4}), node(4, 2, 0.3)]
    nodes[1].mutation = {"parameter": "seed", "old": 0, "new": 1}  # keep robustness-test out of the way
    ctx = context(nodes, n_iter_block=8)
    d = decide(ctx)
    assert d.strategy == "recombine" and d.parent == 2
    assert (d.config_mutation.parameter, d.config_mutation.new) == ("learning_rate_start", 2e-4)


def test_block_end_opens_the_next_block_at_root_with_time_step_and_rule_edits():
    ctx = chain([0.5, 0.6, 0.7, 0.8], n_iter_block=4)
    d = decide(ctx)
    assert d.parent == "root" and d.next_time_step == 4 and d.selection_rule_edits
    assert d.memory_update.block_summary and d.memory_update.key_finding and d.memory_update.next_block_hypothesis
    fixed = context(ctx.nodes, n_iter_block=4, n_blocks=2, schedule=[1, 32])
    assert decide(fixed).next_time_step == 32


def test_log_fields_follow_the_metrics():
    ctx = chain([0.5, 0.05])
    d = decide(ctx)
    assert d.log.outcome == "failed" and d.log.mode == "failure-probe" and d.log.next_parent == d.parent
    assert "vs parent 1" in d.log.observation


def test_heuristic_improves_on_a_smooth_landscape():
    """Driving the policy with a fake R2 landscape: the best node beats the start clearly."""
    start = {"learning_rate_W_start": 5e-4, "learning_rate_start": 1e-5}
    nodes = [node(1, None, fake_r2({**start}), training=start)]
    policy = HeuristicPolicy({"seed": 3})
    for i in range(1, 12):
        ctx = context(nodes, n_iter_block=12, n_blocks=1)
        d = validate_decision(policy.decide(ctx), ctx)
        parent = ctx.node(d.parent)
        training = dict(parent.config["training"])
        mutation = None
        if d.config_mutation:
            training[d.config_mutation.parameter] = d.config_mutation.new
            mutation = {"parameter": d.config_mutation.parameter, "old": d.config_mutation.old,
                        "new": d.config_mutation.new}
        elif d.code_modification:
            fn = d.code_modification.function
            mutation = {"parameter": f"[code] {fn}", "function": fn}
        else:
            mutation = {"parameter": "seed", "old": 0, "new": 1}
        nodes.append(node(i + 1, d.parent, fake_r2(training), training=training, mutation=mutation,
                          strategy=d.strategy))
    best = max(n.r2 for n in nodes)
    assert best > nodes[0].r2 + 0.1
    # no setting is tried twice, except the deliberate re-runs of robustness tests and code changes
    names = SEARCH_PARAMETERS + LEVER_PARAMETERS + (STEP_BUDGET_PARAMETER,)
    settings = [tuple(n.config["training"].get(p) for p in names) for n in nodes
                if n.strategy not in ("robustness-test", "code-modification")]
    assert len(settings) == len(set(settings))


def test_safe_decision_always_validates():
    from agent.policies.heuristic import safe_decision

    mid = chain([0.5, 0.7, 0.2])
    d = validate_decision(safe_decision(mid, "refused twice"), mid)
    assert d.strategy == "robustness-test" and d.parent == mid.scores[0].id and "refused twice" in d.log.parent_rule
    end = chain([0.5, 0.7, 0.2, 0.4], n_iter_block=4)
    assert validate_decision(safe_decision(end, "x"), end).parent == "root"


# --------------------------------------------------------------------------- code modifications

ALL_EDITABLE = editable_functions(packaged_module_source())
LIBRARY_FUNCTIONS = {edit.function for edit in LIBRARY}


def plateau(r2s=(0.8, 0.5, 0.6, 0.55), n_iter_block=8, editable=ALL_EDITABLE, nodes=None):
    """A chain whose best R2 (node 1) is not improved by the last 3 nodes."""
    ctx = chain(list(r2s), n_iter_block=n_iter_block)
    return context(nodes or ctx.nodes, n_iter_block=n_iter_block, n_blocks=2, editable=editable)


def simulate(r2_of, n_iter_block, n_blocks, seed):
    """Drive the policy over a whole exploration; code edits keep the parent's config."""
    nodes = [node(1, None, 0.5)]
    decisions = []
    policy = HeuristicPolicy({"seed": seed})
    for i in range(1, n_iter_block * n_blocks):
        ctx = context(nodes, n_iter_block=n_iter_block, n_blocks=n_blocks, editable=ALL_EDITABLE)
        d = validate_decision(policy.decide(ctx), ctx)
        decisions.append((ctx, d))
        block = ctx.block + 1 if d.parent == "root" else ctx.block
        parent = None if d.parent == "root" else d.parent
        mutation = ({"parameter": f"[code] {d.code_modification.function}", "function": d.code_modification.function}
                    if d.code_modification else None)
        nodes.append(node(i + 1, parent, r2_of(i + 1), block=block, mutation=mutation, strategy=d.strategy))
    return decisions


@pytest.mark.parametrize("seed", range(4))
def test_no_code_change_for_the_first_four_nodes_of_a_block_nor_at_a_block_end(seed):
    decisions = simulate(lambda i: 0.5 + 0.01 * (i % 2), n_iter_block=7, n_blocks=3, seed=seed)
    coded = [ctx for ctx, d in decisions if d.code_modification is not None]
    assert coded, "a flat landscape must trigger code changes"
    for ctx, d in decisions:
        if ctx.is_block_end or ctx.next_iter_in_block <= 4:
            assert d.code_modification is None and d.strategy != "code-modification", (ctx.iteration, d.strategy)
    assert {ctx.next_iter_in_block for ctx in coded} <= {5, 6, 7}
    assert {ctx.block for ctx in coded} == {1, 2, 3}  # every block, the new blocks included


def test_plateau_from_the_fifth_node_on_proposes_a_library_edit_on_the_best_node():
    ctx = plateau()
    assert ctx.next_iter_in_block == 5
    d = decide(ctx)
    assert d.strategy == "code-modification" and d.parent == 1 and d.config_mutation is None
    mod = d.code_modification
    edit = next(e for e in LIBRARY if e.function == mod.function)
    assert (mod.new_source, mod.hypothesis, mod.change_summary) == (edit.new_source(), edit.hypothesis, edit.change_summary)
    assert "plateau" in d.log.parent_rule and d.log.next_parent == 1
    assert edit.hypothesis in d.memory_update.current_hypothesis
    assert mod.change_summary in d.memory_update.emerging_observations
    # the same chain one node earlier (next node = 4th of the block): no code
    assert decide(plateau((0.8, 0.5, 0.6))).code_modification is None


def test_two_failures_in_the_last_three_nodes_also_trigger_a_code_change():
    d = decide(plateau((0.5, 0.6, 0.05, 0.7, 0.02)))
    assert d.strategy == "code-modification" and d.parent == 4


def test_no_code_change_while_improving_or_right_after_a_code_change_or_on_a_retry():
    assert decide(plateau((0.5, 0.6, 0.7, 0.8))).code_modification is None
    ctx = plateau()
    ctx.nodes[-1].strategy = "code-modification"
    assert decide(ctx).code_modification is None
    retry = HeuristicPolicy({"seed": 0}).decide(plateau(), feedback="code_modification (train_step): smoke run crashed")
    assert retry.code_modification is None and retry.config_mutation is not None


def test_an_edit_already_on_the_branch_is_not_repeated():
    # node 2 (the best) changed train_step; nodes 3-5 descend from it
    nodes = [node(1, None, 0.8), node(2, 1, 0.85, mutation={"parameter": "[code] train_step", "function": "train_step"},
                                      strategy="code-modification"),
             node(3, 2, 0.5), node(4, 2, 0.5), node(5, 3, 0.5)]
    for seed in range(12):
        d = decide(context(nodes, n_iter_block=8, editable=ALL_EDITABLE), seed=seed)
        assert d.parent == 2 and d.code_modification.function != "train_step"
        only = decide(context(nodes, n_iter_block=8, editable=("train_step",)), seed=seed)
        assert only.parent == 1 and only.code_modification.function == "train_step"  # off the branch


def test_applied_edits_are_read_from_the_code_of_the_current_node_and_of_the_results_folder(tmp_path):
    packaged = packaged_module_source()
    clipped = check_code_modification(packaged, "train_step", LIBRARY_BY_NAME["grad-clip"].new_source())
    # two failures in the last three nodes; node 5 is the best (a re-run: no robustness-test)
    nodes = [node(1, None, 0.5), node(2, 1, 0.5), node(3, 2, 0.02), node(4, 3, 0.02), node(5, 4, 0.9)]
    nodes[-1].mutation = {"parameter": "seed", "old": 0, "new": 1}
    ctx = context(nodes, n_iter_block=8, editable=("train_step", "build_scheduler"))
    ctx.code = clipped  # the current node (5, the best) already clips: only the scheduler is left
    for seed in range(8):
        d = decide(ctx, seed=seed)
        assert d.parent == 5 and d.code_modification.function == "build_scheduler"
    # without ctx.code, node folders under results_dir tell: node 5's file has the cosine scheduler
    cosine = check_code_modification(packaged, "build_scheduler", LIBRARY_BY_NAME["cosine-lr"].new_source())
    for n in nodes:
        (tmp_path / n.dir).mkdir()
        (tmp_path / n.dir / "train_loop.py").write_text(cosine if n.id == 5 else packaged)
    ctx = context(nodes, n_iter_block=8, editable=("build_scheduler",))
    d = validate_decision(HeuristicPolicy({"seed": 0, "results_dir": str(tmp_path)}).decide(ctx), ctx)
    assert d.code_modification.function == "build_scheduler" and d.parent != 5


def test_same_seed_same_code_decision_and_seeds_vary_the_edit():
    first = decide(plateau(), seed=3).model_dump()
    assert first == decide(plateau(), seed=3).model_dump()
    chosen = {decide(plateau(), seed=s).code_modification.function for s in range(16)}
    assert len(chosen) > 1 and chosen <= LIBRARY_FUNCTIONS


@pytest.mark.parametrize("edit", LIBRARY, ids=lambda e: e.name)
def test_every_library_edit_passes_the_static_checks_and_leaves_cuda_graph_auto_eager(edit, tmp_path):
    from neuralgraph.cuda_graph import wants_cuda_graph
    from neuralgraph.io import file_sha256

    packaged = packaged_module_source()
    assert edit.function in ALL_EDITABLE
    child = check_code_modification(packaged, edit.function, edit.new_source())
    assert child != packaged and edit.applies_to(packaged) and not edit.applies_to(child)
    path = tmp_path / "train_loop.py"
    path.write_text(child)
    # cuda_graph "auto" replays only the packaged loop: an edited loop runs eagerly
    assert not wants_cuda_graph("auto", torch.device("cuda"), file_sha256(path), None)


@pytest.mark.slow
def test_a_library_edit_passes_the_real_smoke_run(tmp_path):
    edit = LIBRARY_BY_NAME["grad-clip"]
    result = validate_and_smoke(packaged_module_source(), edit.function, edit.new_source(), tmp_path / "smoke",
                                timeout_s=120, cache_dir=tmp_path / "cache")
    assert result.smoke.status == "ok" and result.smoke.steps > 0
    assert "clip_grad_norm_" in result.child_source


def test_offline_exploration_through_the_cli_puts_a_code_edit_on_a_branch(tmp_path):
    run_exploration(tmp_path, n_iter_block=8, n_blocks=1, schedule="1", seed=2, extra=["--smoke-timeout", "0"])
    coded = []
    for i in range(2, 9):
        proposal = json.loads((iter_dir(tmp_path, i) / "proposal.json").read_text())
        if proposal["strategy"] == "code-modification":
            coded.append(i)
            assert proposal["code_modified"] is True and proposal["mutation"]["function"] in LIBRARY_FUNCTIONS
            parent = iter_dir(tmp_path, proposal["parent"])
            assert (iter_dir(tmp_path, i) / "train_loop.py").read_text() != (parent / "train_loop.py").read_text()
            assert (iter_dir(tmp_path, i) / "code.diff").read_text().startswith("--- a/train_loop.py")
            record = decision_of(iter_dir(tmp_path, i - 1))
            assert record["policy"] == "heuristic" and record["attempts"][0]["accepted"] is True
        else:
            assert (iter_dir(tmp_path, i) / "code.diff").read_text() == "" or proposal["code_modified"] is False
    assert coded and min(coded) >= 5
    assert "CODE MODIFICATION:" in (iter_dir(tmp_path, 8) / "analysis.md").read_text()


def test_inert_levers_are_left_alone_while_others_remain():
    """The reference's low-rank recipe never applies L1 (l1_start_epoch = n_epochs), trains single
    steps (no Euler unroll to inject noise into) and has one neuron type (a fixed embedding):
    moving coeff_W_L1, noise_recurrent_level or the embedding's learning rate there trains the
    same network again (measured: identical connectivity_R2 in the 2026-12-06 study's runs)."""
    import random

    from agent.policies.heuristic import SEARCH_PARAMETERS, variant_mutations
    from neuralgraph.config import inert_training_fields, load_config

    config = load_config(REPO / "config" / "experiments" / "reference" / "lowrank.yaml").to_dict()
    inert = inert_training_fields(config)
    assert inert == {"coeff_W_L1", "learning_rate_embedding_start", "noise_recurrent_level"}
    moved = {m.parameter for seed in range(40)
             for m in variant_mutations(config["training"], 3, random.Random(seed), inert)}
    assert moved == set(SEARCH_PARAMETERS) - inert
    assert inert_training_fields({**config, "training": {**config["training"], "n_epochs": 3}}) == {
        "learning_rate_embedding_start", "noise_recurrent_level"}  # L1 acts in epoch 3
    unrolled = {**config["training"], "recurrent_training": True}
    assert "noise_recurrent_level" not in inert_training_fields({**config, "training": unrolled})
    ode = {**unrolled, "neural_ODE_training": True}
    assert "noise_recurrent_level" in inert_training_fields({**config, "training": ode})  # noise only in Euler steps
    learned = {**config, "graph_model": {**config["graph_model"], "learn_embedding": "always"}}
    assert "learning_rate_embedding_start" not in inert_training_fields(learned)  # the landscape's one-type a
    everything = variant_mutations(config["training"], 2, random.Random(0), set(SEARCH_PARAMETERS))
    assert len(everything) == 2  # nothing left to move: all parameters again, not an empty round


def test_the_heuristic_never_mutates_a_lever_its_node_cannot_use():
    """The heuristic's one-parameter move (every rule that steps a parameter uses it) never picks
    coeff_W_L1 on a node whose L1 never applies (l1_start_epoch = n_epochs), over many seeds;
    on the same node with L1 on, it does."""
    import random

    from agent.policies.heuristic import _mutate

    def moved(training):
        parent = node(1, None, 0.3, training=training)
        ctx = context([parent])
        return {_mutate(ctx, parent, random.Random(seed), (1.5, 2.0), list(SEARCH_PARAMETERS)).parameter
                for seed in range(60)}

    assert moved({"n_epochs": 2, "l1_start_epoch": 2, "coeff_W_L1": 1e-5}) == set(SEARCH_PARAMETERS) - {"coeff_W_L1"}
    assert moved({"n_epochs": 2, "l1_start_epoch": 0, "coeff_W_L1": 1e-5}) == set(SEARCH_PARAMETERS)
