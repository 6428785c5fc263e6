"""Rounds of K slots: virtual-visit UCB, slot roles, one decision per round, per-child refusals."""
from __future__ import annotations

import json

import pytest

import agent.decide as decide_stage
from agent.cli import main
from agent.context import PlannedChild, slot_roles
from agent.decision import Decision
from agent.tree import score_block
from agent_helpers import context, fake_analyze, iter_dir, node, ucb_args, write_experiment_config


def hand_tree():
    """1 (R 0.5) -> 2 (0.9) -> 4 (0.92); 1 -> 3 (0.6). With c = 1: sqrt(N) = 2."""
    return [node(1, None, 0.5), node(2, 1, 0.9), node(3, 1, 0.6), node(4, 2, 0.92)]


def test_virtual_visits_match_the_hand_computed_scores():
    nodes = hand_tree()
    plain = {s.id: round(s.ucb, 4) for s in score_block(nodes, 1, 1.0)}
    # visits 4, 2, 1, 1 -> 0.5 + 2/5, 0.9 + 2/3, 0.6 + 2/2, 0.92 + 2/2
    assert plain == {1: 0.9, 2: 1.5667, 3: 1.6, 4: 1.92}
    # one child already given to node 4: a visit of 4, of its parent 2 and of the root 1
    virtual = {s.id: round(s.ucb, 4) for s in score_block(nodes, 1, 1.0, virtual_parents=[4])}
    assert virtual == {1: round(0.5 + 2 / 6, 4), 2: 1.4, 3: 1.6, 4: round(0.92 + 2 / 3, 4)}


def test_slots_spread_over_the_tree_instead_of_piling_on_one_node():
    """Each exploit slot takes the highest UCB after counting the earlier slots' children."""
    nodes = hand_tree()
    picked: list[int] = []
    for slot in range(1, 4):
        ctx = context(nodes, iteration=4)
        ctx.ucb_c, ctx.slots, ctx.slot = 1.0, 3, slot
        ctx.planned = [PlannedChild(i + 1, "exploit", parent, {}) for i, parent in enumerate(picked)]
        picked.append(ctx.scores[0].id)
    assert picked == [4, 3, 4]  # without virtual visits: [4, 4, 4]


def test_roles_per_slot_count():
    assert slot_roles(1) == ["exploit"]
    assert slot_roles(2) == ["exploit", "explore"]
    assert slot_roles(4) == ["exploit", "exploit", "explore", "principle-test"]
    assert slot_roles(3, block_start=True) == ["root", "variant", "variant"]


# --------------------------------------------------------------------------- one decision per round

K = 3


def _child(parent: int, parameter: str, new: float) -> dict:
    return {"parent": parent, "strategy": "exploit",
            "log": {"outcome": "partial", "mode": "success-exploit", "parent_rule": "test", "observation": "-",
                    "next_parent": parent},
            "memory_update": {"emerging_observations": f"slot child {parameter}={new}"},
            "config_mutation": {"parameter": parameter, "new": new}}


class RoundPolicy:
    """Answers a whole round in one call: a good child, a child out of range, a repeat of the first."""

    name = "fake-llm"

    def __init__(self):
        self.round_calls = 0
        self.slot_calls: list[tuple[int, str]] = []
        self.last_call = None

    def decide_round(self, contexts):
        self.round_calls += 1
        self.last_call = {"call": "round", "slots": len(contexts)}
        good = _child(1, "learning_rate_W_start", 0.004)
        return [Decision.model_validate(good),
                Decision.model_validate(_child(1, "learning_rate_W_start", 5.0)),  # far outside the range
                Decision.model_validate(good)]  # the same child as slot 1

    def decide(self, ctx, feedback=None):
        self.slot_calls.append((ctx.slot, feedback or ""))
        self.last_call = {"call": "slot", "slot": ctx.slot}
        bad = _child(1, "learning_rate_W_start", 5.0) if ctx.slot == 2 else _child(1, "learning_rate_W_start", 0.004)
        return Decision.model_validate(bad)


def _round_args(results, exp, extra=()):
    members = [iter_dir(results, i) for i in range(1, K + 1)]
    return ["decide", "--slots", str(K), "--iteration", str(K), "--n-iter-block", "6", "--n-blocks", "1",
            "--schedule", "1", "--backend", "anthropic", "--node", *[str(m / "node.json") for m in members],
            "--ucb", str(members[-1] / "ucb_scores.txt"),
            "--analysis-log", *[str(m / "analysis.log") for m in members],
            "--config", *[str(m / "config.yaml") for m in members],
            "--code", *[str(m / "train_loop.py") for m in members],
            "--base-config", str(exp), "--results-dir", str(results), "--out-dir", str(members[-1]),
            "--next-dir", *[str(iter_dir(results, i)) for i in range(K + 1, 2 * K + 1)], *extra]


