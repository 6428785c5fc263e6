"""The spend cap (decide --max-cost-usd) and summary/costs.tsv.

The anthropic backend runs for real (the SDK behind an httpx2 MockTransport that answers with
known token counts); only its construction inside the decide CLI is redirected to that client.
"""
from __future__ import annotations

import json
import math

import pytest

import agent.cli as cli
import agent.decide as decide_stage
from agent.cli import main
from agent.costs import COLUMNS, call_rows, costs_tsv, spent_usd
from agent.policies.base import SpendCapReached
from agent.policies.spend_cap import SpendCap
from agent.prompt import PROMPT_PARTS
from agent.pricing import TokenUsage, call_cost_usd, load_price_table, max_call_cost_usd
from agent_helpers import decide_args, decision_of, fake_analyze, iter_dir, ucb_args, write_experiment_config
from test_agent_anthropic import MODEL, FakeAPI, api_key, make_policy, reply  # noqa: F401 (fixture)

N_ITER = 5
#: Every canned reply bills these tokens (test_agent_anthropic.reply).
USAGE = TokenUsage(input_tokens=1200, output_tokens=300, cache_creation_input_tokens=2000, cache_read_input_tokens=5000)
RERUN_NODE_1 = {
    "parent": 1, "strategy": "robustness-test",
    "log": {"outcome": "partial", "mode": "success-exploit", "parent_rule": "re-run node 1",
            "observation": "-", "next_parent": 1},
    "memory_update": {"emerging_observations": "re-running node 1"},
}


def call_cost() -> float:
    return call_cost_usd(MODEL, USAGE, load_price_table())


def explore(results, monkeypatch, cap=None):
    """Iterations 1..N_ITER of one block through the decide CLI; returns (api, bounds per iteration)."""
    api = FakeAPI(reply(json.dumps(RERUN_NODE_1)))
    monkeypatch.setattr(decide_stage, "get_policy", lambda backend, options: make_policy(api))
    bounds: dict[int, float] = {}
    original = SpendCap.check

    def spy(self, ctx, feedback=None):
        bounds[ctx.iteration] = self.policy.estimate_cost_usd(ctx, feedback)
        return original(self, ctx, feedback)

    monkeypatch.setattr(SpendCap, "check", spy)
    exp = write_experiment_config(results / "exp.yaml")
    assert main(["init", "--config", str(exp), "--out-dir", str(iter_dir(results, 1)), "--schedule", "1"]) == 0
    extra = ["--max-cost-usd", repr(cap)] if cap is not None else []
    for i in range(1, N_ITER + 1):
        fake_analyze(iter_dir(results, i))
        assert main(ucb_args(results, i)) == 0
        assert main(decide_args(results, exp, i, n_iter_block=8, n_blocks=1, schedule="1", backend="anthropic",
                                extra=extra)) == 0
    return api, bounds


def record(results, i):
    return decision_of(iter_dir(results, i))


def test_the_bound_is_above_what_a_call_really_costs(tmp_path, monkeypatch, api_key):
    api, bounds = explore(tmp_path, monkeypatch, cap=1000.0)
    assert len(api.requests) == N_ITER and sorted(bounds) == list(range(1, N_ITER + 1))
    for i in range(1, N_ITER + 1):
        rec = record(tmp_path, i)
        assert rec["policy"] == "anthropic"
        assert rec["spend_cap"]["stopped"] is None and rec["spend_cap"]["calls_made"] == 1
        assert rec["spend_cap"]["spent_before_usd"] == pytest.approx((i - 1) * call_cost(), abs=1e-6)
        body = api.body(i - 1)
        texts = [b["text"] for b in body["system"]] + [b["text"] for b in body["messages"][0]["content"]
                                                         if b["type"] == "text"]
        text_bytes = sum(len(t.encode()) for t in texts)
        # one token per byte of every text sent, at the dearest input price, plus the full reply limit
        assert bounds[i] >= max_call_cost_usd(MODEL, text_bytes, 4000) > call_cost()
    assert spent_usd(tmp_path, before_iteration=N_ITER + 1) == pytest.approx(N_ITER * call_cost(), abs=1e-6)


