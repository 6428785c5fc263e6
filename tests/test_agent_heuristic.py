"""The offline policy: deterministic per seed, the seed's strategy table, valid and sensible steps."""
from __future__ import annotations

from agent.decision import ALLOWED_PARAMETERS, validate_decision
from agent.policies.heuristic import SEARCH_PARAMETERS, HeuristicPolicy
from agent_helpers import context, fake_r2, node


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
    ctx = chain([0.85, 0.3, 0.4, 0.35])
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
        else:
            mutation = {"parameter": "seed", "old": 0, "new": 1}
        nodes.append(node(i + 1, d.parent, fake_r2(training), training=training, mutation=mutation,
                          strategy=d.strategy))
    best = max(n.r2 for n in nodes)
    assert best > nodes[0].r2 + 0.1
    # no setting is tried twice, except the deliberate re-runs of robustness tests
    settings = [tuple(n.config["training"][p] for p in SEARCH_PARAMETERS) for n in nodes if n.strategy != "robustness-test"]
    assert len(settings) == len(set(settings))


def test_safe_decision_always_validates():
    from agent.policies.heuristic import safe_decision

    mid = chain([0.5, 0.7, 0.2])
    d = validate_decision(safe_decision(mid, "refused twice"), mid)
    assert d.strategy == "robustness-test" and d.parent == mid.scores[0].id and "refused twice" in d.log.parent_rule
    end = chain([0.5, 0.7, 0.2, 0.4], n_iter_block=4)
    assert validate_decision(safe_decision(end, "x"), end).parent == "root"