@pytest.fixture
def first_round(tmp_path):
    exp = write_experiment_config(tmp_path / "exp.yaml", **{"claude.n_iter_block": 6})
    assert main(["init", "--config", str(exp), "--out-dir", str(iter_dir(tmp_path, 1)), "--schedule", "1",
                 "--slots", str(K)]) == 0
    for i in range(1, K + 1):
        fake_analyze(iter_dir(tmp_path, i))
        assert main(ucb_args(tmp_path, i)) == 0
    return tmp_path, exp


def test_init_writes_the_root_and_its_variants(first_round):
    results, _ = first_round
    proposals = [json.loads((iter_dir(results, i) / "proposal.json").read_text()) for i in range(1, K + 1)]
    assert [(p["id"], p["parent"], p["round"], p["slot"], p["role"]) for p in proposals] == [
        (1, None, 1, 1, "root"), (2, 1, 1, 2, "variant"), (3, 1, 1, 3, "variant")]
    changed = [p["mutation"]["parameter"] for p in proposals[1:]]
    assert len(set(changed)) == K - 1  # distinct one-mutation variants


def test_batched_decision_keeps_good_children_and_replaces_bad_and_duplicate(first_round, monkeypatch):
    results, exp = first_round
    policy = RoundPolicy()
    monkeypatch.setattr(decide_stage, "get_policy", lambda backend, options: policy)
    assert main(_round_args(results, exp, ["--smoke-timeout", "0"])) == 0
    assert policy.round_calls == 1  # one call for the whole round
    record = json.loads((iter_dir(results, K) / "decision.json").read_text())
    slots = record["slots"]
    assert [s["role"] for s in slots] == ["exploit", "explore", "principle-test"]
    # slot 1: the round answer's child, accepted as it was
    assert slots[0]["policy"] == "fake-llm" and slots[0]["next"]["mutation"]["new"] == 0.004
    # slot 2: refused (range), retried once with the reason, then the heuristic's child for that slot
    assert "learning_rate_W_start" in slots[1]["attempts"][0]["reason"]
    assert (2, slots[1]["attempts"][0]["reason"]) in policy.slot_calls
    assert slots[1]["policy"].startswith("heuristic (fallback after:")
    # slot 3: the same config and code as slot 1 -> refused as a duplicate, then replaced
    assert slots[2]["attempts"][0]["reason"].startswith("duplicate: slot 3's child would have the same config")
    assert slots[2]["policy"].startswith("heuristic (fallback after:")
    trainings = [json.loads(json.dumps(__import__("yaml").safe_load((iter_dir(results, i) / "config.yaml")
                                                                       .read_text())["training"]))
                 for i in range(K + 1, 2 * K + 1)]
    assert len({json.dumps(t, sort_keys=True) for t in trainings}) == K  # three different children
    proposals = [json.loads((iter_dir(results, i) / "proposal.json").read_text()) for i in range(K + 1, 2 * K + 1)]
    assert [(p["id"], p["round"], p["slot"], p["role"]) for p in proposals] == [
        (4, 2, 1, "exploit"), (5, 2, 2, "explore"), (6, 2, 3, "principle-test")]
    # the round's K log entries, in node order, in memory.md and the full log
    memory = (iter_dir(results, K) / "memory.md").read_text()
    assert memory.index("## Iter 1:") < memory.index("## Iter 2:") < memory.index("## Iter 3:")
    assert memory.rstrip().splitlines()[-1] != "" and "### Emerging Observations" in memory
    assert memory.index("### Emerging Observations") > memory.index("## Iter 3:")
    full_log = (iter_dir(results, K) / "analysis.md").read_text()
    assert full_log.index("## Iter 1:") < full_log.index("## Iter 2:") < full_log.index("## Iter 3:")


def test_heuristic_round_gives_every_slot_a_different_child(first_round):
    results, exp = first_round
    args = _round_args(results, exp)
    args[args.index("--backend") + 1] = "heuristic"
    assert main(args) == 0
    record = json.loads((iter_dir(results, K) / "decision.json").read_text())
    assert [s["policy"] for s in record["slots"]] == ["heuristic"] * K
    configs = {(iter_dir(results, i) / "config.yaml").read_text() for i in range(K + 1, 2 * K + 1)}
    assert len(configs) == K
    roles = [json.loads((iter_dir(results, i) / "proposal.json").read_text())["role"] for i in range(K + 1, 2 * K + 1)]
    assert roles == ["exploit", "explore", "principle-test"]


def test_a_round_that_does_not_end_where_it_should_is_refused(first_round, capsys):
    results, exp = first_round
    args = _round_args(results, exp)
    args[args.index("--iteration") + 1] = "2"
    assert main(args) == 2
    assert "with slots = 3 a round ends at iteration 3" in capsys.readouterr().err