@pytest.mark.parametrize("n_fit", [1, 3])
def test_the_cap_stops_calls_exactly_at_the_limit(tmp_path, monkeypatch, capsys, api_key, n_fit):
    _, bounds = explore(tmp_path / "uncapped", monkeypatch, cap=1000.0)  # the same prompts: learn the bounds
    c = call_cost()
    cap = round((n_fit - 1) * c, 6) + bounds[n_fit]  # call n_fit fits with nothing to spare
    capsys.readouterr()

    api, _ = explore(tmp_path / "at", monkeypatch, cap=cap)
    assert len(api.requests) == n_fit
    for i in range(1, n_fit + 1):
        assert record(tmp_path / "at", i)["policy"] == "anthropic"
    stopped = record(tmp_path / "at", n_fit + 1)
    assert stopped["policy"].startswith("heuristic (fallback after: spend cap reached: ")
    assert stopped["attempts"][0]["reason"].startswith("spend cap reached: spent ")
    assert stopped["attempts"][0]["call"] is None and stopped["attempts"][-1]["policy"] == "heuristic"
    assert len(stopped["attempts"]) == 2  # no retry of a refused call
    assert stopped["spend_cap"]["calls_made"] == 0 and "was not made" in stopped["spend_cap"]["stopped"]
    assert f"iteration {n_fit + 1}: spend cap: spent" in capsys.readouterr().out  # the decide log
    total = spent_usd(tmp_path / "at", before_iteration=N_ITER + 1)
    assert total == pytest.approx(n_fit * c, abs=1e-6) and total <= cap

    api, _ = explore(tmp_path / "below", monkeypatch, cap=cap - 1e-6)  # one micro-dollar less
    assert len(api.requests) == n_fit - 1
    assert record(tmp_path / "below", n_fit)["policy"].startswith("heuristic (fallback after: spend cap reached")


def test_an_unpriced_model_is_not_called_under_a_cap(tmp_path, api_key):
    from test_agent_anthropic import make_context

    api = FakeAPI(reply("{}"))
    cap = SpendCap(make_policy(api, model="claude-future-7"), 5.0, 0.0)
    with pytest.raises(SpendCapReached, match="no price"):
        cap.decide(make_context(tmp_path))
    assert api.requests == []


def test_bad_cap_and_unreadable_records_are_refused_naming_them(tmp_path, monkeypatch, capsys, api_key):
    api, _ = explore(tmp_path, monkeypatch, cap=1000.0)
    exp = tmp_path / "exp.yaml"
    args = decide_args(tmp_path, exp, 2, n_iter_block=8, n_blocks=1, schedule="1", backend="anthropic")
    assert main(args + ["--max-cost-usd", "-1"]) == 2
    assert "--max-cost-usd -1.0: must be a number >= 0" in capsys.readouterr().err
    assert main(args + ["--max-cost-usd", "nan"]) == 2
    (iter_dir(tmp_path, 1) / "decision.json").write_text("{broken")
    assert main(args + ["--max-cost-usd", "10"]) == 2
    assert "iter_001/decision.json: cannot read the recorded LLM costs" in capsys.readouterr().err


