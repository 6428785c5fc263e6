"""Decision validation (every refusal names its field), the fallback chain, child config/code."""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import pytest

from agent.decision import (ALLOWED_PARAMETERS, Decision, DecisionInvalid, build_child, decision_json_schema,
                            validate_decision)
from agent.policies.base import (BackendConfigError, InvalidOutputError, RetryableBackendError, decide_with_fallback,
                                 get_policy)
from agent.policies.heuristic import HeuristicPolicy
from agent_helpers import ADAMW_OPTIMIZER, REPO, context, node
from tiny_configs import tiny_config_dict
from neuralgraph.config import ConfigError, parse_config

TRAIN_LOOP = (REPO / "neuralgraph" / "train_loop.py").read_text()


def make(parent: Any = 2, strategy: str = "exploit", mutation: Optional[dict] = None, code: Optional[dict] = None,
         next_parent: Any = None, **extra: Any) -> Decision:
    data = {"parent": parent, "strategy": strategy,
            "log": {"outcome": "converged", "mode": "success-exploit", "parent_rule": "highest UCB",
                    "observation": "fine", "next_parent": parent if next_parent is None else next_parent},
            "memory_update": {"emerging_observations": "notes"}, **extra}
    if mutation is not None:
        data["config_mutation"] = mutation
    if code is not None:
        data["code_modification"] = code
    return Decision.model_validate(data)


def mid_block_ctx(**kw):
    """Block 1 (8 iterations), iteration 5: nodes 1..5 in a chain with distinct lr_W."""
    nodes = [node(i, i - 1 if i > 1 else None, 0.5 + 0.05 * i, training={"learning_rate_W_start": 1e-3 * i})
             for i in range(1, 6)]
    return context(nodes, n_iter_block=8, **kw)


def refused(decision: Decision, ctx) -> str:
    with pytest.raises(DecisionInvalid) as info:
        validate_decision(decision, ctx)
    return str(info.value)


def test_valid_mutation_is_accepted_and_short_names_become_canonical():
    ctx = mid_block_ctx()
    ok = validate_decision(make(2, mutation={"parameter": "lr_W", "old": 2e-3, "new": 4e-3}), ctx)
    assert ok.config_mutation.parameter == "learning_rate_W_start"
    ok = validate_decision(make(3, mutation={"parameter": "training.coeff_W_L1", "new": 0.0}), ctx)
    assert ok.config_mutation.parameter == "coeff_W_L1"


@pytest.mark.parametrize("mutation, message", [
    ({"parameter": "batch_size", "new": 16}, "config_mutation.parameter = 'batch_size': batch_size is fixed for the whole experiment; allowed parameters: learning_rate_W_start"),
    ({"parameter": "time_step", "new": 4}, "time_step is fixed within a block; choose next_time_step at a block end"),
    ({"parameter": "claude.ucb_c", "new": 2.0}, "config_mutation.parameter = 'claude.ucb_c': claude keys are fixed"),
    ({"parameter": "simulation.n_neurons", "new": 10}, "the simulation is fixed for the whole experiment"),
    ({"parameter": "hidden_dim", "new": 10}, "'hidden_dim': not a mutable training parameter"),
    ({"parameter": "learning_rate_W_start", "new": 0.5}, "config_mutation.new = 0.5 for learning_rate_W_start: must be in 0.0001..0.03"),
    ({"parameter": "coeff_W_L1", "new": 1e-3}, "for coeff_W_L1: must be in 0 or 1e-06..0.0001"),
    ({"parameter": "noise_recurrent_level", "new": -0.1}, "must be in 0 or 0.0001..0.1"),
    ({"parameter": "data_augmentation_loop", "new": 2.5}, "must be an integer in 1..400"),
    ({"parameter": "learning_rate_W_start", "new": 1e-3, "data_augmentation_loop": 401}, "config_mutation.data_augmentation_loop = 401: must be in 1..400"),
    ({"parameter": "lr_W", "old": 9e-3, "new": 1e-3}, "config_mutation.old = 0.009: the parent's learning_rate_W_start is 0.002"),
    ({"parameter": "recurrent_training_start_epoch", "new": 2}, "must be < training.n_epochs = 1"),
])
def test_each_invalid_mutation_is_refused_with_its_reason(mutation, message):
    assert message in refused(make(2, mutation=mutation), mid_block_ctx())


