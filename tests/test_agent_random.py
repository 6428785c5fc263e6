"""The random-search baseline: inside every range, log-uniform where the rule says so,
parents uniform over the block, reproducible per seed, never code, and through the CLI."""
from __future__ import annotations

import json
import math
from collections import Counter

import pytest

from agent.cli import main
from agent.decision import ALLOWED_PARAMETERS, EPOCH_INDEX_PARAMETERS, validate_decision
from agent.policies.base import get_policy
from agent.policies.random_policy import BUDGET_PARAMETERS, RandomPolicy, searched_parameters
from agent_helpers import context, decision_of, iter_dir, node, run_exploration
from neuralgraph.config import ALLOWED_TIME_STEPS

N_DRAWS = 1500


def block(n_nodes: int = 4, n_epochs: int = 4, r2s=None):
    """A block of ``n_nodes`` (a chain) whose nodes train for ``n_epochs`` epochs."""
    r2s = r2s or [0.5] * n_nodes
    return [node(i, None if i == 1 else i - 1, r2=r2s[i - 1], training={"n_epochs": n_epochs})
            for i in range(1, n_nodes + 1)]


def draws(nodes, seeds=range(N_DRAWS), **ctx_args):
    ctx = context(nodes, **ctx_args)
    return ctx, [RandomPolicy({"seed": s}).decide(ctx) for s in seeds]


def test_registered_as_a_backend():
    assert isinstance(get_policy("random", {"seed": 3}), RandomPolicy)


def test_every_draw_is_valid_and_inside_its_range():
    ctx, decisions = draws(block())
    seen = Counter()
    for decision in decisions:
        assert validate_decision(decision, ctx) == decision  # the same check every policy passes
        mutation = decision.config_mutation
        rule = ALLOWED_PARAMETERS[mutation.parameter]
        assert rule.low <= mutation.new <= rule.high, (mutation, rule.allowed())
        assert decision.code_modification is None and decision.strategy == "explore"
        old = ctx.node(decision.parent).config["training"][mutation.parameter]
        assert mutation.old == pytest.approx(old)
        seen[mutation.parameter] += 1
    assert set(seen) == {rule.name for rule in searched_parameters()}
    assert not BUDGET_PARAMETERS & set(seen)  # the time budget knob is never drawn
    for name, count in seen.items():  # the parameter itself is drawn uniformly
        assert abs(count - N_DRAWS / len(seen)) < 0.25 * N_DRAWS / len(seen), seen


def test_log_scale_parameters_are_log_uniform_and_integers_cover_their_range():
    ctx, decisions = draws(block(n_epochs=4))
    values: dict[str, list[float]] = {}
    for decision in decisions:
        values.setdefault(decision.config_mutation.parameter, []).append(decision.config_mutation.new)
    for name, drawn in values.items():
        rule = ALLOWED_PARAMETERS[name]
        if rule.integer:
            parent_value = ctx.node(1).config["training"][name]  # excluded: a repeat teaches nothing
            legal = {v for v in range(int(rule.low), int(rule.high) + 1) if v < 4} if \
                name in EPOCH_INDEX_PARAMETERS else set(range(int(rule.low), int(rule.high) + 1))
            assert set(drawn) <= legal and parent_value not in drawn
            continue
        if rule.log_scale:  # half the draws below the geometric middle, a quarter in each log quarter
            fractions = [(math.log(v) - math.log(rule.low)) / (math.log(rule.high) - math.log(rule.low)) for v in drawn]
        else:
            fractions = [(v - rule.low) / (rule.high - rule.low) for v in drawn]
        for q in (0.25, 0.5, 0.75):
            share = sum(f < q for f in fractions) / len(fractions)
            assert abs(share - q) < 0.12, (name, q, share, len(fractions))


def test_start_epoch_respects_the_epoch_count_through_the_validator():
    ctx, decisions = draws(block(n_epochs=3))
    epochs = {d.config_mutation.new for d in decisions if d.config_mutation.parameter == "recurrent_training_start_epoch"}
    assert epochs and epochs <= {1.0, 2.0}  # < n_epochs = 3, and not the parent's 0