def test_costs_tsv_lists_every_call_and_the_total(tmp_path, monkeypatch, api_key):
    explore(tmp_path, monkeypatch, cap=round(2 * call_cost(), 6) + 1.0)
    out = tmp_path / "summary" / "costs.tsv"
    assert main(["costs", "--results", str(tmp_path), "--out", str(out)]) == 0
    lines = [line.split("\t") for line in out.read_text().splitlines()]
    assert tuple(lines[0]) == COLUMNS
    calls, total = lines[1:-1], dict(zip(COLUMNS, lines[-1]))
    rows = call_rows(tmp_path)
    assert len(calls) == len(rows) >= 1
    for line, row in zip(calls, rows):
        cells = dict(zip(COLUMNS, line))
        assert cells["policy"] == "anthropic" and cells["model"] == MODEL and cells["accepted"] == "true"
        assert (int(cells["input_tokens"]), int(cells["output_tokens"]), int(cells["cache_creation_input_tokens"]),
                int(cells["cache_read_input_tokens"])) == (1200, 300, 2000, 5000)
        assert float(cells["cost_usd"]) == pytest.approx(call_cost())
        estimates = {part: int(cells[f"est_tokens_{part}"]) for part in PROMPT_PARTS}
        assert all(estimates[p] > 0 for p in PROMPT_PARTS if p != "images"), estimates
        assert estimates["images"] == 0  # these decide runs are given no pictures
        assert estimates["code"] > estimates["memory"] and estimates["system"] > estimates["analyses"]
    assert [int(c[0]) for c in calls] == sorted(int(c[0]) for c in calls)
    assert total["iteration"] == "total" and int(total["attempt"]) == len(calls)
    assert int(total["input_tokens"]) == 1200 * len(calls)
    assert float(total["cost_usd"]) == pytest.approx(len(calls) * call_cost(), abs=1e-6)


def test_costs_tsv_of_an_offline_experiment_is_an_empty_table_with_a_zero_total(tmp_path):
    assert costs_tsv([]).splitlines() == ["\t".join(COLUMNS), "total\t0\t\t\t\t0\t0\t0\t0\t0.000000\t0\t0\t0\t0\t0\t0"]
    assert main(["costs", "--results", str(tmp_path / "absent"), "--out", str(tmp_path / "c.tsv")]) == 2


def test_cost_bound_prices_every_input_token_at_the_dearest_input_rate():
    table = load_price_table()
    p = table[MODEL]
    assert max_call_cost_usd(MODEL, 1_000_000, 1_000_000, table) == pytest.approx(max(p.input, p.cache_write) + p.output)
    dearest = max(x.output for x in table.values())
    assert max_call_cost_usd(None, 0, 1_000_000, table) == pytest.approx(dearest)  # no model named: dearest
    assert max_call_cost_usd("claude-future-7", 10, 10, table) is None
    assert math.isclose(max_call_cost_usd(MODEL, 1, 0, table), 4e-6)  # 3.75 micro-USD rounded up, never down


class _RoundPolicy:
    """A paid policy that answers a whole round; each call may cost up to ``bound`` USD."""

    name, model, last_call = "anthropic", MODEL, None

    def __init__(self, bound):
        self.bound, self.rounds = bound, 0

    def estimate_cost_usd(self, ctx, feedback=None):
        return self.bound

    def estimate_round_cost_usd(self, contexts):
        return self.bound

    def decide_round(self, contexts):
        self.rounds += 1
        return []


def test_a_refused_whole_round_call_says_what_happens_and_sets_stopped():
    from types import SimpleNamespace

    policy = _RoundPolicy(bound=0.75)
    cap = SpendCap(policy, max_cost_usd=1.0, spent_before_usd=0.5)
    with pytest.raises(SpendCapReached) as info:
        cap.decide_round([SimpleNamespace(slot=1), SimpleNamespace(slot=2)])
    assert policy.rounds == 0
    assert str(info.value) == ("spent 0.500000 USD of agent.max_cost_usd = 1 USD; the whole-round anthropic call may "
                               "cost up to 0.750000 USD, so it was not made and the offline heuristic decides every "
                               "slot of this round")
    record = cap.record()
    assert record["stopped"] == str(info.value) and record["calls_made"] == 0
    assert record["refusals"] == [{"call": "whole round (slots 1, 2)", "bound_usd": 0.75, "spent_usd": 0.5,
                                   "max_cost_usd": 1.0, "reason": str(info.value)}]
    with pytest.raises(SpendCapReached, match="the offline heuristic decides this slot"):
        cap.decide(SimpleNamespace(slot=2))
    assert [r["call"] for r in cap.record()["refusals"]] == ["whole round (slots 1, 2)", "slot 2"]