def test_parent_rules():
    ctx = mid_block_ctx()
    mutation = {"parameter": "lr", "new": 1e-4}
    assert "parent = 9: must be a node of block 1's tree: one of [1, 2, 3, 4, 5]" in refused(make(9, mutation=mutation), ctx)
    assert "parent = 'root': must be a node of block 1's tree" in refused(make("root", mutation=mutation), ctx)
    assert "log.next_parent = 3: must equal parent = 2" in refused(make(2, mutation=mutation, next_parent=3), ctx)
    # block end: the next node opens a new block -> root only
    end = context([node(i, i - 1 or None) for i in range(1, 5)], n_iter_block=4, n_blocks=2, schedule=[1, 4])
    assert "iteration 4 ends block 1, so the next node starts block 2 and must have parent 'root'" in refused(make(4), end)
    assert validate_decision(make("root"), end).parent == "root"


def test_change_kind_rules():
    ctx = mid_block_ctx()
    both = make(2, strategy="code-modification", mutation={"parameter": "lr", "new": 1e-4},
                code={"function": "train_step", "new_source": "x", "hypothesis": "h", "change_summary": "s"})
    assert "give exactly one (one change at a time)" in refused(both, ctx)
    assert "exactly one is required" in refused(make(2), ctx)
    assert validate_decision(make(2, strategy="robustness-test"), ctx).config_mutation is None
    code = {"function": "train_step", "new_source": "x", "hypothesis": "h", "change_summary": "s"}
    assert "a code_modification needs strategy 'code-modification'" in refused(make(2, code=code), ctx)
    assert "strategy = 'code-modification': code_modification is missing" in refused(
        make(2, strategy="code-modification", mutation={"parameter": "lr", "new": 1e-4}), ctx)


def test_no_code_change_in_the_first_four_iterations_of_a_block():
    code = {"function": "train_step", "new_source": "x", "hypothesis": "h", "change_summary": "s"}
    early = context([node(i, i - 1 or None) for i in range(1, 4)], n_iter_block=8)  # child = iteration 4
    assert "not allowed for the first 4 iterations of a block (the next node is iteration 4" in refused(
        make(3, strategy="code-modification", code=code), early)
    later = mid_block_ctx()  # child = iteration 6
    validate_decision(make(5, strategy="code-modification", code=code), later)
    other = dict(code, function="evaluate")
    assert "code_modification.function = 'evaluate': only these functions may be edited: train_step" in refused(
        make(5, strategy="code-modification", code=other), later)


def test_time_step_rules():
    mid = mid_block_ctx()
    assert "next_time_step = 4: time_step is fixed within a block (block 1 uses 1)" in refused(
        make(2, mutation={"parameter": "lr", "new": 1e-4}, next_time_step=4), mid)
    end = context([node(i, i - 1 or None) for i in range(1, 5)], n_iter_block=4, n_blocks=2)  # agent schedule
    assert "next_time_step: required at a block end" in refused(make("root"), end)
    assert "next_time_step = 3: must be one of 1, 4, 16, 32, 64" in refused(make("root", next_time_step=3), end)
    assert validate_decision(make("root", next_time_step=16), end).next_time_step == 16


def test_schema_is_plain_json_for_structured_output():
    schema = decision_json_schema()
    assert set(schema["required"]) == {"parent", "strategy", "log", "memory_update"}
    assert "code-modification" in schema["properties"]["strategy"]["enum"]
    assert schema["additionalProperties"] is False


# --------------------------------------------------------------------------- fallback chain


class ScriptedLLM:
    """Stands in for the remote LLM service: replies from a script, records the feedback it got."""

    name = "anthropic"

    def __init__(self, *replies):
        self.replies = list(replies)
        self.feedback: list[Optional[str]] = []
        self.last_call = None

    def decide(self, ctx, feedback=None):
        self.feedback.append(feedback)
        self.last_call = {"model": "test-model", "request_id": f"req_{len(self.feedback)}"}
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply


def test_invalid_twice_then_heuristic_decides_and_record_says_why():
    ctx = mid_block_ctx()
    bad = make(2, mutation={"parameter": "batch_size", "new": 64})
    llm = ScriptedLLM(bad, bad)
    outcome = decide_with_fallback(llm, ctx, fallback=HeuristicPolicy({"seed": 1}))
    assert outcome.policy.startswith("heuristic (fallback after: config_mutation.parameter = 'batch_size'")
    assert [a.policy for a in outcome.attempts] == ["anthropic", "anthropic", "heuristic"]
    assert [a.accepted for a in outcome.attempts] == [False, False, True]
    assert llm.feedback[0] is None and "batch_size is fixed" in llm.feedback[1]
    assert outcome.attempts[1].call == {"model": "test-model", "request_id": "req_2"}
    validate_decision(outcome.decision, ctx)


