"""summary.tsv: `policy` holds the policy's name, `fallback_reason` why the fallback decided."""
from __future__ import annotations

import json

import pytest

from pipeline.summary import NODE_COLUMNS, build_summary, policy_and_fallback_reason

# Labels as agent.policies.base.decide_with_fallback and agent.decide.run_policy write them
# (tests/test_agent_decision.py and tests/test_agent_cli.py pin those formats).
UNAVAILABLE = "heuristic (fallback after: backend unavailable: 529 overloaded after 2 retries)"
REFUSED = ("heuristic (fallback after: config_mutation.parameter = 'batch_size': batch_size is fixed (allowed: lr) "
           "| code_modification (build_optimizer): not allowed)")


@pytest.mark.parametrize(
    "node, expected",
    [
        ({"policy": "anthropic"}, ("anthropic", "")),
        ({"policy": "claude-code"}, ("claude-code", "")),
        ({"policy": "init"}, ("init", "")),
        ({}, ("", "")),
        ({"policy": UNAVAILABLE}, ("heuristic", "backend unavailable: 529 overloaded after 2 retries")),
        ({"policy": REFUSED}, ("heuristic", REFUSED[len("heuristic (fallback after: "):-1])),
        ({"policy": "safe re-run (after: fallback heuristic refused too: x)"},
         ("safe re-run", "fallback heuristic refused too: x")),
        ({"policy": "heuristic", "fallback_reason": "spend cap reached: spent 1 USD"},
         ("heuristic", "spend cap reached: spent 1 USD")),
    ],
)
def test_policy_label_is_split_into_name_and_reason(node, expected):
    assert policy_and_fallback_reason(node) == expected


def _iteration(results, iteration, policy):
    folder = results / f"iter_{iteration:03d}"
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({"iteration": iteration, "connectivity_R2": 0.5}))
    proposal = {"id": iteration, "parent": iteration - 1 or None, "block": 1, "iteration": iteration,
                "time_step": 1, "strategy": "exploit", "mutation": None, "code_modified": False, "policy": policy}
    (folder / "proposal.json").write_text(json.dumps(proposal))


def test_summary_columns_policy_then_fallback_reason(tmp_path):
    for iteration, policy in enumerate(["init", "anthropic", UNAVAILABLE], start=1):
        _iteration(tmp_path, iteration, policy)
    summary = build_summary(tmp_path)
    assert list(summary.columns[: len(NODE_COLUMNS)]) == list(NODE_COLUMNS)
    assert NODE_COLUMNS.index("fallback_reason") == NODE_COLUMNS.index("policy") + 1
    assert list(summary["policy"]) == ["init", "anthropic", "heuristic"]
    assert list(summary["fallback_reason"]) == ["", "", "backend unavailable: 529 overloaded after 2 retries"]
