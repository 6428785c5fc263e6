"""Node records and UCB scores (docs/agent.md, "UCB") on hand-computed trees."""
from __future__ import annotations

import math

import pytest

from agent.tree import (NodeRecord, TreeError, best_node, finite_or_none, format_scores, load_node, reward,
                        score_block, write_node)
from agent_helpers import node


def test_ucb_values_match_hand_computation():
    # Tree of block 1:  1 -> {2, 3}, 2 -> 4.  N = 4, c = 1.414, sqrt(N) = 2.
    nodes = [node(1, None, 0.5), node(2, 1, 0.8), node(3, 1, None), node(4, 2, -0.2)]
    scores = {s.id: s for s in score_block(nodes, block=1, c=1.414)}
    assert scores[1].visits == 4 and scores[2].visits == 2 and scores[3].visits == 1 and scores[4].visits == 1
    assert scores[1].ucb == pytest.approx(0.5 + 1.414 * 2 / 5)
    assert scores[2].ucb == pytest.approx(0.8 + 1.414 * 2 / 3)
    assert scores[3].ucb == pytest.approx(0.0 + 1.414 * 2 / 2)  # NaN R2 counts as 0
    assert scores[4].ucb == pytest.approx(-0.2 + 1.414 * 2 / 2)  # negative R2 kept
    assert format_scores(score_block(nodes, 1, 1.414)).splitlines() == [
        "Node 2: UCB=1.743, parent=1, visits=2, R2=0.800",
        "Node 3: UCB=1.414, parent=1, visits=1, R2=nan",
        "Node 4: UCB=1.214, parent=2, visits=1, R2=-0.200",
        "Node 1: UCB=1.066, parent=root, visits=4, R2=0.500",
    ]


def test_scores_are_block_scoped_and_cross_block_parent_makes_a_root():
    nodes = [node(1, None, 0.99, block=1), node(2, 1, 0.98, block=1),
             node(3, 2, 0.4, block=2), node(4, 3, 0.6, block=2)]
    scores = score_block(nodes, block=2, c=1.0)
    assert [s.id for s in scores] == [4, 3]
    by_id = {s.id: s for s in scores}
    assert by_id[3].parent is None and by_id[3].visits == 2
    assert by_id[4].ucb == pytest.approx(0.6 + math.sqrt(2) / 2)
    assert by_id[3].ucb == pytest.approx(0.4 + math.sqrt(2) / 3)
    # the first iteration of a block scores only its own node
    assert [s.id for s in score_block(nodes[:3], block=2, c=1.0)] == [3]


def test_ties_break_by_lower_id_independent_of_input_order():
    nodes = [node(7, None, 0.9), node(5, 7, 0.5), node(3, 7, 0.5)]
    forward = [s.id for s in score_block(nodes, 1, 1.414)]
    backward = [s.id for s in score_block(list(reversed(nodes)), 1, 1.414)]
    assert forward == backward
    assert forward.index(3) < forward.index(5)


def test_nan_none_strings_and_scientific_values_never_drop_a_node():
    nodes = [node(1, None, float("nan")), node(2, 1, None), node(3, 1, "1e-5"), node(4, 1, -3.2e-02),
             node(5, 1, "not a number")]
    scores = score_block(nodes, 1, 1.414)
    assert sorted(s.id for s in scores) == [1, 2, 3, 4, 5]
    text = format_scores(scores)
    assert "Node 4:" in text and "R2=-0.032" in text and "R2=0.000" in text
    assert reward(nodes[0]) == 0.0 and reward(nodes[2]) == pytest.approx(1e-5)
    assert finite_or_none("1E-3") == pytest.approx(1e-3) and finite_or_none(float("inf")) is None


def test_duplicate_ids_and_cycles_are_refused():
    with pytest.raises(TreeError, match="node id 2 appears twice"):
        score_block([node(1, None), node(2, 1), node(2, 1, iteration=3)], 1, 1.0)
    with pytest.raises(TreeError, match="cycle"):
        score_block([node(1, 2), node(2, 1)], 1, 1.0)
    with pytest.raises(TreeError, match="ucb_c"):
        score_block([node(1, None)], 1, float("nan"))


def test_node_record_round_trip_and_clear_errors(tmp_path):
    original = node(3, 1, 0.7, mutation={"parameter": "coeff_W_L1", "old": 0.0, "new": 1e-5})
    path = write_node(original, tmp_path / "node.json")
    assert load_node(path) == original
    assert NodeRecord.from_dict({"id": 1, "parent": "root", "block": 1, "iteration": 1, "time_step": 4}).parent is None
    with pytest.raises(TreeError, match=r"x/node.json: node record lacks required field\(s\) block"):
        NodeRecord.from_dict({"id": 1, "parent": None, "iteration": 1, "time_step": 1}, source="x/node.json")
    with pytest.raises(TreeError, match="parent = 'two': must be a node id"):
        NodeRecord.from_dict({"id": 1, "parent": "two", "block": 1, "iteration": 1, "time_step": 1})
    (tmp_path / "bad.json").write_text("{oops")
    with pytest.raises(TreeError, match="bad.json: not valid JSON"):
        load_node(tmp_path / "bad.json")


def test_best_node_prefers_higher_r2_then_lower_id():
    nodes = [node(1, None, 0.9), node(2, 1, 0.95), node(3, 1, 0.95), node(4, 2, None, block=2)]
    assert best_node(nodes, 1).id == 2
    assert best_node(nodes, 3) is None