def test_retry_with_reason_can_succeed():
    ctx = mid_block_ctx()
    good = make(2, mutation={"parameter": "lr", "new": 1e-4})
    llm = ScriptedLLM(InvalidOutputError("stop_reason max_tokens"), good)
    outcome = decide_with_fallback(llm, ctx, fallback=HeuristicPolicy({}))
    assert outcome.policy == "anthropic" and outcome.decision.parent == 2
    assert llm.feedback[1] == "unusable output: stop_reason max_tokens"


def test_unavailable_backend_raises_unless_offline_fallback_and_config_errors_propagate():
    ctx = mid_block_ctx()
    with pytest.raises(RetryableBackendError):
        decide_with_fallback(ScriptedLLM(RetryableBackendError("529 overloaded")), ctx, fallback=HeuristicPolicy({}))
    outcome = decide_with_fallback(ScriptedLLM(RetryableBackendError("529 overloaded")), ctx,
                                   fallback=HeuristicPolicy({}), offline_on_unavailable=True)
    assert outcome.policy == "heuristic (fallback after: backend unavailable: 529 overloaded)"
    with pytest.raises(BackendConfigError, match="no API key"):
        decide_with_fallback(ScriptedLLM(BackendConfigError("no API key")), ctx, fallback=HeuristicPolicy({}),
                             offline_on_unavailable=True)


def test_registry_names_unknown_backends():
    with pytest.raises(BackendConfigError, match="backend = 'gpt': must be one of heuristic, replay, anthropic"):
        get_policy("gpt", {})
    assert get_policy("heuristic", {"seed": 3}).name == "heuristic"


# --------------------------------------------------------------------------- child config and code


def _cfg(**training):
    data = tiny_config_dict()
    data["training"].update(training)
    return parse_config(data)


def test_child_config_is_the_parents_plus_the_mutation_not_the_current_nodes():
    ctx = mid_block_ctx()  # current node 5 has lr_W 5e-3; parent 2 has 2e-3
    parent_cfg = parse_config(ctx.node(2).config)
    assert parent_cfg.training.learning_rate_W_start == 2e-3 and ctx.config["training"]["learning_rate_W_start"] == 5e-3
    decision = validate_decision(make(2, mutation={"parameter": "lr", "old": 1e-3, "new": 1e-4,
                                                   "data_augmentation_loop": 5}), ctx)
    plan = build_child(decision, ctx, parent_cfg=parent_cfg, parent_code=TRAIN_LOOP, base_cfg=_cfg(),
                       next_time_step=None, child_id=6, child_dir="iter_006", policy_label="heuristic")
    child, parent = plan.config.to_dict(), parent_cfg.to_dict()
    assert child["training"]["learning_rate_W_start"] == 2e-3
    assert child["training"]["learning_rate_start"] == 1e-4
    assert child["training"]["data_augmentation_loop"] == 5
    for key in set(parent["training"]) - {"learning_rate_start", "data_augmentation_loop"}:
        assert child["training"][key] == parent["training"][key], key
    assert {k: v for k, v in child.items() if k != "training"} == {k: v for k, v in parent.items() if k != "training"}
    assert plan.code == TRAIN_LOOP and plan.diff == ""
    assert plan.proposal == {**plan.proposal, "id": 6, "parent": 2, "block": 1, "iteration": 6, "dir": "iter_006",
                             "code_modified": False, "derived_from": 2,
                             "mutation": {"parameter": "learning_rate_start", "old": 1e-3, "new": 1e-4,
                                          "data_augmentation_loop": {"old": 2, "new": 5}}}


def test_robustness_test_reruns_with_the_next_seed_and_fixed_fields_are_rechecked():
    ctx = mid_block_ctx()
    plan = build_child(validate_decision(make(3, strategy="robustness-test"), ctx), ctx, parent_cfg=_cfg(seed=4),
                       parent_code=TRAIN_LOOP, base_cfg=_cfg(), next_time_step=None, child_id=6, child_dir="iter_006",
                       policy_label="heuristic")
    assert plan.config.training.seed == 5 and plan.proposal["mutation"] == {"parameter": "seed", "old": 4, "new": 5}
    with pytest.raises(ConfigError, match="training.batch_size changed from 8 to 16"):
        build_child(make(3, strategy="robustness-test"), ctx, parent_cfg=_cfg(batch_size=16), parent_code=TRAIN_LOOP,
                    base_cfg=_cfg(), next_time_step=None, child_id=6, child_dir="d", policy_label="h")