def test_parents_are_uniform_over_the_current_block_only():
    earlier = [node(i, None if i == 1 else i - 1, block=1, iteration=i) for i in range(1, 5)]
    current = [node(i, None if i == 5 else i - 1, block=2, iteration=i, r2=0.3 * (i - 4)) for i in range(5, 8)]
    ctx, decisions = draws(earlier + current, n_iter_block=4, n_blocks=3, schedule=[1, 1, 1])
    counts = Counter(d.parent for d in decisions)
    assert set(counts) == {5, 6, 7}  # not UCB, not R2: every node of block 2 alike
    for count in counts.values():
        assert abs(count - N_DRAWS / 3) < 0.15 * N_DRAWS / 3, counts


def test_reproducible_per_seed_and_seeds_differ():
    nodes = block()
    ctx = context(nodes)
    first = [RandomPolicy({"seed": s}).decide(ctx).model_dump() for s in range(50)]
    again = [RandomPolicy({"seed": s}).decide(ctx).model_dump() for s in range(50)]
    assert first == again
    assert len({json.dumps(d, sort_keys=True) for d in first}) >= 40  # integer draws may coincide
    retry = RandomPolicy({"seed": 0}).decide(ctx, feedback="refused")
    assert retry.model_dump() != first[0]  # a retry does not repeat the refused draw


def test_no_code_edit_even_on_a_plateau_late_in_a_block():
    nodes = block(n_nodes=7, r2s=[0.9, 0.5, 0.5, 0.5, 0.05, 0.05, 0.05])
    ctx, decisions = draws(nodes, seeds=range(200))
    assert all(d.code_modification is None and d.config_mutation is not None for d in decisions)


def test_block_end_opens_the_next_block_from_root():
    nodes = block(n_nodes=8)
    ctx, scheduled = draws(nodes, seeds=range(50), schedule=[1, 16])
    for decision in scheduled:
        assert decision.parent == "root" and decision.next_time_step == 16 and decision.config_mutation is None
        validate_decision(decision, ctx)
    ctx, free = draws(nodes, seeds=range(300), schedule=None)
    drawn = Counter(d.next_time_step for d in free)
    assert set(drawn) == set(ALLOWED_TIME_STEPS)
    for d in free:
        validate_decision(d, ctx)


def test_random_exploration_through_the_cli(tmp_path):
    """`python -m agent decide --backend random` drives a whole exploration, reproducibly."""
    runs = []
    for name in ("a", "b"):
        results = tmp_path / name
        run_exploration(results, n_iter_block=4, n_blocks=2, schedule="1,4", backend="random", seed=11)
        runs.append(results)
    for i in range(1, 9):
        a = decision_of(iter_dir(runs[0], i))
        b = decision_of(iter_dir(runs[1], i))
        assert a["policy"] == "random" and a["decision"] == b["decision"]
        assert [x["policy"] for x in a["attempts"]] == ["random"]
        if i < 8 and not a["is_block_end"]:
            proposal = json.loads((iter_dir(runs[0], i + 1) / "proposal.json").read_text())
            rule = ALLOWED_PARAMETERS[proposal["mutation"]["parameter"]]
            assert rule.check(proposal["mutation"]["new"]) is None and proposal["policy"] == "random"


def test_cli_lists_every_registered_backend(capsys):
    with pytest.raises(SystemExit):
        main(["decide", "--backend", "gpt"])
    err = capsys.readouterr().err
    assert "invalid choice: 'gpt'" in err
    for backend in ("heuristic", "replay", "anthropic", "random", "claude-code"):
        assert backend in err


def test_workflow_schema_offers_every_registered_backend():
    import yaml

    from agent.policies.base import BACKENDS
    from agent_helpers import REPO

    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    assert set(schema["properties"]["agent"]["properties"]["backend"]["enum"]) == set(BACKENDS)