def test_anthropic_round_is_one_api_call_with_the_round_schema(first_round, monkeypatch):
    """The real SDK behind a mock transport: one request for the whole round (structured output
    RoundDecision), slot 3's repeat of slot 1 refused and retried with one more call for that slot."""
    from test_agent_anthropic import FakeAPI, make_policy, reply

    results, exp = first_round
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-rounds")
    children = [_child(1, "learning_rate_W_start", 0.004), _child(2, "learning_rate_start", 0.0004),
                _child(1, "learning_rate_W_start", 0.004)]
    api = FakeAPI(reply(json.dumps({"children": children})),
                  reply(json.dumps(_child(3, "coeff_W_L1", 1e-5))))
    monkeypatch.setattr(decide_stage, "get_policy", lambda backend, options: make_policy(api))
    assert main(_round_args(results, exp, ["--smoke-timeout", "0"])) == 0
    assert len(api.requests) == 2
    first = api.body(0)
    assert "children" in json.dumps(first["output_config"]["format"]["schema"])
    prompt = json.dumps(first["messages"])
    assert "slot 2: role explore" in prompt and "slot 3: role principle-test" in prompt
    retry = json.dumps(api.body(1)["messages"])
    assert "REFUSED" in retry and "duplicate" in retry
    record = json.loads((iter_dir(results, K) / "decision.json").read_text())
    assert [s["policy"] for s in record["slots"]] == ["anthropic"] * K
    calls = [a["call"] for s in record["slots"] for a in s["attempts"] if a["call"]]
    assert len(calls) == 2 and all(c["cost_usd"] is not None for c in calls)  # each call billed once
    parents = [json.loads((iter_dir(results, i) / "proposal.json").read_text())["parent"] for i in range(4, 7)]
    assert parents == [1, 2, 3]


def test_a_contradicted_principle_moves_to_open_questions_with_its_evidence():
    """A principle-test node that beat the block's best before its round contradicts its principle."""
    from agent.memory import parse_memory, update_memory
    from agent.policies.heuristic import HeuristicPolicy

    principle = "time_step=1: best R2=0.9 with lr_W=0.001, lr=0.0005 (block 1)"
    nodes = [node(1, None, 0.90), node(2, 1, 0.85), node(3, 1, 0.97), node(4, 1, 0.80)]
    nodes[2].tested_principle, nodes[2].slot, nodes[2].role = principle, 1, "principle-test"
    nodes[3].slot = 2
    memory = update_memory("", context(nodes[:2], iteration=2), [], [], None)
    mem = parse_memory(memory)
    mem.principles = [principle, "coeff_W_L1 above 1e-4 hurts"]
    from agent.memory import render_memory

    ctx = context(nodes, iteration=3)
    ctx.working_memory, ctx.slots, ctx.slot, ctx.round_nodes = render_memory(mem), 2, 1, nodes[2:]
    decision = HeuristicPolicy({"seed": 0}).decide(ctx)
    assert [c.principle for c in decision.memory_update.contradicted_principles] == [principle]
    assert "node 3 R2=0.97" in decision.memory_update.contradicted_principles[0].evidence
    after = parse_memory(update_memory(ctx.working_memory, ctx, [decision], ["## Iter 3: converged"], None))
    assert principle not in " ".join(after.principles) and "coeff_W_L1 above 1e-4 hurts" in " ".join(after.principles)
    assert any(q.lstrip("- ").startswith("Contradicted: " + principle) and "node 3" in q for q in after.open_questions)


def test_a_refused_round_reply_and_each_slots_new_ask_are_stated(first_round, monkeypatch, capsys):
    """A whole-round reply that is no JSON: one round event, then each slot asked again on its own,
    one decide-log line each, the same lines in decision.json (round_events, slot events)."""
    from test_agent_anthropic import FakeAPI, api_error, make_policy, reply

    results, exp = first_round
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-rounds")
    slot_children = [_child(1, "learning_rate_W_start", 0.004), _child(2, "learning_rate_start", 0.0004),
                     _child(3, "coeff_W_L1", 1e-5)]
    api = FakeAPI(api_error(529, "overloaded_error", "Overloaded"), reply("no json at all"),
                  *[reply(json.dumps(child)) for child in slot_children])
    monkeypatch.setattr(decide_stage, "get_policy", lambda backend, options: make_policy(api))
    capsys.readouterr()
    assert main(_round_args(results, exp, ["--smoke-timeout", "0"])) == 0
    assert len(api.requests) == 2 + K
    log = capsys.readouterr().out
    record = json.loads((iter_dir(results, K) / "decision.json").read_text())
    [retry, refused] = record["round_events"]
    assert (retry["event"], retry["status"], retry["http_attempt"]) == ("http_retry", 529, 1)
    assert retry["text"] == "whole-round call (slots 1, 2, 3): HTTP 529 on HTTP attempt 1; tried again (attempt 2)"
    assert refused["event"] == "refused" and "not a valid decision JSON" in refused["reason"]
    for event in (retry, refused):
        assert f"agent decide: round ending at iteration {K}: {event['text']}" in log
    for slot in record["slots"]:
        [event] = slot["events"]
        assert event["text"] == (f"slot {slot['slot']}: the whole-round call gave no child for it; "
                                 f"slot {slot['slot']} asked again with the reason")
        assert event["asked_again"] is True and f"{event['text']}\n" in log
        assert slot["policy"] == "anthropic"