def test_block_end_root_starts_from_the_best_node_with_the_new_time_step():
    nodes = [node(1, None, 0.7), node(2, 1, 0.95), node(3, 2, 0.8), node(4, 3, 0.6)]
    ctx = context(nodes, n_iter_block=4, n_blocks=2, schedule=[1, 4])
    decision = validate_decision(make("root"), ctx)
    plan = build_child(decision, ctx, parent_cfg=_cfg(), parent_code=TRAIN_LOOP, base_cfg=_cfg(), next_time_step=4,
                       child_id=5, child_dir="iter_005", policy_label="heuristic")
    assert plan.config.training.time_step == 4
    assert plan.proposal["parent"] is None and plan.proposal["block"] == 2 and plan.proposal["derived_from"] == 2




def test_code_modification_lives_on_its_branch():
    ctx = mid_block_ctx(editable=("build_optimizer",))
    code = {"function": "build_optimizer", "new_source": ADAMW_OPTIMIZER, "hypothesis": "AdamW", "change_summary": "AdamW"}
    decision = validate_decision(make(5, strategy="code-modification", code=code), ctx)
    plan = build_child(decision, ctx, parent_cfg=_cfg(), parent_code=TRAIN_LOOP, base_cfg=_cfg(), next_time_step=None,
                       child_id=6, child_dir="iter_006", policy_label="anthropic")
    assert "torch.optim.AdamW(" in plan.code and "torch.optim.AdamW(" not in TRAIN_LOOP
    assert plan.proposal["code_modified"] is True and plan.proposal["mutation"]["function"] == "build_optimizer"
    assert "+    return torch.optim.AdamW(" in plan.diff and "-    return torch.optim.Adam(" in plan.diff
    # a sibling made from another parent by a config mutation keeps that parent's code untouched
    sibling = build_child(validate_decision(make(4, mutation={"parameter": "lr", "new": 1e-4}), ctx),
                          ctx, parent_cfg=_cfg(), parent_code=TRAIN_LOOP, base_cfg=_cfg(), next_time_step=None,
                          child_id=7, child_dir="iter_007", policy_label="heuristic")
    assert sibling.code == TRAIN_LOOP
    # the child of the modified node inherits the modification
    grandchild = build_child(validate_decision(make(5, mutation={"parameter": "lr", "new": 1e-4}), ctx), ctx,
                             parent_cfg=_cfg(), parent_code=plan.code, base_cfg=_cfg(), next_time_step=None,
                             child_id=8, child_dir="iter_008", policy_label="heuristic")
    assert grandchild.code == plan.code


def test_a_refused_code_edit_becomes_an_invalid_decision():
    ctx = mid_block_ctx(editable=("build_optimizer",))
    code = {"function": "build_optimizer", "new_source": "def build_optimizer(model, cfg):\n    import os\n    return None\n",
            "hypothesis": "h", "change_summary": "s"}
    with pytest.raises(DecisionInvalid, match=r"code_modification \(build_optimizer\):.*os"):
        build_child(validate_decision(make(5, strategy="code-modification", code=code), ctx), ctx, parent_cfg=_cfg(),
                    parent_code=TRAIN_LOOP, base_cfg=_cfg(), next_time_step=None, child_id=6, child_dir="d",
                    policy_label="x")


def test_parameter_table_matches_the_seed_ranges():
    # lr_W: the seed's 1e-4..1e-2, widened to 3e-2 so the reference's g=1 recipe (1.5e-2) is reachable (issue 18)
    assert (ALLOWED_PARAMETERS["learning_rate_W_start"].low, ALLOWED_PARAMETERS["learning_rate_W_start"].high) == (1e-4, 3e-2)
    assert (ALLOWED_PARAMETERS["learning_rate_start"].low, ALLOWED_PARAMETERS["learning_rate_start"].high) == (1e-5, 1e-3)
    assert (ALLOWED_PARAMETERS["coeff_W_L1"].low, ALLOWED_PARAMETERS["coeff_W_L1"].high) == (1e-6, 1e-4)
    assert ALLOWED_PARAMETERS["noise_recurrent_level"].high == 0.1
    assert (ALLOWED_PARAMETERS["data_augmentation_loop"].low, ALLOWED_PARAMETERS["data_augmentation_loop"].high) == (1, 400)


# ----------------------------------------------------------------------------- fixed step budget (study)

def _fixed_base(**training):
    data = tiny_config_dict(**{"claude.fixed_step_budget": True, "claude.data_augmentation_loop": 2,
                               "claude.n_epochs": 1})
    data["training"].update(training)
    return parse_config(data)


@pytest.mark.parametrize("mutation", [
    {"parameter": "data_augmentation_loop", "old": 2, "new": 4},
    {"parameter": "n_epochs", "old": 1, "new": 3},
    {"parameter": "lr", "old": 1e-3, "new": 1e-4, "data_augmentation_loop": 8},  # the ride-along too
])
def test_fixed_budget_mode_neutralises_a_change_of_the_step_budget_and_records_it(mutation):
    ctx = mid_block_ctx()
    decision = validate_decision(make(2, mutation=mutation), ctx)
    plan = build_child(decision, ctx, parent_cfg=_cfg(), parent_code=TRAIN_LOOP, base_cfg=_fixed_base(),
                       next_time_step=None, child_id=6, child_dir="iter_006", policy_label="anthropic")
    assert (plan.config.training.data_augmentation_loop, plan.config.training.n_epochs) == (2, 1)
    asked = {k: v for k, v in plan.proposal["step_budget_neutralised"].items()}
    name = "data_augmentation_loop" if mutation["parameter"] in ("data_augmentation_loop", "lr") else "n_epochs"
    assert asked == {name: {"asked": mutation.get("data_augmentation_loop", mutation["new"]), "kept": 2 if name != "n_epochs" else 1}}
    assert plan.proposal["mutation"]["parameter"] == ("learning_rate_start" if mutation["parameter"] == "lr"
                                                      else mutation["parameter"])  # what was asked stays on record
    if mutation["parameter"] == "lr":
        assert plan.config.training.learning_rate_start == 1e-4  # the other lever is kept
    # the same decision outside the fixed-budget mode changes the step budget
    free = build_child(decision, ctx, parent_cfg=_cfg(), parent_code=TRAIN_LOOP, base_cfg=_cfg(),
                       next_time_step=None, child_id=6, child_dir="iter_006", policy_label="anthropic")
    assert "step_budget_neutralised" not in free.proposal
    assert (free.config.training.data_augmentation_loop, free.config.training.n_epochs) != (2, 1)


def test_with_a_time_target_the_fixed_mode_holds_data_augmentation_loop_only():
    ctx = mid_block_ctx()
    base = _fixed_base(training_time_target_min=0.5)
    epochs = build_child(validate_decision(make(2, mutation={"parameter": "n_epochs", "old": 1, "new": 2}), ctx), ctx,
                         parent_cfg=_cfg(training_time_target_min=0.5), parent_code=TRAIN_LOOP, base_cfg=base,
                         next_time_step=None, child_id=6, child_dir="iter_006", policy_label="heuristic")
    assert epochs.config.training.n_epochs == 2 and "step_budget_neutralised" not in epochs.proposal


def test_the_heuristic_does_not_double_the_step_budget_in_fixed_budget_mode():
    lr = {"parameter": "learning_rate_W_start", "old": 1e-3, "new": 2e-3}
    nodes = [node(1, None, 0.79, training={"data_augmentation_loop": 2}),
             node(2, 1, 0.81, training={"data_augmentation_loop": 2}, mutation=lr)]
    free = context(nodes, n_iter_block=8)
    assert HeuristicPolicy({"seed": 0}).decide(free).config_mutation.parameter == "data_augmentation_loop"
    fixed = dataclasses.replace(free, base_config=_fixed_base().to_dict())
    for seed in range(10):
        mutation = HeuristicPolicy({"seed": seed}).decide(fixed).config_mutation
        assert mutation is None or mutation.parameter not in ("data_augmentation_loop", "n_epochs")


def test_the_warm_up_is_held_only_where_it_changes_steps_x_horizon():
    ctx = mid_block_ctx()
    base = parse_config(tiny_config_dict(**{"claude.fixed_step_budget": True, "claude.n_epochs": 2, "training.n_epochs": 2}))
    decision = validate_decision(make(2, mutation={"parameter": "recurrent_training_start_epoch", "old": 0, "new": 1}),
                                 dataclasses.replace(ctx, nodes=[dataclasses.replace(n, config={
                                     **n.config, "training": {**n.config["training"], "n_epochs": 2}}) for n in ctx.nodes]))
    at_1 = build_child(decision, ctx, parent_cfg=_cfg(n_epochs=2), parent_code=TRAIN_LOOP, base_cfg=base,
                       next_time_step=None, child_id=6, child_dir="iter_006", policy_label="random")
    assert at_1.config.training.recurrent_training_start_epoch == 1 and "step_budget_neutralised" not in at_1.proposal
    at_4 = build_child(decision, ctx, parent_cfg=_cfg(n_epochs=2, time_step=4), parent_code=TRAIN_LOOP, base_cfg=base,
                       next_time_step=None, child_id=6, child_dir="iter_006", policy_label="random")
    assert at_4.config.training.recurrent_training_start_epoch == 0
    assert at_4.proposal["step_budget_neutralised"] == {"recurrent_training_start_epoch": {"asked": 1, "kept": 0}}
